//! The list queries of the Redis backend, answered by scanning: every id by `SCAN`, the
//! documents of those that can be on the page in one pipelined round trip, then the shared
//! filter, order and cursor rules of [`crate::query`]. Scans do not refresh the idle TTL.

use super::RedisStore;
use crate::error::StoreError;
use crate::query;
use crate::{CatalogIndex, OrderIndex, Record};
use async_trait::async_trait;
use cartwheel_bus::messages::{CatalogQuery, OrdersQuery, Page};
use cartwheel_domain::{Order, Product};
use serde::de::DeserializeOwned;

impl<T: DeserializeOwned> RedisStore<T> {
    /// The states stored under `ids`; ids that expired since they were listed are left out.
    async fn states(&self, ids: &[String]) -> Result<Vec<T>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = ::redis::pipe();
        for id in ids {
            pipe.hget(self.key(id), "doc");
        }
        let docs: Vec<Option<Vec<u8>>> = self
            .read("scanning", "*", || {
                let mut conn = self.conn.clone();
                let pipe = pipe.clone();
                async move { pipe.query_async(&mut conn).await }
            })
            .await?;
        ids.iter()
            .zip(docs)
            .filter_map(|(id, doc)| doc.map(|d| (id, d)))
            .map(|(id, doc)| {
                serde_json::from_slice::<Record<T>>(&doc)
                    .map(|r| r.state)
                    .map_err(|e| StoreError::Codec(format!("decoding {}{id}: {e}", self.prefix)))
            })
            .collect()
    }
}

#[async_trait]
impl CatalogIndex for RedisStore<Product> {
    async fn list_products(&self, q: &CatalogQuery) -> Result<Page<Product>, StoreError> {
        query::limit(q.limit)?;
        let mut ids = self.scan_ids().await?;
        // Products are keyed by sku, the sort key: ids up to the cursor are earlier pages.
        if let Some(cursor) = &q.cursor {
            ids.retain(|id| id.as_str() > cursor.as_str());
        }
        let items = self
            .states(&ids)
            .await?
            .into_iter()
            .filter(|p| query::product_matches(q, p))
            .collect();
        query::page_products(q, items)
    }
}

#[async_trait]
impl OrderIndex for RedisStore<Order> {
    async fn list_orders(&self, q: &OrdersQuery) -> Result<Page<Order>, StoreError> {
        query::limit(q.limit)?;
        if let Some(c) = &q.cursor {
            query::parse_order_cursor(c)?;
        }
        let ids = self.scan_ids().await?;
        let items = self
            .states(&ids)
            .await?
            .into_iter()
            .filter(|o| query::order_matches(q, o))
            .collect();
        query::page_orders(q, items)
    }
}

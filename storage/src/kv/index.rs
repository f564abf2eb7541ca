//! The list queries of the KV backend, answered by scanning a bucket (see [`super::scan`])
//! and applying the shared filter, order and cursor rules of [`crate::query`].

use super::KvStore;
use crate::error::StoreError;
use crate::query;
use crate::{CatalogIndex, OrderIndex};
use async_trait::async_trait;
use cartwheel_bus::messages::{CatalogQuery, OrdersQuery, Page};
use cartwheel_domain::{Order, Product};

#[async_trait]
impl CatalogIndex for KvStore<Product> {
    async fn list_products(&self, q: &CatalogQuery) -> Result<Page<Product>, StoreError> {
        query::limit(q.limit)?;
        // Products are keyed by sku, the sort key, so keys up to the cursor belong to
        // earlier pages and are not even decoded.
        let after = q.cursor.as_deref();
        let records = self
            .scan_records(|key| after.is_none_or(|c| key > c))
            .await?;
        let items = records
            .into_iter()
            .map(|(_, r)| r.state)
            .filter(|p| query::product_matches(q, p))
            .collect();
        query::page_products(q, items)
    }
}

#[async_trait]
impl OrderIndex for KvStore<Order> {
    async fn list_orders(&self, q: &OrdersQuery) -> Result<Page<Order>, StoreError> {
        // Refuse a bad page size or cursor before paying for a scan.
        query::limit(q.limit)?;
        if let Some(c) = &q.cursor {
            query::parse_order_cursor(c)?;
        }
        let records = self.scan_records(|_| true).await?;
        let items = records
            .into_iter()
            .map(|(_, r)| r.state)
            .filter(|o| query::order_matches(q, o))
            .collect();
        query::page_orders(q, items)
    }
}

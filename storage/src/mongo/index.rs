//! The list queries of the MongoDB backend, answered from the indexes of
//! [`layout`](super::layout) with the ordering and cursors of [`crate::query`].
//!
//! A page is one indexed find: the filters, the cursor as a range on the sort key, the
//! sort, and `limit + 1` documents, the extra one only telling whether there is a next
//! page. Products: `sku > cursor`, ascending. Orders: newest first by `(created_at, id)`;
//! the cursor `{millis}_{id}` becomes `created_at <= t and (created_at < t or id < id)`,
//! the keyset form that keeps the scan on the index.

use super::MongoStore;
use crate::error::StoreError;
use crate::query;
use crate::{CatalogIndex, OrderIndex};
use async_trait::async_trait;
use bson::{DateTime, Document, doc};
use cartwheel_bus::messages::{CatalogQuery, OrdersQuery, Page};
use cartwheel_domain::{Order, Product};

#[async_trait]
impl CatalogIndex for MongoStore<Product> {
    async fn list_products(&self, q: &CatalogQuery) -> Result<Page<Product>, StoreError> {
        let n = query::limit(q.limit)?;
        let mut filter = Document::new();
        if let Some(category) = &q.category {
            filter.insert("category", category);
        }
        if let Some(active) = q.active {
            filter.insert("active", active);
        }
        if let Some(cursor) = &q.cursor {
            filter.insert("sku", doc! { "$gt": cursor });
        }
        let items = self.find(filter, doc! { "sku": 1 }, n + 1).await?;
        Ok(page(items, n, |p: &Product| p.sku.clone()))
    }
}

#[async_trait]
impl OrderIndex for MongoStore<Order> {
    async fn list_orders(&self, q: &OrdersQuery) -> Result<Page<Order>, StoreError> {
        let n = query::limit(q.limit)?;
        let mut filter = Document::new();
        if let Some(user) = &q.user_id {
            filter.insert("user_id", user);
        }
        if let Some(status) = q.status {
            filter.insert("status", status.as_str());
        }
        if let Some(cursor) = &q.cursor {
            let (millis, id) = query::parse_order_cursor(cursor)?;
            let at = DateTime::from_millis(millis);
            filter.insert("created_at", doc! { "$lte": at });
            filter.insert(
                "$or",
                vec![
                    doc! { "created_at": { "$lt": at } },
                    doc! { "id": { "$lt": id } },
                ],
            );
        }
        let items = self
            .find(filter, doc! { "created_at": -1, "id": -1 }, n + 1)
            .await?;
        Ok(page(items, n, query::order_cursor))
    }
}

/// The first `n` of `items` (fetched with one extra) and the cursor after the last of them
/// when the extra one shows there is more.
fn page<T>(mut items: Vec<T>, n: usize, cursor: impl Fn(&T) -> String) -> Page<T> {
    let more = items.len() > n;
    items.truncate(n);
    let next_cursor = if more { items.last().map(cursor) } else { None };
    Page { items, next_cursor }
}

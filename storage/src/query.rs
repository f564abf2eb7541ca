//! Query rules shared by every backend: filters, ordering and cursors.
//!
//! Products are ordered by sku and the cursor is the last sku of the page. Orders are
//! ordered newest first by `(created_at, id)` and the cursor is `{millis}_{id}` of the
//! last order of the page. Backends with real indexes use the same keys, so a cursor from
//! one page is valid on any node.

use crate::error::StoreError;
use cartwheel_bus::messages::{CatalogQuery, MAX_PAGE, OrdersQuery, Page};
use cartwheel_domain::{Order, Product};

/// The page size of a query, checked.
pub fn limit(limit: u32) -> Result<usize, StoreError> {
    if limit == 0 || limit > MAX_PAGE {
        return Err(StoreError::InvalidQuery(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    Ok(limit as usize)
}

/// Whether `p` passes the filters of `q` (not the cursor).
pub fn product_matches(q: &CatalogQuery, p: &Product) -> bool {
    q.category.as_ref().is_none_or(|c| *c == p.category) && q.active.is_none_or(|a| a == p.active)
}

/// Whether `o` passes the filters of `q` (not the cursor).
pub fn order_matches(q: &OrdersQuery, o: &Order) -> bool {
    q.user_id.as_ref().is_none_or(|u| *u == o.user_id) && q.status.is_none_or(|s| s == o.status)
}

/// The sort key of an order: newest first means descending by this.
pub fn order_key(o: &Order) -> (i64, String) {
    (o.created_at.millis(), o.id.clone())
}

/// Encodes an order cursor.
pub fn order_cursor(o: &Order) -> String {
    format!("{}_{}", o.created_at.millis(), o.id)
}

/// Decodes an order cursor.
pub fn parse_order_cursor(c: &str) -> Result<(i64, String), StoreError> {
    let (ms, id) = c
        .split_once('_')
        .ok_or_else(|| StoreError::InvalidQuery("malformed cursor".into()))?;
    let ms = ms
        .parse()
        .map_err(|_| StoreError::InvalidQuery("malformed cursor".into()))?;
    Ok((ms, id.to_owned()))
}

/// Pages a full list of products (already filtered) in sku order.
pub fn page_products(
    q: &CatalogQuery,
    mut items: Vec<Product>,
) -> Result<Page<Product>, StoreError> {
    let n = limit(q.limit)?;
    items.sort_by(|a, b| a.sku.cmp(&b.sku));
    if let Some(c) = &q.cursor {
        items.retain(|p| p.sku.as_str() > c.as_str());
    }
    let more = items.len() > n;
    items.truncate(n);
    let next_cursor = if more {
        items.last().map(|p| p.sku.clone())
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

/// Pages a full list of orders (already filtered), newest first.
pub fn page_orders(q: &OrdersQuery, mut items: Vec<Order>) -> Result<Page<Order>, StoreError> {
    let n = limit(q.limit)?;
    items.sort_by_key(|o| std::cmp::Reverse(order_key(o)));
    if let Some(c) = &q.cursor {
        let after = parse_order_cursor(c)?;
        items.retain(|o| order_key(o) < after);
    }
    let more = items.len() > n;
    items.truncate(n);
    let next_cursor = if more {
        items.last().map(order_cursor)
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

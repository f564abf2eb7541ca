//! Rules of [`CatalogIndex`] and [`OrderIndex`]: filters, order, cursors, page sizes.

use super::fixtures::{self, at};
use anyhow::{Context as _, bail, ensure};
use cartwheel_bus::messages::{CatalogQuery, MAX_PAGE, OrdersQuery};
use cartwheel_domain::{Order, OrderStatus, Product};
use cartwheel_storage::{Record, StoreError, Stores};

fn catalog(category: Option<&str>, active: Option<bool>, limit: u32) -> CatalogQuery {
    CatalogQuery {
        category: category.map(str::to_owned),
        active,
        limit,
        cursor: None,
    }
}

fn orders(user: Option<&str>, status: Option<OrderStatus>, limit: u32) -> OrdersQuery {
    OrdersQuery {
        user_id: user.map(str::to_owned),
        status,
        limit,
        cursor: None,
    }
}

/// Follows `next_cursor` from the first page to the last, returning every page.
async fn all_product_pages(s: &Stores, mut q: CatalogQuery) -> anyhow::Result<Vec<Vec<Product>>> {
    let mut pages = Vec::new();
    loop {
        let page = s.catalog.list_products(&q).await?;
        ensure!(
            page.items.len() <= q.limit as usize,
            "page larger than its limit"
        );
        ensure!(pages.len() < 1_000, "the cursors never end");
        let next = page.next_cursor.clone();
        pages.push(page.items);
        match next {
            Some(c) => q.cursor = Some(c),
            None => return Ok(pages),
        }
    }
}

/// Follows `next_cursor` from the first page to the last, returning every page.
async fn all_order_pages(s: &Stores, mut q: OrdersQuery) -> anyhow::Result<Vec<Vec<Order>>> {
    let mut pages = Vec::new();
    loop {
        let page = s.order_index.list_orders(&q).await?;
        ensure!(
            page.items.len() <= q.limit as usize,
            "page larger than its limit"
        );
        ensure!(pages.len() < 1_000, "the cursors never end");
        let next = page.next_cursor.clone();
        pages.push(page.items);
        match next {
            Some(c) => q.cursor = Some(c),
            None => return Ok(pages),
        }
    }
}

fn skus(items: &[Product]) -> Vec<&str> {
    items.iter().map(|p| p.sku.as_str()).collect()
}

fn ids(items: &[Order]) -> Vec<&str> {
    items.iter().map(|o| o.id.as_str()).collect()
}

/// Stores `n` products `p-00`, `p-01`, …: categories cycle shoes/hats/bags, every fourth
/// is inactive. Created out of sku order so the store's own order cannot fake the sorting.
async fn seed_products(s: &Stores, n: usize) -> anyhow::Result<Vec<Product>> {
    let mut all = Vec::new();
    for i in (0..n).rev() {
        let category = ["shoes", "hats", "bags"][i % 3];
        let mut p = fixtures::product(&format!("p-{i:02}"), category, 100 + i as i64);
        if i % 4 == 0 {
            p.deactivate(at(1));
        }
        s.products.create(&p.sku, &Record::new(p.clone())).await?;
        all.push(p);
    }
    all.sort_by(|a, b| a.sku.cmp(&b.sku));
    Ok(all)
}

/// With nothing stored, queries answer one empty last page.
pub async fn empty_stores_answer_empty_pages(s: &Stores) -> anyhow::Result<()> {
    let page = s.catalog.list_products(&catalog(None, None, 10)).await?;
    ensure!(page.items.is_empty() && page.next_cursor.is_none());
    let page = s.order_index.list_orders(&orders(None, None, 10)).await?;
    ensure!(page.items.is_empty() && page.next_cursor.is_none());
    ensure!(s.products.ids().await?.is_empty());
    Ok(())
}

/// Category and active filters, alone and together, in sku order.
pub async fn products_filter_by_category_and_active(s: &Stores) -> anyhow::Result<()> {
    let all = seed_products(s, 12).await?;
    let expect = |f: &dyn Fn(&Product) -> bool| -> Vec<Product> {
        all.iter().filter(|p| f(p)).cloned().collect()
    };
    let cases: [(Option<&str>, Option<bool>); 6] = [
        (None, None),
        (Some("shoes"), None),
        (None, Some(true)),
        (None, Some(false)),
        (Some("hats"), Some(true)),
        (Some("nothing"), None),
    ];
    for (category, active) in cases {
        let page = s
            .catalog
            .list_products(&catalog(category, active, MAX_PAGE))
            .await?;
        let want = expect(&|p| {
            category.is_none_or(|c| p.category == c) && active.is_none_or(|a| p.active == a)
        });
        assert_eq!(page.items, want, "category {category:?} active {active:?}");
        ensure!(page.next_cursor.is_none());
    }
    Ok(())
}

/// Following cursors visits every matching product exactly once, in sku order, and the
/// last page says so.
pub async fn products_pages_cover_every_item_once(s: &Stores) -> anyhow::Result<()> {
    let all = seed_products(s, 23).await?;
    for limit in [1, 5, 23, 24] {
        let pages = all_product_pages(s, catalog(None, None, limit)).await?;
        let seen: Vec<Product> = pages.concat();
        assert_eq!(skus(&seen), skus(&all), "limit {limit}");
        let full_pages = pages.iter().filter(|p| p.len() == limit as usize).count();
        ensure!(
            full_pages >= pages.len() - 1,
            "only the last page may be short"
        );
    }
    let active: Vec<Product> = all.iter().filter(|p| p.active).cloned().collect();
    let seen = all_product_pages(s, catalog(None, Some(true), 4))
        .await?
        .concat();
    assert_eq!(seen, active);
    let shoes: Vec<Product> = all
        .iter()
        .filter(|p| p.category == "shoes")
        .cloned()
        .collect();
    let seen = all_product_pages(s, catalog(Some("shoes"), None, 3))
        .await?
        .concat();
    assert_eq!(seen, shoes);
    Ok(())
}

/// A page size of 0 or above `MAX_PAGE` is refused; `MAX_PAGE` itself is fine.
pub async fn products_page_size_is_checked(s: &Stores) -> anyhow::Result<()> {
    seed_products(s, 3).await?;
    for limit in [0, MAX_PAGE + 1, u32::MAX] {
        match s.catalog.list_products(&catalog(None, None, limit)).await {
            Err(StoreError::InvalidQuery(_)) => {}
            other => bail!("limit {limit}: expected InvalidQuery, got {other:?}"),
        }
    }
    ensure!(
        s.catalog
            .list_products(&catalog(None, None, MAX_PAGE))
            .await?
            .items
            .len()
            == 3
    );
    Ok(())
}

/// Queries see the latest write of every product, once.
pub async fn products_queries_see_updates(s: &Stores) -> anyhow::Result<()> {
    let mut p = fixtures::product("p-1", "shoes", 100);
    let revision = s.products.create("p-1", &Record::new(p.clone())).await?;
    s.products
        .create("p-2", &Record::new(fixtures::product("p-2", "shoes", 200)))
        .await?;
    p.deactivate(at(1));
    s.products
        .update("p-1", &Record::new(p.clone()), revision)
        .await?;

    let active = s
        .catalog
        .list_products(&catalog(None, Some(true), 10))
        .await?;
    assert_eq!(skus(&active.items), ["p-2"]);
    let all = s.catalog.list_products(&catalog(None, None, 10)).await?;
    assert_eq!(skus(&all.items), ["p-1", "p-2"]);
    assert_eq!(all.items[0], p);
    Ok(())
}

/// Stores 14 orders of three users in various statuses, two pairs sharing a creation
/// instant (ties are broken by id, descending). Returns them newest first.
async fn seed_orders(s: &Stores) -> anyhow::Result<Vec<Order>> {
    let statuses = OrderStatus::ALL;
    let mut all = Vec::new();
    for i in 0..14 {
        let user = ["ann", "bob", "cyd"][i % 3];
        // Orders 4 and 5, 10 and 11 were placed in the same millisecond.
        let created = at([0, 7, 3, 9, 20, 20, 1, 15, 2, 30, 40, 40, 5, 11][i]);
        let mut order = fixtures::order(&format!("o_{i:02}"), user, created);
        fixtures::advance(&mut order, statuses[i % statuses.len()]);
        s.orders
            .create(&order.id, &Record::new(order.clone()))
            .await?;
        all.push(order);
    }
    all.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
    Ok(all)
}

/// User and status filters, alone and together, newest first.
pub async fn orders_filter_by_user_and_status(s: &Stores) -> anyhow::Result<()> {
    let all = seed_orders(s).await?;
    let cases = [
        (None, None),
        (Some("ann"), None),
        (None, Some(OrderStatus::Pending)),
        (None, Some(OrderStatus::Failed)),
        (Some("bob"), Some(OrderStatus::ProductReserved)),
        (Some("nobody"), None),
    ];
    for (user, status) in cases {
        let page = s
            .order_index
            .list_orders(&orders(user, status, MAX_PAGE))
            .await?;
        let want: Vec<&str> = all
            .iter()
            .filter(|o| {
                user.is_none_or(|u| o.user_id == u) && status.is_none_or(|st| o.status == st)
            })
            .map(|o| o.id.as_str())
            .collect();
        assert_eq!(ids(&page.items), want, "user {user:?} status {status:?}");
        ensure!(page.next_cursor.is_none());
    }
    let failed = s
        .order_index
        .list_orders(&orders(None, Some(OrderStatus::Failed), 10))
        .await?;
    let one = failed.items.first().context("a failed order")?;
    ensure!(one.failure_reason.is_some());
    Ok(())
}

/// Newest first (ties by id, descending), and following cursors visits every matching order
/// exactly once.
pub async fn orders_pages_are_newest_first_and_cover_every_item_once(
    s: &Stores,
) -> anyhow::Result<()> {
    let all = seed_orders(s).await?;
    for limit in [1, 4, 5, 14, 15] {
        let seen = all_order_pages(s, orders(None, None, limit))
            .await?
            .concat();
        assert_eq!(ids(&seen), ids(&all), "limit {limit}");
    }
    let anns: Vec<&str> = all
        .iter()
        .filter(|o| o.user_id == "ann")
        .map(|o| o.id.as_str())
        .collect();
    let seen = all_order_pages(s, orders(Some("ann"), None, 2))
        .await?
        .concat();
    assert_eq!(ids(&seen), anns);
    Ok(())
}

/// A page size of 0 or above `MAX_PAGE`, or a cursor we did not issue, is refused.
pub async fn orders_query_checks_limit_and_cursor(s: &Stores) -> anyhow::Result<()> {
    seed_orders(s).await?;
    for limit in [0, MAX_PAGE + 1] {
        match s.order_index.list_orders(&orders(None, None, limit)).await {
            Err(StoreError::InvalidQuery(_)) => {}
            other => bail!("limit {limit}: expected InvalidQuery, got {other:?}"),
        }
    }
    for cursor in ["garbage", "", "12x_o_01"] {
        let q = OrdersQuery {
            cursor: Some(cursor.to_owned()),
            ..orders(None, None, 5)
        };
        match s.order_index.list_orders(&q).await {
            Err(StoreError::InvalidQuery(_)) => {}
            other => bail!("cursor {cursor:?}: expected InvalidQuery, got {other:?}"),
        }
    }
    Ok(())
}

//! Rules about the server process behind a backend: what was acknowledged survives a
//! SIGKILL and restart; while the server is down calls fail fast as `Unavailable`; the
//! same stores work again once it is back, without being reopened.
//!
//! Data is kept small: some test servers manage only hundreds of writes a second.

use super::Backend;
use super::fixtures::{self, at};
use anyhow::{Context as _, bail, ensure};
use cartwheel_bus::messages::{CatalogQuery, MAX_PAGE, OrdersQuery};
use cartwheel_domain::{Order, OrderStatus, Product};
use cartwheel_storage::{EntityStore, Record, Revision, StoreError, Stores};
use cartwheel_testkit::wait_for;
use std::fmt::Debug;
use std::time::{Duration, Instant};

/// The longest a call may take to fail while the server is down. The test backends bound
/// their calls at 2 s; this leaves room for a slow machine.
const FAIL_FAST: Duration = Duration::from_secs(5);

/// How long the stores may take to work again after the server is back.
const RECOVERY: Duration = Duration::from_secs(20);

/// Records written and the revisions acknowledged for them.
type Written<T> = Vec<(String, Record<T>, Revision)>;

/// Checks every written record loads back exactly, at its revision.
async fn check<T: PartialEq + Debug + 'static>(
    store: &dyn EntityStore<T>,
    written: &Written<T>,
) -> anyhow::Result<()> {
    for (id, record, revision) in written {
        let loaded = store
            .load(id)
            .await?
            .with_context(|| format!("{id} lost"))?;
        assert_eq!(&loaded.record, record, "{id}");
        assert_eq!(loaded.revision, *revision, "{id}");
    }
    Ok(())
}

/// Waits until `s` answers loads again after a restart.
async fn recovered(s: &Stores, probe: &str) -> anyhow::Result<()> {
    wait_for("the stores to answer again", RECOVERY, || async {
        s.carts.load(probe).await.is_ok()
    })
    .await
}

/// A few records of every kind, some updated (so revisions moved and outboxes were
/// cleared or filled), then SIGKILL and restart of the server, then every record loads
/// back at its revision through the same stores, queries see them, and writes go on.
pub async fn acknowledged_writes_survive_a_server_crash(b: &mut Backend) -> anyhow::Result<()> {
    let s = b.stores.clone();
    let mut carts: Written<_> = Vec::new();
    for i in 0..4 {
        let id = format!("cart-{i}");
        let mut record = Record::new(fixtures::cart(&id, "user-1"));
        let mut revision = s.carts.create(&id, &record).await?;
        if i % 2 == 0 {
            record.outbox = fixtures::every_kind_of_event();
            revision = s.carts.update(&id, &record, revision).await?;
        }
        carts.push((id, record, revision));
    }
    let mut orders: Written<Order> = Vec::new();
    for i in 0..4 {
        let id = format!("order-{i}");
        let user = ["ann", "bob"][i % 2];
        let mut order = fixtures::order(&id, user, at(i as i64 * 10));
        let mut revision = s.orders.create(&id, &Record::new(order.clone())).await?;
        if i == 1 {
            fixtures::advance(&mut order, OrderStatus::Confirmed);
            revision = s
                .orders
                .update(&id, &Record::new(order.clone()), revision)
                .await?;
        }
        orders.push((id, Record::new(order), revision));
    }
    let mut products: Written<Product> = Vec::new();
    for i in 0..4 {
        let sku = format!("p-{i}");
        let mut product = fixtures::product(&sku, "shoes", 100 + i);
        let mut revision = s
            .products
            .create(&sku, &Record::new(product.clone()))
            .await?;
        if i == 2 {
            product.deactivate(at(5));
            revision = s
                .products
                .update(&sku, &Record::new(product.clone()), revision)
                .await?;
        }
        products.push((sku, Record::new(product), revision));
    }
    let mut inventory: Written<_> = Vec::new();
    for sku in ["p-0", "p-1"] {
        let record = Record::new(fixtures::inventory(sku));
        let revision = s.inventory.create(sku, &record).await?;
        inventory.push((sku.to_owned(), record, revision));
    }

    if let Some(server) = b.server.as_mut() {
        // The last acknowledged write is the one a lazy store would lose.
        server.kill()?;
        server.restart().await?;
        recovered(&s, "cart-0").await?;
    }

    check(&*s.carts, &carts).await?;
    check(&*s.orders, &orders).await?;
    check(&*s.products, &products).await?;
    check(&*s.inventory, &inventory).await?;

    let all = s
        .catalog
        .list_products(&CatalogQuery {
            limit: MAX_PAGE,
            ..CatalogQuery::default()
        })
        .await?;
    let want: Vec<&Product> = products.iter().map(|(_, r, _)| &r.state).collect();
    assert_eq!(all.items.iter().collect::<Vec<_>>(), want);
    let anns = s
        .order_index
        .list_orders(&OrdersQuery {
            user_id: Some("ann".to_owned()),
            limit: MAX_PAGE,
            ..OrdersQuery::default()
        })
        .await?;
    let ids: Vec<&str> = anns.items.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(ids, ["order-2", "order-0"], "newest first");
    let mut cart_ids = s.carts.ids().await?;
    cart_ids.sort();
    assert_eq!(cart_ids, ["cart-0", "cart-1", "cart-2", "cart-3"]);

    // Writes go on at the revisions read back.
    let (id, record, revision) = &carts[3];
    let next = s.carts.update(id, record, *revision).await?;
    ensure!(next > *revision);
    Ok(())
}

/// Fails with `Unavailable`, within [`FAIL_FAST`].
async fn fails_fast<T: Debug>(
    what: &str,
    call: impl Future<Output = Result<T, StoreError>>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let result = tokio::time::timeout(FAIL_FAST * 2, call)
        .await
        .with_context(|| format!("{what} hangs while the server is down"))?;
    let took = started.elapsed();
    match result {
        Err(StoreError::Unavailable(_)) => {}
        other => bail!("{what} while the server is down: expected Unavailable, got {other:?}"),
    }
    ensure!(
        took <= FAIL_FAST,
        "{what} took {took:?} to fail; it must fail fast"
    );
    Ok(())
}

/// While the server is down, loads, writes and queries fail fast as `Unavailable`. Once it
/// is back, the same stores work again by themselves. A write that failed had an unknown
/// outcome: afterwards the record is either as it was or as that write left it, never
/// anything else, and writing at the revision read back works.
pub async fn calls_fail_fast_while_the_server_is_down_and_recover(
    b: &mut Backend,
) -> anyhow::Result<()> {
    let Some(server) = b.server.as_mut() else {
        // Nothing can go down under an in-memory store.
        return Ok(());
    };
    let s = b.stores.clone();
    let before = Record::new(fixtures::cart("cart-1", "user-1"));
    let r1 = s.carts.create("cart-1", &before).await?;
    let attempted = Record::new(fixtures::cart("cart-1", "user-2"));
    let new_cart = Record::new(fixtures::cart("cart-2", "user-3"));

    server.kill()?;
    // All at once, as requests arrive at a node: each must fail on its own, fast.
    let products = CatalogQuery {
        limit: 10,
        ..CatalogQuery::default()
    };
    let orders = OrdersQuery {
        limit: 10,
        ..OrdersQuery::default()
    };
    let (load, update, create, product_list, order_list) = tokio::join!(
        fails_fast("a load", s.carts.load("cart-1")),
        fails_fast("an update", s.carts.update("cart-1", &attempted, r1)),
        fails_fast("a create", s.carts.create("cart-2", &new_cart)),
        fails_fast("a product list", s.catalog.list_products(&products)),
        fails_fast("an order list", s.order_index.list_orders(&orders)),
    );
    load.and(update)
        .and(create)
        .and(product_list)
        .and(order_list)?;

    server.restart().await?;
    recovered(&s, "cart-1").await?;

    let now = s.carts.load("cart-1").await?.context("cart-1 lost")?;
    if now.revision == r1 {
        assert_eq!(now.record, before, "nothing half-written");
    } else {
        ensure!(now.revision > r1, "the revision went back");
        assert_eq!(now.record, attempted, "nothing half-written");
    }
    if let Some(created) = s.carts.load("cart-2").await? {
        assert_eq!(created.record, new_cart, "nothing half-written");
    }
    let next = s.carts.update("cart-1", &before, now.revision).await?;
    ensure!(next > now.revision);
    Ok(())
}

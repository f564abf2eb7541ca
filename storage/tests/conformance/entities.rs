//! Rules of [`EntityStore`]: round trips, compare-and-set, races, the outbox, ids.

use super::fixtures::{self, at};
use anyhow::{Context as _, bail, ensure};
use cartwheel_domain::OrderStatus;
use cartwheel_storage::{EntityStore, Record, StoreError, Stores};
use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::Arc;
use tokio::sync::Barrier;

/// Creates `record` at `id`, loads it back and checks it is the same, at the revision the
/// create returned.
async fn round_trip<T>(
    store: &dyn EntityStore<T>,
    id: &str,
    record: Record<T>,
) -> anyhow::Result<()>
where
    T: PartialEq + Debug + Send + Sync + 'static,
{
    let revision = store.create(id, &record).await?;
    let loaded = store.load(id).await?.context("the created record loads")?;
    assert_eq!(loaded.record, record);
    assert_eq!(loaded.revision, revision);
    Ok(())
}

/// A cart with lines and a checkout record comes back exactly.
pub async fn cart_round_trip(s: &Stores) -> anyhow::Result<()> {
    let open = fixtures::cart("cart-1", "user-1");
    round_trip(&*s.carts, "cart-1", Record::new(open.clone())).await?;
    let mut checked_out = fixtures::cart("cart_2-x", "user-1");
    checked_out.check_out("idem-1", "order-1", at(50))?;
    round_trip(&*s.carts, "cart_2-x", Record::new(checked_out)).await
}

/// Orders in every status come back exactly, including a failure reason.
pub async fn order_round_trip(s: &Stores) -> anyhow::Result<()> {
    for (i, status) in OrderStatus::ALL.into_iter().enumerate() {
        let id = format!("order-{i}");
        let mut order = fixtures::order(&id, "user-1", at(i as i64));
        fixtures::advance(&mut order, status);
        assert_eq!(order.status, status);
        round_trip(&*s.orders, &id, Record::new(order)).await?;
    }
    Ok(())
}

/// Active and inactive products come back exactly.
pub async fn product_round_trip(s: &Stores) -> anyhow::Result<()> {
    round_trip(
        &*s.products,
        "sku-1",
        Record::new(fixtures::product("sku-1", "shoes", 4999)),
    )
    .await?;
    let mut inactive = fixtures::product("SKU_2", "hats", 0);
    assert!(inactive.deactivate(at(1)));
    round_trip(&*s.products, "SKU_2", Record::new(inactive)).await
}

/// Inventory with reservations and committed orders comes back exactly.
pub async fn inventory_round_trip(s: &Stores) -> anyhow::Result<()> {
    round_trip(
        &*s.inventory,
        "sku-1",
        Record::new(fixtures::inventory("sku-1")),
    )
    .await?;
    let empty = cartwheel_domain::Inventory::new("sku-2");
    round_trip(&*s.inventory, "sku-2", Record::new(empty)).await
}

/// An id never written loads as `None`.
pub async fn missing_id_loads_none(s: &Stores) -> anyhow::Result<()> {
    ensure!(s.carts.load("nobody").await?.is_none());
    ensure!(s.orders.load("nobody").await?.is_none());
    ensure!(s.products.load("nobody").await?.is_none());
    ensure!(s.inventory.load("nobody").await?.is_none());
    Ok(())
}

/// A second create of the same id is a conflict and leaves the first record in place.
pub async fn create_twice_conflicts(s: &Stores) -> anyhow::Result<()> {
    let first = Record::new(fixtures::cart("cart-1", "user-1"));
    let revision = s.carts.create("cart-1", &first).await?;
    let second = Record::new(fixtures::cart("cart-1", "user-2"));
    match s.carts.create("cart-1", &second).await {
        Err(StoreError::Conflict { key }) => assert_eq!(key, "cart-1"),
        other => bail!("expected a conflict, got {other:?}"),
    }
    let loaded = s.carts.load("cart-1").await?.context("still there")?;
    assert_eq!(loaded.record, first);
    assert_eq!(loaded.revision, revision);
    Ok(())
}

/// An update returns a larger revision that the next load reports; an update at a revision
/// that is no longer current is a conflict and changes nothing.
pub async fn update_moves_the_revision_and_a_stale_revision_conflicts(
    s: &Stores,
) -> anyhow::Result<()> {
    let mut product = fixtures::product("sku-1", "shoes", 100);
    let r1 = s
        .products
        .create("sku-1", &Record::new(product.clone()))
        .await?;
    product.deactivate(at(1));
    let r2 = s
        .products
        .update("sku-1", &Record::new(product.clone()), r1)
        .await?;
    ensure!(r2 > r1, "revision must grow: {r1} then {r2}");
    let loaded = s.products.load("sku-1").await?.context("loads")?;
    assert_eq!(loaded.record.state, product);
    assert_eq!(loaded.revision, r2);

    let stale = Record::new(fixtures::product("sku-1", "other", 1));
    match s.products.update("sku-1", &stale, r1).await {
        Err(StoreError::Conflict { key }) => assert_eq!(key, "sku-1"),
        other => bail!("expected a conflict, got {other:?}"),
    }
    let loaded = s.products.load("sku-1").await?.context("loads")?;
    assert_eq!(loaded.record.state, product);
    assert_eq!(loaded.revision, r2);

    // The current revision works again.
    let r3 = s.products.update("sku-1", &stale, r2).await?;
    ensure!(r3 > r2);
    Ok(())
}

/// An update never creates: whatever the revision, a missing id stays missing.
pub async fn update_of_a_missing_id_conflicts(s: &Stores) -> anyhow::Result<()> {
    let record = Record::new(fixtures::inventory("sku-x"));
    for revision in [0, 1, 2, 1_000] {
        match s.inventory.update("sku-x", &record, revision).await {
            Err(StoreError::Conflict { key }) => assert_eq!(key, "sku-x"),
            other => bail!("update at {revision} of a missing id: {other:?}"),
        }
    }
    ensure!(s.inventory.load("sku-x").await?.is_none());
    Ok(())
}

/// Two writers that read the same revision race to update it: every round exactly one
/// wins, and the stored record is the winner's at the winner's revision.
pub async fn racing_writers_one_wins_each_round(s: &Stores) -> anyhow::Result<()> {
    const ROUNDS: usize = 40;
    let store = s.carts.clone();
    let mut revision = store
        .create("cart-race", &Record::new(fixtures::cart("cart-race", "u")))
        .await?;
    for round in 0..ROUNDS {
        let barrier = Arc::new(Barrier::new(2));
        let tasks: Vec<_> = ["writer-a", "writer-b"]
            .into_iter()
            .map(|writer| {
                let (store, barrier) = (store.clone(), barrier.clone());
                let record = Record::new(fixtures::cart("cart-race", &format!("{writer}-{round}")));
                tokio::spawn(async move {
                    barrier.wait().await;
                    let result = store.update("cart-race", &record, revision).await;
                    (record, result)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            match task.await? {
                (record, Ok(new_revision)) => winners.push((record, new_revision)),
                (_, Err(StoreError::Conflict { .. })) => {}
                (_, Err(e)) => bail!("round {round}: unexpected error {e:?}"),
            }
        }
        ensure!(
            winners.len() == 1,
            "round {round}: {} winners",
            winners.len()
        );
        let (record, new_revision) = winners.remove(0);
        let loaded = store.load("cart-race").await?.context("loads")?;
        assert_eq!(loaded.record, record, "round {round}");
        assert_eq!(loaded.revision, new_revision, "round {round}");
        revision = new_revision;
    }
    Ok(())
}

/// Two writers racing to create the same id: exactly one succeeds.
pub async fn racing_creators_one_wins(s: &Stores) -> anyhow::Result<()> {
    for round in 0..20 {
        let id = format!("order-{round}");
        let barrier = Arc::new(Barrier::new(2));
        let tasks: Vec<_> = ["user-a", "user-b"]
            .into_iter()
            .map(|user| {
                let (store, barrier) = (s.orders.clone(), barrier.clone());
                let (id, record) = (
                    id.clone(),
                    Record::new(fixtures::order(&id, user, at(round))),
                );
                tokio::spawn(async move {
                    barrier.wait().await;
                    let result = store.create(&id, &record).await;
                    (record, result)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            match task.await? {
                (record, Ok(revision)) => winners.push((record, revision)),
                (_, Err(StoreError::Conflict { .. })) => {}
                (_, Err(e)) => bail!("round {round}: unexpected error {e:?}"),
            }
        }
        ensure!(
            winners.len() == 1,
            "round {round}: {} winners",
            winners.len()
        );
        let loaded = s.orders.load(&id).await?.context("loads")?;
        assert_eq!((loaded.record, loaded.revision), winners.remove(0));
    }
    Ok(())
}

/// Events stored with a record come back with it, in order, and an update can clear them.
pub async fn outbox_survives_round_trip(s: &Stores) -> anyhow::Result<()> {
    let events = fixtures::every_kind_of_event();
    // With a window of applied commands, including hashes that use all 63 bits.
    let applied: Vec<cartwheel_storage::Applied> = (0..20)
        .map(|i| cartwheel_storage::Applied::new(&format!("cmd-{i}"), b"add MUG-1", i))
        .fold(Vec::new(), |w, a| cartwheel_storage::Applied::push(&w, a));
    assert_eq!(applied.len(), cartwheel_storage::Applied::WINDOW);
    let record = cartwheel_storage::Record {
        state: fixtures::cart("cart-1", "user-1"),
        outbox: events.clone(),
        applied: applied.clone(),
        changes: Vec::new(),
    };
    let revision = s.carts.create("cart-1", &record).await?;
    let loaded = s.carts.load("cart-1").await?.context("loads")?;
    assert_eq!(loaded.record.outbox, events);
    assert_eq!(loaded.record.applied, applied);
    assert!(loaded.record.applied("cmd-19").is_some());
    assert!(
        loaded.record.applied("cmd-3").is_none(),
        "dropped from the window"
    );
    assert_eq!(loaded.record, record);

    // Published: the next write drops them.
    let cleared = Record::new(record.state.clone());
    s.carts.update("cart-1", &cleared, revision).await?;
    let loaded = s.carts.load("cart-1").await?.context("loads")?;
    ensure!(loaded.record.outbox.is_empty());

    let order = fixtures::order("order-1", "user-1", at(0));
    let with_events = Record {
        state: order.clone(),
        outbox: vec![cartwheel_domain::Event::OrderCreated { order }],
        applied: Vec::new(),
        changes: Vec::new(),
    };
    s.orders.create("order-1", &with_events).await?;
    let loaded = s.orders.load("order-1").await?.context("loads")?;
    assert_eq!(loaded.record, with_events);
    Ok(())
}

/// `ids` lists every created id exactly once, however often it was updated.
pub async fn ids_lists_every_id_once(s: &Stores) -> anyhow::Result<()> {
    ensure!(s.carts.ids().await?.is_empty());
    let mut expected = BTreeSet::new();
    for i in 0..30 {
        let id = format!("cart-{i:02}");
        let record = Record::new(fixtures::cart(&id, "user-1"));
        let revision = s.carts.create(&id, &record).await?;
        if i % 3 == 0 {
            s.carts.update(&id, &record, revision).await?;
        }
        expected.insert(id);
    }
    let ids = s.carts.ids().await?;
    ensure!(ids.len() == expected.len(), "duplicates or gaps: {ids:?}");
    assert_eq!(ids.into_iter().collect::<BTreeSet<_>>(), expected);
    // Other kinds are separate.
    ensure!(s.orders.ids().await?.is_empty());
    Ok(())
}

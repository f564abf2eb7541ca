//! The NATS KV backend: the conformance suite against a real nats-server, plus what only
//! this backend has (crash and restart of the server, raw documents of older and newer
//! shapes, delete markers, bucket creation, scans under concurrent writes).
//!
//! Every test starts its own nats-server (testkit) and uses its own random bucket prefix,
//! so tests run in parallel.

mod conformance;

use anyhow::{Context as _, bail, ensure};
use async_nats::jetstream::{self, stream::StorageType};
use cartwheel_bus::codec;
use cartwheel_bus::messages::{CatalogQuery, MAX_PAGE};
use cartwheel_bus::names::Names;
use cartwheel_domain::{Cart, CartLine, CartStatus, Currency, Product, Timestamp};
use cartwheel_storage::kv::{self, KvSettings, KvStore};
use cartwheel_storage::{CatalogIndex, EntityStore, Record, StoreError, Stores};
use cartwheel_testkit::{NatsServer, wait_for};
use conformance::{Backend, fixtures};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Bucket names of their own for one test.
fn fresh_names() -> Names {
    Names::new(&format!("t{}", uuid::Uuid::new_v4().simple()))
}

/// A JetStream context on `server` whose calls give up after 2 s, so a dead server shows
/// up as `Unavailable` quickly.
async fn connect(server: &NatsServer) -> anyhow::Result<jetstream::Context> {
    let client = cartwheel_testkit::connect(&server.url()).await?;
    Ok(jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(2))
        .build(client))
}

async fn open(server: &NatsServer, names: &Names) -> anyhow::Result<(jetstream::Context, Stores)> {
    let js = connect(server).await?;
    let stores = kv::open(&js, names, &KvSettings::default()).await?;
    Ok((js, stores))
}

async fn backend() -> anyhow::Result<Backend> {
    let server = NatsServer::start().await?;
    let (js, stores) = open(&server, &fresh_names()).await?;
    Ok(Backend::with_server(stores, server, js))
}

#[async_trait::async_trait]
impl conformance::Server for NatsServer {
    fn kill(&mut self) -> anyhow::Result<()> {
        NatsServer::kill(self)
    }

    async fn restart(&mut self) -> anyhow::Result<()> {
        NatsServer::restart(self).await
    }
}

conformance::suite!(backend());

/// Acknowledged writes survive a SIGKILL of nats-server: write, kill -9, restart on the same
/// port and store dir, reconnect, read back every record at its revision. While the server
/// is down, calls fail as `Unavailable` in bounded time; the old client reconnects by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_acknowledged_writes_survive_kill_9_and_restart() -> anyhow::Result<()> {
    let mut server = NatsServer::start().await?;
    let names = fresh_names();
    let (_js, stores) = open(&server, &names).await?;

    let mut written = BTreeMap::new();
    for i in 0..200 {
        let id = format!("cart-{i:03}");
        let mut record = Record::new(fixtures::cart(&id, "user-1"));
        let mut revision = stores.carts.create(&id, &record).await?;
        if i % 2 == 0 {
            record.outbox = fixtures::every_kind_of_event();
            revision = stores.carts.update(&id, &record, revision).await?;
        }
        written.insert(id, (record, revision));
    }
    // The last acknowledged write is the one most likely to be lost by a lazy store.
    server.kill()?;

    let down = tokio::time::timeout(Duration::from_secs(10), stores.carts.load("cart-000"))
        .await
        .context("a load against a dead server must not hang")?;
    ensure!(
        matches!(down, Err(StoreError::Unavailable(_))),
        "got {down:?}"
    );

    server.restart().await?;
    let (_js2, reopened) = open(&server, &names).await?;
    for (id, (record, revision)) in &written {
        let loaded = reopened
            .carts
            .load(id)
            .await?
            .with_context(|| format!("{id} lost"))?;
        assert_eq!(&loaded.record, record, "{id}");
        assert_eq!(loaded.revision, *revision, "{id}");
    }
    assert_eq!(reopened.carts.ids().await?.len(), written.len());

    wait_for(
        "the first client to reconnect",
        Duration::from_secs(15),
        || async { stores.carts.load("cart-199").await.is_ok() },
    )
    .await?;
    let (record, revision) = &written["cart-199"];
    stores.carts.update("cart-199", record, *revision).await?;
    Ok(())
}

/// A cart as stored before `Cart::checkout` existed, in a record before `outbox` existed.
#[derive(Serialize)]
struct CartV0 {
    id: String,
    user_id: String,
    items: Vec<CartLine>,
    total: i64,
    currency: Option<Currency>,
    status: CartStatus,
    version: u64,
    created_at: Timestamp,
    updated_at: Timestamp,
}

#[derive(Serialize)]
struct RecordV0<T> {
    state: T,
}

/// A record from a newer node, with fields this node does not know.
#[derive(Serialize)]
struct RecordNext {
    state: CartNext,
    outbox: Vec<cartwheel_domain::Event>,
    trace: String,
}

#[derive(Serialize)]
struct CartNext {
    #[serde(flatten)]
    cart: Cart,
    gift_wrap: bool,
}

/// Documents of an older shape (fields added since with serde defaults are missing) and of
/// a newer shape (unknown fields) both load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_older_and_newer_record_shapes_decode() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let names = fresh_names();
    let (js, stores) = open(&server, &names).await?;
    let raw = KvStore::<Cart>::open(&js, &names, "cart", &KvSettings::default()).await?;

    let now = fixtures::cart("cart-old", "user-1");
    let old = RecordV0 {
        state: CartV0 {
            id: now.id.clone(),
            user_id: now.user_id.clone(),
            items: now.items.clone(),
            total: now.total,
            currency: now.currency.clone(),
            status: now.status,
            version: now.version,
            created_at: now.created_at,
            updated_at: now.updated_at,
        },
    };
    let revision = raw.bucket().put("cart-old", codec::encode(&old)?).await?;
    let loaded = stores.carts.load("cart-old").await?.context("loads")?;
    assert_eq!(loaded.record, Record::new(now.clone()));
    assert!(loaded.record.state.checkout.is_none());
    assert_eq!(loaded.revision, revision);
    // And it can be written back in today's shape.
    stores
        .carts
        .update("cart-old", &loaded.record, revision)
        .await?;

    let next = RecordNext {
        state: CartNext {
            cart: now.clone(),
            gift_wrap: true,
        },
        outbox: Vec::new(),
        trace: "from a newer node".to_owned(),
    };
    raw.bucket().put("cart-next", codec::encode(&next)?).await?;
    let loaded = stores.carts.load("cart-next").await?.context("loads")?;
    assert_eq!(loaded.record.state, now);
    Ok(())
}

/// `open` creates the four buckets named by `Names` with file storage, is idempotent, and
/// several nodes may run it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_open_creates_named_buckets_idempotently_and_concurrently() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let names = fresh_names();
    let nodes = futures::future::try_join_all((0..4).map(|_| open(&server, &names))).await?;

    let (js, first) = &nodes[0];
    let product = fixtures::product("sku-1", "shoes", 100);
    first
        .products
        .create("sku-1", &Record::new(product.clone()))
        .await?;
    for (_, other) in &nodes {
        let loaded = other
            .products
            .load("sku-1")
            .await?
            .context("seen by every node")?;
        assert_eq!(loaded.record.state, product);
    }

    for bucket in [
        names.carts_bucket(),
        names.orders_bucket(),
        names.products_bucket(),
        names.inventory_bucket(),
    ] {
        let store = js.get_key_value(&bucket).await?;
        let config = store.stream.get_info().await?.config;
        assert_eq!(config.storage, StorageType::File, "{bucket}");
        assert_eq!(config.max_messages_per_subject, 64, "{bucket}");
        assert_eq!(config.num_replicas, 1, "{bucket}");
    }
    // Each bucket republishes what it stores to its kind's live subjects.
    for kind in cartwheel_bus::names::EVENT_KINDS {
        let bucket = names.entity_bucket(kind);
        let config = js
            .get_key_value(&bucket)
            .await?
            .stream
            .get_info()
            .await?
            .config;
        let republish = config.republish.context("republishes")?;
        assert_eq!(republish.source, format!("$KV.{bucket}.>"));
        assert_eq!(republish.destination, names.live_subjects(kind));
    }

    // Opening existing buckets again keeps their data.
    let (_, again) = open(&server, &names).await?;
    ensure!(again.products.load("sku-1").await?.is_some());

    // Nodes racing to create buckets with different settings all get a bucket: whoever
    // loses the create opens the winner's.
    let racing = fresh_names();
    let opens = (0..6).map(|i| {
        let (server, racing) = (&server, &racing);
        async move {
            let js = connect(server).await?;
            let settings = KvSettings {
                replicas: 1,
                history: 1 + (i % 2) * 4,
            };
            kv::open(&js, racing, &settings).await?;
            anyhow::Ok(())
        }
    });
    futures::future::try_join_all(opens).await?;

    for bad in [
        KvSettings {
            replicas: 1,
            history: 0,
        },
        KvSettings {
            replicas: 1,
            history: 65,
        },
        KvSettings {
            replicas: 0,
            history: 1,
        },
    ] {
        let result = kv::open(js, &fresh_names(), &bad).await;
        ensure!(result.is_err(), "{bad:?} accepted");
    }
    Ok(())
}

/// A key whose newest entry is a delete or purge marker reads as absent everywhere, and
/// can be created again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_deleted_and_purged_keys_read_as_absent() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let names = fresh_names();
    let js = connect(&server).await?;
    let products = KvStore::<Product>::open(&js, &names, "product", &KvSettings::default()).await?;
    for sku in ["p-1", "p-2", "p-3"] {
        products
            .create(sku, &Record::new(fixtures::product(sku, "shoes", 100)))
            .await?;
    }
    products.bucket().delete("p-1").await?;
    products.bucket().purge("p-2").await?;

    ensure!(products.load("p-1").await?.is_none());
    ensure!(products.load("p-2").await?.is_none());
    assert_eq!(products.ids().await?, ["p-3"]);
    let page = products
        .list_products(&CatalogQuery {
            limit: 10,
            ..CatalogQuery::default()
        })
        .await?;
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].sku, "p-3");

    let again = Record::new(fixtures::product("p-1", "hats", 5));
    let revision = products.create("p-1", &again).await?;
    let loaded = products.load("p-1").await?.context("created again")?;
    assert_eq!((loaded.record, loaded.revision), (again, revision));
    Ok(())
}

/// A value that is not a record is a codec error, for loads and for queries; an id that
/// is not a valid key loads as absent and cannot be written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_undecodable_values_and_invalid_keys() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let names = fresh_names();
    let js = connect(&server).await?;
    let products = KvStore::<Product>::open(&js, &names, "product", &KvSettings::default()).await?;
    products
        .bucket()
        .put("p-bad", vec![0xc1, 0x00].into())
        .await?;

    match products.load("p-bad").await {
        Err(StoreError::Codec(_)) => {}
        other => bail!("expected a codec error, got {other:?}"),
    }
    let q = CatalogQuery {
        limit: 10,
        ..CatalogQuery::default()
    };
    match products.list_products(&q).await {
        Err(StoreError::Codec(_)) => {}
        other => bail!("expected a codec error, got {other:?}"),
    }
    // Keys before the cursor are not decoded, so a later page does not trip over it.
    let after = CatalogQuery {
        cursor: Some("p-bad".to_owned()),
        ..q
    };
    ensure!(products.list_products(&after).await?.items.is_empty());
    assert_eq!(products.ids().await?, ["p-bad"]);

    ensure!(products.load("not a key").await?.is_none());
    let record = Record::new(fixtures::product("p-1", "shoes", 1));
    match products.create("not a key", &record).await {
        Err(StoreError::InvalidQuery(_)) => {}
        other => bail!("expected InvalidQuery, got {other:?}"),
    }
    Ok(())
}

/// A scan that runs while every key is being rewritten still returns each key exactly once
/// and finishes promptly (the consumer's pending count goes stale in that case; the scan
/// must not wait on it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_scans_during_concurrent_writes_see_every_key_once() -> anyhow::Result<()> {
    const PRODUCTS: usize = 60;
    let server = NatsServer::start().await?;
    let (_js, stores) = open(&server, &fresh_names()).await?;
    let mut expected = BTreeSet::new();
    for i in 0..PRODUCTS {
        let sku = format!("p-{i:03}");
        stores
            .products
            .create(&sku, &Record::new(fixtures::product(&sku, "shoes", 100)))
            .await?;
        expected.insert(sku);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (stores.products.clone(), stop.clone());
        tokio::spawn(async move {
            let mut writes = 0_u64;
            while !stop.load(Ordering::Relaxed) {
                for i in (0..PRODUCTS).rev() {
                    let sku = format!("p-{i:03}");
                    let current = store.load(&sku).await?.context("exists")?;
                    let mut record = current.record;
                    record.state.price += 1;
                    store.update(&sku, &record, current.revision).await?;
                    writes += 1;
                }
            }
            anyhow::Ok(writes)
        })
    };

    let q = CatalogQuery {
        limit: MAX_PAGE,
        ..CatalogQuery::default()
    };
    for round in 0..15 {
        let started = Instant::now();
        let page = stores.catalog.list_products(&q).await?;
        let ids = stores.products.ids().await?;
        let took = started.elapsed();
        let skus: Vec<String> = page.items.into_iter().map(|p| p.sku).collect();
        assert_eq!(
            skus,
            expected.iter().cloned().collect::<Vec<_>>(),
            "round {round}"
        );
        assert_eq!(ids, skus, "round {round}");
        ensure!(took < Duration::from_secs(3), "round {round} took {took:?}");
    }
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await??;
    ensure!(writes > 0, "the writer never ran");
    Ok(())
}

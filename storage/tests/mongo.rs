//! The MongoDB backend: the conformance suite against a MongoDB-wire-compatible server
//! (testkit's [`MongoServer`], which runs `secantusd-py`), plus what only this backend has
//! (the document shapes a person reads in a shell, indexes, write concerns, older
//! documents, start-up errors).
//!
//! Every test starts its own server and uses its own random collection prefix. The server
//! manages hundreds of writes a second, so the data stays small.

mod conformance;

use anyhow::{Context as _, bail, ensure};
use bson::{Bson, Document, doc};
use cartwheel_bus::names::Names;
use cartwheel_domain::{OrderStatus, Timestamp};
use cartwheel_storage::mongo::{self, Mongo, MongoSettings, MongoStore};
use cartwheel_storage::{EntityStore, Record, StoreError};
use cartwheel_testkit::{MongoServer, free_port};
use conformance::{Backend, fixtures};
use mongodb::options::Acknowledgment;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Collection names of their own for one test.
fn fresh_names() -> Names {
    Names::new(&format!("t{}", uuid::Uuid::new_v4().simple()))
}

async fn backend() -> anyhow::Result<Backend> {
    let server = MongoServer::start().await?;
    let client = Mongo::connect(&server.url(), &MongoSettings::default()).await?;
    let stores = mongo::open(&client, &fresh_names()).await?;
    Ok(Backend::with_server(stores.stores(), server, client))
}

#[async_trait::async_trait]
impl conformance::Server for MongoServer {
    fn kill(&mut self) -> anyhow::Result<()> {
        MongoServer::kill(self)
    }

    async fn restart(&mut self) -> anyhow::Result<()> {
        MongoServer::restart(self).await
    }
}

conformance::suite!(backend());

/// A server, a client and the stores of one test.
struct Fixture {
    stores: mongo::MongoStores,
    client: Mongo,
    _server: MongoServer,
}

async fn fixture() -> anyhow::Result<Fixture> {
    let server = MongoServer::start().await?;
    let client = Mongo::connect(&server.url(), &MongoSettings::default()).await?;
    let stores = mongo::open(&client, &fresh_names()).await?;
    Ok(Fixture {
        stores,
        client,
        _server: server,
    })
}

/// The raw document of `id`.
async fn raw<T>(store: &MongoStore<T>, id: &str) -> anyhow::Result<Document> {
    store
        .collection()
        .find_one(doc! { "_id": id })
        .await?
        .with_context(|| format!("no document {id}"))
}

/// Every string in `value` that reads as an instant, with its path: there must be none,
/// or a timestamp field is missing from the entity's date paths.
fn instants_left_as_strings(path: &str, value: &Bson, found: &mut Vec<String>) {
    match value {
        Bson::String(s) if Timestamp::parse_rfc3339(s).is_some() => found.push(path.to_owned()),
        Bson::Document(d) => {
            for (k, v) in d {
                instants_left_as_strings(&format!("{path}.{k}"), v, found);
            }
        }
        Bson::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                instants_left_as_strings(&format!("{path}[{i}]"), v, found);
            }
        }
        _ => {}
    }
}

fn date(doc: &Document, path: &str) -> anyhow::Result<i64> {
    let mut parts = path.split('.').peekable();
    let mut current = doc;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            return match current.get(part) {
                Some(Bson::DateTime(dt)) => Ok(dt.timestamp_millis()),
                other => bail!("{path}: expected a BSON date, found {other:?}"),
            };
        }
        current = current
            .get_document(part)
            .with_context(|| format!("{path}: no document at {part}"))?;
    }
    bail!("empty path")
}

/// Documents are what a person expects in a shell: the entity's named fields at the top
/// level, instants as BSON dates (in the outbox's events too), money and quantities as
/// integers, the storage fields `_id`, `_rev` and `_outbox`. No string that looks like an
/// instant is left in any fixture, which catches a timestamp field added to the domain
/// without a date path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_documents_are_readable_with_dates_and_integers() -> anyhow::Result<()> {
    let f = fixture().await?;
    let s = &f.stores;

    let mut cart = fixtures::cart("cart-1", "user-1");
    cart.check_out("key-1", "order-1", fixtures::at(50))?;
    let with_events = Record {
        state: cart.clone(),
        outbox: fixtures::every_kind_of_event(),
        applied: Vec::new(),
        changes: Vec::new(),
    };
    s.carts.create("cart-1", &with_events).await?;
    let mut order = fixtures::order("order-1", "user-1", fixtures::at(7));
    fixtures::advance(&mut order, OrderStatus::Failed);
    s.orders
        .create("order-1", &Record::new(order.clone()))
        .await?;
    let product = fixtures::product("sku-1", "shoes", 4999);
    s.products
        .create("sku-1", &Record::new(product.clone()))
        .await?;
    let inventory = fixtures::inventory("sku-1");
    s.inventory
        .create("sku-1", &Record::new(inventory.clone()))
        .await?;

    let c = raw(&s.carts, "cart-1").await?;
    assert_eq!(c.get_str("_id")?, "cart-1");
    assert_eq!(c.get_str("user_id")?, "user-1");
    assert_eq!(c.get_i64("total")?, cart.total);
    assert_eq!(c.get_str("status")?, "CHECKED_OUT");
    assert_eq!(c.get_i64("_rev")?, 1);
    assert_eq!(date(&c, "created_at")?, cart.created_at.millis());
    assert_eq!(date(&c, "checkout.at")?, fixtures::at(50).millis());
    let line = c.get_array("items")?[0].as_document().context("a line")?;
    assert_eq!(line.get_i64("qty")?, 2);
    assert_eq!(line.get_i64("unit_price")?, 1999);
    let outbox = c.get_array("_outbox")?;
    assert_eq!(outbox.len(), with_events.outbox.len());
    let first = outbox[0].as_document().context("an event")?;
    assert_eq!(first.get_str("type")?, "CartUpdated");
    date(first, "cart.updated_at")?;
    let order_event = outbox
        .iter()
        .filter_map(Bson::as_document)
        .find(|e| e.get_str("type") == Ok("OrderCreated"))
        .context("an OrderCreated event")?;
    date(order_event, "order.created_at")?;

    let o = raw(&s.orders, "order-1").await?;
    assert_eq!(o.get_str("status")?, "FAILED");
    assert_eq!(o.get_str("failure_reason")?, "payment declined");
    assert_eq!(o.get_i64("total")?, order.total);
    assert_eq!(date(&o, "created_at")?, order.created_at.millis());
    let p = raw(&s.products, "sku-1").await?;
    assert_eq!(p.get_i64("price")?, 4999);
    assert_eq!(p.get_str("currency")?, "EUR");
    assert!(p.get_bool("active")?);
    let i = raw(&s.inventory, "sku-1").await?;
    assert_eq!(i.get_i64("on_hand")?, 36);
    date(&i, "reservations.order-1.at")?;
    assert_eq!(
        i.get_document("committed")?
            .get_document("order-2")?
            .get_i64("qty")?,
        4
    );

    let mut found = Vec::new();
    for (name, d) in [
        ("cart", &c),
        ("order", &o),
        ("product", &p),
        ("inventory", &i),
    ] {
        instants_left_as_strings(name, &Bson::Document(d.clone()), &mut found);
    }
    ensure!(found.is_empty(), "instants stored as strings: {found:?}");

    // And it all reads back exactly.
    let loaded = s.carts.load("cart-1").await?.context("loads")?;
    assert_eq!(loaded.record, with_events);
    let loaded = s.inventory.load("sku-1").await?.context("loads")?;
    assert_eq!(loaded.record.state, inventory);
    f.client.shutdown().await;
    Ok(())
}

/// A cart stored before `Cart::checkout` and the outbox existed loads with their defaults
/// and can be written back; a document from a newer node with unknown fields loads; a
/// document that does not fit is a codec error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_older_and_newer_document_shapes_load() -> anyhow::Result<()> {
    let f = fixture().await?;
    let carts = &f.stores.carts;
    let now = fixtures::cart("cart-old", "user-1");
    let line = &now.items[0];
    let old = doc! {
        "_id": "cart-old",
        "id": "cart-old",
        "user_id": "user-1",
        "items": now.items.iter().map(|l| doc! {
            "sku": &l.sku, "qty": i64::from(l.qty), "unit_price": l.unit_price,
            "currency": l.currency.as_str(),
        }).collect::<Vec<_>>(),
        "total": now.total,
        "currency": line.currency.as_str(),
        "status": "OPEN",
        "version": 3_i64,
        "created_at": bson::DateTime::from_millis(now.created_at.millis()),
        "updated_at": bson::DateTime::from_millis(now.updated_at.millis()),
        "_rev": 5_i64,
    };
    carts.collection().insert_one(old).await?;
    let loaded = carts.load("cart-old").await?.context("loads")?;
    assert_eq!(loaded.record, Record::new(now.clone()));
    assert_eq!(loaded.revision, 5);
    assert_eq!(carts.update("cart-old", &loaded.record, 5).await?, 6);
    let rewritten = raw(carts, "cart-old").await?;
    ensure!(rewritten.contains_key("checkout") && rewritten.contains_key("_outbox"));

    let mut newer = raw(carts, "cart-old").await?;
    newer.insert("_id", "cart-next");
    newer.insert("gift_wrap", true);
    newer.insert("_trace", "from a newer node");
    carts.collection().insert_one(newer).await?;
    let loaded = carts.load("cart-next").await?.context("loads")?;
    assert_eq!(loaded.record.state, now);

    carts
        .collection()
        .insert_one(doc! { "_id": "cart-bad", "id": 5, "_rev": 1_i64 })
        .await?;
    ensure!(matches!(
        carts.load("cart-bad").await,
        Err(StoreError::Codec(_))
    ));
    f.client.shutdown().await;
    Ok(())
}

/// Index names of a collection.
async fn index_names<T>(store: &MongoStore<T>) -> anyhow::Result<BTreeSet<String>> {
    Ok(store
        .collection()
        .list_index_names()
        .await?
        .into_iter()
        .collect())
}

/// Opening creates each collection's indexes; opening again, from several nodes at once,
/// changes nothing. The unique ones refuse duplicates. An index of the same name with
/// other keys is a clear start-up error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_open_creates_indexes_idempotently() -> anyhow::Result<()> {
    let server = MongoServer::start().await?;
    let client = Mongo::connect(&server.url(), &MongoSettings::default()).await?;
    let names = fresh_names();
    let opened =
        futures::future::try_join_all((0..3).map(|_| mongo::open(&client, &names))).await?;
    let s = &opened[0];

    let products = index_names(&s.products).await?;
    for name in [
        "_id_",
        "sku_unique",
        "category_sku",
        "active_sku",
        "category_active_sku",
    ] {
        ensure!(
            products.contains(name),
            "products lack {name}: {products:?}"
        );
    }
    let orders = index_names(&s.orders).await?;
    for name in [
        "_id_",
        "created_id",
        "user_created_id",
        "status_created_id",
        "user_status_created_id",
        "checkout_unique",
    ] {
        ensure!(orders.contains(name), "orders lack {name}: {orders:?}");
    }

    // The sku is unique even under another _id; one checkout places one order.
    let p = fixtures::product("sku-1", "shoes", 1);
    s.products.create("sku-1", &Record::new(p.clone())).await?;
    match s.products.create("not-the-sku", &Record::new(p)).await {
        Err(StoreError::Conflict { .. }) => {}
        other => bail!("a second product with sku-1: {other:?}"),
    }
    let o = fixtures::order("order-1", "ann", fixtures::at(0));
    s.orders.create("order-1", &Record::new(o.clone())).await?;
    let mut twin = o.clone();
    twin.id = "order-twin".to_owned();
    match s.orders.create("order-twin", &Record::new(twin)).await {
        Err(StoreError::Conflict { .. }) => {}
        other => bail!("a second order for one checkout: {other:?}"),
    }

    // Someone else's index under one of our names, with other keys.
    let clash = fresh_names();
    client
        .database()
        .collection::<Document>(&clash.products_bucket())
        .create_index(
            mongodb::IndexModel::builder()
                .keys(doc! { "name": 1 })
                .options(
                    mongodb::options::IndexOptions::builder()
                        .name("sku_unique".to_owned())
                        .build(),
                )
                .build(),
        )
        .await?;
    match mongo::open(&client, &clash).await {
        Err(StoreError::Unavailable(m)) => {
            ensure!(m.contains(&clash.products_bucket()), "{m}");
        }
        other => bail!("a clashing index: expected Unavailable, got {other:?}"),
    }
    client.shutdown().await;
    Ok(())
}

/// Every collection (orders, products, inventory and carts) is written with `w: majority,
/// j: true` and a `wtimeout`. The database is the URI's, else
/// the default one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_write_concerns_and_database() -> anyhow::Result<()> {
    let server = MongoServer::start().await?;
    let settings = MongoSettings::default();
    let client = Mongo::connect(&server.url(), &settings).await?;
    assert_eq!(client.database().name(), "cartwheel");
    let s = mongo::open(&client, &fresh_names()).await?;
    let concerns = [
        ("orders", s.orders.collection().write_concern().cloned()),
        (
            "inventory",
            s.inventory.collection().write_concern().cloned(),
        ),
        ("products", s.products.collection().write_concern().cloned()),
        ("carts", s.carts.collection().write_concern().cloned()),
    ];
    for (what, concern) in concerns {
        let concern = concern.with_context(|| format!("{what}: no write concern"))?;
        assert_eq!(concern.w, Some(Acknowledgment::Majority), "{what}");
        assert_eq!(concern.journal, Some(true), "{what}");
        assert_eq!(concern.w_timeout, Some(settings.timeout), "{what}");
    }
    client.shutdown().await;

    let shop = Mongo::connect(&server.url_with_database("shop"), &settings).await?;
    assert_eq!(shop.database().name(), "shop");
    let s = mongo::open(&shop, &fresh_names()).await?;
    s.products
        .create(
            "sku-1",
            &Record::new(fixtures::product("sku-1", "shoes", 1)),
        )
        .await?;
    let count = shop
        .client()
        .database("shop")
        .collection::<Document>(s.products.collection().name())
        .count_documents(doc! {})
        .await?;
    assert_eq!(count, 1);
    shop.shutdown().await;
    Ok(())
}

/// A malformed URI, or a server that is not there, is a clear `Unavailable` within the
/// open timeout, not a hang; passwords never appear in the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_connect_fails_fast_on_a_bad_uri_or_no_server() -> anyhow::Result<()> {
    let settings = MongoSettings {
        timeout: Duration::from_millis(500),
        open_timeout: Duration::from_secs(2),
        ..MongoSettings::default()
    };
    for uri in [
        "",
        "mongodb://",
        "postgres://127.0.0.1/db",
        "mongodb://app:secret@127.0.0.1:1/?replicaSet=",
        "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=banana",
    ] {
        match Mongo::connect(uri, &settings).await {
            Err(StoreError::Unavailable(m)) => ensure!(!m.contains("secret"), "{m}"),
            other => bail!("{uri:?}: expected Unavailable, got {other:?}"),
        }
    }
    let started = Instant::now();
    let nobody = format!(
        "mongodb://app:secret@127.0.0.1:{}/?replicaSet=secantus",
        free_port()
    );
    match Mongo::connect(&nobody, &settings).await {
        Err(StoreError::Unavailable(m)) => {
            ensure!(m.contains("cannot reach MongoDB"), "{m}");
            ensure!(!m.contains("secret"), "{m}");
        }
        other => bail!("no server: expected Unavailable, got {other:?}"),
    }
    ensure!(
        started.elapsed() <= settings.open_timeout + Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    Ok(())
}

/// List queries run on the indexes: orders by user and status, and products by category
/// after a cursor, are index scans on the matching compound index, not collection scans,
/// as the server's plans show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_list_queries_use_the_indexes() -> anyhow::Result<()> {
    let f = fixture().await?;
    for i in 0..3 {
        let o = fixtures::order(&format!("o-{i}"), "ann", fixtures::at(i));
        f.stores
            .orders
            .create(&o.id, &Record::new(o.clone()))
            .await?;
    }
    let plan = f
        .client
        .database()
        .run_command(doc! {
            "explain": {
                "find": f.stores.orders.collection().name(),
                "filter": { "user_id": "ann", "status": "PENDING" },
                "sort": { "created_at": -1, "id": -1 },
                "limit": 2,
            },
            "verbosity": "queryPlanner",
        })
        .await?;
    // A real MongoDB answers from the index order alone; the test server adds a SORT stage
    // on top of the same index scan, so the sort stage is not checked.
    let text = plan.to_string();
    ensure!(
        text.contains("\"user_status_created_id\""),
        "not the user-status index: {text}"
    );
    ensure!(!text.contains("COLLSCAN"), "a collection scan: {text}");

    let plan = f
        .client
        .database()
        .run_command(doc! {
            "explain": {
                "find": f.stores.products.collection().name(),
                "filter": { "category": "shoes", "sku": { "$gt": "a" } },
                "sort": { "sku": 1 },
                "limit": 2,
            },
            "verbosity": "queryPlanner",
        })
        .await?;
    let text = plan.to_string();
    ensure!(
        text.contains("\"category_sku\""),
        "not the category index: {text}"
    );
    ensure!(!text.contains("COLLSCAN"), "a collection scan: {text}");
    f.client.shutdown().await;
    Ok(())
}

/// Sanity check of the helper the shape test relies on.
#[test]
fn instant_detection_finds_nested_strings() {
    let d = doc! { "a": { "b": [ { "at": "2026-01-01T00:00:00Z" } ] }, "name": "x" };
    let mut found = Vec::new();
    instants_left_as_strings("d", &Bson::Document(d), &mut found);
    assert_eq!(found, ["d.a.b[0].at"]);
}

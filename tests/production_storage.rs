//! The end-to-end scenario with production storage: `cartwheel up` on a NATS server of the
//! harness, with orders, products and inventory in MongoDB (`CARTWHEEL_STORE`, a
//! MongoDB-wire-compatible test server) and carts in Redis (`CARTWHEEL_CART_STORE`).
//! Mid-scenario each storage server is killed with SIGKILL: requests that need it fail
//! fast with 503 `unavailable`, nothing is half-written, and once it is restarted the
//! same process recovers by itself. At the end the whole process is killed and started
//! again: everything acknowledged is still there, and changes stored with events that
//! were never published (the outbox) are published when their entities activate.

mod common;

use anyhow::{Context as _, ensure};
use cartwheel_bus::names::Names;
use cartwheel_domain::{Cart, Event, OrderStatus};
use cartwheel_storage::mongo::{self, Mongo, MongoSettings};
use cartwheel_storage::redis::{Redis, RedisSettings};
use cartwheel_storage::{EntityStore, Record};
use cartwheel_testkit::{MongoServer, NatsServer, RedisServer};
use common::{Api, Proc, Ws};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// How long a request may take to fail while a storage server is down: the stores give
/// up after 2 s; the rest is the bus and the edge.
const FAIL_FAST: Duration = Duration::from_secs(6);

/// Sends a request while a storage server is down: it must fail with 503 `unavailable`
/// within [`FAIL_FAST`].
async fn unavailable(
    what: &str,
    request: impl Future<Output = anyhow::Result<(u16, Value)>>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let (status, body) = request.await?;
    let took = started.elapsed();
    ensure!(status == 503, "{what}: expected 503, got {status} {body}");
    assert_eq!(body["error"]["code"], "unavailable", "{what}: {body}");
    ensure!(took <= FAIL_FAST, "{what} took {took:?} to fail");
    Ok(())
}

/// Polls `request` until it answers `status` (the store is back and the process noticed).
async fn until_status(
    what: &str,
    status: u16,
    mut request: impl AsyncFnMut() -> anyhow::Result<(u16, Value)>,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (s, body) = request().await?;
        if s == status {
            return Ok(body);
        }
        ensure!(
            Instant::now() < deadline,
            "{what}: still {s} {body} after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn add(api: &Api, cart: &str, sku: &str, qty: u32) -> anyhow::Result<(u16, Value)> {
    api.post(
        &format!("/carts/{cart}/items"),
        json!({"sku": sku, "qty": qty}),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_scenario_on_mongodb_and_redis_survives_restarts_of_each() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let (nats, mongo, redis) = tokio::join!(
        NatsServer::start(),
        MongoServer::start(),
        RedisServer::start()
    );
    let (nats, mut mongo, mut redis) = (nats?, mongo?, redis?);
    let nats_url = nats.url();
    let store = mongo.url_with_database("shop");
    let cart_store = redis.url();
    let args = ["--nats-url", nats_url.as_str()];
    let envs = [
        ("CARTWHEEL_STORE", store.as_str()),
        ("CARTWHEEL_CART_STORE", cart_store.as_str()),
    ];
    let mut up = Proc::up(&data, &args, &envs).await?;
    let api = up.api();

    // A product, stocked; a cart watched live by a second client.
    api.product("MUG-1", 1299, 5).await?;
    let cart = api.cart("alice").await?;
    let mut watcher = Ws::connect(api.base.as_str()).await?;
    let r = watcher
        .request(json!({"id": 1, "op": "subscribe", "cart_id": cart}))
        .await?;
    assert_eq!(r["ok"], true, "{r}");
    let (s, c) = add(&api, &cart, "MUG-1", 2).await?;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["total"], 2598);
    watcher.push_at_least(&cart, 2).await?;

    // The data is where the configuration says, and only there.
    let names = Names::new("cw");
    let redis_client = Redis::open(&cart_store, &RedisSettings::default()).await?;
    let carts_in_redis = redis_client.store::<Cart>(&names.carts_bucket());
    let stored = carts_in_redis
        .load(&cart)
        .await?
        .context("cart not in Redis")?;
    assert_eq!(stored.record.state.version, 2);
    let mongo_client = Mongo::connect(&store, &MongoSettings::default()).await?;
    assert_eq!(mongo_client.database().name(), "shop");
    let in_mongo = mongo::open(&mongo_client, &names).await?;
    ensure!(
        in_mongo.products.load("MUG-1").await?.is_some(),
        "product not in MongoDB"
    );
    ensure!(
        in_mongo.inventory.load("MUG-1").await?.is_some(),
        "stock not in MongoDB"
    );
    ensure!(
        in_mongo.carts.load(&cart).await?.is_none(),
        "a cart in MongoDB"
    );
    let js = async_nats::jetstream::new(cartwheel_testkit::connect(&nats_url).await?);
    for bucket in [
        names.carts_bucket(),
        names.orders_bucket(),
        names.products_bucket(),
    ] {
        ensure!(
            js.get_key_value(&bucket).await.is_err(),
            "KV bucket {bucket} exists although nothing is kept in NATS KV"
        );
    }

    // Redis dies. Cart writes fail fast with 503 and change nothing; reads of a cart its
    // actor holds still work; the process recovers by itself once Redis is back.
    redis.kill()?;
    unavailable("adding to a cart", add(&api, &cart, "MUG-1", 1)).await?;
    unavailable(
        "creating a cart",
        api.post("/carts", json!({"user_id": "zed"})),
    )
    .await?;
    let (s, c) = api.get(&format!("/carts/{cart}")).await?;
    assert_eq!(
        (s, c["version"].as_u64()),
        (200, Some(2)),
        "nothing half-written: {c}"
    );
    redis.restart().await?;
    // The first write after the restart succeeds: the write that finds the old connection
    // broken is sent again on a fresh one (it never left, so it cannot apply twice).
    let (s, c) = add(&api, &cart, "MUG-1", 1).await?;
    assert_eq!(s, 200, "the first write after Redis is back: {c}");
    assert_eq!(c["items"][0]["qty"], 3, "{c}");
    assert_eq!(c["version"], 3, "the failed write left no trace: {c}");
    watcher.push_at_least(&cart, 3).await?;

    // Check out: CONFIRMED, stock committed; the same key again: the same order.
    let (s, order) = api.checkout(&cart, "key-1").await?;
    assert_eq!(s, 201, "{order}");
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    let order_id = order["id"].as_str().context("order id")?.to_owned();
    let (s, again) = api.checkout(&cart, "key-1").await?;
    assert!(s == 200 || s == 201, "{s} {again}");
    assert_eq!(again["id"], order_id.as_str());
    let (_, inv) = api.get("/inventory/MUG-1").await?;
    assert_eq!(
        (inv["on_hand"].as_u64(), inv["reserved"].as_u64()),
        (Some(2), Some(0)),
        "{inv}"
    );
    let stored = in_mongo
        .orders
        .load(&order_id)
        .await?
        .context("order not in MongoDB")?;
    assert_eq!(stored.record.state.status, OrderStatus::Confirmed);

    // Oversell: FAILED with a reason, nothing left reserved.
    let bob = api.cart("bob").await?;
    let (s, _) = add(&api, &bob, "MUG-1", 3).await?;
    assert_eq!(s, 200);
    let (s, failed) = api.checkout(&bob, "k").await?;
    assert_eq!(s, 201, "{failed}");
    assert_eq!(failed["status"], "FAILED", "{failed}");

    // MongoDB dies. Whatever needs it fails fast with 503; carts (in Redis) still read.
    let carol = api.cart("carol").await?;
    mongo.kill()?;
    unavailable("listing orders", api.get("/orders?user_id=alice")).await?;
    unavailable("listing products", api.get("/products")).await?;
    unavailable(
        "creating a product",
        api.post("/products", json!({"sku": "TEA-1", "name": "Tea", "description": "", "price": 450, "currency": "EUR", "category": "test", "active": true})),
    )
    .await?;
    unavailable(
        "adjusting stock",
        api.post("/inventory/MUG-1/adjust", json!({"delta": 10})),
    )
    .await?;
    // Carts price lines from the node's catalog cache, and carts live in Redis: adding
    // to a cart does not need MongoDB at all.
    let (s, c) = add(&api, &carol, "MUG-1", 1).await?;
    assert_eq!((s, c["version"].as_u64()), (200, Some(2)), "{c}");
    assert_eq!(c["items"][0]["unit_price"], 1299, "{c}");
    mongo.restart().await?;
    let (s, inv) = api
        .post("/inventory/MUG-1/adjust", json!({"delta": 10}))
        .await?;
    assert_eq!(s, 200, "the first write after MongoDB is back: {inv}");
    assert_eq!(
        inv["on_hand"], 12,
        "the failed adjustment left no trace: {inv}"
    );
    let page = until_status("listing orders after MongoDB is back", 200, async || {
        api.get("/orders?user_id=alice&status=CONFIRMED").await
    })
    .await?;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");
    let (s, c) = add(&api, &carol, "MUG-1", 1).await?;
    assert_eq!((s, c["version"].as_u64()), (200, Some(3)), "{c}");
    let (s, carol_order) = api.checkout(&carol, "carol-1").await?;
    assert_eq!(s, 201, "{carol_order}");
    assert_eq!(carol_order["status"], "CONFIRMED", "{carol_order}");

    // kill -9 the process; a new one on the same servers has everything acknowledged.
    let dave = api.cart("dave").await?;
    up.child.kill9_group()?;
    drop(up);

    // As if the process had died between a store write and its JetStream publish: a
    // change of dave's cart (Redis) and of the stock (MongoDB), each stored with its
    // event in the outbox and never published. The next activation publishes them.
    let now = cartwheel_domain::Timestamp(i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis(),
    )?);
    let product = in_mongo.products.load("MUG-1").await?.context("product")?;
    let current = carts_in_redis.load(&dave).await?.context("dave's cart")?;
    let mut changed = current.record.state;
    changed.add_item(&product.record.state, 2, now)?;
    let cart_event = Event::CartUpdated {
        cart: changed.clone(),
    };
    let pending = Record {
        state: changed,
        outbox: vec![cart_event.clone()],
        applied: Vec::new(),
        changes: Vec::new(),
    };
    carts_in_redis
        .update(&dave, &pending, current.revision)
        .await?;
    let current = in_mongo.inventory.load("MUG-1").await?.context("stock")?;
    let mut stock = current.record.state;
    stock.set_on_hand(20)?;
    let stock_event = Event::StockUpdated {
        inventory: stock.view(),
    };
    let pending = Record {
        state: stock,
        outbox: vec![stock_event.clone()],
        applied: Vec::new(),
        changes: Vec::new(),
    };
    in_mongo
        .inventory
        .update("MUG-1", &pending, current.revision)
        .await?;

    let up = Proc::up(&data, &args, &envs).await?;
    let api = up.api();
    let (_, c) = api.get(&format!("/carts/{dave}")).await?;
    assert_eq!(c["items"][0]["qty"], 2, "{c}");
    let (_, inv) = api.get("/inventory/MUG-1").await?;
    assert_eq!(
        (inv["on_hand"].as_u64(), inv["reserved"].as_u64()),
        (Some(20), Some(0)),
        "{inv}"
    );
    for event in [&cart_event, &stock_event] {
        let msg_id = event.msg_id();
        let stream = js.get_stream(names.event_stream(event.kind())).await?;
        let subject = names.event(event.kind(), event.entity_id());
        let mut published = false;
        for _ in 0..100 {
            if let Ok(m) = stream.get_last_raw_message_by_subject(&subject).await
                && m.headers.get("Nats-Msg-Id").map(|v| v.as_str()) == Some(msg_id.as_str())
            {
                published = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ensure!(published, "{msg_id} was not published from the outbox");
    }
    let (s, o) = api.get(&format!("/orders/{order_id}")).await?;
    assert_eq!((s, o["status"].as_str()), (200, Some("CONFIRMED")), "{o}");
    let (_, c) = api.get(&format!("/carts/{cart}")).await?;
    assert_eq!(c["status"], "CHECKED_OUT", "{c}");
    let (s, replay) = api.checkout(&cart, "key-1").await?;
    assert!(s == 200 || s == 201, "{s} {replay}");
    assert_eq!(replay["id"], order_id.as_str());
    assert_eq!(
        in_mongo.orders.ids().await?.len(),
        3,
        "alice's, bob's and carol's"
    );

    let status = up.terminate().await?;
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    mongo_client.shutdown().await;
    Ok(())
}

/// A node whose storage is unreachable or misconfigured exits with an error at start-up,
/// within seconds (not a hang), without printing the password of the URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_unreachable_or_malformed_storage_exits_at_once() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let dir = tempfile::tempdir()?;
    let nobody = cartwheel_testkit::free_port();
    let mongo = format!("mongodb://app:s3cret@127.0.0.1:{nobody}/?replicaSet=rs0");
    let redis = format!("redis://:s3cret@127.0.0.1:{nobody}/");
    let cases = [
        ("CARTWHEEL_STORE", mongo.as_str()),
        ("CARTWHEEL_STORE", "postgres://app:s3cret@db/x"),
        ("CARTWHEEL_STORE", "redis://127.0.0.1:6379/"),
        ("CARTWHEEL_CART_STORE", redis.as_str()),
    ];
    for (i, (variable, value)) in cases.into_iter().enumerate() {
        let started = Instant::now();
        let mut node = Proc::node(
            &nats.url(),
            dir.path().join(format!("node-{i}.log")),
            &[(variable, value), ("RUST_BACKTRACE", "0")],
        )
        .await?;
        let status = node
            .child
            .wait_exit(Duration::from_secs(15))
            .await?
            .with_context(|| format!("{variable}={value}: still running"))?;
        let log = node.child.log_contents();
        ensure!(!status.success(), "{variable}={value}: exited 0\n{log}");
        ensure!(
            started.elapsed() < Duration::from_secs(10),
            "{variable}={value}: took {:?}",
            started.elapsed()
        );
        ensure!(!log.contains("s3cret"), "a password in the log:\n{log}");
    }
    Ok(())
}

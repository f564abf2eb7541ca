//! What keeps a node writing while parts of JetStream are away: the catalog cache (no
//! product read per add), the outbox that holds unacknowledged events (a write does not
//! wait out a stream), and the peers' promises that keep leases while the leases bucket
//! elects a leader. Real nats-servers, in-memory entity storage.

use async_nats::jetstream;
use cartwheel_actors::{Ctx, Faults, Node, NodeSettings, RulesPayment};
use cartwheel_bus::events::{self, StreamSettings};
use cartwheel_bus::messages::{CartCommand, InventoryCommand};
use cartwheel_bus::{BusClient, BusConfig, Names, codec};
use cartwheel_domain::{Currency, Event, ProductDraft};
use cartwheel_testkit::{NatsCluster, NatsServer, wait_for};
use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PARTITIONS: u32 = 8;

async fn start_on(
    url: &str,
    stores: cartwheel_storage::Stores,
    settings: NodeSettings,
    streams: &StreamSettings,
) -> anyhow::Result<(Node, BusClient)> {
    let servers = url
        .split(',')
        .map(str::parse)
        .collect::<Result<Vec<async_nats::ServerAddr>, _>>()?;
    let client = cartwheel_testkit::connect_options(url)
        .ping_interval(Duration::from_secs(1))
        .connect(servers)
        .await?;
    let bus = BusClient::new(
        client.clone(),
        BusConfig {
            names: Names::new("t"),
            partitions: PARTITIONS,
            ..BusConfig::default()
        },
    );
    let ctx = Ctx {
        stores,
        bus: bus.clone(),
        js: jetstream::new(client),
        payment: Arc::new(RulesPayment::default()),
        settings,
        faults: Faults::default(),
        guard: Default::default(),
        catalog: Default::default(),
        outboxes: Default::default(),
    };
    let node = Node::start(ctx, streams).await?;
    Ok((node, bus))
}

fn draft(sku: &str, price: i64) -> anyhow::Result<ProductDraft> {
    Ok(ProductDraft {
        sku: sku.into(),
        name: sku.into(),
        description: String::new(),
        price,
        currency: Currency::new("EUR")?,
        category: "c".into(),
        active: true,
    })
}

fn rid() -> String {
    cartwheel_bus::headers::new_request_id()
}

async fn create_cart(bus: &BusClient, cart: &str) -> anyhow::Result<()> {
    bus.cart(
        cart,
        &CartCommand::Create {
            user_id: "u".into(),
        },
        &rid(),
    )
    .await?;
    Ok(())
}

async fn add(bus: &BusClient, cart: &str, sku: &str) -> anyhow::Result<cartwheel_domain::Cart> {
    Ok(bus
        .cart(
            cart,
            &CartCommand::AddItem {
                sku: sku.into(),
                qty: 1,
            },
            &rid(),
        )
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn carts_price_from_the_catalog_cache_and_a_price_change_reaches_it() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let stores = cartwheel_storage::memory::stores();
    // A product stored before the node starts is in its cache when it starts serving.
    let (first, bus) = start_on(
        &nats.url(),
        stores.clone(),
        NodeSettings::default(),
        &StreamSettings::default(),
    )
    .await?;
    bus.product(
        "A",
        &InventoryCommand::CreateProduct {
            draft: draft("A", 100)?,
        },
        "t",
    )
    .await?;
    first.shutdown(Duration::from_secs(5)).await;
    let (node, bus) = start_on(
        &nats.url(),
        stores,
        NodeSettings::default(),
        &StreamSettings::default(),
    )
    .await?;
    let cached = node.ctx().catalog.get("A");
    assert_eq!(cached.map(|p| p.price), Some(100), "filled from storage");
    create_cart(&bus, "c").await?;
    assert_eq!(add(&bus, "c", "A").await?.items[0].unit_price, 100);
    // A price change arrives through the product events.
    bus.product(
        "A",
        &InventoryCommand::ReplaceProduct {
            draft: draft("A", 250)?,
        },
        "t",
    )
    .await?;
    let catalog = node.ctx().catalog.clone();
    wait_for("the new price in the cache", Duration::from_secs(5), || {
        let catalog = catalog.clone();
        async move { catalog.get("A").is_some_and(|p| p.price == 250) }
    })
    .await?;
    create_cart(&bus, "d").await?;
    assert_eq!(add(&bus, "d", "A").await?.items[0].unit_price, 250);
    // A sku created after the start is learnt from its event too.
    bus.product(
        "B",
        &InventoryCommand::CreateProduct {
            draft: draft("B", 70)?,
        },
        "t",
    )
    .await?;
    wait_for("a new sku in the cache", Duration::from_secs(5), || {
        let catalog = catalog.clone();
        async move { catalog.get("B").is_some() }
    })
    .await?;
    node.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

/// The cart versions stored in the cart event stream for `cart`, in stream order.
async fn cart_event_versions(js: &jetstream::Context, cart: &str) -> anyhow::Result<Vec<u64>> {
    let names = Names::new("t");
    let stream = js.get_stream(names.event_stream("cart")).await?;
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: names.event("cart", cart),
            ..Default::default()
        })
        .await?;
    let pending = consumer.cached_info().num_pending;
    let mut messages = consumer.messages().await?;
    let mut versions = Vec::new();
    for _ in 0..pending {
        let Some(msg) = tokio::time::timeout(Duration::from_secs(5), messages.next()).await? else {
            break;
        };
        let event: Event = codec::decode(&msg?.payload)?;
        versions.push(event.version());
    }
    Ok(versions)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_a_stream_does_not_acknowledge_wait_in_the_outbox_and_arrive_in_order()
-> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let (node, bus) = start_on(
        &nats.url(),
        cartwheel_storage::memory::stores(),
        NodeSettings::default(),
        &StreamSettings::default(),
    )
    .await?;
    bus.product(
        "A",
        &InventoryCommand::CreateProduct {
            draft: draft("A", 100)?,
        },
        "t",
    )
    .await?;
    create_cart(&bus, "c").await?;
    let js = jetstream::new(bus.nats().clone());
    let names = Names::new("t");
    // The cart events have nowhere to go: writes still answer, and promptly.
    js.delete_stream(names.event_stream("cart")).await?;
    for expected in [2, 3] {
        let started = Instant::now();
        let cart = add(&bus, "c", "A").await?;
        assert_eq!(cart.version, expected);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "a write waited {:?} for its event",
            started.elapsed()
        );
    }
    assert_eq!(
        node.ctx().outboxes.len(),
        1,
        "the cart's events wait in the relay"
    );
    // The stream is back: the held events go out before the next write's own (or by the
    // relay, before it), in order, and nothing waits any more.
    events::ensure_streams(&js, &names, &StreamSettings::default(), &[]).await?;
    assert_eq!(add(&bus, "c", "A").await?.version, 4);
    let outboxes = node.ctx().outboxes.clone();
    wait_for("nothing left to publish", Duration::from_secs(10), || {
        let outboxes = outboxes.clone();
        async move { outboxes.is_empty() }
    })
    .await?;
    wait_for(
        "versions 2, 3, 4 in the stream",
        Duration::from_secs(10),
        || {
            let js = js.clone();
            async move {
                cart_event_versions(&js, "c")
                    .await
                    .is_ok_and(|v| v.len() >= 3)
            }
        },
    )
    .await?;
    assert_eq!(cart_event_versions(&js, "c").await?, vec![2, 3, 4]);
    node.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_the_leases_leader_drops_no_partition() -> anyhow::Result<()> {
    let mut cluster = NatsCluster::start(3).await?;
    let urls = cluster.urls();
    let stores = cartwheel_storage::memory::stores();
    let streams = StreamSettings {
        replicas: 3,
        ..StreamSettings::default()
    };
    let settings = |id: &str| NodeSettings {
        node_id: id.into(),
        lease_ttl: Duration::from_secs(3),
        ..NodeSettings::default()
    };
    let (a, bus) = start_on(&urls, stores.clone(), settings("a"), &streams).await?;
    let (b, _) = start_on(&urls, stores, settings("b"), &streams).await?;
    let (ga, gb) = (a.ctx().guard.clone(), b.ctx().guard.clone());
    let spread = {
        let (ga, gb) = (ga.clone(), gb.clone());
        move || {
            let a = (0..PARTITIONS).filter(|p| ga.holds(*p)).count();
            let b = (0..PARTITIONS).filter(|p| gb.holds(*p)).count();
            (a, b)
        }
    };
    let all_held = move || (0..PARTITIONS).all(|p| ga.holds(p) || gb.holds(p));
    // Both nodes serve their share (the second one's start moved some partitions).
    wait_for(
        "partitions spread over both nodes",
        Duration::from_secs(20),
        || {
            let (spread, all_held) = (spread.clone(), all_held.clone());
            async move {
                let (a, b) = spread();
                a > 0 && b > 0 && all_held()
            }
        },
    )
    .await?;
    bus.product(
        "A",
        &InventoryCommand::CreateProduct {
            draft: draft("A", 100)?,
        },
        "t",
    )
    .await?;
    // Kill the server that leads the leases bucket: its followers wait out an election
    // timeout (4–9 s) before they elect a new leader, and no lease can be renewed.
    let js = jetstream::new(bus.nats().clone());
    let leases = format!("KV_{}", Names::new("t").leases_bucket());
    let leader = js
        .get_stream(&leases)
        .await?
        .info()
        .await?
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .ok_or_else(|| anyhow::anyhow!("the leases bucket has no leader"))?;
    let index: usize = leader.trim_start_matches('n').parse()?;
    cluster.kill(index)?;
    let killed = Instant::now();
    // Through the election and a while after it, every partition stays held, and carts
    // keep answering.
    let mut carts = 0;
    while killed.elapsed() < Duration::from_secs(12) {
        assert!(
            all_held(),
            "a partition was dropped {:?} after the leases leader died",
            killed.elapsed()
        );
        create_cart(&bus, &format!("c{carts}")).await?;
        carts += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The leases are in the bucket again (renewed, or taken back) once it answers.
    let names = Names::new("t");
    let bucket = js.get_key_value(names.leases_bucket()).await?;
    wait_for("every lease in the bucket", Duration::from_secs(30), || {
        let (bucket, names) = (bucket.clone(), names.clone());
        async move {
            let gets = (0..PARTITIONS).map(|p| {
                let (bucket, key) = (bucket.clone(), names.lease_key(p));
                async move {
                    tokio::time::timeout(Duration::from_secs(1), bucket.get(key))
                        .await
                        .is_ok_and(|v| v.is_ok_and(|v| v.is_some()))
                }
            });
            futures::future::join_all(gets)
                .await
                .into_iter()
                .all(|ok| ok)
        }
    })
    .await?;
    assert!(all_held());
    a.shutdown(Duration::from_secs(5)).await;
    b.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

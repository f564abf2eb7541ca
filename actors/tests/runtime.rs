//! The node runtime on a real nats-server with in-memory storage: activation,
//! passivation, serialization of concurrent commands, the saga under contention, and
//! events in JetStream.

use async_nats::jetstream;
use cartwheel_actors::{Ctx, Faults, Node, NodeSettings, RulesPayment};
use cartwheel_bus::events::StreamSettings;
use cartwheel_bus::messages::{CartCommand, InventoryCommand};
use cartwheel_bus::{BusClient, BusConfig, Names, codec};
use cartwheel_domain::{Currency, Event, OrderStatus, ProductDraft};
use cartwheel_testkit::{NatsServer, wait_for};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

async fn start(nats: &NatsServer, settings: NodeSettings) -> anyhow::Result<(Node, BusClient)> {
    let client = cartwheel_testkit::connect(&nats.url()).await?;
    let bus = BusClient::new(
        client.clone(),
        BusConfig {
            names: Names::new("t"),
            partitions: 8,
            ..BusConfig::default()
        },
    );
    let ctx = Ctx {
        stores: cartwheel_storage::memory::stores(),
        bus: bus.clone(),
        js: jetstream::new(client),
        payment: Arc::new(RulesPayment::default()),
        settings,
        faults: Faults::default(),
        guard: Default::default(),
        catalog: Default::default(),
        outboxes: Default::default(),
    };
    let node = Node::start(ctx, &StreamSettings::default()).await?;
    Ok((node, bus))
}

/// Settings that passivate idle actors within a quarter of a second.
fn passivating() -> NodeSettings {
    NodeSettings {
        passivate_after: Duration::from_millis(200),
        passivation_tick: Duration::from_millis(50),
        ..NodeSettings::default()
    }
}

async fn product(bus: &BusClient, sku: &str, stock: u64) -> anyhow::Result<()> {
    let draft = ProductDraft {
        sku: sku.into(),
        name: sku.into(),
        description: String::new(),
        price: 100,
        currency: Currency::new("EUR")?,
        category: "c".into(),
        active: true,
    };
    bus.product(sku, &InventoryCommand::CreateProduct { draft }, "t")
        .await?;
    bus.stock(sku, &InventoryCommand::SetStock { on_hand: stock }, "t")
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_actors_are_passivated_and_reactivate_from_storage() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let (node, bus) = start(&nats, passivating()).await?;
    product(&bus, "A", 10).await?;
    bus.cart(
        "c1",
        &CartCommand::Create {
            user_id: "u".into(),
        },
        &cartwheel_bus::headers::new_request_id(),
    )
    .await?;
    bus.cart(
        "c1",
        &CartCommand::AddItem {
            sku: "A".into(),
            qty: 2,
        },
        &cartwheel_bus::headers::new_request_id(),
    )
    .await?;
    let carts = node.stats().cart.clone();
    assert_eq!(carts.live.load(Ordering::Relaxed), 1);
    wait_for("cart passivated", Duration::from_secs(10), || {
        let carts = carts.clone();
        async move { carts.live.load(Ordering::Relaxed) == 0 }
    })
    .await?;
    assert!(carts.passivations.load(Ordering::Relaxed) >= 1);
    let cart = bus.cart("c1", &CartCommand::Get, "t").await?;
    assert_eq!(cart.items[0].qty, 2);
    assert_eq!(carts.activations.load(Ordering::Relaxed), 2);
    node.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commands_to_one_cart_are_all_applied_in_turn() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let (node, bus) = start(&nats, NodeSettings::default()).await?;
    product(&bus, "A", 10).await?;
    bus.cart(
        "c",
        &CartCommand::Create {
            user_id: "u".into(),
        },
        &cartwheel_bus::headers::new_request_id(),
    )
    .await?;
    let adds = (0..100).map(|_| {
        let bus = bus.clone();
        async move {
            bus.cart(
                "c",
                &CartCommand::AddItem {
                    sku: "A".into(),
                    qty: 1,
                },
                &cartwheel_bus::headers::new_request_id(),
            )
            .await
        }
    });
    let results = futures::future::join_all(adds).await;
    assert!(results.iter().all(Result::is_ok));
    let cart = bus.cart("c", &CartCommand::Get, "t").await?;
    assert_eq!(cart.items[0].qty, 100);
    assert_eq!(cart.version, 101);
    node.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contended_checkouts_never_oversell_and_leave_nothing_reserved() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let (node, bus) = start(&nats, NodeSettings::default()).await?;
    product(&bus, "HOT", 10).await?;
    product(&bus, "COLD", 1000).await?;
    let n = 40;
    for i in 0..n {
        let id = format!("c{i}");
        bus.cart(
            &id,
            &CartCommand::Create {
                user_id: format!("u{i}"),
            },
            &cartwheel_bus::headers::new_request_id(),
        )
        .await?;
        bus.cart(
            &id,
            &CartCommand::AddItem {
                sku: "COLD".into(),
                qty: 1,
            },
            &cartwheel_bus::headers::new_request_id(),
        )
        .await?;
        bus.cart(
            &id,
            &CartCommand::AddItem {
                sku: "HOT".into(),
                qty: 1,
            },
            &cartwheel_bus::headers::new_request_id(),
        )
        .await?;
    }
    let checkouts = (0..n).map(|i| {
        let bus = bus.clone();
        async move {
            bus.checkout(&format!("c{i}"), "k", Duration::from_secs(10), "t")
                .await
        }
    });
    let results = futures::future::join_all(checkouts).await;
    let mut confirmed = 0;
    let mut failed = 0;
    for r in results {
        match r?.order.status {
            OrderStatus::Confirmed => confirmed += 1,
            OrderStatus::Failed => failed += 1,
            other => panic!("unsettled order: {other:?}"),
        }
    }
    assert_eq!((confirmed, failed), (10, n - 10));
    let hot = bus.stock("HOT", &InventoryCommand::GetStock, "t").await?;
    assert_eq!((hot.on_hand, hot.reserved), (0, 0));
    let cold = bus.stock("COLD", &InventoryCommand::GetStock, "t").await?;
    assert_eq!(
        (cold.on_hand, cold.reserved),
        (990, 0),
        "failed orders released their other lines"
    );
    node.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changes_are_published_to_jetstream_with_their_version() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let (node, bus) = start(&nats, NodeSettings::default()).await?;
    product(&bus, "A", 10).await?;
    bus.cart(
        "c",
        &CartCommand::Create {
            user_id: "u".into(),
        },
        &cartwheel_bus::headers::new_request_id(),
    )
    .await?;
    bus.cart(
        "c",
        &CartCommand::AddItem {
            sku: "A".into(),
            qty: 3,
        },
        &cartwheel_bus::headers::new_request_id(),
    )
    .await?;
    let js = jetstream::new(bus.nats().clone());
    let names = Names::new("t");
    let stream = js.get_stream(names.event_stream("cart")).await?;
    let msg = stream
        .get_last_raw_message_by_subject(&names.event("cart", "c"))
        .await?;
    let event: Event = codec::decode(&msg.payload)?;
    match event {
        Event::CartUpdated { cart } => {
            assert_eq!(cart.version, 2);
            assert_eq!(cart.items[0].qty, 3);
        }
        other => panic!("unexpected event {other:?}"),
    }
    let info = js
        .get_stream(names.event_stream("product"))
        .await?
        .info()
        .await?
        .state
        .messages;
    assert_eq!(info, 1, "ProductCreated");
    node.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

/// Sends a cart command with a command id, as raw NATS, and decodes the reply.
async fn raw_cart(
    bus: &BusClient,
    cart: &str,
    cmd: &CartCommand,
    command_id: &str,
) -> anyhow::Result<Result<cartwheel_domain::Cart, cartwheel_bus::ApiError>> {
    let mut headers =
        cartwheel_bus::headers::with_request_id(&cartwheel_bus::headers::new_request_id());
    headers.insert(cartwheel_bus::headers::COMMAND_ID, command_id);
    let msg = bus
        .nats()
        .request_with_headers(
            bus.subject(cartwheel_bus::names::EntityKind::Cart, cart),
            headers,
            codec::encode(cmd)?,
        )
        .await?;
    Ok(codec::decode(&msg.payload)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_repeated_command_changes_the_cart_once_also_after_passivation() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let (node, bus) = start(&nats, passivating()).await?;
    product(&bus, "A", 10).await?;
    let create = CartCommand::Create {
        user_id: "u".into(),
    };
    let first = raw_cart(&bus, "c", &create, "create-1").await?;
    assert!(first.is_ok(), "{first:?}");
    // A repeated create answers the cart instead of "already exists".
    let again = raw_cart(&bus, "c", &create, "create-1").await?;
    assert_eq!(again.as_ref().map(|c| c.version).ok(), Some(1), "{again:?}");
    let add = CartCommand::AddItem {
        sku: "A".into(),
        qty: 2,
    };
    let applied = raw_cart(&bus, "c", &add, "add-1").await??;
    assert_eq!((applied.version, applied.items[0].qty), (2, 2));
    for _ in 0..3 {
        let repeat = raw_cart(&bus, "c", &add, "add-1").await??;
        assert_eq!(repeat, applied, "a repeat answers the first result");
    }
    // The same id with another command is refused and changes nothing.
    let other = CartCommand::AddItem {
        sku: "A".into(),
        qty: 5,
    };
    let refused = raw_cart(&bus, "c", &other, "add-1").await?;
    let err = refused.expect_err("reused id");
    assert_eq!(err.code, cartwheel_domain::ErrorCode::Conflict, "{err:?}");
    // The window is stored: after passivation the repeat is still recognised.
    let carts = node.stats().cart.clone();
    wait_for("cart passivated", Duration::from_secs(10), || {
        let carts = carts.clone();
        async move { carts.live.load(Ordering::Relaxed) == 0 }
    })
    .await?;
    let repeat = raw_cart(&bus, "c", &add, "add-1").await??;
    assert_eq!(repeat, applied);
    // A new id applies.
    let next = raw_cart(&bus, "c", &add, "add-2").await??;
    assert_eq!((next.version, next.items[0].qty), (3, 4));
    // The requester's implicit command id (its request id) also de-duplicates.
    let rid = cartwheel_bus::headers::new_request_id();
    let a = bus.cart("c", &add, &rid).await?;
    let b = bus.cart("c", &add, &rid).await?;
    assert_eq!((a.version, b.version, b.items[0].qty), (4, 4, 6));
    node.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_command_swallowed_by_a_subscriber_that_never_answers_is_served_by_a_later_copy()
-> anyhow::Result<()> {
    use futures::StreamExt as _;
    let nats = NatsServer::start().await?;
    // A subscriber that takes every copy and never answers: a node paused past its lease,
    // still subscribed, while the partition's new owner is still starting.
    let raw = cartwheel_testkit::connect(&nats.url()).await?;
    let names = Names::new("t");
    let subject = BusClient::new(
        raw.clone(),
        BusConfig {
            names: names.clone(),
            partitions: 8,
            ..BusConfig::default()
        },
    )
    .subject(cartwheel_bus::names::EntityKind::Cart, "c");
    let mut swallower = raw.subscribe(subject).await?;
    raw.flush().await?;
    let requester = BusClient::new(
        cartwheel_testkit::connect(&nats.url()).await?,
        BusConfig {
            names,
            partitions: 8,
            request_timeout: Duration::from_secs(20),
            hedge_after: Duration::from_millis(300),
            ..BusConfig::default()
        },
    );
    let create = CartCommand::Create {
        user_id: "u".into(),
    };
    let sent = tokio::spawn(async move { requester.cart("c", &create, "swallowed").await });
    // The first copy reaches only the swallower; then the owner starts.
    let first = tokio::time::timeout(Duration::from_secs(10), swallower.next()).await?;
    assert!(first.is_some());
    let (node, bus) = start(&nats, NodeSettings::default()).await?;
    let cart = tokio::time::timeout(Duration::from_secs(15), sent).await???;
    assert_eq!(cart.version, 1, "{cart:?}");
    // Every copy the owner received was the same command: the cart changed once.
    let add = CartCommand::AddItem {
        sku: "A".into(),
        qty: 1,
    };
    product(&bus, "A", 10).await?;
    let after = bus.cart("c", &add, "next").await?;
    assert_eq!(after.version, 2, "{after:?}");
    node.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

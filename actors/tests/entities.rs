//! Entities hosted as data by their partition's supervisor, on a real nats-server with
//! NATS KV storage: one turn at a time per entity in arrival order, a panic failing its
//! entity alone (which then reloads from storage), and the group commit of a hot sku's
//! queued reservations (one write for many, each answered on its own).

use async_nats::jetstream;
use cartwheel_actors::{Ctx, Faults, Node, NodeSettings, RulesPayment};
use cartwheel_bus::events::StreamSettings;
use cartwheel_bus::messages::{CartCommand, InventoryCommand, Reply};
use cartwheel_bus::names::{EntityKind, partition};
use cartwheel_bus::{BusClient, BusConfig, BusError, Names, codec};
use cartwheel_domain::{Cart, Currency, ErrorCode, InventoryView, ProductDraft};
use cartwheel_storage::Stores;
use cartwheel_storage::kv::KvSettings;
use cartwheel_testkit::NatsServer;
use futures::StreamExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

const PARTITIONS: u32 = 8;

async fn start(
    nats: &NatsServer,
    faults: Faults,
) -> anyhow::Result<(Node, BusClient, Stores, async_nats::Client)> {
    let client = cartwheel_testkit::connect(&nats.url()).await?;
    let js = jetstream::new(client.clone());
    let names = Names::new("t");
    let stores = cartwheel_storage::kv::open(&js, &names, &KvSettings::default()).await?;
    let bus = BusClient::new(
        client.clone(),
        BusConfig {
            names,
            partitions: PARTITIONS,
            ..BusConfig::default()
        },
    );
    let ctx = Ctx {
        stores: stores.clone(),
        bus: bus.clone(),
        js,
        payment: Arc::new(RulesPayment::default()),
        settings: NodeSettings::default(),
        faults,
        guard: Default::default(),
        catalog: Default::default(),
        outboxes: Default::default(),
    };
    let node = Node::start(ctx, &StreamSettings::default()).await?;
    Ok((node, bus, stores, client))
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

async fn cart(bus: &BusClient, id: &str) -> anyhow::Result<Cart> {
    let cmd = CartCommand::Create {
        user_id: "u".into(),
    };
    Ok(bus
        .cart(id, &cmd, &cartwheel_bus::headers::new_request_id())
        .await?)
}

/// Publishes `cmds` to `subject` one after another on one connection (so they arrive in
/// this order), each with its own reply inbox, and returns the replies in send order.
async fn pipelined<C: serde::Serialize>(
    client: &async_nats::Client,
    subject: &str,
    cmds: &[C],
) -> anyhow::Result<Vec<bytes::Bytes>> {
    let prefix = client.new_inbox();
    let mut replies = client.subscribe(format!("{prefix}.*")).await?;
    for (i, cmd) in cmds.iter().enumerate() {
        client
            .publish_with_reply(
                subject.to_owned(),
                format!("{prefix}.{i}"),
                codec::encode(cmd)?,
            )
            .await?;
    }
    client.flush().await?;
    let mut out = vec![bytes::Bytes::new(); cmds.len()];
    for _ in 0..cmds.len() {
        let msg = tokio::time::timeout(Duration::from_secs(60), replies.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("reply subscription ended"))?;
        let i: usize = msg.subject.rsplit('.').next().unwrap_or_default().parse()?;
        out[i] = msg.payload;
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commands_to_one_entity_run_one_at_a_time_in_arrival_order() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let (node, bus, _stores, client) = start(&nats, Faults::default()).await?;
    let skus: Vec<String> = (0..40).map(|i| format!("S{i:02}")).collect();
    for sku in &skus {
        product(&bus, sku, 10).await?;
    }
    cart(&bus, "ordered").await?;
    let adds: Vec<CartCommand> = skus
        .iter()
        .map(|sku| CartCommand::AddItem {
            sku: sku.clone(),
            qty: 1,
        })
        .collect();
    let replies = pipelined(&client, &bus.subject(EntityKind::Cart, "ordered"), &adds).await?;
    for (i, body) in replies.iter().enumerate() {
        let cart: Reply<Cart> = codec::decode(body)?;
        let cart = cart.map_err(|e| anyhow::anyhow!("add {i}: {e:?}"))?;
        // The i-th command ran i-th: on the cart as the first i left it, and alone.
        assert_eq!(cart.version, i as u64 + 2, "add {i}");
        assert_eq!(cart.items.len(), i + 1, "add {i}");
        assert_eq!(cart.items[i].sku, skus[i], "add {i}");
    }
    let stored = bus.cart("ordered", &CartCommand::Get, "t").await?;
    let order: Vec<&str> = stored.items.iter().map(|l| l.sku.as_str()).collect();
    assert_eq!(order, skus.iter().map(String::as_str).collect::<Vec<_>>());
    node.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panicking_turn_fails_its_entity_alone_which_reloads_from_storage() -> anyhow::Result<()>
{
    let nats = NatsServer::start().await?;
    let faults = Faults {
        panic_on_sku: Some("BOOM".into()),
    };
    let (node, bus, _stores, client) = start(&nats, faults).await?;
    product(&bus, "OK", 1000).await?;
    product(&bus, "BOOM", 1000).await?;
    // Neighbours: carts in the same partition, served by the same supervisor.
    let p = partition("victim", PARTITIONS);
    let neighbours: Vec<String> = (0..)
        .map(|i| format!("n{i}"))
        .filter(|id| partition(id, PARTITIONS) == p)
        .take(5)
        .collect();
    cart(&bus, "victim").await?;
    for n in &neighbours {
        cart(&bus, n).await?;
    }
    let ok = CartCommand::AddItem {
        sku: "OK".into(),
        qty: 1,
    };
    bus.cart("victim", &ok, "t").await?;
    let failures = node.stats().cart.failures.load(Ordering::Relaxed);

    // The panicking command, and one queued right behind it for the same cart, while
    // the neighbours are busy too.
    let boom = CartCommand::AddItem {
        sku: "BOOM".into(),
        qty: 1,
    };
    let (subject, both) = (bus.subject(EntityKind::Cart, "victim"), [boom, ok.clone()]);
    let victim = pipelined(&client, &subject, &both);
    let others = futures::future::join_all(neighbours.iter().map(|n| {
        let (bus, ok) = (bus.clone(), ok.clone());
        async move {
            bus.cart(n, &ok, &cartwheel_bus::headers::new_request_id())
                .await
        }
    }));
    let (victim, others) = tokio::join!(victim, others);
    let victim = victim?;
    let failed: Reply<Cart> = codec::decode(&victim[0])?;
    let failed = failed
        .err()
        .ok_or_else(|| anyhow::anyhow!("the panic was answered Ok"))?;
    assert_eq!(failed.code, ErrorCode::Internal, "{failed:?}");
    // The command behind it ran on the state reloaded from storage: the panic changed
    // nothing, and nothing queued was lost with it.
    let after: Reply<Cart> = codec::decode(&victim[1])?;
    let after = after.map_err(|e| anyhow::anyhow!("queued command: {e:?}"))?;
    assert_eq!(after.version, 3);
    assert_eq!(after.items.len(), 1);
    assert_eq!(after.items[0].qty, 2);
    for (n, r) in neighbours.iter().zip(others) {
        let c = r.map_err(|e| anyhow::anyhow!("neighbour {n}: {e}"))?;
        assert_eq!(c.version, 2, "neighbour {n}");
    }
    assert_eq!(
        node.stats().cart.failures.load(Ordering::Relaxed),
        failures + 1
    );
    node.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queued_reservations_of_one_sku_are_stored_together_and_each_answered() -> anyhow::Result<()>
{
    let nats = NatsServer::start().await?;
    let (node, bus, stores, _client) = start(&nats, Faults::default()).await?;
    product(&bus, "HOT", 150).await?;
    let before = bus.stock("HOT", &InventoryCommand::GetStock, "t").await?;
    // 300 buyers of one unit each, 10 malformed requests among them, and every 50th
    // buyer asking twice.
    let reserve = |i: usize| InventoryCommand::Reserve {
        order_id: format!("o{i}"),
        qty: if i % 31 == 7 { 0 } else { 1 },
    };
    let cmds: Vec<(usize, InventoryCommand)> = (0..300)
        .map(|i| (i, reserve(i)))
        .chain((0..300).step_by(50).map(|i| (i, reserve(i))))
        .collect();
    let answers = futures::future::join_all(cmds.iter().map(|(i, cmd)| {
        let bus = bus.clone();
        async move { (*i, bus.stock("HOT", cmd, &format!("r{i}")).await) }
    }))
    .await;
    let mut held = std::collections::BTreeSet::new();
    let (mut sold_out, mut malformed) = (0, 0);
    for (i, answer) in &answers {
        match answer {
            Ok(view) => {
                assert!(view.reserved <= 150, "{view:?}");
                held.insert(*i);
            }
            Err(BusError::Remote(e)) if e.code == ErrorCode::InsufficientStock => sold_out += 1,
            Err(BusError::Remote(e)) if e.code == ErrorCode::InvalidInput => {
                assert_eq!(i % 31, 7);
                malformed += 1;
            }
            Err(e) => anyhow::bail!("reservation {i}: {e}"),
        }
    }
    let malformed_buyers = (0..300).filter(|i| i % 31 == 7).count();
    assert!(malformed >= malformed_buyers, "{malformed}");
    assert_eq!(held.len(), 150, "sold out {sold_out}");
    let view: InventoryView = bus.stock("HOT", &InventoryCommand::GetStock, "t").await?;
    assert_eq!((view.on_hand, view.reserved, view.available), (150, 150, 0));
    // What is stored holds exactly the answered reservations...
    let stored = stores
        .inventory
        .load("HOT")
        .await?
        .ok_or_else(|| anyhow::anyhow!("no stock record"))?;
    let stored_orders: std::collections::BTreeSet<usize> = stored
        .record
        .state
        .reservations
        .keys()
        .map(|o| o.trim_start_matches('o').parse())
        .collect::<Result<_, _>>()?;
    assert_eq!(stored_orders, held);
    // ...in far fewer writes than reservations (a version is one stored write).
    let writes = view.version - before.version;
    assert!(writes <= 75, "{writes} writes for 150 reservations");
    node.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

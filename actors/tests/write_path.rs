//! The write path on NATS KV, on a real nats-server: the compare-and-set write is the
//! event. The bucket republishes each stored record to the live subject, the event stream
//! sources the bucket, a refused write reaches neither, and buckets and streams of the
//! previous release (no republish, one revision, no source; events in the record's
//! outbox) are upgraded in place without losing or repeating an event.

use async_nats::jetstream::{self, kv, stream};
use cartwheel_actors::{Ctx, Faults, Node, NodeSettings, RulesPayment};
use cartwheel_bus::events::{self, StreamSettings};
use cartwheel_bus::messages::{CartCommand, InventoryCommand};
use cartwheel_bus::{BusClient, BusConfig, Names, codec};
use cartwheel_domain::{Cart, Currency, Event, ProductDraft, Timestamp};
use cartwheel_storage::kv::{KvSettings, KvStore};
use cartwheel_storage::{EntityStore, Record, StoreError};
use cartwheel_testkit::{NatsServer, wait_for};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;

async fn start(
    nats: &NatsServer,
    names: &Names,
) -> anyhow::Result<(Node, BusClient, jetstream::Context)> {
    let client = cartwheel_testkit::connect(&nats.url()).await?;
    let js = jetstream::new(client.clone());
    let stores = cartwheel_storage::kv::open(&js, names, &KvSettings::default()).await?;
    let bus = BusClient::new(
        client,
        BusConfig {
            names: names.clone(),
            partitions: 8,
            ..BusConfig::default()
        },
    );
    let ctx = Ctx {
        stores,
        bus: bus.clone(),
        js: js.clone(),
        payment: Arc::new(RulesPayment::default()),
        settings: NodeSettings::default(),
        faults: Faults::default(),
        guard: Default::default(),
        catalog: Default::default(),
        outboxes: Default::default(),
    };
    let node = Node::start(ctx, &StreamSettings::default()).await?;
    Ok((node, bus, js))
}

async fn product(bus: &BusClient, sku: &str) -> anyhow::Result<()> {
    let draft = ProductDraft {
        sku: sku.into(),
        name: sku.into(),
        description: String::new(),
        price: 250,
        currency: Currency::new("EUR")?,
        category: "c".into(),
        active: true,
    };
    bus.product(sku, &InventoryCommand::CreateProduct { draft }, "t")
        .await?;
    Ok(())
}

async fn add(bus: &BusClient, cart: &str) -> anyhow::Result<Cart> {
    let cmd = CartCommand::AddItem {
        sku: "A".into(),
        qty: 1,
    };
    Ok(bus
        .cart(cart, &cmd, &cartwheel_bus::headers::new_request_id())
        .await?)
}

/// Every event of `id` in the cart event stream, in stream order, as `msg_id`s.
async fn logged(js: &jetstream::Context, names: &Names, id: &str) -> anyhow::Result<Vec<String>> {
    let stream = js.get_stream(names.event_stream("cart")).await?;
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: names.event("cart", id),
            ..Default::default()
        })
        .await?;
    let pending = consumer.cached_info().num_pending;
    let mut messages = consumer.messages().await?.take(usize::try_from(pending)?);
    let mut out = Vec::new();
    while let Some(msg) = messages.next().await {
        let msg = msg?;
        for e in events::decode_events::<Cart>(msg.headers.as_ref(), &msg.payload)? {
            out.push(e.msg_id());
        }
    }
    Ok(out)
}

fn ids(id: &str, versions: std::ops::RangeInclusive<u64>) -> Vec<String> {
    versions
        .map(|v| format!("cart:{id}:{v}:CartUpdated"))
        .collect()
}

/// Waits until the log of `id` is `want`.
async fn log_is(
    js: &jetstream::Context,
    names: &Names,
    id: &str,
    want: &[String],
) -> anyhow::Result<()> {
    let what = format!("the event log of {id} to be {want:?}");
    let waited = wait_for(&what, Duration::from_secs(10), || async {
        logged(js, names, id).await.is_ok_and(|got| got == want)
    })
    .await;
    if waited.is_err() {
        anyhow::bail!("{what}; it is {:?}", logged(js, names, id).await?);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stored_write_is_the_event_and_a_refused_one_is_not() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let names = Names::new("t");
    let (node, bus, js) = start(&server, &names).await?;
    product(&bus, "A").await?;
    let mut live = bus.nats().subscribe(names.live("cart", "c")).await?;
    bus.nats().flush().await?;

    bus.cart(
        "c",
        &CartCommand::Create {
            user_id: "u".into(),
        },
        "t",
    )
    .await?;
    for version in [2, 3] {
        assert_eq!(add(&bus, "c").await?.version, version);
    }
    log_is(&js, &names, "c", &ids("c", 1..=3)).await?;
    // What a node keeps in the record: the state and what happened, not the events.
    let raw = KvStore::<Cart>::new(bus.nats().clone(), js.get_key_value("t_carts").await?);
    let stored = raw
        .load("c")
        .await?
        .ok_or_else(|| anyhow::anyhow!("stored"))?;
    assert!(stored.record.outbox.is_empty());
    assert_eq!(stored.record.changes.len(), 1);

    // The live subject carried each stored value, in order.
    for version in 1..=3 {
        let msg = tokio::time::timeout(Duration::from_secs(5), live.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("live subject ended"))?;
        let pushed = events::decode_events::<Cart>(msg.headers.as_ref(), &msg.payload)?;
        assert_eq!(pushed.len(), 1);
        assert_eq!(pushed[0].version(), version);
    }

    // A write the compare-and-set refuses (a stale revision, as from a node that lost the
    // partition) reaches neither the live subject nor the log.
    let mut forged = stored.record.state.clone();
    forged.version = 99;
    let mut record = Record::new(forged);
    record.changes = vec![cartwheel_domain::Change::CartUpdated];
    let refused = raw.update("c", &record, stored.revision - 1).await;
    assert!(
        matches!(refused, Err(StoreError::Conflict { .. })),
        "{refused:?}"
    );
    assert_eq!(add(&bus, "c").await?.version, 4);
    let msg = tokio::time::timeout(Duration::from_secs(5), live.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("live subject ended"))?;
    let pushed = events::decode_events::<Cart>(msg.headers.as_ref(), &msg.payload)?;
    assert_eq!(pushed[0].version(), 4, "the refused write was not pushed");
    log_is(&js, &names, "c", &ids("c", 1..=4)).await?;
    node.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_and_streams_of_the_previous_release_are_upgraded_in_place() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let names = Names::new("t");
    let client = cartwheel_testkit::connect(&server.url()).await?;
    let js = jetstream::new(client.clone());
    // What the previous release created: a one-revision bucket without republish, event
    // streams without sources, and a record whose event its node had not published yet.
    let bucket = js
        .create_key_value(kv::Config {
            bucket: names.carts_bucket(),
            history: 1,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?;
    events::ensure_streams(&js, &names, &StreamSettings::default(), &[]).await?;
    let mut old = Cart::new("old", "u", Timestamp(0))?;
    old.version = 1;
    let mut record = Record::new(old.clone());
    record.outbox = vec![Event::CartUpdated { cart: old }];
    bucket.put("old", codec::encode(&record)?).await?;

    let (node, bus, js) = start(&server, &names).await?;
    let config = js
        .get_stream(Names::kv_stream(&names.carts_bucket()))
        .await?
        .info()
        .await?
        .config
        .clone();
    assert_eq!(config.max_messages_per_subject, 64);
    assert_eq!(
        config.republish.map(|r| r.destination),
        Some(names.live_subjects("cart"))
    );
    product(&bus, "A").await?;
    // The old record's event goes out when the cart activates (its node's way); the
    // next write's through the bucket. Each once, in order.
    assert_eq!(add(&bus, "old").await?.version, 2);
    assert_eq!(add(&bus, "old").await?.version, 3);
    log_is(&js, &names, "old", &ids("old", 1..=3)).await?;
    node.shutdown(Duration::from_secs(5)).await;

    // A node of this release started again finds everything as it left it.
    let (node, bus, js) = start(&server, &names).await?;
    assert_eq!(add(&bus, "old").await?.version, 4);
    log_is(&js, &names, "old", &ids("old", 1..=4)).await?;
    node.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

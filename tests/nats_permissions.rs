//! `deploy/nats/nats-server.conf`, the least-privilege roles, on a real nats-server: a
//! node and an edge signed in as `node` and `edge` serve the whole flow, and the `edge`
//! user cannot reach JetStream, KV, the commands' subscriptions, the placement subjects,
//! the event subjects (to publish) or the commands only nodes send (a reservation, an
//! order's placement) — what anyone holding an edge's credentials could otherwise abuse.

mod common;

use cartwheel_bus::messages::{InventoryCommand, OrderCommand};
use cartwheel_bus::names::{EntityKind, Names, partition};
use cartwheel_bus::{ApiError, codec};
use cartwheel_testkit::{NatsServer, NatsServerOptions};
use common::Proc;
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

const NODE: &str = "node-pa55word-for-tests";
const EDGE: &str = "edge-pa55word-for-tests";
const ADMIN: &str = "admin-pa55word-for-tests";

async fn server() -> anyhow::Result<NatsServer> {
    let conf = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/nats/nats-server.conf");
    NatsServer::start_with(NatsServerOptions {
        extra_args: vec!["-c".into(), conf.display().to_string()],
        envs: vec![
            ("CARTWHEEL_NATS_NODE_PASSWORD".into(), NODE.into()),
            ("CARTWHEEL_NATS_EDGE_PASSWORD".into(), EDGE.into()),
            ("CARTWHEEL_NATS_ADMIN_PASSWORD".into(), ADMIN.into()),
        ],
        ..NatsServerOptions::default()
    })
    .await
}

async fn client(
    nats: &NatsServer,
    user: &str,
    password: &str,
) -> anyhow::Result<async_nats::Client> {
    Ok(async_nats::ConnectOptions::new()
        .user_and_password(user.into(), password.into())
        .connect(nats.url())
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_and_edges_serve_with_their_roles_and_the_edge_role_reaches_nothing_else()
-> anyhow::Result<()> {
    let nats = server().await?;
    let dir = tempfile::tempdir()?;
    let _node = Proc::node(
        &nats.url(),
        dir.path().join("node.log"),
        &[
            ("CARTWHEEL_NATS_USER", "node"),
            ("CARTWHEEL_NATS_PASSWORD", NODE),
        ],
    )
    .await?;
    let edge = Proc::edge_with(
        &nats.url(),
        dir.path().join("edge.log"),
        &[
            ("CARTWHEEL_NATS_USER", "edge"),
            ("CARTWHEEL_NATS_PASSWORD", EDGE),
        ],
    )
    .await?;
    edge.wait_ready().await?;
    // The whole flow through the edge: catalog, cart, checkout, a live push.
    let api = edge.api();
    api.product("MUG", 1200, 5).await?;
    let cart = api.cart("ann").await?;
    let (s, b) = api
        .post(
            &format!("/carts/{cart}/items"),
            json!({"sku": "MUG", "qty": 2}),
        )
        .await?;
    assert_eq!(s, 200, "{b}");
    let (s, order) = api.checkout(&cart, "k1").await?;
    assert!(s == 201 || s == 202, "{s} {order}");
    let mut ws = common::Ws::connect(&api.base).await?;
    let got = ws
        .request(json!({"id": 1, "op": "subscribe", "cart_id": cart}))
        .await?;
    assert!(got.get("error").is_none(), "{got}");

    // The edge's /cluster asks a node (it may not read the placement buckets itself).
    let (s, b) = api.get("/cluster").await?;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["nodes"].as_array().map(Vec::len), Some(1), "{b}");
    let (s, b) = api.get(&format!("/cluster/locate/cart/{cart}")).await?;
    assert_eq!(s, 200, "{b}");
    assert!(b["node"].is_string(), "{b}");

    // The edge's credentials, used directly, reach nothing else.
    let e = client(&nats, "edge", EDGE).await?;
    let js = async_nats::jetstream::new(e.clone());
    assert!(
        js.get_key_value("cw_carts").await.is_err(),
        "edge read a KV bucket"
    );
    assert!(
        js.get_stream("cw-cart").await.is_err(),
        "edge read a stream"
    );
    assert!(
        js.delete_stream("cw-cart").await.is_err(),
        "edge deleted a stream"
    );
    // A subscription to the commands (to read or steal them) gets nothing: the server
    // refuses it, so a command served meanwhile does not reach it.
    let mut stolen = e.subscribe("cw.cart.*.*").await?;
    e.flush().await?;
    let (s, _) = api.get(&format!("/carts/{cart}")).await?;
    assert_eq!(s, 200);
    let got = tokio::time::timeout(
        Duration::from_millis(500),
        futures::StreamExt::next(&mut stolen),
    )
    .await;
    assert!(
        !matches!(got, Ok(Some(_))),
        "the edge user received a command"
    );
    // The commands only nodes send: on the public subject a node refuses them; the
    // internal subject is closed to the edge's user. Nothing changes either way.
    let names = Names::default();
    let (_, order_json) = api
        .get(&format!(
            "/orders/{}",
            order["id"].as_str().unwrap_or_default()
        ))
        .await?;
    let mut forged: cartwheel_domain::Order = serde_json::from_value(order_json)?;
    forged.id = "forged-order".into();
    let place = codec::encode(&OrderCommand::Place {
        order: Box::new(forged),
        wait_ms: 0,
    })?;
    let p = partition("forged-order", 64);
    let reply = e
        .request(
            names.entity(EntityKind::Order, p, "forged-order"),
            place.clone(),
        )
        .await?;
    let refused: Result<serde_json::Value, ApiError> = codec::decode(&reply.payload)?;
    let refused = refused.err().map(|e| e.message).unwrap_or_default();
    assert!(refused.contains("sent by nodes only"), "{refused}");
    let internal = tokio::time::timeout(
        Duration::from_secs(3),
        e.request(
            names.entity_internal(EntityKind::Order, p, "forged-order"),
            place,
        ),
    )
    .await;
    assert!(
        !matches!(internal, Ok(Ok(_))),
        "the edge user reached an internal subject"
    );
    let (s, _) = api.get("/orders/forged-order").await?;
    assert_eq!(s, 404, "a forged order was placed");
    let reserve = codec::encode(&InventoryCommand::Reserve {
        order_id: "forged-order".into(),
        qty: 1,
    })?;
    let reply = e
        .request(
            names.entity(EntityKind::Inventory, partition("MUG", 64), "MUG"),
            reserve,
        )
        .await?;
    let refused: Result<serde_json::Value, ApiError> = codec::decode(&reply.payload)?;
    let refused = refused.err().map(|e| e.message).unwrap_or_default();
    assert!(refused.contains("sent by nodes only"), "{refused}");
    let (_, stock) = api.get("/inventory/MUG").await?;
    assert_eq!(stock["reserved"], 0, "{stock}");

    // It may not publish events (consumers would trust them).
    // After the edge's attempt, an admin publishes a marker: the first message to arrive
    // is the marker when the forged event was dropped.
    let admin_events = client(&nats, "admin", ADMIN).await?;
    let mut events = admin_events.subscribe("cw.evt.>").await?;
    admin_events.flush().await?;
    let _ = e.publish("cw.evt.cart.forged", "x".into()).await;
    e.flush().await?;
    admin_events
        .publish("cw.evt.cart.marker", "m".into())
        .await?;
    admin_events.flush().await?;
    let first = tokio::time::timeout(
        Duration::from_secs(10),
        futures::StreamExt::next(&mut events),
    )
    .await?
    .map(|m| m.subject.to_string());
    assert_eq!(
        first.as_deref(),
        Some("cw.evt.cart.marker"),
        "the edge user published an event"
    );

    // Placement subjects and KV writes are refused.
    let placement = tokio::time::timeout(
        Duration::from_secs(3),
        e.request("cw.node.node-1.leases", "x".into()),
    )
    .await;
    assert!(
        !matches!(placement, Ok(Ok(_))),
        "a placement request went through"
    );
    let _ = e.publish("$KV.cw_carts.x", "x".into()).await;
    e.flush().await?;
    let admin = client(&nats, "admin", ADMIN).await?;
    let kv = async_nats::jetstream::new(admin)
        .get_key_value("cw_carts")
        .await?;
    assert!(kv.get("x").await?.is_none(), "the edge user wrote a KV key");
    Ok(())
}

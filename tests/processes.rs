//! Separate processes: nodes and edges on one NATS server, live pushes across edges,
//! typed errors when no node serves, and graceful shutdown that loses nothing.

mod common;

use cartwheel_testkit::{NatsServer, wait_for};
use common::{Proc, WAIT, Ws};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_change_through_one_edge_reaches_subscribers_of_another() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let dir = tempfile::tempdir()?;
    let _node = Proc::node(&nats.url(), dir.path().join("node.log"), &[]).await?;
    let edge_a = Proc::edge(&nats.url(), dir.path().join("a.log")).await?;
    let edge_b = Proc::edge(&nats.url(), dir.path().join("b.log")).await?;
    edge_a.wait_ready().await?;
    edge_b.wait_ready().await?;
    let a = edge_a.api();
    a.product("TEA", 450, 10).await?;
    let cart = a.cart("dana").await?;

    // Two sockets on edge B and one on edge A watch the cart.
    let mut on_b1 = Ws::connect(&edge_b.api().base).await?;
    let mut on_b2 = Ws::connect(&edge_b.api().base).await?;
    let mut on_a = Ws::connect(&a.base).await?;
    for ws in [&mut on_b1, &mut on_b2, &mut on_a] {
        let r = ws
            .request(json!({"id": 1, "op": "subscribe", "cart_id": cart}))
            .await?;
        assert_eq!(r["ok"], true, "{r}");
    }
    // REST on edge A, then a WebSocket command on edge B.
    let (s, _) = a
        .post(
            &format!("/carts/{cart}/items"),
            json!({"sku": "TEA", "qty": 1}),
        )
        .await?;
    assert_eq!(s, 200);
    let r = on_b1
        .request(json!({"id": 2, "op": "add_item", "cart_id": cart, "sku": "TEA", "qty": 2}))
        .await?;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["cart"]["items"][0]["qty"], 3);
    // on_b1 saw version 3 in its own reply; whether its push of 3 also comes depends on
    // which arrives first (a push not newer than what the socket saw is dropped), so only
    // the other subscribers are waited on.
    for ws in [&mut on_b2, &mut on_a] {
        let p = ws.push_at_least(&cart, 3).await?;
        assert_eq!(p["cart"]["items"][0]["qty"], 3);
    }
    // A bad frame gets a typed error and the socket stays usable.
    on_a.send_text("{nonsense").await?;
    let e = on_a.reply(serde_json::Value::Null).await?;
    assert_eq!(e["ok"], false);
    assert_eq!(e["error"]["code"], "invalid_input");
    let r = on_a
        .request(json!({"id": 9, "op": "get", "cart_id": cart}))
        .await?;
    assert_eq!(r["cart"]["version"], 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_and_a_skus_stock_are_pushed_as_they_change() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let dir = tempfile::tempdir()?;
    let _node = Proc::node(&nats.url(), dir.path().join("node.log"), &[]).await?;
    let edge = Proc::edge(&nats.url(), dir.path().join("edge.log")).await?;
    edge.wait_ready().await?;
    let api = edge.api();
    api.product("KETTLE", 3000, 5).await?;
    let mut ws = Ws::connect(&api.base).await?;
    let r = ws
        .request(json!({"id": 1, "op": "subscribe_stock", "sku": "KETTLE"}))
        .await?;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["stock"]["available"], 5, "{r}");
    let bad = ws
        .request(json!({"id": 2, "op": "subscribe_stock", "sku": "a.>"}))
        .await?;
    assert_eq!(bad["error"]["code"], "invalid_input", "{bad}");
    let missing = ws
        .request(json!({"id": 3, "op": "subscribe_order", "order_id": "nope"}))
        .await?;
    assert_eq!(missing["error"]["code"], "not_found", "{missing}");

    let cart = api.cart("erin").await?;
    let (s, _) = api
        .post(
            &format!("/carts/{cart}/items"),
            json!({"sku": "KETTLE", "qty": 2}),
        )
        .await?;
    assert_eq!(s, 200);
    let (s, placed) = api.checkout(&cart, "k1").await?;
    assert!((200..=202).contains(&s), "{s} {placed}");
    let order_id = placed["id"].as_str().unwrap().to_string();
    let r = ws
        .request(json!({"id": 4, "op": "subscribe_order", "order_id": order_id}))
        .await?;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["order"]["id"], order_id.as_str(), "{r}");
    // The saga confirms the order (as a push unless the reply already showed it), and
    // takes the stock: the latest stock is pushed within a second.
    if r["order"]["status"] != "CONFIRMED" {
        ws.push_where(|p| p["type"] == "order" && p["order"]["status"] == "CONFIRMED")
            .await?;
    }
    let p = ws
        .push_where(|p| p["type"] == "stock" && p["stock"]["on_hand"] == 3)
        .await?;
    assert_eq!(p["stock"]["sku"], "KETTLE");
    // A cancellation is pushed too, and returns the stock.
    let (s, c) = api
        .post(&format!("/orders/{order_id}/cancel"), json!({}))
        .await?;
    assert_eq!(s, 200, "{c}");
    ws.push_where(|p| p["type"] == "order" && p["order"]["status"] == "CANCELLED")
        .await?;
    ws.push_where(|p| p["type"] == "stock" && p["stock"]["on_hand"] == 5)
        .await?;
    // Order versions only grow on the socket; stock pushes are at least a second apart
    // in the hub, so a few at most arrived for the four stock changes.
    let versions: Vec<u64> = ws
        .pushes
        .iter()
        .filter(|p| p["type"] == "order")
        .map(|p| p["order"]["version"].as_u64().unwrap())
        .collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    // Unsubscribed, the sku's changes stop reaching the socket.
    let r = ws
        .request(json!({"id": 5, "op": "unsubscribe_stock", "sku": "KETTLE"}))
        .await?;
    assert_eq!(r["ok"], true, "{r}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_node_requests_fail_fast_with_unavailable() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let dir = tempfile::tempdir()?;
    let edge = Proc::edge(&nats.url(), dir.path().join("edge.log")).await?;
    let api = edge.api();
    let started = std::time::Instant::now();
    let (s, body) = api.get("/carts/abc").await?;
    assert_eq!(s, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let (s, _) = api.get("/readyz").await?;
    assert_eq!(s, 503);
    let (s, _) = api.get("/healthz").await?;
    assert_eq!(s, 200);

    // A node arrives: the same edge recovers by itself.
    let _node = Proc::node(&nats.url(), dir.path().join("node.log"), &[]).await?;
    edge.wait_ready().await?;
    let (s, body) = api.get("/carts/abc").await?;
    assert_eq!(s, 404, "{body}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panicking_actor_answers_with_an_error_and_restarts_from_stored_state()
-> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let dir = tempfile::tempdir()?;
    let _node = Proc::node(
        &nats.url(),
        dir.path().join("node.log"),
        &[("CARTWHEEL_FAULT_PANIC_SKU", "BOOM")],
    )
    .await?;
    let edge = Proc::edge(&nats.url(), dir.path().join("edge.log")).await?;
    edge.wait_ready().await?;
    let api = edge.api();
    api.product("OK", 100, 5).await?;
    api.product("BOOM", 100, 5).await?;
    let cart = api.cart("erin").await?;
    let (s, _) = api
        .post(
            &format!("/carts/{cart}/items"),
            json!({"sku": "OK", "qty": 2}),
        )
        .await?;
    assert_eq!(s, 200);
    let (s, body) = api
        .post(
            &format!("/carts/{cart}/items"),
            json!({"sku": "BOOM", "qty": 1}),
        )
        .await?;
    assert_eq!(s, 500, "{body}");
    assert_eq!(body["error"]["code"], "internal");
    // The next request activates a fresh actor from storage: the stored state is intact.
    let (s, c) = api.get(&format!("/carts/{cart}")).await?;
    assert_eq!(s, 200);
    assert_eq!(c["version"], 2);
    assert_eq!(c["items"].as_array().unwrap().len(), 1);
    let (s, c) = api
        .post(
            &format!("/carts/{cart}/items"),
            json!({"sku": "OK", "qty": 1}),
        )
        .await?;
    assert_eq!(s, 200);
    assert_eq!(c["items"][0]["qty"], 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_declined_payment_fails_the_order_and_releases_the_stock() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let dir = tempfile::tempdir()?;
    let _node = Proc::node(
        &nats.url(),
        dir.path().join("node.log"),
        &[("CARTWHEEL_PAYMENT_DECLINE_ABOVE", "10000")],
    )
    .await?;
    let edge = Proc::edge(&nats.url(), dir.path().join("edge.log")).await?;
    edge.wait_ready().await?;
    let api = edge.api();
    api.product("TV", 60000, 3).await?;
    api.product("CABLE", 500, 3).await?;
    let big = api.cart("frank").await?;
    api.post(
        &format!("/carts/{big}/items"),
        json!({"sku": "TV", "qty": 1}),
    )
    .await?;
    api.post(
        &format!("/carts/{big}/items"),
        json!({"sku": "CABLE", "qty": 1}),
    )
    .await?;
    let (s, order) = api.checkout(&big, "k").await?;
    assert_eq!(s, 201, "{order}");
    assert_eq!(order["status"], "FAILED");
    assert!(
        order["failure_reason"]
            .as_str()
            .unwrap()
            .contains("declined"),
        "{order}"
    );
    for sku in ["TV", "CABLE"] {
        let (_, inv) = api.get(&format!("/inventory/{sku}")).await?;
        assert_eq!(
            (inv["on_hand"].as_u64(), inv["reserved"].as_u64()),
            (Some(3), Some(0)),
            "{sku}: {inv}"
        );
    }
    let small = api.cart("frank").await?;
    api.post(
        &format!("/carts/{small}/items"),
        json!({"sku": "CABLE", "qty": 2}),
    )
    .await?;
    let (_, order) = api.checkout(&small, "k").await?;
    assert_eq!(order["status"], "CONFIRMED");
    let (_, inv) = api.get("/inventory/CABLE").await?;
    assert_eq!(inv["on_hand"], 1);
    let (s, cancelled) = api
        .post(
            &format!("/orders/{}/cancel", order["id"].as_str().unwrap()),
            json!({}),
        )
        .await?;
    assert_eq!(s, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "CANCELLED");
    let (_, inv) = api.get("/inventory/CABLE").await?;
    assert_eq!(inv["on_hand"], 3, "cancel returns the stock");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_loses_no_acknowledged_write() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let up = Proc::up(&data, &[], &[]).await?;
    let api = up.api();
    api.product("PEN", 100, 1000).await?;
    let mut carts = Vec::new();
    for i in 0..8 {
        carts.push(api.cart(&format!("user{i}")).await?);
    }
    // Writers add one unit at a time and count what was acknowledged.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for cart in carts.clone() {
        let api = api.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match api
                    .post(
                        &format!("/carts/{cart}/items"),
                        json!({"sku": "PEN", "qty": 1}),
                    )
                    .await
                {
                    Ok((200, _)) => acked += 1,
                    _ => break,
                }
            }
            (cart, acked)
        }));
    }
    wait_for("some writes", WAIT, || async {
        let (_, c) = api
            .get(&format!("/carts/{}", carts[0]))
            .await
            .unwrap_or_default();
        c["version"].as_u64().unwrap_or(0) > 5
    })
    .await?;
    let status = up.terminate().await?;
    assert!(status.success(), "{status}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    for t in tasks {
        acked.push(t.await?);
    }
    let up = Proc::up(&data, &[], &[]).await?;
    let api = up.api();
    for (cart, n) in acked {
        let (_, c) = api.get(&format!("/carts/{cart}")).await?;
        let qty = c["items"][0]["qty"].as_u64().unwrap_or(0);
        assert!(qty >= n, "cart {cart}: {n} acknowledged, {qty} stored");
    }
    Ok(())
}

/// A client that resends (after a timeout it could not tell from a failure) changes the
/// cart once: REST writes and cart creation under an `Idempotency-Key`, WebSocket frames
/// under their id, and also after the node that applied them was killed and replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resent_cart_writes_change_the_cart_once_across_a_node_crash() -> anyhow::Result<()> {
    use reqwest::Method;
    let nats = NatsServer::start().await?;
    let dir = tempfile::tempdir()?;
    let node_env = [
        ("CARTWHEEL_NODE_ID", "n1"),
        ("CARTWHEEL_LEASE_TTL_MS", "2000"),
    ];
    let mut node = Proc::node(&nats.url(), dir.path().join("node.log"), &node_env).await?;
    let edge = Proc::edge(&nats.url(), dir.path().join("edge.log")).await?;
    edge.wait_ready().await?;
    let api = edge.api();
    api.product("JAM", 300, 10).await?;

    // Cart creation: the same key answers the same cart (201 both times).
    let body = json!({"user_id": "ines"});
    let (s1, c1) = api
        .keyed(Method::POST, "/carts", body.clone(), "new-cart-1")
        .await?;
    let (s2, c2) = api
        .keyed(Method::POST, "/carts", body.clone(), "new-cart-1")
        .await?;
    assert_eq!((s1, s2), (201, 201), "{c1} {c2}");
    assert_eq!(c1, c2);
    let cart = c1["id"].as_str().unwrap_or_default().to_string();
    let (_, other) = api
        .keyed(Method::POST, "/carts", body, "new-cart-2")
        .await?;
    assert_ne!(other["id"], c1["id"], "another key, another cart");

    // An add resent three times is applied once and answered with the first result.
    let items = format!("/carts/{cart}/items");
    let add = json!({"sku": "JAM", "qty": 2});
    let (s, first) = api
        .keyed(Method::POST, &items, add.clone(), "add-1")
        .await?;
    assert_eq!(s, 200, "{first}");
    for _ in 0..3 {
        let (s, again) = api
            .keyed(Method::POST, &items, add.clone(), "add-1")
            .await?;
        assert_eq!((s, &again), (200, &first));
    }
    // The same key with another body: 409, nothing changed.
    let (s, e) = api
        .keyed(
            Method::POST,
            &items,
            json!({"sku": "JAM", "qty": 9}),
            "add-1",
        )
        .await?;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{e}"
    );
    // A bad key is a 400 before anything is sent.
    let (s, e) = api.keyed(Method::POST, &items, add.clone(), "").await?;
    assert_eq!(s, 400, "{e}");

    // A WebSocket frame resent under the same id on the same socket: once.
    let mut ws = Ws::connect(&api.base).await?;
    let frame = json!({"id": "w-1", "op": "add_item", "cart_id": cart, "sku": "JAM", "qty": 1});
    let r1 = ws.request(frame.clone()).await?;
    let r2 = ws.request(frame.clone()).await?;
    assert_eq!(r1["ok"], true, "{r1}");
    assert_eq!(r1["cart"], r2["cart"]);
    assert_eq!(r1["cart"]["items"][0]["qty"], 3, "{r1}");

    // The node dies; its successor still knows what was applied.
    node.child.kill9()?;
    node = Proc::node(&nats.url(), dir.path().join("node2.log"), &node_env).await?;
    let (s, again) = api
        .keyed(Method::POST, &items, add.clone(), "add-1")
        .await?;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["items"][0]["qty"], 3, "not applied again: {again}");
    let (s, next) = api.keyed(Method::POST, &items, add, "add-2").await?;
    assert_eq!(
        (s, next["items"][0]["qty"].as_u64()),
        (200, Some(5)),
        "{next}"
    );
    drop(node);
    Ok(())
}

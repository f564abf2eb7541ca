//! The end-to-end scenario of the v1 contract against `cartwheel up`, including a
//! `kill -9` and a restart on the same data dir.

mod common;

use common::{Proc, Ws};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_whole_scenario_survives_kill_9() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let mut up = Proc::up(&data, &[], &[]).await?;
    let api = up.api();

    // A product, stocked.
    api.product("MUG-1", 1299, 5).await?;
    let (s, inv) = api.get("/inventory/MUG-1").await?;
    assert_eq!(s, 200);
    assert_eq!(inv["on_hand"], 5);
    assert_eq!(inv["available"], 5);

    // A cart, watched live by a second client over WebSocket.
    let cart = api.cart("alice").await?;
    let mut watcher = Ws::connect(api.base.as_str()).await?;
    let r = watcher
        .request(json!({"id": 1, "op": "subscribe", "cart_id": cart}))
        .await?;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["cart"]["version"], 1);

    // Fill it over REST: the watcher sees every change.
    let (s, c) = api
        .post(
            &format!("/carts/{cart}/items"),
            json!({"sku": "MUG-1", "qty": 2}),
        )
        .await?;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["total"], 2598);
    assert_eq!(c["items"][0]["unit_price"], 1299);
    let push = watcher.push_at_least(&cart, 2).await?;
    assert_eq!(push["type"], "cart");
    assert_eq!(push["cart"]["items"][0]["qty"], 2);

    // Change it over WebSocket (another client): the watcher sees that too.
    let mut writer = Ws::connect(api.base.as_str()).await?;
    let r = writer
        .request(json!({"id": 7, "op": "set_qty", "cart_id": cart, "sku": "MUG-1", "qty": 3}))
        .await?;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["cart"]["total"], 3 * 1299);
    let push = watcher.push_at_least(&cart, 3).await?;
    assert_eq!(push["cart"]["items"][0]["qty"], 3);
    let versions: Vec<u64> = watcher
        .pushes
        .iter()
        .filter_map(|p| p["cart"]["version"].as_u64())
        .collect();
    assert!(
        versions.windows(2).all(|w| w[0] < w[1]),
        "versions only grow: {versions:?}"
    );

    // Check out: CONFIRMED, stock committed.
    let (s, order) = api.checkout(&cart, "key-1").await?;
    assert_eq!(s, 201, "{order}");
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    assert_eq!(order["total"], 3 * 1299);
    let order_id = order["id"].as_str().unwrap().to_string();
    let (_, inv) = api.get("/inventory/MUG-1").await?;
    assert_eq!(
        (inv["on_hand"].as_u64(), inv["reserved"].as_u64()),
        (Some(2), Some(0)),
        "{inv}"
    );
    let push = watcher.push_at_least(&cart, 4).await?;
    assert_eq!(push["cart"]["status"], "CHECKED_OUT");

    // Same key again: the same order, nothing taken twice.
    let (s, again) = api.checkout(&cart, "key-1").await?;
    assert!(s == 200 || s == 201, "{s} {again}");
    assert_eq!(again["id"], order_id.as_str());
    let (_, inv) = api.get("/inventory/MUG-1").await?;
    assert_eq!(inv["on_hand"], 2);
    // A different key on a checked-out cart is a conflict.
    let (s, e) = api.checkout(&cart, "key-2").await?;
    assert_eq!(s, 409, "{e}");

    // Oversell: FAILED with a reason, nothing left reserved.
    let cart2 = api.cart("bob").await?;
    let (s, _) = api
        .post(
            &format!("/carts/{cart2}/items"),
            json!({"sku": "MUG-1", "qty": 3}),
        )
        .await?;
    assert_eq!(s, 200);
    let (s, failed) = api.checkout(&cart2, "k").await?;
    assert_eq!(s, 201, "{failed}");
    assert_eq!(failed["status"], "FAILED");
    assert!(
        failed["failure_reason"]
            .as_str()
            .unwrap()
            .contains("insufficient_stock"),
        "{failed}"
    );
    let (_, inv) = api.get("/inventory/MUG-1").await?;
    assert_eq!(
        (inv["on_hand"].as_u64(), inv["reserved"].as_u64()),
        (Some(2), Some(0)),
        "{inv}"
    );

    // Bad input: 4xx JSON naming the problem, nothing changed.
    let bad = [
        api.post(&format!("/carts/{cart2}/items"), json!({"sku": "MUG-1", "qty": 0})).await?,
        api.post(&format!("/carts/{cart2}/items"), json!({"sku": "MUG-1", "qty": -1})).await?,
        api.post(&format!("/carts/{cart2}/items"), json!({"sku": "NOPE", "qty": 1})).await?,
        api.post_raw("/carts", "{not json").await?,
        api.get("/carts/does-not-exist").await?,
        api.post("/products", json!({"sku": "X", "name": "x".repeat(500), "price": 1, "currency": "EUR", "category": "c"})).await?,
        api.post("/products", json!({"sku": "Y", "name": "y", "price": -5, "currency": "EUR", "category": "c"})).await?,
    ];
    for (status, body) in &bad {
        assert!((400..500).contains(status), "{status} {body}");
        assert!(body["error"]["code"].is_string(), "{body}");
        assert!(body["error"]["message"].is_string(), "{body}");
    }
    assert_eq!(bad[0].1["error"]["code"], "invalid_input");
    assert_eq!(bad[2].1["error"]["code"], "not_found");
    assert_eq!(bad[4].1["error"]["code"], "not_found");
    let (_, c2) = api.get(&format!("/carts/{cart2}")).await?;
    assert_eq!(c2["status"], "CHECKED_OUT");

    // Orders by user and status, from the read side.
    let (s, page) = api.get("/orders?user_id=alice&status=CONFIRMED").await?;
    assert_eq!(s, 200, "{page}");
    assert_eq!(page["items"].as_array().unwrap().len(), 1);

    // An open cart with content, to check after the crash.
    let cart3 = api.cart("carol").await?;
    api.post(
        &format!("/carts/{cart3}/items"),
        json!({"sku": "MUG-1", "qty": 1}),
    )
    .await?;

    // kill -9 the whole thing (the process and its private nats-server), restart on the
    // same data dir: everything acknowledged is there.
    up.child.kill9_group()?;
    drop(up);
    let up = Proc::up(&data, &[], &[]).await?;
    let api = up.api();
    let (s, o) = api.get(&format!("/orders/{order_id}")).await?;
    assert_eq!(s, 200);
    assert_eq!(o["status"], "CONFIRMED");
    let (_, c3) = api.get(&format!("/carts/{cart3}")).await?;
    assert_eq!(c3["items"][0]["qty"], 1, "{c3}");
    assert_eq!(c3["version"], 2);
    let (_, inv) = api.get("/inventory/MUG-1").await?;
    assert_eq!(
        (inv["on_hand"].as_u64(), inv["reserved"].as_u64()),
        (Some(2), Some(0)),
        "{inv}"
    );
    let (s, replay) = api.checkout(&cart, "key-1").await?;
    assert!(s == 200 || s == 201, "{s} {replay}");
    assert_eq!(
        replay["id"],
        order_id.as_str(),
        "the same key returns the same order after a restart"
    );

    let status = up.terminate().await?;
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    Ok(())
}

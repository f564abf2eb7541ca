//! Outbound webhooks end to end: a node and an edge on a real nats-server, and real HTTP
//! receivers started here (axum on loopback, which the nodes are told to allow). Every
//! signature is checked with the `standardwebhooks` crate, independently of ours.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: fail loudly

mod common;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use cartwheel_testkit::{NatsServer, wait_for};
use common::{Api, Proc};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a test waits for something that should happen within a second or two.
const LONG: Duration = Duration::from_secs(30);

/// The nodes' webhook settings in these tests: three attempts 200 and 400 ms apart, a
/// 2-second request timeout, loopback allowed.
const NODE_ENV: &[(&str, &str)] = &[
    ("CARTWHEEL_WEBHOOK_ALLOW_NETWORKS", "127.0.0.0/8"),
    ("CARTWHEEL_WEBHOOK_SCHEDULE", "0,200ms,400ms"),
    ("CARTWHEEL_WEBHOOK_TIMEOUT_MS", "2000"),
    ("CARTWHEEL_WEBHOOK_BREAKER_COOLDOWN_MS", "200"),
];

/// What one receiver path does with a request.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// 200.
    Ok,
    /// Answer this status.
    Status(u16),
    /// 500 for the first `n` requests, then 200.
    FailFirst(usize),
    /// Never answer (until the test ends).
    Hang,
}

/// One request a receiver got.
#[derive(Clone, Debug)]
struct Received {
    at: Instant,
    headers: HeaderMap,
    body: Bytes,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    fn id(&self) -> String {
        self.headers["webhook-id"].to_str().unwrap().to_string()
    }
}

#[derive(Default)]
struct Paths {
    modes: HashMap<String, Mode>,
    got: HashMap<String, Vec<Received>>,
}

/// An HTTP receiver on loopback with a behaviour per path.
#[derive(Clone)]
struct Receiver {
    base: String,
    paths: Arc<Mutex<Paths>>,
}

async fn receive(
    State(paths): State<Arc<Mutex<Paths>>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let mode = {
        let mut p = paths.lock().unwrap();
        let mode = p.modes.get(&path).copied().unwrap_or(Mode::Ok);
        let got = p.got.entry(path.clone()).or_default();
        got.push(Received {
            at: Instant::now(),
            headers,
            body,
        });
        match mode {
            Mode::FailFirst(n) if got.len() <= n => Mode::Status(500),
            Mode::FailFirst(_) => Mode::Ok,
            m => m,
        }
    };
    match mode {
        Mode::Ok | Mode::FailFirst(_) => (StatusCode::OK, "thanks"),
        Mode::Status(s) => (StatusCode::from_u16(s).unwrap(), "no thanks"),
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            (StatusCode::OK, "late")
        }
    }
}

impl Receiver {
    async fn start() -> anyhow::Result<Receiver> {
        let paths: Arc<Mutex<Paths>> = Arc::default();
        let app = axum::Router::new()
            .route("/{path}", axum::routing::post(receive))
            .with_state(paths.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Receiver {
            base: format!("http://{addr}"),
            paths,
        })
    }

    fn url(&self, path: &str, mode: Mode) -> String {
        self.set(path, mode);
        format!("{}/{path}", self.base)
    }

    fn set(&self, path: &str, mode: Mode) {
        self.paths
            .lock()
            .unwrap()
            .modes
            .insert(path.to_string(), mode);
    }

    fn got(&self, path: &str) -> Vec<Received> {
        self.paths
            .lock()
            .unwrap()
            .got
            .get(path)
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `path` got a request for which `found` holds; returns them all.
    async fn until(
        &self,
        path: &str,
        what: &str,
        found: impl Fn(&[Received]) -> bool,
    ) -> anyhow::Result<Vec<Received>> {
        wait_for(what, LONG, || async { found(&self.got(path)) })
            .await
            .with_context(|| {
                format!(
                    "{path} got {:#?}",
                    self.got(path)
                        .iter()
                        .map(Received::json)
                        .collect::<Vec<_>>()
                )
            })?;
        Ok(self.got(path))
    }
}

fn types(got: &[Received]) -> Vec<String> {
    got.iter()
        .map(|r| r.json()["type"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Checks a request's signature with the `standardwebhooks` crate.
fn verify(secret: &str, r: &Received) {
    let wh = standardwebhooks::Webhook::new(secret).unwrap();
    wh.verify(&r.body, &r.headers)
        .unwrap_or_else(|e| panic!("signature of {} does not verify: {e}", r.id()));
}

async fn register(api: &Api, url: &str, types: &[&str]) -> anyhow::Result<Value> {
    let (s, e) = api
        .post("/webhooks", json!({"url": url, "event_types": types}))
        .await?;
    anyhow::ensure!(s == 201, "registering {url}: {s} {e}");
    Ok(e)
}

async fn place_order(api: &Api, sku: &str, qty: u64, key: &str) -> anyhow::Result<String> {
    let cart = api.cart(&format!("buyer-{key}")).await?;
    let (s, b) = api
        .post(
            &format!("/carts/{cart}/items"),
            json!({"sku": sku, "qty": qty}),
        )
        .await?;
    anyhow::ensure!(s == 200, "add: {s} {b}");
    let (s, o) = api.checkout(&cart, key).await?;
    anyhow::ensure!((200..=202).contains(&s), "checkout: {s} {o}");
    Ok(o["id"].as_str().unwrap_or_default().to_string())
}

async fn deliveries(api: &Api, id: &str, status: &str) -> anyhow::Result<Vec<Value>> {
    let (s, d) = api
        .get(&format!("/webhooks/{id}/deliveries?status={status}"))
        .await?;
    anyhow::ensure!(s == 200, "deliveries: {s} {d}");
    Ok(d["items"].as_array().cloned().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signed_deliveries_retries_dead_letters_retry_replay_and_410() -> anyhow::Result<()> {
    let started = time_now();
    let nats = NatsServer::start().await?;
    let dir = tempfile::tempdir()?;
    let metrics = format!("127.0.0.1:{}", cartwheel_testkit::free_port());
    let mut env = NODE_ENV.to_vec();
    env.push(("CARTWHEEL_METRICS_ADDR", &metrics));
    let _node = Proc::node(&nats.url(), dir.path().join("node.log"), &env).await?;
    let edge = Proc::edge(&nats.url(), dir.path().join("edge.log")).await?;
    edge.wait_ready().await?;
    let api = edge.api();
    let rx = Receiver::start().await?;

    // Bad registrations change nothing and say why.
    let (s, e) = api
        .post("/webhooks", json!({"url": "ftp://example.com/x"}))
        .await?;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (400, Some("invalid_input")),
        "{e}"
    );
    let (s, e) = api
        .post("/webhooks", json!({"url": "http://10.1.2.3/hook"}))
        .await?;
    assert_eq!(s, 400, "a private target is refused: {e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("10.1.2.3"),
        "{e}"
    );
    let (s, e) = api
        .post(
            "/webhooks",
            json!({"url": rx.url("x", Mode::Ok), "event_types": ["order.shipped"]}),
        )
        .await?;
    assert_eq!(s, 400, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("order.shipped"),
        "{e}"
    );
    let (s, e) = api.get("/webhooks").await?;
    assert_eq!(
        (s, e["items"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{e}"
    );

    let good = register(
        &api,
        &rx.url("good", Mode::Ok),
        &["order.*", "endpoint.disabled"],
    )
    .await?;
    let secret = good["secrets"][0]["secret"].as_str().unwrap().to_string();
    let flaky = register(
        &api,
        &rx.url("flaky", Mode::FailFirst(2)),
        &["order.confirmed"],
    )
    .await?;
    let dead = register(&api, &rx.url("dead", Mode::Status(500)), &["order.created"]).await?;
    let gone = register(&api, &rx.url("gone", Mode::Status(410)), &["order.created"]).await?;
    let hang = register(&api, &rx.url("hang", Mode::Hang), &["order.*"]).await?;
    api.product("WH-MUG", 1299, 10).await?;
    let order = place_order(&api, "WH-MUG", 2, "wh-1").await?;

    // The good endpoint gets the order's life in order, each signed.
    let got = rx
        .until("good", "order.confirmed at the good endpoint", |g| {
            types(g).contains(&"order.confirmed".to_string())
        })
        .await?;
    let order_types: Vec<String> = types(&got)
        .into_iter()
        .filter(|t| t.starts_with("order."))
        .collect();
    assert_eq!(
        order_types,
        ["order.created", "order.product_reserved", "order.confirmed"],
        "in order, once each"
    );
    for r in &got {
        verify(&secret, r);
        if r.json()["type"].as_str().unwrap().starts_with("order.") {
            assert_eq!(
                r.json()["data"]["order"]["id"],
                order.as_str(),
                "{}",
                r.json()
            );
        }
    }
    // The endpoint that hangs held none of that up: its second attempt (after a 2 s
    // timeout) had not even started when the good one had everything.
    let confirmed_at = got
        .iter()
        .find(|r| r.json()["type"] == "order.confirmed")
        .unwrap()
        .at;
    let hung = rx.got("hang");
    assert!(
        hung.len() < 2 || hung[1].at > confirmed_at,
        "the hanging endpoint delayed another: {} requests before",
        hung.len()
    );

    // Two 500s, then 200: three attempts of one delivery, one webhook-id.
    let got = rx
        .until("flaky", "three attempts at flaky", |g| g.len() >= 3)
        .await?;
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|r| r.id() == got[0].id()), "one webhook-id");
    let flaky_secret = flaky["secrets"][0]["secret"].as_str().unwrap();
    got.iter().for_each(|r| verify(flaky_secret, r));
    let flaky_id = flaky["id"].as_str().unwrap();
    wait_for("flaky's delivery recorded as succeeded", LONG, || async {
        deliveries(&api, flaky_id, "succeeded")
            .await
            .is_ok_and(|d| d.len() == 1)
    })
    .await?;
    let d = &deliveries(&api, flaky_id, "succeeded").await?[0];
    let statuses: Vec<u64> = d["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [500, 500, 200], "{d}");

    // Every attempt fails: dead-lettered after three, in the stream with its reason.
    let dead_id = dead["id"].as_str().unwrap();
    wait_for("a dead letter", LONG, || async {
        deliveries(&api, dead_id, "dead")
            .await
            .is_ok_and(|d| d.len() == 1)
    })
    .await?;
    let letter = &deliveries(&api, dead_id, "dead").await?[0];
    assert_eq!(letter["attempts"].as_array().unwrap().len(), 3, "{letter}");
    assert!(
        letter["dead_reason"].as_str().unwrap().contains("HTTP 500"),
        "{letter}"
    );
    assert_eq!(rx.got("dead").len(), 3);
    let nc = cartwheel_testkit::connect(&nats.url()).await?;
    let js = async_nats::jetstream::new(nc);
    let mut stream = js.get_stream("CW_WEBHOOK_DEAD").await?;
    assert_eq!(
        stream.info().await?.state.messages,
        1,
        "one dead letter in the stream"
    );

    // Fixed receiver: a manual retry delivers the dead letter under its webhook-id.
    rx.set("dead", Mode::Ok);
    let delivery = letter["id"].as_str().unwrap();
    let (s, d) = api
        .post(
            &format!("/webhooks/{dead_id}/deliveries/{delivery}/retry"),
            json!({}),
        )
        .await?;
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["status"], "succeeded", "{d}");
    assert_eq!(d["attempts"][3]["trigger"], "manual", "{d}");
    let dead_got = rx.got("dead");
    assert_eq!(dead_got.len(), 4);
    assert_eq!(dead_got[3].id(), dead_got[0].id());
    verify(dead["secrets"][0]["secret"].as_str().unwrap(), &dead_got[3]);

    // A replay of the log since the test began delivers order.created again, same id.
    let (s, r) = api
        .post(
            &format!("/webhooks/{dead_id}/replay?since={started}"),
            json!({}),
        )
        .await?;
    assert_eq!(s, 202, "{r}");
    let again = rx
        .until("dead", "the replayed order.created", |g| g.len() >= 5)
        .await?;
    assert_eq!(
        again[4].id(),
        dead_got[0].id(),
        "a replay keeps the webhook-id"
    );
    assert_eq!(again[4].json()["type"], "order.created");
    wait_for("the replay to finish", LONG, || async {
        api.get(&format!("/webhooks/{dead_id}"))
            .await
            .is_ok_and(|(_, e)| e["replays"].as_array().is_some_and(Vec::is_empty))
    })
    .await?;
    let (s, _) = api
        .post(
            &format!("/webhooks/{dead_id}/replay?since=yesterday"),
            json!({}),
        )
        .await?;
    assert_eq!(s, 400);

    // 410 Gone disables the endpoint at once, and says so to who listens.
    let gone_id = gone["id"].as_str().unwrap();
    wait_for("the gone endpoint disabled", LONG, || async {
        api.get(&format!("/webhooks/{gone_id}"))
            .await
            .is_ok_and(|(_, e)| e["enabled"] == false)
    })
    .await?;
    let (_, e) = api.get(&format!("/webhooks/{gone_id}")).await?;
    assert!(
        e["disabled_reason"].as_str().unwrap().contains("410"),
        "{e}"
    );
    assert_eq!(rx.got("gone").len(), 1, "no retry after 410");
    let got = rx
        .until("good", "endpoint.disabled at the good endpoint", |g| {
            types(g).contains(&"endpoint.disabled".to_string())
        })
        .await?;
    let note = got
        .iter()
        .find(|r| r.json()["type"] == "endpoint.disabled")
        .unwrap();
    assert_eq!(note.json()["data"]["endpoint_id"], gone_id);
    verify(&secret, note);

    // A test delivery, and a rotation: both secrets sign during the grace period.
    let good_id = good["id"].as_str().unwrap();
    let (s, e) = api
        .post(
            &format!("/webhooks/{good_id}/rotate-secret?grace_secs=600"),
            json!({}),
        )
        .await?;
    assert_eq!(s, 200, "{e}");
    let new_secret = e["secrets"][0]["secret"].as_str().unwrap().to_string();
    assert_ne!(new_secret, secret);
    let (s, d) = api
        .post(&format!("/webhooks/{good_id}/test"), json!({}))
        .await?;
    assert_eq!((s, d["status"].as_str()), (200, Some("succeeded")), "{d}");
    let test = rx
        .got("good")
        .into_iter()
        .find(|r| r.json()["type"] == "webhook.test")
        .unwrap();
    verify(&secret, &test);
    verify(&new_secret, &test);

    // The node counts what happened.
    let text = common::scrape(&format!("http://{metrics}/metrics")).await?;
    for series in [
        "cartwheel_webhook_attempts_total{outcome=\"delivered\"}",
        "cartwheel_webhook_attempts_total{outcome=\"failed\"}",
        "cartwheel_webhook_attempts_total{outcome=\"gone\"}",
        "cartwheel_webhook_dead_letters_total",
        "cartwheel_webhook_endpoints_disabled_total",
        "cartwheel_webhook_retries_pending",
    ] {
        assert!(text.contains(series), "no {series} in the node's metrics");
    }

    // A timeout is a failure like any other: the hanging endpoint got its retry, under
    // the same webhook-id, at least the 2-s timeout and the 200-ms delay after the first.
    let hung = rx
        .until("hang", "a retry after a timeout", |g| g.len() >= 2)
        .await?;
    assert_eq!(hung[1].id(), hung[0].id());
    assert!(hung[1].at - hung[0].at >= Duration::from_millis(2000));

    // Removing an endpoint ends its deliveries.
    let hang_id = hang["id"].as_str().unwrap();
    let (s, _) = api.delete(&format!("/webhooks/{hang_id}")).await?;
    assert_eq!(s, 204);
    let (s, _) = api.get(&format!("/webhooks/{hang_id}")).await?;
    assert_eq!(s, 404);
    Ok(())
}

/// Now as RFC 3339, a second early (the log's clock and ours may differ a little).
fn time_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 1;
    cartwheel_domain::Timestamp(i64::try_from(now).unwrap() * 1000).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_mid_delivery_loses_nothing_and_keeps_each_carts_order() -> anyhow::Result<()>
{
    let nats = NatsServer::start().await?;
    let dir = tempfile::tempdir()?;
    let mut env = NODE_ENV.to_vec();
    env.push(("CARTWHEEL_LEASE_TTL_MS", "1500"));
    let mut nodes = BTreeMap::new();
    for id in ["w1", "w2"] {
        let mut e = env.clone();
        e.push(("CARTWHEEL_NODE_ID", id));
        nodes.insert(
            id,
            Proc::node(&nats.url(), dir.path().join(format!("{id}.log")), &e).await?,
        );
    }
    let edge = Proc::edge(&nats.url(), dir.path().join("edge.log")).await?;
    edge.wait_ready().await?;
    let api = edge.api();
    let rx = Receiver::start().await?;
    let ep = register(&api, &rx.url("carts", Mode::Ok), &["cart.updated"]).await?;
    let ep_id = ep["id"].as_str().unwrap().to_string();
    api.product("WH-TEA", 450, 1_000_000).await?;
    let carts = [api.cart("kim").await?, api.cart("lee").await?];

    // Adds to both carts; halfway, the node that delivers for the endpoint is killed.
    let mut added = 0;
    for round in 0..20 {
        if round == 10 {
            let (s, at) = api.get(&format!("/cluster/locate/cart/{ep_id}")).await?;
            anyhow::ensure!(s == 200, "locate: {s} {at}");
            let owner = at["node"].as_str().unwrap_or_default().to_string();
            let mut victim = nodes
                .remove(owner.as_str())
                .context("the owner is one of ours")?;
            victim.child.kill9()?;
        }
        for cart in &carts {
            let (s, b) = api
                .post(
                    &format!("/carts/{cart}/items"),
                    json!({"sku": "WH-TEA", "qty": 1}),
                )
                .await?;
            anyhow::ensure!(s == 200, "add: {s} {b}");
        }
        added += 1;
    }
    // Every version of each cart arrives (creation is version 1, each add one more),
    // first receipts in version order; a repeat carries the same webhook-id.
    let want = added + 1;
    rx.until("carts", "every version of both carts", |g| {
        carts.iter().all(|c| {
            (1..=want).all(|v| {
                g.iter().any(|r| {
                    let j = r.json();
                    j["data"]["cart"]["id"] == c.as_str() && j["data"]["cart"]["version"] == v
                })
            })
        })
    })
    .await?;
    for cart in &carts {
        let mut first_seen: Vec<u64> = Vec::new();
        let mut ids: HashMap<u64, String> = HashMap::new();
        for r in rx.got("carts") {
            let j = r.json();
            if j["data"]["cart"]["id"] != cart.as_str() {
                continue;
            }
            let v = j["data"]["cart"]["version"].as_u64().unwrap();
            let id = ids.entry(v).or_insert_with(|| r.id());
            assert_eq!(
                *id,
                r.id(),
                "a repeat of version {v} has another webhook-id"
            );
            if !first_seen.contains(&v) {
                first_seen.push(v);
            }
        }
        assert_eq!(
            first_seen,
            (1..=want).collect::<Vec<_>>(),
            "cart {cart}: versions out of order"
        );
    }
    Ok(())
}

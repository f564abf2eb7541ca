//! A seeded chaos run: nodes join, leave, die (`kill -9`) and pause (SIGSTOP past their
//! lease) at random while clients check out carts against scarce stock; at the end the
//! same invariants as the cluster tests are checked and the figures printed as JSON.
//!
//! Beside the checkouts, careful clients add one unit at a time to a few shared carts,
//! each add under its own `Idempotency-Key` and resent with that key until it is answered
//! (or given up: indeterminate). Every outcome is recorded; at the end each cart must hold
//! at least every acknowledged add and at most acknowledged + indeterminate ones (nothing
//! lost, nothing applied twice), and the versions each client saw must only grow.
//! `--nats-cluster 1` runs on a 3-server NATS cluster (R3 buckets) and adds kill -9 and
//! restart of one server to the faults.
//!
//! Run it with `scripts/chaos` (release build, bounded in time, loopback only):
//! `scripts/chaos --seed 7 --duration-secs 300`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test driver: fail loudly

#[path = "../tests/common/mod.rs"]
mod common;

use cartwheel_testkit::NatsServer;
use common::{Api, Proc};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What the careful cart clients saw.
#[derive(Default)]
struct CartLedger {
    /// Per cart: acknowledged adds (each key counted once).
    acked: std::sync::Mutex<BTreeMap<String, u64>>,
    /// Per cart: adds given up on without an answer (may or may not be applied).
    indeterminate: std::sync::Mutex<BTreeMap<String, u64>>,
    /// Requests sent (including resends) and how many were answered 5xx.
    requests: AtomicU64,
    http_5xx: AtomicU64,
    /// Refusals (4xx) of an add: nothing applied.
    refused: AtomicU64,
    /// A client saw a cart version lower than one it had seen before.
    versions_regressed: AtomicU64,
    /// Milliseconds since the start of each successful write, for the longest gap.
    writes_ok_ms: std::sync::Mutex<Vec<u64>>,
}

/// One careful client: adds one unit of ADD to a random cart of `carts`, under a fresh
/// key, resending with the same key until answered or 30 s passed.
async fn cart_client(
    api: Api,
    w: u64,
    carts: Arc<Vec<String>>,
    ledger: Arc<CartLedger>,
    running: Arc<AtomicBool>,
    started: Instant,
) {
    let mut rng = Rng((w + 1).wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    let mut n = 0u64;
    while running.load(Ordering::Relaxed) {
        n += 1;
        let cart = carts[rng.below(carts.len() as u64) as usize].clone();
        let key = format!("add-{w}-{n}");
        let path = format!("/carts/{cart}/items");
        let give_up = Instant::now() + Duration::from_secs(30);
        let outcome = loop {
            ledger.requests.fetch_add(1, Ordering::Relaxed);
            match api
                .keyed(
                    reqwest::Method::POST,
                    &path,
                    json!({"sku": "ADD", "qty": 1}),
                    &key,
                )
                .await
            {
                Ok((200, c)) => break Some(Ok(c)),
                Ok((s, _)) if s >= 500 => {
                    ledger.http_5xx.fetch_add(1, Ordering::Relaxed);
                }
                Ok((s, e)) => break Some(Err((s, e))),
                Err(_) => {}
            }
            if Instant::now() > give_up {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        match outcome {
            Some(Ok(c)) => {
                *ledger
                    .acked
                    .lock()
                    .unwrap()
                    .entry(cart.clone())
                    .or_default() += 1;
                ledger
                    .writes_ok_ms
                    .lock()
                    .unwrap()
                    .push(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
                let v = c["version"].as_u64().unwrap_or(0);
                let last = seen.entry(cart).or_default();
                if v < *last {
                    ledger.versions_regressed.fetch_add(1, Ordering::Relaxed);
                    eprintln!("client {w}: version {v} after {last}");
                }
                *last = v;
            }
            Some(Err((s, e))) => {
                ledger.refused.fetch_add(1, Ordering::Relaxed);
                eprintln!("client {w}: add refused {s} {e}");
            }
            None => {
                *ledger
                    .indeterminate
                    .lock()
                    .unwrap()
                    .entry(cart)
                    .or_default() += 1;
            }
        }
    }
}

/// The NATS the run uses: one server, or a 3-server cluster whose servers are faults too.
enum Nats {
    One(NatsServer),
    Cluster(cartwheel_testkit::NatsCluster),
}

impl Nats {
    fn url(&self) -> String {
        match self {
            Nats::One(s) => s.url(),
            Nats::Cluster(c) => c.urls(),
        }
    }
}

#[derive(Default)]
struct Counters {
    checkouts: AtomicU64,
    confirmed: AtomicU64,
    failed: AtomicU64,
    retries: AtomicU64,
    http_5xx: AtomicU64,
    hot_confirmed_units: AtomicU64,
}

async fn checkout(api: &Api, cart: &str, c: &Counters) -> Option<Value> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        match api.checkout(cart, "chaos").await {
            Ok((200..=202, o)) => {
                let id = o["id"].as_str().unwrap_or_default().to_string();
                let mut o = o;
                while o["status"] == "PENDING" || o["status"] == "PRODUCT_RESERVED" {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    match api.get(&format!("/orders/{id}")).await {
                        Ok((200, x)) => o = x,
                        Ok((s, _)) if s >= 500 => {
                            c.http_5xx.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    }
                    if Instant::now() > deadline {
                        return None;
                    }
                }
                return Some(o);
            }
            Ok((s, _)) if s >= 500 => {
                c.http_5xx.fetch_add(1, Ordering::Relaxed);
                c.retries.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                c.retries.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => return None,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

async fn with_retry(
    api: &Api,
    c: &Counters,
    f: impl Fn(Api) -> futures::future::BoxFuture<'static, anyhow::Result<(u16, Value)>>,
) -> Option<Value> {
    for _ in 0..100 {
        match f(api.clone()).await {
            Ok((200 | 201, v)) => return Some(v),
            Ok((s, _)) if s >= 500 => {
                c.http_5xx.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => return None,
            Err(_) => {}
        }
        c.retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

async fn start_node(id: String, dir: &std::path::Path, url: String) -> anyhow::Result<Proc> {
    let replicas = if url.contains(',') { "3" } else { "1" };
    Proc::node(
        &url,
        dir.join(format!("{id}.log")),
        &[
            ("CARTWHEEL_NODE_ID", id.as_str()),
            ("CARTWHEEL_LEASE_TTL_MS", "3000"),
            ("CARTWHEEL_REPLICAS", replicas),
        ],
    )
    .await
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let seed = arg("--seed", 1);
    let duration = Duration::from_secs(arg("--duration-secs", 60));
    let clients = arg("--clients", 16);
    let hot_stock = arg("--hot-stock", 500);
    let cart_clients = arg("--cart-clients", 8);
    let cart_count = arg("--carts", 20);
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut nats = if arg("--nats-cluster", 0) == 1 {
        Nats::Cluster(cartwheel_testkit::NatsCluster::start(3).await?)
    } else {
        Nats::One(NatsServer::start().await?)
    };
    let dir = tempfile::tempdir()?;
    let mut next_id = 0u32;
    let mut nodes: BTreeMap<String, Proc> = BTreeMap::new();
    for _ in 0..3 {
        let id = format!("c{next_id}");
        next_id += 1;
        nodes.insert(id.clone(), start_node(id, dir.path(), nats.url()).await?);
    }
    let edge = Proc::edge(&nats.url(), dir.path().join("edge.log")).await?;
    edge.wait_ready().await?;
    let api = edge.api();
    api.product("HOT", 300, hot_stock).await?;
    api.product("COLD", 100, 1_000_000).await?;
    api.product("ADD", 10, 1_000_000).await?;
    let mut shared = Vec::new();
    for i in 0..cart_count {
        shared.push(api.cart(&format!("shared{i}")).await?);
    }
    let shared = Arc::new(shared);
    let ledger = Arc::new(CartLedger::default());
    let run_started = Instant::now();

    let counters = Arc::new(Counters::default());
    let running = Arc::new(AtomicBool::new(true));
    let mut load = Vec::new();
    for w in 0..clients {
        let (api, c, running) = (api.clone(), counters.clone(), running.clone());
        load.push(tokio::spawn(async move {
            let mut i = 0u64;
            while running.load(Ordering::Relaxed) {
                i += 1;
                let user = format!("w{w}u{i}");
                let Some(cart) = with_retry(&api, &c, |api| {
                    let user = user.clone();
                    Box::pin(async move { api.post("/carts", json!({"user_id": user})).await })
                })
                .await
                else {
                    continue;
                };
                let cart = cart["id"].as_str().unwrap_or_default().to_string();
                let hot_qty = 1 + (i % 2);
                for (sku, qty) in [("HOT", hot_qty), ("COLD", 1)] {
                    let cart = cart.clone();
                    with_retry(&api, &c, move |api| {
                        let cart = cart.clone();
                        Box::pin(async move {
                            api.post(
                                &format!("/carts/{cart}/items"),
                                json!({"sku": sku, "qty": qty}),
                            )
                            .await
                        })
                    })
                    .await;
                }
                c.checkouts.fetch_add(1, Ordering::Relaxed);
                match checkout(&api, &cart, &c).await {
                    Some(o) if o["status"] == "CONFIRMED" => {
                        c.confirmed.fetch_add(1, Ordering::Relaxed);
                        let units: u64 = o["items"]
                            .as_array()
                            .map(|items| {
                                items
                                    .iter()
                                    .filter(|l| l["sku"] == "HOT")
                                    .map(|l| l["qty"].as_u64().unwrap_or(0))
                                    .sum()
                            })
                            .unwrap_or(0);
                        c.hot_confirmed_units.fetch_add(units, Ordering::Relaxed);
                    }
                    Some(_) => {
                        c.failed.fetch_add(1, Ordering::Relaxed);
                    }
                    None => {}
                }
            }
        }));
    }

    for w in 0..cart_clients {
        load.push(tokio::spawn(cart_client(
            api.clone(),
            w,
            shared.clone(),
            ledger.clone(),
            running.clone(),
            run_started,
        )));
    }

    let started = run_started;
    let mut events: BTreeMap<&str, u64> = BTreeMap::new();
    let faults = if matches!(nats, Nats::Cluster(_)) {
        5
    } else {
        4
    };
    while started.elapsed() < duration {
        tokio::time::sleep(Duration::from_millis(2000 + rng.below(4000))).await;
        let ids: Vec<String> = nodes.keys().cloned().collect();
        let victim = ids[rng.below(ids.len() as u64) as usize].clone();
        match rng.below(faults) {
            4 => {
                if let Nats::Cluster(cluster) = &mut nats {
                    let i = rng.below(3) as usize;
                    cluster.kill(i)?;
                    eprintln!("[{:?}] kill -9 nats-server {i}", started.elapsed());
                    tokio::time::sleep(Duration::from_millis(2000 + rng.below(2000))).await;
                    cluster.restart(i).await?;
                    *events.entry("nats_kill_restart").or_default() += 1;
                    eprintln!("[{:?}] restarted nats-server {i}", started.elapsed());
                }
            }
            0 if nodes.len() > 1 => {
                let mut p = nodes.remove(&victim).unwrap();
                p.child.kill9()?;
                *events.entry("kill9").or_default() += 1;
                eprintln!("[{:?}] kill -9 {victim}", started.elapsed());
            }
            1 if nodes.len() > 1 => {
                let p = nodes.remove(&victim).unwrap();
                let _ = p.terminate().await;
                *events.entry("sigterm").or_default() += 1;
                eprintln!("[{:?}] SIGTERM {victim}", started.elapsed());
            }
            2 => {
                let pid = nodes[&victim].child.pid().to_string();
                std::process::Command::new("kill")
                    .args(["-STOP", &pid])
                    .status()?;
                tokio::time::sleep(Duration::from_millis(3500 + rng.below(2000))).await;
                std::process::Command::new("kill")
                    .args(["-CONT", &pid])
                    .status()?;
                *events.entry("pause").or_default() += 1;
                eprintln!("[{:?}] paused {victim}", started.elapsed());
            }
            _ if nodes.len() < 5 => {
                let id = format!("c{next_id}");
                next_id += 1;
                nodes.insert(
                    id.clone(),
                    start_node(id.clone(), dir.path(), nats.url()).await?,
                );
                *events.entry("join").or_default() += 1;
                eprintln!("[{:?}] joined {id}", started.elapsed());
            }
            _ => {}
        }
    }
    if nodes.is_empty() {
        let id = format!("c{next_id}");
        nodes.insert(id.clone(), start_node(id, dir.path(), nats.url()).await?);
    }
    running.store(false, Ordering::Relaxed);
    for t in load {
        let _ = t.await;
    }
    // Settle: nothing left pending, nothing reserved, stock adds up.
    let settle = Instant::now();
    loop {
        let (_, p) = api.get("/orders?status=PENDING&limit=1").await?;
        let (_, r) = api.get("/orders?status=PRODUCT_RESERVED&limit=1").await?;
        let empty = |v: &Value| v["items"].as_array().is_some_and(Vec::is_empty);
        if empty(&p) && empty(&r) {
            break;
        }
        anyhow::ensure!(
            settle.elapsed() < Duration::from_secs(120),
            "orders left unsettled"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every saga finished its cleanup too (a FAILED order releases what it held); cleanup
    // steps retry with backoff, so give them a moment.
    let mut unfinished = Vec::new();
    for _ in 0..60 {
        let (_, f) = api.get("/orders?status=FAILED&limit=200").await?;
        let busy = f["items"]
            .as_array()
            .is_some_and(|xs| xs.iter().any(|o| o["saga_step"] != "done"));
        if !busy {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for status in ["FAILED", "CONFIRMED"] {
        let mut cursor = String::new();
        loop {
            let (_, page) = api
                .get(&format!("/orders?status={status}&limit=200{cursor}"))
                .await?;
            for o in page["items"].as_array().cloned().unwrap_or_default() {
                if o["saga_step"] != "done" {
                    unfinished.push(format!("{} {} {}", o["id"], o["status"], o["saga_step"]));
                }
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = format!("&cursor={c}"),
                None => break,
            }
        }
    }
    if !unfinished.is_empty() {
        eprintln!("orders with unfinished sagas: {unfinished:#?}");
    }
    // The careful clients' carts: nothing acknowledged lost, nothing applied twice.
    let acked = ledger.acked.lock().unwrap().clone();
    let indeterminate = ledger.indeterminate.lock().unwrap().clone();
    let (mut lost, mut duplicated) = (0u64, 0u64);
    for cart in shared.iter() {
        let (s, c) = api.get(&format!("/carts/{cart}")).await?;
        anyhow::ensure!(s == 200, "cart {cart}: {s} {c}");
        let qty = c["items"]
            .as_array()
            .and_then(|xs| xs.iter().find(|l| l["sku"] == "ADD"))
            .and_then(|l| l["qty"].as_u64())
            .unwrap_or(0);
        let a = acked.get(cart).copied().unwrap_or(0);
        let i = indeterminate.get(cart).copied().unwrap_or(0);
        if qty < a {
            lost += a - qty;
            eprintln!("cart {cart}: {qty} units, {a} acknowledged");
        }
        if qty > a + i {
            duplicated += qty - a - i;
            eprintln!("cart {cart}: {qty} units, {a} acknowledged + {i} indeterminate");
        }
    }
    let mut oks = ledger.writes_ok_ms.lock().unwrap().clone();
    oks.sort_unstable();
    let longest_gap_ms = oks.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    let requests = ledger.requests.load(Ordering::Relaxed);
    let cart_5xx = ledger.http_5xx.load(Ordering::Relaxed);
    let cart_report = json!({
        "adds_acknowledged": acked.values().sum::<u64>(),
        "adds_indeterminate": indeterminate.values().sum::<u64>(),
        "adds_refused": ledger.refused.load(Ordering::Relaxed),
        "requests": requests,
        "http_5xx": cart_5xx,
        "http_5xx_rate": if requests == 0 { 0.0 } else { cart_5xx as f64 / requests as f64 },
        "lost": lost,
        "duplicated": duplicated,
        "versions_regressed": ledger.versions_regressed.load(Ordering::Relaxed),
        "longest_write_gap_ms": longest_gap_ms,
    });
    let (_, hot) = api.get("/inventory/HOT").await?;
    let (_, cold) = api.get("/inventory/COLD").await?;
    let c = &counters;
    let hot_units = c.hot_confirmed_units.load(Ordering::Relaxed);
    let report = json!({
        "seed": seed,
        "duration_secs": duration.as_secs(),
        "clients": clients,
        "events": events,
        "checkouts": c.checkouts.load(Ordering::Relaxed),
        "confirmed": c.confirmed.load(Ordering::Relaxed),
        "failed": c.failed.load(Ordering::Relaxed),
        "client_retries": c.retries.load(Ordering::Relaxed),
        "http_5xx_seen": c.http_5xx.load(Ordering::Relaxed),
        "hot": hot,
        "cold_reserved": cold["reserved"],
        "hot_confirmed_units": hot_units,
        "unfinished_sagas": unfinished.len(),
        "carts": cart_report,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    let on_hand = hot["on_hand"].as_u64().unwrap_or(u64::MAX);
    anyhow::ensure!(
        hot["reserved"] == 0 && cold["reserved"] == 0,
        "reservations leaked"
    );
    anyhow::ensure!(
        on_hand + hot_units == hot_stock,
        "on_hand {on_hand} + confirmed {hot_units} != {hot_stock}"
    );
    anyhow::ensure!(lost == 0, "{lost} acknowledged adds lost");
    anyhow::ensure!(duplicated == 0, "{duplicated} adds applied more than once");
    anyhow::ensure!(
        ledger.versions_regressed.load(Ordering::Relaxed) == 0,
        "a client saw a cart version go back"
    );
    anyhow::ensure!(unfinished.is_empty(), "orders stuck with unfinished sagas");
    eprintln!("invariants hold");
    Ok(())
}

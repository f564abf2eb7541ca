//! The black-box chaos checker (a test without the libtest harness: `cargo test` runs it
//! for a minute; `scripts/chaos` runs it longer in release).
//!
//! The system runs as it would in production, all on loopback: a 3-server NATS cluster
//! with `sync_interval: always` and R3 buckets and streams, carts in Redis, three actor
//! nodes (lease TTL 3 s) that reach NATS only through TCP proxies, two edges. Clients:
//!
//! - careful cart clients add one unit at a time to a few shared carts, each add under
//!   its own `Idempotency-Key`, resent with that key until answered (or given up after
//!   30 s: indeterminate), and record every outcome;
//! - checkout clients create a cart, add a scarce sku and a plentiful one, and check out
//!   (every request under an idempotency key), polling the order until it settles.
//!
//! Seeded faults, one at a time every 8–12 s, every kind in turn (a shuffled round each): kill -9,
//! SIGTERM, SIGSTOP past the lease and joins of nodes; a network partition of one node
//! (its proxies black-hole for 5–10 s, then heal or reset), and of one node from one
//! server; kill -9 and restart of one NATS server; kill -9 and restart of Redis.
//!
//! At the end it checks: every acknowledged add is in its cart and none is applied twice
//! (acked ≤ quantity ≤ acked + indeterminate), the versions each client saw only grew,
//! stock is conserved (on hand + sold = stocked) and nothing stays reserved, every cart
//! checked out under its key made at most one order, no order is stuck. It prints those
//! counts, the client-visible 5xx rate, the longest gap without a successful add and the
//! longest single add, each also per fault kind, and how long each join took to reach a
//! fair share.
//!
//! `cargo test --test chaos -- --seed 7 --duration-secs 300` (or `scripts/chaos …`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test driver: fail loudly

mod common;

use cartwheel_testkit::{NatsCluster, RedisServer, TcpProxy};
use common::{Api, Proc};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The nodes' lease TTL.
const TTL: Duration = Duration::from_secs(3);
/// After a fault ends, effects still count as its effects for this long (a lease to lapse
/// and a tick to retake it, a client to reconnect).
const AFTERMATH: Duration = Duration::from_secs(5);

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
    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to - from))
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

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The kinds of fault, in the report's words.
const KINDS: [&str; 8] = [
    "kill9",
    "sigterm",
    "pause",
    "join",
    "partition",
    "partition_one_server",
    "nats_kill_restart",
    "redis_kill_restart",
];

/// When each fault happened, to attribute errors and gaps to it.
#[derive(Default)]
struct Timeline {
    /// (kind, start ms, end ms) since the run started.
    faults: Mutex<Vec<(&'static str, u64, u64)>>,
}

impl Timeline {
    /// The fault whose window (its duration plus [`AFTERMATH`]) holds `at`, the latest one
    /// if several do; `none` outside every window.
    fn blame(&self, at: u64) -> &'static str {
        self.faults
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(_, start, end)| *start <= at && at <= end + ms(AFTERMATH))
            .map_or("none", |(kind, _, _)| kind)
    }
}

/// What every client saw, for the report.
struct Ledger {
    started: Instant,
    timeline: Arc<Timeline>,
    /// Per cart: acknowledged adds (each key counted once).
    acked: Mutex<BTreeMap<String, u64>>,
    /// Per cart: adds given up on without an answer (may or may not be applied).
    indeterminate: Mutex<BTreeMap<String, u64>>,
    /// Refusals (4xx) of an add: nothing applied.
    refused: AtomicU64,
    /// A client saw a cart version lower than one it had seen before.
    versions_regressed: AtomicU64,
    /// Ms since the start of each acknowledged add.
    writes_ok_ms: Mutex<Vec<u64>>,
    /// The longest single add (first send to answer), with when it started.
    longest_add: Mutex<BTreeMap<&'static str, u64>>,
    /// HTTP requests sent by every client, and those answered 5xx, by fault kind.
    requests: Mutex<BTreeMap<&'static str, u64>>,
    http_5xx: Mutex<BTreeMap<&'static str, u64>>,
}

impl Ledger {
    fn now(&self) -> u64 {
        ms(self.started.elapsed())
    }
    /// Counts one HTTP request sent at `sent` (ms) and its answer (`None`: no answer at
    /// all), blamed on the fault it was sent in.
    fn request(&self, sent: u64, status: Option<u16>) {
        let kind = self.timeline.blame(sent);
        *self.requests.lock().unwrap().entry(kind).or_default() += 1;
        if status.is_some_and(|s| s >= 500) {
            *self.http_5xx.lock().unwrap().entry(kind).or_default() += 1;
        }
    }
    /// A request through `f`, counted.
    async fn send(
        &self,
        f: impl std::future::Future<Output = anyhow::Result<(u16, Value)>>,
    ) -> Option<(u16, Value)> {
        let sent = self.now();
        let answer = f.await.ok();
        self.request(sent, answer.as_ref().map(|(s, _)| *s));
        answer
    }
}

/// One careful client: adds one unit of ADD to a random shared cart under a fresh key,
/// resending with that key until answered or 30 s passed.
async fn cart_client(
    api: Api,
    w: u64,
    carts: Arc<Vec<String>>,
    ledger: Arc<Ledger>,
    running: Arc<AtomicBool>,
) {
    let mut rng = Rng((w + 1).wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    let mut n = 0u64;
    while running.load(Ordering::Relaxed) {
        n += 1;
        let cart = carts[rng.below(carts.len() as u64) as usize].clone();
        let key = format!("add-{w}-{n}");
        let path = format!("/carts/{cart}/items");
        let first_sent = ledger.now();
        let give_up = Instant::now() + Duration::from_secs(30);
        let outcome = loop {
            let answer = ledger
                .send(api.keyed(
                    reqwest::Method::POST,
                    &path,
                    json!({"sku": "ADD", "qty": 1}),
                    &key,
                ))
                .await;
            match answer {
                Some((200, c)) => break Some(Ok(c)),
                Some((s, e)) if s < 500 => break Some(Err((s, e))),
                _ => {}
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
                let now = ledger.now();
                ledger.writes_ok_ms.lock().unwrap().push(now);
                let kind = ledger.timeline.blame(first_sent);
                let took = now - first_sent;
                let mut longest = ledger.longest_add.lock().unwrap();
                let entry = longest.entry(kind).or_default();
                *entry = (*entry).max(took);
                drop(longest);
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

#[derive(Default)]
struct Checkouts {
    started: AtomicU64,
    confirmed: AtomicU64,
    failed: AtomicU64,
    gave_up: AtomicU64,
    hot_confirmed_units: AtomicU64,
    cold_confirmed_units: AtomicU64,
}

/// Sends `f` until it answers below 500 (resending is safe: every write carries a key).
async fn until_answered(
    ledger: &Ledger,
    f: impl Fn() -> futures::future::BoxFuture<'static, anyhow::Result<(u16, Value)>>,
) -> Option<(u16, Value)> {
    let give_up = Instant::now() + Duration::from_secs(60);
    while Instant::now() < give_up {
        match ledger.send(f()).await {
            Some((s, v)) if s < 500 => return Some((s, v)),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    None
}

/// One checkout client: a fresh cart, a scarce line and a plentiful one, checkout.
async fn checkout_client(
    api: Api,
    w: u64,
    ledger: Arc<Ledger>,
    c: Arc<Checkouts>,
    running: Arc<AtomicBool>,
) {
    let mut i = 0u64;
    while running.load(Ordering::Relaxed) {
        i += 1;
        let user = format!("w{w}u{i}");
        let created = until_answered(&ledger, || {
            let (api, user) = (api.clone(), user.clone());
            Box::pin(async move {
                api.keyed(
                    reqwest::Method::POST,
                    "/carts",
                    json!({"user_id": user}),
                    "create",
                )
                .await
            })
        })
        .await;
        let Some((201, cart)) = created else {
            continue;
        };
        let cart = cart["id"].as_str().unwrap_or_default().to_string();
        for (sku, qty) in [("HOT", 1 + (i % 2)), ("COLD", 1)] {
            let cart = cart.clone();
            until_answered(&ledger, || {
                let (api, cart) = (api.clone(), cart.clone());
                Box::pin(async move {
                    api.keyed(
                        reqwest::Method::POST,
                        &format!("/carts/{cart}/items"),
                        json!({"sku": sku, "qty": qty}),
                        sku,
                    )
                    .await
                })
            })
            .await;
        }
        c.started.fetch_add(1, Ordering::Relaxed);
        let placed = until_answered(&ledger, || {
            let (api, cart) = (api.clone(), cart.clone());
            Box::pin(async move { api.checkout(&cart, "chaos").await })
        })
        .await;
        let Some((200..=202, mut o)) = placed else {
            c.gave_up.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let id = o["id"].as_str().unwrap_or_default().to_string();
        let deadline = Instant::now() + Duration::from_secs(120);
        while (o["status"] == "PENDING" || o["status"] == "PRODUCT_RESERVED")
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Some((200, x)) = ledger.send(api.get(&format!("/orders/{id}"))).await {
                o = x;
            }
        }
        let units = |sku: &str| -> u64 {
            o["items"]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .filter(|l| l["sku"] == sku)
                        .map(|l| l["qty"].as_u64().unwrap_or(0))
                        .sum()
                })
                .unwrap_or(0)
        };
        match o["status"].as_str() {
            Some("CONFIRMED") => {
                c.confirmed.fetch_add(1, Ordering::Relaxed);
                c.hot_confirmed_units
                    .fetch_add(units("HOT"), Ordering::Relaxed);
                c.cold_confirmed_units
                    .fetch_add(units("COLD"), Ordering::Relaxed);
            }
            Some("FAILED") => {
                c.failed.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                c.gave_up.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A node and the proxies it reaches the NATS servers through (one per server).
struct NodeProc {
    proc: Proc,
    proxies: Vec<TcpProxy>,
}

async fn start_node(
    id: &str,
    dir: &std::path::Path,
    nats: &NatsCluster,
    redis: &str,
) -> anyhow::Result<NodeProc> {
    let mut proxies = Vec::new();
    for port in nats.ports() {
        proxies.push(TcpProxy::start(([127, 0, 0, 1], port).into()).await?);
    }
    let url = proxies
        .iter()
        .map(TcpProxy::nats_url)
        .collect::<Vec<_>>()
        .join(",");
    let ttl = ms(TTL).to_string();
    // The proxies' URLs carry no credentials: the node signs in from its environment.
    let (user, password) = nats.credentials();
    let proc = Proc::node(
        &url,
        dir.join(format!("{id}.log")),
        &[
            ("CARTWHEEL_NATS_USER", user),
            ("CARTWHEEL_NATS_PASSWORD", password),
            ("CARTWHEEL_NODE_ID", id),
            ("CARTWHEEL_LEASE_TTL_MS", ttl.as_str()),
            ("CARTWHEEL_REPLICAS", "3"),
            ("CARTWHEEL_CART_STORE", redis),
        ],
    )
    .await?;
    Ok(NodeProc { proc, proxies })
}

/// Partitions per live node, from `/cluster`.
async fn spread(api: &Api) -> BTreeMap<String, u64> {
    match api.get("/cluster").await {
        Ok((200, c)) => common::partitions_by_node(&c),
        _ => BTreeMap::new(),
    }
}

/// How long until every node in `live` holds partitions and max/min ≤ 2 (`None`: not
/// within 20 s).
async fn fair_share_after(api: &Api, live: &[String]) -> Option<u64> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        let by = spread(api).await;
        let counts: Vec<u64> = live
            .iter()
            .map(|id| by.get(id).copied().unwrap_or(0))
            .collect();
        let (min, max) = (
            counts.iter().copied().min().unwrap_or(0),
            counts.iter().copied().max().unwrap_or(0),
        );
        if min > 0 && max <= 2 * min {
            return Some(ms(started.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    // `cargo test <filter>` passes its filter here too: run only when it names this test.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let valued = [
        "--seed",
        "--duration-secs",
        "--clients",
        "--hot-stock",
        "--cart-clients",
        "--carts",
    ];
    let mut filters = Vec::new();
    let mut i = 0;
    while i < args.len() {
        if valued.contains(&args[i].as_str()) {
            i += 1;
        } else if !args[i].starts_with('-') {
            filters.push(args[i].clone());
        }
        i += 1;
    }
    if args.iter().any(|a| a == "--list") {
        println!("chaos: test");
        return Ok(());
    }
    if filters.iter().any(|f| !"chaos".contains(f.as_str())) {
        return Ok(());
    }
    let seed = arg("--seed", 1);
    // Long enough for one round of every fault kind at one fault every 8–12 s.
    let duration = Duration::from_secs(arg("--duration-secs", 100));
    let checkout_clients = arg("--clients", 8);
    let hot_stock = arg("--hot-stock", 400);
    let cart_clients = arg("--cart-clients", 8);
    // A line holds at most 999 units: enough carts that the adds never run out of room
    // (a release build adds a few hundred units a second).
    let cart_count = arg("--carts", (duration.as_secs() * 2).max(20));
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    eprintln!("chaos: seed {seed}, {} s", duration.as_secs());

    let (nats, redis) = tokio::join!(NatsCluster::start_with(3, true), RedisServer::start());
    let (mut nats, mut redis) = (nats?, redis?);
    let redis_url = redis.url();
    let tmp = tempfile::Builder::new()
        .prefix("cartwheel-chaos-")
        .tempdir()?;
    // With CW_KEEP the logs stay, also when the run fails.
    let (_tmp, dir) = if std::env::var("CW_KEEP").is_ok() {
        let kept = tmp.keep();
        eprintln!("logs in {}", kept.display());
        (None, kept)
    } else {
        let path = tmp.path().to_path_buf();
        (Some(tmp), path)
    };
    let mut next_id = 0u32;
    let mut nodes: BTreeMap<String, NodeProc> = BTreeMap::new();
    for _ in 0..3 {
        let id = format!("c{next_id}");
        next_id += 1;
        let node = start_node(&id, dir.as_path(), &nats, &redis_url).await?;
        nodes.insert(id, node);
    }
    let mut edges = Vec::new();
    for i in 0..2 {
        let edge = Proc::edge(&nats.urls(), dir.as_path().join(format!("edge{i}.log"))).await?;
        edge.wait_ready().await?;
        edges.push(edge);
    }
    let apis: Vec<Api> = edges.iter().map(Proc::api).collect();
    let api = apis[0].clone();
    let live: Vec<String> = nodes.keys().cloned().collect();
    if fair_share_after(&api, &live).await.is_none() {
        // Say why: a node that exited at start says so at the end of its log.
        let tails: Vec<String> = nodes
            .iter()
            .map(|(id, n)| {
                let log = n.proc.child.log_contents();
                let lines: Vec<&str> = log.lines().collect();
                let from = lines
                    .iter()
                    .position(|l| l.starts_with("Error:"))
                    .unwrap_or(lines.len().saturating_sub(5));
                let to = (from + 6).min(lines.len());
                format!("{id}:\n{}", lines[from..to].join("\n"))
            })
            .collect();
        anyhow::bail!(
            "the first nodes never spread the partitions: {:?}\n{}",
            spread(&api).await,
            tails.join("\n")
        );
    }
    api.product("HOT", 300, hot_stock).await?;
    api.product("COLD", 100, 1_000_000).await?;
    api.product("ADD", 10, 1_000_000).await?;
    let mut shared = Vec::new();
    for i in 0..cart_count {
        shared.push(api.cart(&format!("shared{i}")).await?);
    }
    let shared = Arc::new(shared);

    let timeline = Arc::new(Timeline::default());
    let run_started = Instant::now();
    let ledger = Arc::new(Ledger {
        started: run_started,
        timeline: timeline.clone(),
        acked: Mutex::default(),
        indeterminate: Mutex::default(),
        refused: AtomicU64::default(),
        versions_regressed: AtomicU64::default(),
        writes_ok_ms: Mutex::default(),
        longest_add: Mutex::default(),
        requests: Mutex::default(),
        http_5xx: Mutex::default(),
    });
    let checkouts = Arc::new(Checkouts::default());
    let running = Arc::new(AtomicBool::new(true));
    let mut load = Vec::new();
    for w in 0..checkout_clients {
        load.push(tokio::spawn(checkout_client(
            apis[(w % 2) as usize].clone(),
            w,
            ledger.clone(),
            checkouts.clone(),
            running.clone(),
        )));
    }
    for w in 0..cart_clients {
        load.push(tokio::spawn(cart_client(
            apis[(w % 2) as usize].clone(),
            w,
            shared.clone(),
            ledger.clone(),
            running.clone(),
        )));
    }

    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    let mut joins_ms: Vec<Option<u64>> = Vec::new();
    let mut round: Vec<&'static str> = Vec::new();
    let mut last_start = Instant::now();
    while run_started.elapsed() < duration {
        if round.is_empty() {
            round = KINDS.to_vec();
            for i in (1..round.len()).rev() {
                round.swap(i, rng.below(i as u64 + 1) as usize);
            }
        }
        let mut kind = round.pop().unwrap_or("join");
        // Keep two nodes at least, five at most.
        if matches!(kind, "kill9" | "sigterm") && nodes.len() <= 2 {
            kind = "join";
        }
        if kind == "join" && nodes.len() >= 5 {
            kind = "sigterm";
        }
        // One fault at a time, every 8–12 s (start to start), and never sooner than
        // 1.5 s after the previous one ended.
        let next = last_start + rng.millis(8000, 12000);
        let soonest = Instant::now() + Duration::from_millis(1500);
        tokio::time::sleep_until(next.max(soonest).into()).await;
        last_start = Instant::now();
        let ids: Vec<String> = nodes.keys().cloned().collect();
        let victim = ids[rng.below(ids.len() as u64) as usize].clone();
        let start = ms(run_started.elapsed());
        let what = match kind {
            "kill9" => {
                let mut n = nodes.remove(&victim).unwrap();
                n.proc.child.kill9()?;
                format!("kill -9 {victim}")
            }
            "sigterm" => {
                let n = nodes.remove(&victim).unwrap();
                let status = n.proc.terminate().await?;
                anyhow::ensure!(
                    status.success(),
                    "{victim} exited with {status} after SIGTERM"
                );
                format!("SIGTERM {victim}")
            }
            "pause" => {
                let pid = nodes[&victim].proc.child.pid().to_string();
                let paused = rng.millis(ms(TTL) + 500, ms(TTL) + 2500);
                std::process::Command::new("kill")
                    .args(["-STOP", &pid])
                    .status()?;
                tokio::time::sleep(paused).await;
                std::process::Command::new("kill")
                    .args(["-CONT", &pid])
                    .status()?;
                format!("SIGSTOP {victim} for {} ms", ms(paused))
            }
            "join" => {
                let id = format!("c{next_id}");
                next_id += 1;
                let node = start_node(&id, dir.as_path(), &nats, &redis_url).await?;
                nodes.insert(id.clone(), node);
                let live: Vec<String> = nodes.keys().cloned().collect();
                let took = fair_share_after(&api, &live).await;
                joins_ms.push(took);
                format!("{id} joined; fair share after {took:?} ms")
            }
            "partition" | "partition_one_server" => {
                let node = &nodes[&victim];
                let cut: Vec<usize> = if kind == "partition" {
                    (0..node.proxies.len()).collect()
                } else {
                    vec![rng.below(node.proxies.len() as u64) as usize]
                };
                for &i in &cut {
                    node.proxies[i].black_hole();
                }
                let held = rng.millis(5000, 10_000);
                tokio::time::sleep(held).await;
                let reset = rng.below(2) == 0;
                for &i in &cut {
                    if reset {
                        node.proxies[i].reset();
                    } else {
                        node.proxies[i].heal();
                    }
                }
                format!(
                    "{victim} cut off from servers {cut:?} for {} ms, then {}",
                    ms(held),
                    if reset { "reset" } else { "healed" }
                )
            }
            "nats_kill_restart" => {
                let i = rng.below(3) as usize;
                nats.kill(i)?;
                tokio::time::sleep(rng.millis(1000, 4000)).await;
                nats.restart(i).await?;
                format!("kill -9 and restart of nats-server {i}")
            }
            "redis_kill_restart" => {
                redis.kill()?;
                redis.restart().await?;
                "kill -9 and restart of redis-server".to_string()
            }
            _ => unreachable!("no such fault"),
        };
        let end = ms(run_started.elapsed());
        timeline.faults.lock().unwrap().push((kind, start, end));
        *counts.entry(kind).or_default() += 1;
        eprintln!("[{start:>6} ms] {what} (until {end} ms)");
    }
    running.store(false, Ordering::Relaxed);
    for t in load {
        let _ = t.await;
    }
    let run_ms = ms(run_started.elapsed());

    // Settle: nothing left pending or reserved, every saga's cleanup done.
    let settle = Instant::now();
    let mut unfinished = Vec::new();
    let mut orders_per_cart: BTreeMap<String, u64> = BTreeMap::new();
    let (mut hot_units, mut cold_units): (u64, u64);
    loop {
        unfinished.clear();
        orders_per_cart.clear();
        (hot_units, cold_units) = (0, 0);
        for status in ["PENDING", "PRODUCT_RESERVED", "FAILED", "CONFIRMED"] {
            let mut cursor = String::new();
            loop {
                let (s, page) = api
                    .get(&format!("/orders?status={status}&limit=200{cursor}"))
                    .await?;
                anyhow::ensure!(s == 200, "listing orders: {s} {page}");
                for o in page["items"].as_array().cloned().unwrap_or_default() {
                    *orders_per_cart
                        .entry(o["cart_id"].as_str().unwrap_or_default().to_string())
                        .or_default() += 1;
                    if status == "CONFIRMED" {
                        for line in o["items"].as_array().cloned().unwrap_or_default() {
                            let qty = line["qty"].as_u64().unwrap_or(0);
                            match line["sku"].as_str() {
                                Some("HOT") => hot_units += qty,
                                Some("COLD") => cold_units += qty,
                                _ => {}
                            }
                        }
                    }
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
        if unfinished.is_empty() || settle.elapsed() > Duration::from_secs(120) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let settle_ms = ms(settle.elapsed());

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
    // The longest gap without an acknowledged add, blamed on the fault it started in.
    let mut oks = ledger.writes_ok_ms.lock().unwrap().clone();
    oks.sort_unstable();
    // Per kind: (longest gap, when it started).
    let mut gaps: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for w in oks.windows(2) {
        let kind = timeline.blame(w[0]);
        let gap = gaps.entry(kind).or_default();
        if w[1] - w[0] > gap.0 {
            *gap = (w[1] - w[0], w[0]);
        }
    }
    let requests = ledger.requests.lock().unwrap().clone();
    let http_5xx = ledger.http_5xx.lock().unwrap().clone();
    let total_requests: u64 = requests.values().sum();
    let total_5xx: u64 = http_5xx.values().sum();
    let longest_add = ledger.longest_add.lock().unwrap().clone();
    let by_fault: BTreeMap<&str, Value> = KINDS
        .iter()
        .chain(std::iter::once(&"none"))
        .map(|k| {
            (
                *k,
                json!({
                    "count": counts.get(k).copied().unwrap_or(0),
                    "requests": requests.get(k).copied().unwrap_or(0),
                    "http_5xx": http_5xx.get(k).copied().unwrap_or(0),
                    "longest_write_gap_ms": gaps.get(k).map_or(0, |g| g.0),
                    "longest_write_gap_at_ms": gaps.get(k).map_or(0, |g| g.1),
                    "longest_add_ms": longest_add.get(k).copied().unwrap_or(0),
                }),
            )
        })
        .collect();

    let (_, hot) = api.get("/inventory/HOT").await?;
    let (_, cold) = api.get("/inventory/COLD").await?;
    let c = &checkouts;
    let hot_on_hand = hot["on_hand"].as_u64().unwrap_or(u64::MAX);
    let cold_on_hand = cold["on_hand"].as_u64().unwrap_or(u64::MAX);
    let multi_order_carts = orders_per_cart.values().filter(|n| **n > 1).count();
    let report = json!({
        "seed": seed,
        "duration_ms": run_ms,
        "settle_ms": settle_ms,
        "faults": counts,
        "requests": total_requests,
        "http_5xx": total_5xx,
        "http_5xx_rate": if total_requests == 0 { 0.0 } else { total_5xx as f64 / total_requests as f64 },
        "adds": {
            "acknowledged": acked.values().sum::<u64>(),
            "indeterminate": indeterminate.values().sum::<u64>(),
            "refused": ledger.refused.load(Ordering::Relaxed),
            "lost": lost,
            "duplicated": duplicated,
            "versions_regressed": ledger.versions_regressed.load(Ordering::Relaxed),
            "longest_write_gap_ms": gaps.values().map(|g| g.0).max().unwrap_or(0),
        },
        "checkouts": {
            "started": c.started.load(Ordering::Relaxed),
            "confirmed": c.confirmed.load(Ordering::Relaxed),
            "failed": c.failed.load(Ordering::Relaxed),
            "gave_up": c.gave_up.load(Ordering::Relaxed),
            "hot": hot,
            "hot_sold": hot_units,
            "hot_sold_seen_by_clients": c.hot_confirmed_units.load(Ordering::Relaxed),
            "cold_sold": cold_units,
            "carts_with_more_than_one_order": multi_order_carts,
            "unfinished_sagas": unfinished.len(),
        },
        "joins_fair_share_ms": joins_ms,
        "by_fault": by_fault,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);

    let mut broken = Vec::new();
    if lost > 0 {
        broken.push(format!("{lost} acknowledged adds lost"));
    }
    if duplicated > 0 {
        broken.push(format!("{duplicated} adds applied more than once"));
    }
    if ledger.versions_regressed.load(Ordering::Relaxed) > 0 {
        broken.push("a client saw a cart version go back".to_string());
    }
    if hot_on_hand + hot_units != hot_stock || cold_on_hand + cold_units != 1_000_000 {
        broken.push(format!(
            "stock not conserved: HOT {hot_on_hand} + {hot_units} sold != {hot_stock}, COLD {cold_on_hand} + {cold_units} sold != 1000000"
        ));
    }
    if hot["reserved"] != 0 || cold["reserved"] != 0 {
        broken.push("reservations left behind".to_string());
    }
    if multi_order_carts > 0 {
        broken.push(format!(
            "{multi_order_carts} carts made more than one order"
        ));
    }
    if !unfinished.is_empty() {
        broken.push(format!("orders stuck: {unfinished:?}"));
    }
    if joins_ms.iter().any(Option::is_none) {
        broken.push("a join never reached a fair share".to_string());
    }
    for edge in edges {
        edge.terminate().await?;
    }
    for (_, n) in nodes {
        n.proc.terminate().await?;
    }
    anyhow::ensure!(broken.is_empty(), "invariants broken: {broken:#?}");
    eprintln!("invariants hold");
    Ok(())
}

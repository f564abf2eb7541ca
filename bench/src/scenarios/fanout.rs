//! `fanout`: N WebSocket clients subscribed to one cart (N = 1, 100, 1,000 by default).
//! One writer adds an item over HTTP; the latency of a push is the time from the write's
//! acknowledgement (the HTTP reply reaching the writer) to the client receiving the push
//! of that version. Per write, `last` is the slowest client; `each` counts every client.
//! A push that beats the acknowledgement counts as 0; `send-last` measures from the moment
//! the write was sent instead. Writes go one at a time: the next
//! starts when every client saw the last one (or after 5 s).

use super::Ctx;
use crate::client::Ws;
use crate::report::ScenarioReport;
use crate::stats::{ErrorCounts, Latencies, LoadMode, Measurement};
use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use reqwest::Method;
use serde::Deserialize;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Writes before measuring starts.
const WARMUP_WRITES: usize = 5;
/// How long a write waits for its pushes.
const PUSH_WAIT: Duration = Duration::from_secs(5);

#[derive(Deserialize)]
struct Push {
    #[serde(rename = "type")]
    kind: Option<String>,
    cart: Option<Version>,
}

#[derive(Deserialize)]
struct Version {
    version: u64,
}

/// Runs the scenario.
pub async fn run(ctx: &Ctx) -> anyhow::Result<ScenarioReport> {
    let sku = ctx.products_http("fo", 1).await?.remove(0);
    let mut report = ScenarioReport {
        name: "fanout".into(),
        ..Default::default()
    };
    for &n in &ctx.args.fanout {
        let ms = one_size(ctx, &sku, n.max(1))
            .await
            .with_context(|| format!("fan-out to {n}"))?;
        report.measurements.extend(ms);
    }
    report.notes.push(
        "fan-out latency runs from the writer's HTTP acknowledgement to each subscriber's push (0 when the push beat the acknowledgement: the event is published before the reply is sent), and for send-last from the moment the write was sent; the subscribers run in the bench process, on the same machine".into(),
    );
    Ok(report)
}

async fn one_size(ctx: &Ctx, sku: &str, n: usize) -> anyhow::Result<Vec<Measurement>> {
    let cart = ctx.carts_http(1).await?.remove(0);
    let sockets: Vec<Ws> = futures::stream::iter(0..n)
        .map(|_| {
            let cart = cart.clone();
            async move {
                let mut ws = Ws::connect(ctx.http.base(), ctx.args.token.as_deref()).await?;
                let frame = format!(r#"{{"id":1,"op":"subscribe","cart_id":"{cart}"}}"#);
                ws.request(1, frame)
                    .await
                    .map_err(|k| anyhow::anyhow!("subscribe: {k}"))?;
                anyhow::Ok(ws)
            }
        })
        .buffer_unordered(32)
        .try_collect()
        .await?;

    let (tx, mut rx) = mpsc::unbounded_channel::<(u64, Instant)>();
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|mut ws| {
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Ok(text) = ws.next_text().await {
                    let at = Instant::now();
                    if let Ok(Push {
                        kind: Some(k),
                        cart: Some(v),
                    }) = serde_json::from_str::<Push>(&text)
                        && k == "cart"
                        && tx.send((v.version, at)).is_err()
                    {
                        break;
                    }
                }
            })
        })
        .collect();
    drop(tx);

    let mut last = Latencies::new();
    let mut each = Latencies::new();
    let mut from_send = Latencies::new();
    let mut errors = ErrorCounts::default();
    let mut measured_writes = 0u64;
    let mut measured_pushes = 0u64;
    let deadline = Instant::now() + ctx.args.warmup + ctx.args.duration;
    let mut measure_started = None;
    let procs = ctx.procs();
    let mut cpu_start = Default::default();
    let body = format!(r#"{{"sku":"{sku}","qty":1}}"#);
    for w in 0..WARMUP_WRITES + ctx.args.fanout_writes {
        if Instant::now() >= deadline {
            break;
        }
        let measuring = w >= WARMUP_WRITES;
        if measuring && measure_started.is_none() {
            measure_started = Some(Instant::now());
            cpu_start = crate::cpu::sample(&procs);
        }
        let sent = Instant::now();
        let reply = ctx
            .http
            .expect(
                Method::POST,
                &format!("/carts/{cart}/items"),
                Some(body.clone()),
                &[],
                200,
            )
            .await;
        let ack = Instant::now();
        let version = match reply
            .map_err(|k| k.to_string())
            .and_then(|t| serde_json::from_str::<Version>(&t).map_err(|_| "bad_reply".into()))
        {
            Ok(v) => v.version,
            Err(kind) => {
                if measuring {
                    errors.add(&kind);
                }
                continue;
            }
        };
        let mut got = 0usize;
        let mut slowest = Duration::ZERO;
        let mut slowest_from_send = Duration::ZERO;
        let wait_until = ack + PUSH_WAIT;
        while got < n {
            let Ok(Some((v, at))) = tokio::time::timeout_at(wait_until.into(), rx.recv()).await
            else {
                break;
            };
            if v != version {
                continue;
            }
            got += 1;
            let lat = at.saturating_duration_since(ack);
            slowest = slowest.max(lat);
            slowest_from_send = slowest_from_send.max(at.saturating_duration_since(sent));
            if measuring {
                each.record(lat);
            }
        }
        if measuring {
            measured_pushes += got as u64;
            if got == n {
                last.record(slowest);
                from_send.record(slowest_from_send);
                measured_writes += 1;
            } else {
                for _ in got..n {
                    errors.add("push_missing");
                }
            }
        }
    }
    let cpu_end = crate::cpu::sample(&procs);
    let seconds = measure_started
        .map_or(0.0, |s| s.elapsed().as_secs_f64())
        .max(1e-3);
    for r in readers {
        r.abort();
    }
    let make = |name: String, description: String, lat: &Latencies, ok: u64, errs: &ErrorCounts| {
        Measurement {
            name,
            kind: "system".into(),
            description,
            load: LoadMode::Closed,
            concurrency: n,
            seconds: crate::stats::thousandths(seconds),
            ok,
            errors: errs.total(),
            errors_by_kind: errs.clone().into_map(),
            throughput: crate::stats::tenths(ok as f64 / seconds),
            latency: lat.summary(),
            cpu_us_per_op: crate::cpu::per_op(&cpu_start, &cpu_end, ok),
        }
    };
    Ok(vec![
        make(
            format!("fanout-{n}-last"),
            format!(
                "{n} subscribers of one cart: HTTP add-item acknowledged → the last subscriber has the push (ops/s = writes/s)"
            ),
            &last,
            measured_writes,
            &errors,
        ),
        make(
            format!("fanout-{n}-each"),
            format!(
                "{n} subscribers of one cart: HTTP add-item acknowledged → each subscriber has the push (ops/s = pushes/s)"
            ),
            &each,
            measured_pushes,
            &ErrorCounts::default(),
        ),
        make(
            format!("fanout-{n}-send-last"),
            format!(
                "{n} subscribers of one cart: HTTP add-item sent → the last subscriber has the push (ops/s = writes/s)"
            ),
            &from_send,
            measured_writes,
            &ErrorCounts::default(),
        ),
    ])
}

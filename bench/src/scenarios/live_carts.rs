//! `live-carts`: activates carts on the node in steps (`--live-steps`, up to 1,000,000)
//! by creating them over the bus, and after each step reads the node's resident memory
//! (`VmRSS` of `/proc/{--node-pid}/status`) and its live cart actors (the node's
//! `$SRV.STATS.cartwheel-node` counters). Bytes per live cart are the growth of resident
//! memory over the growth of live actors since the start. Optionally it then waits for
//! the node to passivate them and reads the memory again.

use super::Ctx;
use crate::client::bus_kind;
use crate::load;
use crate::report::{LiveCarts, LiveStep, ScenarioReport};
use cartwheel_bus::messages::CartCommand;
use futures::StreamExt;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Longest one activation step may run.
const STEP_CAP: Duration = Duration::from_secs(900);

/// The value in KiB of a `/proc` status or meminfo field (`VmRSS:`, `MemTotal:`).
pub fn kib_field(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Resident memory of `pid` in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    kib_field(&status, "VmRSS:").map(|k| k * 1024)
}

/// Live cart actors over every node that answers `$SRV.STATS.cartwheel-node`.
pub async fn live_carts(nats: &async_nats::Client) -> Option<u64> {
    let inbox = nats.new_inbox();
    let mut sub = nats.subscribe(inbox.clone()).await.ok()?;
    nats.publish_with_reply("$SRV.STATS.cartwheel-node", inbox, "".into())
        .await
        .ok()?;
    let mut total = None;
    // Every node answers at once; stop when none has for 300 ms.
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(300), sub.next()).await {
        let Ok(v) = serde_json::from_slice::<Value>(&msg.payload) else {
            continue;
        };
        let node: u64 = v["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["data"]["actors"]["cart"]["live"].as_u64())
            .max()
            .unwrap_or(0);
        total = Some(total.unwrap_or(0) + node);
    }
    total
}

/// Runs the scenario.
pub async fn run(ctx: &Ctx) -> anyhow::Result<ScenarioReport> {
    let bus = ctx.bus().await?;
    let nats = ctx.nats().await?;
    let pid = ctx.args.node_pid;
    let rss = || pid.and_then(rss_bytes);
    let mut steps: Vec<u64> = ctx.args.live_steps.clone();
    steps.sort_unstable();
    steps.dedup();

    let rss_before = rss();
    let live_before = live_carts(&nats).await;
    let mut out = LiveCarts {
        rss_before_bytes: rss_before,
        live_before,
        ..Default::default()
    };
    let mut report = ScenarioReport {
        name: "live-carts".into(),
        ..Default::default()
    };
    let mut activated = 0u64;
    for &step in &steps {
        let delta = step.saturating_sub(activated);
        if delta == 0 {
            continue;
        }
        let mut spec = ctx.spec(
            &format!("live-activate-{step}"),
            "system",
            "CartCommand::Create over the bus for a new cart id: activates a cart actor, stores the cart",
        );
        spec.warmup = Duration::ZERO;
        spec.duration = STEP_CAP;
        spec.max_ops = Some(delta);
        spec.load = crate::stats::LoadMode::Closed;
        let (base, run_id) = (activated, ctx.run_id.clone());
        let started = Instant::now();
        let m = load::run(
            &spec,
            (0..ctx.args.live_concurrency.max(1))
                .map(|_| bus.clone())
                .collect(),
            move |bus, seq| {
                let id = format!("b{run_id}-live{}", base + seq);
                async move {
                    let cmd = CartCommand::Create {
                        user_id: id.clone(),
                    };
                    let r = bus
                        .cart(&id, &cmd, "bench-live")
                        .await
                        .map(|_| ())
                        .map_err(|e| bus_kind(&e));
                    (bus, r)
                }
            },
        )
        .await;
        activated = step;
        let rate = delta as f64 / started.elapsed().as_secs_f64().max(1e-3);
        let live = live_carts(&nats).await;
        let now_rss = rss();
        let per = match (now_rss, rss_before, live, live_before) {
            (Some(r), Some(r0), Some(l), Some(l0)) if l > l0 => {
                Some(r.saturating_sub(r0) / (l - l0))
            }
            _ => None,
        };
        eprintln!(
            "   {step:>9} activated: {} live, {rate:.0}/s, rss {} MiB, {} B/cart",
            live.map_or("?".into(), |l| l.to_string()),
            now_rss.map_or("?".into(), |r| (r >> 20).to_string()),
            per.map_or("?".into(), |p| p.to_string())
        );
        out.steps.push(LiveStep {
            activated,
            live,
            activations_per_s: (rate * 10.0).round() / 10.0,
            rss_bytes: now_rss,
            bytes_per_live_cart: per,
        });
        report.measurements.push(m);
    }
    if let (Some(r0), Some(per)) = (
        rss_before,
        out.steps.last().and_then(|s| s.bytes_per_live_cart),
    ) {
        out.projected_rss_1m_bytes = Some(r0 + per * 1_000_000);
    }
    if !ctx.args.live_passivation_wait.is_zero() {
        let until = Instant::now() + ctx.args.live_passivation_wait;
        let floor = live_before.unwrap_or(0) + 100;
        loop {
            let live = live_carts(&nats).await;
            if live.is_some_and(|l| l <= floor) || Instant::now() >= until {
                out.live_after_passivation = live;
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        out.rss_after_passivation_bytes = rss();
        report.notes.push(
            "resident memory after passivation is what the allocator gave back to the OS; freed memory the allocator keeps for reuse still counts as resident".into(),
        );
    }
    if pid.is_none() {
        report
            .notes
            .push("no --node-pid: memory not measured, activation rates only".into());
    }
    report.notes.push(
        "bytes per live cart = growth of the node's resident memory / growth of its live cart actors (carts with an owner and no lines); 1,000,000 is projected from the last step unless a step reached it".into(),
    );
    report.live_carts = Some(out);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_fields_are_read_in_kib() {
        let status = "Name:\tcartwheel\nVmPeak:\t  200 kB\nVmRSS:\t   12345 kB\n";
        assert_eq!(kib_field(status, "VmRSS:"), Some(12345));
        assert_eq!(kib_field(status, "VmSwap:"), None);
    }

    #[test]
    fn our_own_rss_is_readable() {
        let rss = rss_bytes(std::process::id());
        assert!(rss.is_some_and(|r| r > 0), "{rss:?}");
    }
}

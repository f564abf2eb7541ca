//! `live-carts`: activates carts on the node in steps (`--live-steps`, up to 1,000,000)
//! by creating them over the bus, and after each step reads the node's resident memory
//! (`VmRSS` of `/proc/{--node-pid}/status`) and its live carts (the node's
//! `$SRV.STATS.cartwheel-node` counters). Bytes per live cart are the growth of resident
//! memory over the growth of live carts since the start. Then it gives the first
//! `--live-lined` carts 3 lines each and measures what that adds per cart. Optionally it
//! then waits for the node to passivate them all, reads the memory again (what
//! passivation gave back), and activates carts from storage again with `Get` commands
//! (activations from storage per second).

use super::Ctx;
use crate::client::bus_kind;
use crate::load;
use crate::report::{LiveCarts, LiveStep, ScenarioReport};
use cartwheel_bus::messages::CartCommand;
use futures::StreamExt;
use serde_json::Value;
use std::sync::Arc;
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

/// One live-carts measurement: `ops` cart commands over the bus, `--live-concurrency` in
/// flight, no warm-up, bounded by [`STEP_CAP`]; `command(seq)` names the cart and the
/// command of operation `seq`.
async fn cart_step(
    ctx: &Ctx,
    bus: &cartwheel_bus::BusClient,
    name: &str,
    description: &str,
    ops: u64,
    command: impl Fn(u64) -> (String, CartCommand) + Send + Sync + 'static,
) -> crate::stats::Measurement {
    let mut spec = ctx.spec(name, "system", description);
    spec.warmup = Duration::ZERO;
    spec.duration = STEP_CAP;
    spec.max_ops = Some(ops);
    spec.load = crate::stats::LoadMode::Closed;
    let command = Arc::new(command);
    load::run(
        &spec,
        (0..ctx.args.live_concurrency.max(1))
            .map(|_| bus.clone())
            .collect(),
        move |bus, seq| {
            let (id, cmd) = command(seq);
            async move {
                let r = bus
                    .cart(&id, &cmd, "bench-live")
                    .await
                    .map(|_| ())
                    .map_err(|e| bus_kind(&e));
                (bus, r)
            }
        },
    )
    .await
}

/// How often [`settled_rss`] reads the resident memory.
const SETTLE_POLL: Duration = Duration::from_millis(250);
/// The resident memory has settled when it fell less than 1 % over this long.
const SETTLE_QUIET: Duration = Duration::from_secs(3);
/// The longest [`settled_rss`] waits.
const SETTLE_MAX: Duration = Duration::from_secs(30);

/// The resident memory once it stops falling, and how long after the call it last fell:
/// right after a passivation frees its entities the allocator still holds the freed pages
/// and returns them over its decay time (jemalloc's `dirty_decay_ms`, one second in the
/// node), so a single read at that moment measures the allocator's timing, not what
/// passivation gives back.
async fn settled_rss(rss: &impl Fn() -> Option<u64>) -> Option<(u64, Duration)> {
    let start = Instant::now();
    let until = start + SETTLE_MAX;
    let mut low = rss()?;
    let mut fell_at = start;
    loop {
        tokio::time::sleep(SETTLE_POLL).await;
        let now = rss()?;
        // A fall of 1 % or more restarts the quiet period.
        if now.saturating_mul(100) < low.saturating_mul(99) {
            fell_at = Instant::now();
            low = now;
        }
        if fell_at.elapsed() >= SETTLE_QUIET || Instant::now() >= until {
            return Some((now, fell_at - start));
        }
    }
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
        let (base, run_id) = (activated, ctx.run_id.clone());
        let started = Instant::now();
        let m = cart_step(
            ctx,
            &bus,
            &format!("live-activate-{step}"),
            "CartCommand::Create over the bus for a new cart id: activates a cart, stores it",
            delta,
            move |seq| {
                let id = format!("b{run_id}-live{}", base + seq);
                let cmd = CartCommand::Create {
                    user_id: id.clone(),
                };
                (id, cmd)
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
            activations_per_s: crate::stats::tenths(rate),
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
    let lined = ctx.args.live_lined.min(activated);
    if lined > 0 {
        let skus = Arc::new(ctx.products_bus(&bus, "lv", 3).await?);
        let rss0 = rss();
        let run_id = ctx.run_id.clone();
        let m = cart_step(
            ctx,
            &bus,
            &format!("live-lines-{lined}"),
            "CartCommand::AddItem over the bus: 3 lines (3 skus) into each of the first --live-lined live carts",
            lined * 3,
            move |seq| {
                let id = format!("b{run_id}-live{}", seq % lined);
                let sku = skus[usize::try_from(seq / lined).unwrap_or(0) % skus.len()].clone();
                (id, CartCommand::AddItem { sku, qty: 1 })
            },
        )
        .await;
        report.measurements.push(m);
        let rss1 = rss();
        out.lined_carts = Some(lined);
        if let (Some(r0), Some(r1), Some(empty)) = (
            rss0,
            rss1,
            out.steps.last().and_then(|s| s.bytes_per_live_cart),
        ) {
            let extra = r1.saturating_sub(r0) / lined;
            out.bytes_per_lined_cart = Some(empty + extra);
            eprintln!(
                "   {lined:>9} carts with 3 lines: +{extra} B/cart, {} B/cart in all",
                empty + extra
            );
        }
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
        if let Some((bytes, after)) = settled_rss(&rss).await {
            out.rss_after_passivation_bytes = Some(bytes);
            out.rss_settle_s = Some(crate::stats::tenths(after.as_secs_f64()));
        }
        eprintln!(
            "   after passivation: {} live, rss {} MiB (settled in {} s)",
            out.live_after_passivation
                .map_or("?".into(), |l| l.to_string()),
            out.rss_after_passivation_bytes
                .map_or("?".into(), |r| (r >> 20).to_string()),
            out.rss_settle_s.map_or("?".into(), |s| s.to_string())
        );
        let again = ctx.args.live_reactivate.min(activated);
        if again > 0 && out.live_after_passivation.is_some_and(|l| l <= floor) {
            let run_id = ctx.run_id.clone();
            let started = Instant::now();
            let m = cart_step(
                ctx,
                &bus,
                &format!("live-reactivate-{again}"),
                "CartCommand::Get over the bus for passivated carts: each activates the cart from storage (one read) and answers it",
                again,
                move |seq| (format!("b{run_id}-live{seq}"), CartCommand::Get),
            )
            .await;
            let rate = again as f64 / started.elapsed().as_secs_f64().max(1e-3);
            eprintln!("   {again:>9} activated from storage: {rate:.0}/s");
            out.reactivations_per_s = Some(crate::stats::tenths(rate));
            report.measurements.push(m);
        }
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
        "bytes per live cart = growth of the node's resident memory / growth of its live carts (carts with an owner and no lines); with 3 lines: that plus the growth while the first --live-lined carts got their 3 lines, over those carts".into(),
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

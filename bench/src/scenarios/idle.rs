//! `idle`: what the node, the edge and nats-server cost with nothing to do — the node
//! holding every partition, its placement loop renewing leases and watching the cluster.
//! Run first, on a freshly started deployment, over `--idle-window` (30 s by default).
//!
//! The measurement counts one "operation" per second of the window, so its CPU figure
//! per operation is CPU µs per second: 10,000 µs/s is 1 % of one core.

use super::Ctx;
use crate::cpu;
use crate::report::ScenarioReport;
use crate::stats::{LatencySummary, LoadMode, Measurement};

/// Runs the scenario.
pub async fn run(ctx: &Ctx) -> anyhow::Result<ScenarioReport> {
    let procs = ctx.procs();
    let window = ctx.args.idle_window;
    let start = cpu::sample(&procs);
    let started = std::time::Instant::now();
    tokio::time::sleep(window).await;
    let end = cpu::sample(&procs);
    let seconds = started.elapsed().as_secs_f64();
    let per_second = cpu::per_second(&start, &end, seconds);
    let node = per_second.get("node").copied();
    let mut notes = vec![format!(
        "idle for {seconds:.0} s; CPU µs per second by process (10,000 = 1 % of a core)"
    )];
    if let Some(us) = node {
        notes.push(format!("node: {:.2} % of one core", us / 10_000.0));
    }
    Ok(ScenarioReport {
        name: "idle".into(),
        measurements: vec![Measurement {
            name: "idle-node".into(),
            kind: "system".into(),
            description: "nothing sent for the window; one operation per second, so CPU µs/op is CPU µs per second".into(),
            load: LoadMode::Closed,
            concurrency: 0,
            seconds,
            ok: seconds.round() as u64,
            errors: 0,
            errors_by_kind: Default::default(),
            throughput: 1.0,
            latency: LatencySummary::default(),
            cpu_us_per_op: per_second,
        }],
        ratios: vec![],
        live_carts: None,
        notes,
    })
}

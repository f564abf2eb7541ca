//! Cartwheel's load generator (`cartwheel bench`, or the `cartwheel-bench` binary).
//!
//! Every scenario runs its raw baseline first, in the same process and against the same
//! NATS server, then the real system, and reports the system as a ratio of the baseline
//! plus absolute figures: throughput, HdrHistogram latency percentiles, errors by kind.
//! Timings are for people and for the record; nothing here is a pass/fail gate.
//!
//! - [`cli`]: arguments. [`load`]: the closed/open-loop driver. [`stats`]: histograms and
//!   measurements. [`report`]: JSON, ratios, targets, Markdown.
//! - [`raw`]: the baselines (NATS echo responder, raw axum edge).
//! - [`scenarios`]: `bus`, `http`, `ws`, `fanout`, `checkout`, `live-carts`.
//! - [`client`]: the HTTP, WebSocket and bus clients the scenarios drive Cartwheel with.
//!
//! It speaks only Cartwheel's public contracts (HTTP, `/ws`, the bus messages), so it can
//! be pointed at any deployment: `--target http://…`, `--nats-url nats://…`. Every load
//! is bounded in time and count.

pub mod chart;
pub mod cli;
pub mod client;
pub mod cpu;
pub mod load;
pub mod raw;
pub mod report;
pub mod scenarios;
pub mod stats;

pub use cli::BenchArgs;

use anyhow::Context;
use cli::{BenchCommand, ReportArgs, RunArgs, Scenario};
use report::{Combined, Host, RunReport, Settings};
use stats::LoadMode;

/// Runs `cartwheel bench …`.
pub async fn main(args: BenchArgs) -> anyhow::Result<()> {
    match args.command {
        BenchCommand::Run(run) => run_cmd(*run).await,
        BenchCommand::Report(r) => report_cmd(r),
    }
}

async fn run_cmd(args: RunArgs) -> anyhow::Result<()> {
    let started_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let ctx = scenarios::Ctx::new(args.clone())?;
    let mut report = RunReport {
        tool: "cartwheel-bench".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at,
        host: host(),
        durability: args.durability.clone(),
        settings: Settings {
            target: args.target.clone(),
            nats_url: args.nats_url.clone(),
            duration_s: args.duration.as_secs_f64(),
            warmup_s: args.warmup.as_secs_f64(),
            concurrency: args.concurrency,
            load: ctx.load_mode(),
            carts: args.carts,
        },
        scenarios: Vec::new(),
        targets: Vec::new(),
        notes: args.note.clone(),
    };
    for scenario in args.scenario_list() {
        eprintln!("== {scenario:?} ({} fsync)", args.durability);
        let r = match scenario {
            Scenario::Idle => scenarios::idle::run(&ctx).await,
            Scenario::Bus => scenarios::bus::run(&ctx).await,
            Scenario::Http => scenarios::http::run(&ctx).await,
            Scenario::Ws => scenarios::ws::run(&ctx).await,
            Scenario::Fanout => scenarios::fanout::run(&ctx).await,
            Scenario::Checkout => scenarios::checkout::run(&ctx).await,
            Scenario::LiveCarts => scenarios::live_carts::run(&ctx).await,
            Scenario::HotSku => scenarios::hot_sku::run(&ctx).await,
            Scenario::All => continue,
        }
        .with_context(|| format!("scenario {scenario:?}"))?;
        for m in &r.measurements {
            eprintln!(
                "   {:<22} {:>9.0} ops/s  p50 {:>8.2} ms  p99 {:>8.2} ms  errors {}",
                m.name,
                m.throughput,
                m.latency.p50_us as f64 / 1000.0,
                m.latency.p99_us as f64 / 1000.0,
                m.errors
            );
        }
        report.scenarios.push(r);
    }
    report.judge_targets();
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(path) = &args.out {
        std::fs::write(path, &json).with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        println!("{json}");
    } else {
        print!("{}", report::markdown(&[report], None, &[]));
    }
    Ok(())
}

fn report_cmd(args: ReportArgs) -> anyhow::Result<()> {
    let (mut runs, mut command, mut notes) = (Vec::new(), args.command, args.note);
    for path in &args.inputs {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        // A file of `run --out`, or one this command wrote (to redo its table).
        if let Ok(c) = serde_json::from_str::<Combined>(&text) {
            command = command.or(c.command);
            if notes.is_empty() {
                notes = c.notes;
            }
            runs.extend(c.runs);
            continue;
        }
        let run: RunReport =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        runs.push(run);
    }
    let md = report::markdown(&runs, command.as_deref(), &notes);
    let combined = Combined {
        command,
        notes,
        runs,
    };
    if let Some(path) = &args.json_out {
        std::fs::write(path, serde_json::to_string_pretty(&combined)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.md_out {
        std::fs::write(path, &md).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.svg_out {
        let svg = chart::svg(&combined.runs)?;
        std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))?;
    }
    print!("{md}");
    Ok(())
}

/// What `/proc` says about the machine (empty fields elsewhere).
fn host() -> Host {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    Host {
        cpu,
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        memory_bytes: scenarios::live_carts::kib_field(&meminfo, "MemTotal:").unwrap_or(0) * 1024,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
    }
}

impl scenarios::Ctx {
    /// Closed loop, or open at `--rate`.
    pub fn load_mode(&self) -> LoadMode {
        match self.args.rate {
            Some(rate) => LoadMode::Open { rate },
            None => LoadMode::Closed,
        }
    }
}

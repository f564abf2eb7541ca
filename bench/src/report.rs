//! The report: what a run found (JSON for machines), the ratios against the baselines and
//! the targets, and the Markdown table for people. Pure data and formatting.

use crate::stats::{LoadMode, Measurement};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// One `run`: the machine, the settings, every scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    /// `cartwheel-bench`.
    pub tool: String,
    /// Its version.
    pub version: String,
    /// When the run started (RFC 3339, UTC).
    pub started_at: String,
    /// The machine.
    pub host: Host,
    /// The NATS durability mode the run was told it ran under.
    pub durability: String,
    /// Settings of the run.
    pub settings: Settings,
    /// One entry per scenario, in the order run.
    pub scenarios: Vec<ScenarioReport>,
    /// The targets this run can judge.
    pub targets: Vec<TargetCheck>,
    /// Free-form notes (`--note`).
    pub notes: Vec<String>,
}

/// The machine the run ran on.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Host {
    /// CPU model name.
    pub cpu: String,
    /// Logical CPUs.
    pub cpus: usize,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Kernel release.
    pub kernel: String,
}

/// Settings that shape every figure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    /// Edge base URL.
    pub target: String,
    /// NATS URL.
    pub nats_url: String,
    /// Measured seconds per workload.
    pub duration_s: f64,
    /// Warm-up seconds per workload.
    pub warmup_s: f64,
    /// Requests in flight.
    pub concurrency: usize,
    /// Closed or open loop.
    pub load: LoadMode,
    /// Carts the add-item workloads spread over.
    pub carts: usize,
}

/// One scenario's findings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScenarioReport {
    /// `bus`, `http`, `ws`, `fanout`, `checkout`, `live-carts`.
    pub name: String,
    /// Baselines first, then the system.
    pub measurements: Vec<Measurement>,
    /// System against baseline.
    pub ratios: Vec<Ratio>,
    /// Live-carts steps (only that scenario).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_carts: Option<LiveCarts>,
    /// What the reader should know.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// `numerator / denominator` of two measurements' figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ratio {
    /// What it compares, e.g. `http-add-item / axum-nats-echo throughput`.
    pub name: String,
    /// The value.
    pub value: f64,
}

impl Ratio {
    /// Throughput of `system` over that of `base`.
    pub fn throughput(system: &Measurement, base: &Measurement) -> Ratio {
        Ratio {
            name: format!("{} / {} throughput", system.name, base.name),
            value: crate::stats::thousandths(div(system.throughput, base.throughput)),
        }
    }

    /// p99 of `system` over that of `base`.
    pub fn p99(system: &Measurement, base: &Measurement) -> Ratio {
        Ratio {
            name: format!("{} / {} p99", system.name, base.name),
            value: crate::stats::thousandths(div(
                system.latency.p99_us as f64,
                base.latency.p99_us as f64,
            )),
        }
    }
}

/// The live-carts findings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LiveCarts {
    /// Node resident memory before the first activation, bytes (None without a pid).
    pub rss_before_bytes: Option<u64>,
    /// Live cart actors before the first activation (from the node's stats).
    pub live_before: Option<u64>,
    /// One entry per step.
    pub steps: Vec<LiveStep>,
    /// Resident memory after passivation (when waited for).
    pub rss_after_passivation_bytes: Option<u64>,
    /// Live cart actors after the passivation wait.
    pub live_after_passivation: Option<u64>,
    /// Seconds from the moment the live carts were down to the floor until the resident
    /// memory last fell by 1 % or more (the allocator returns freed pages over its decay
    /// time, not at once).
    #[serde(default)]
    pub rss_settle_s: Option<f64>,
    /// Resident memory 1,000,000 live carts would take at the last step's bytes per actor.
    pub projected_rss_1m_bytes: Option<u64>,
    /// Carts that were given 3 lines.
    #[serde(default)]
    pub lined_carts: Option<u64>,
    /// Bytes per live cart with 3 lines.
    #[serde(default)]
    pub bytes_per_lined_cart: Option<u64>,
    /// Passivated carts activated again from storage, per second.
    #[serde(default)]
    pub reactivations_per_s: Option<f64>,
}

/// One live-carts step.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LiveStep {
    /// Carts activated by the bench so far.
    pub activated: u64,
    /// Live cart actors the node reports.
    pub live: Option<u64>,
    /// Activations per second in this step.
    pub activations_per_s: f64,
    /// Node resident memory, bytes.
    pub rss_bytes: Option<u64>,
    /// (rss − rss before) / (live − live before).
    pub bytes_per_live_cart: Option<u64>,
}

/// One of the targets, judged on this run's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetCheck {
    /// The target in words.
    pub target: String,
    /// The figure measured.
    pub measured: f64,
    /// `>=`, `<=` or `<`.
    pub op: String,
    /// The goal.
    pub goal: f64,
    /// Whether it was met.
    pub met: bool,
    /// The durability mode of the figure.
    pub durability: String,
}

/// Reservations per second of the hot-sku scenario's median round before group commit
/// (one write per command): `scripts/bench` with `BENCH_SCENARIOS=hot-sku` at commit
/// 09fd509 on this machine. The group-commit target is judged against it.
pub const HOT_SKU_BEFORE: f64 = 1742.0;

fn div(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

impl RunReport {
    /// A measurement by scenario and name.
    pub fn find(&self, scenario: &str, name: &str) -> Option<&Measurement> {
        self.scenarios
            .iter()
            .filter(|s| s.name == scenario)
            .flat_map(|s| s.measurements.iter())
            .find(|m| m.name == name)
    }

    /// Judges the targets on whatever this run measured.
    pub fn judge_targets(&mut self) {
        let mut t = Vec::new();
        let d = self.durability.clone();
        let mut check = |target: &str, measured: f64, op: &str, goal: f64| {
            let met = match op {
                ">=" => measured >= goal,
                "<=" => measured <= goal,
                _ => measured < goal,
            };
            t.push(TargetCheck {
                target: target.to_owned(),
                measured: crate::stats::thousandths(measured),
                op: op.to_owned(),
                goal,
                met,
                durability: d.clone(),
            });
        };
        let cpu = |m: &Measurement| {
            m.cpu_us_per_op
                .iter()
                .filter(|(process, _)| process.as_str() != "bench")
                .map(|(_, us)| us)
                .sum::<f64>()
        };
        if let (Some(sys), Some(base)) = (
            self.find("http", "http-add-item"),
            self.find("http", "http-durable-echo"),
        ) {
            check(
                "HTTP add-item throughput / HTTP durable echo",
                div(sys.throughput, base.throughput),
                ">=",
                0.8,
            );
            check(
                "HTTP add-item p99 / HTTP durable echo p99",
                div(sys.latency.p99_us as f64, base.latency.p99_us as f64),
                "<=",
                1.5,
            );
        }
        if let (Some(sys), Some(base)) = (
            self.find("http", "http-add-item"),
            self.find("http", "axum-nats-echo"),
        ) {
            check(
                "HTTP add-item throughput / raw axum→NATS echo",
                div(sys.throughput, base.throughput),
                ">=",
                0.5,
            );
        }
        if let (Some(sys), Some(base)) = (
            self.find("bus", "bus-add-item"),
            self.find("bus", "bus-durable-echo"),
        ) {
            check(
                "Bus add-item throughput / bus durable echo",
                div(sys.throughput, base.throughput),
                ">=",
                0.8,
            );
        }
        if let (Some(ws), Some(http)) = (
            self.find("ws", "ws-add-item"),
            self.find("http", "http-add-item"),
        ) {
            check(
                "WebSocket add-item throughput / HTTP add-item",
                div(ws.throughput, http.throughput),
                ">=",
                1.0,
            );
        }
        if let Some(m) = self.find("fanout", "fanout-1000-last") {
            check(
                "Fan-out to 1,000 subscribers: p99 ack → last client (ms)",
                m.latency.p99_us as f64 / 1000.0,
                "<=",
                10.0,
            );
        }
        if let Some(m) = self.find("fanout", "fanout-10000-last") {
            check(
                "Fan-out to 10,000 subscribers: p99 ack → last client (ms)",
                m.latency.p99_us as f64 / 1000.0,
                "<=",
                50.0,
            );
        }
        if let (Some(orders), Some(adds)) = (
            self.find("checkout", "http-checkout"),
            self.find("http", "http-add-item"),
        ) {
            check(
                "Checkout of 3-line carts: orders/s / HTTP add-item req/s",
                div(orders.throughput, adds.throughput),
                ">=",
                0.3,
            );
            if cpu(adds) > 0.0 {
                check(
                    "CPU per checkout / CPU per HTTP add-item",
                    div(cpu(orders), cpu(adds)),
                    "<=",
                    6.0,
                );
            }
        }
        if let Some(us) = self
            .find("idle", "idle-node")
            .and_then(|m| m.cpu_us_per_op.get("node"))
        {
            check(
                "Idle node holding every partition: % of one core",
                us / 10_000.0,
                "<=",
                1.0,
            );
        }
        if let Some(l) = self.scenarios.iter().find_map(|s| s.live_carts.as_ref()) {
            let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
            match l.steps.iter().find(|st| st.activated >= 1_000_000) {
                Some(st) => {
                    if let Some(rss) = st.rss_bytes {
                        check(
                            "1,000,000 live carts on one node: resident memory (GiB)",
                            gib(rss),
                            "<=",
                            2.0,
                        );
                    }
                }
                None => {
                    if let Some(bytes) = l.projected_rss_1m_bytes {
                        check(
                            "1,000,000 live carts on one node: resident memory (GiB, projected)",
                            gib(bytes),
                            "<=",
                            2.0,
                        );
                    }
                }
            }
            if let (Some(r0), Some(per)) = (l.rss_before_bytes, l.bytes_per_lined_cart) {
                check(
                    "1,000,000 live carts of 3 lines: resident memory (GiB, from bytes per 3-line cart)",
                    gib(r0 + per * 1_000_000),
                    "<=",
                    2.0,
                );
            }
            if let Some(rate) = l.reactivations_per_s {
                check("Activation from storage (carts/s)", rate, ">=", 20_000.0);
            }
            if let (Some(r0), Some(after)) = (l.rss_before_bytes, l.rss_after_passivation_bytes) {
                check(
                    "RSS after passivation / the empty node's RSS",
                    div(after as f64, r0 as f64),
                    "<=",
                    1.3,
                );
            }
        }
        let mut rounds: Vec<f64> = self
            .scenarios
            .iter()
            .filter(|s| s.name == "hot-sku")
            .flat_map(|s| s.measurements.iter())
            .map(|m| m.throughput)
            .collect();
        if !rounds.is_empty() {
            rounds.sort_by(f64::total_cmp);
            let median = rounds[rounds.len() / 2];
            check(
                &format!(
                    "1,000 concurrent reservations of one sku: reservations/s (median round) / {HOT_SKU_BEFORE:.0} before group commit"
                ),
                median / HOT_SKU_BEFORE,
                ">=",
                5.0,
            );
        }
        self.targets = t;
    }
}

/// Several runs (e.g. both durability modes) as one result file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Combined {
    /// The command that produced them.
    pub command: Option<String>,
    /// Notes.
    pub notes: Vec<String>,
    /// The runs.
    pub runs: Vec<RunReport>,
}

fn ms(us: u64) -> String {
    if us >= 100_000 {
        format!("{:.0}", us as f64 / 1000.0)
    } else {
        format!("{:.2}", us as f64 / 1000.0)
    }
}

fn load_label(m: &Measurement) -> String {
    match m.load {
        LoadMode::Closed => format!("closed ×{}", m.concurrency),
        LoadMode::Open { rate } => format!("open {rate:.0}/s ≤{}", m.concurrency),
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// The Markdown for a set of runs: one measurement table, the ratios, the targets.
pub fn markdown(runs: &[RunReport], command: Option<&str>, notes: &[String]) -> String {
    let mut out = String::new();
    if let Some(first) = runs.first() {
        let h = &first.host;
        let _ = writeln!(
            out,
            "Machine: {} {} ({}), {} RAM, Linux {}. Started {}.",
            h.cpus,
            if h.cpus == 1 { "CPU" } else { "CPUs" },
            h.cpu,
            gib(h.memory_bytes),
            h.kernel,
            first.started_at
        );
    }
    if let Some(c) = command {
        let _ = writeln!(out, "Command: `{}`", c.trim());
    }
    for n in notes {
        let _ = writeln!(out, "Note: {n}");
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| scenario | measurement | fsync | load | ops/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors | CPU µs/op |"
    );
    let _ = writeln!(out, "|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|---|");
    for r in runs {
        for s in &r.scenarios {
            for m in &s.measurements {
                let l = &m.latency;
                let name = if m.kind == "baseline" {
                    format!("*{}* (baseline)", m.name)
                } else {
                    format!("**{}**", m.name)
                };
                let errors = if m.errors == 0 {
                    "0".to_owned()
                } else {
                    let kinds: Vec<String> = m
                        .errors_by_kind
                        .iter()
                        .map(|(k, n)| format!("{k}: {n}"))
                        .collect();
                    format!("{} ({})", m.errors, kinds.join(", "))
                };
                let cpu: Vec<String> = m
                    .cpu_us_per_op
                    .iter()
                    .map(|(p, us)| format!("{p} {us:.0}"))
                    .collect();
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
                    s.name,
                    name,
                    r.durability,
                    load_label(m),
                    m.throughput,
                    ms(l.p50_us),
                    ms(l.p90_us),
                    ms(l.p99_us),
                    ms(l.p999_us),
                    ms(l.max_us),
                    errors,
                    cpu.join(" · ")
                );
            }
        }
    }
    let ratios: Vec<(&RunReport, &ScenarioReport, &Ratio)> = runs
        .iter()
        .flat_map(|r| {
            r.scenarios
                .iter()
                .flat_map(move |s| s.ratios.iter().map(move |x| (r, s, x)))
        })
        .collect();
    if !ratios.is_empty() {
        let _ = writeln!(
            out,
            "\n| scenario | ratio (system / baseline) | fsync | value |"
        );
        let _ = writeln!(out, "|---|---|---|--:|");
        for (r, s, x) in ratios {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.2} |",
                s.name, x.name, r.durability, x.value
            );
        }
    }
    for r in runs {
        for l in r.scenarios.iter().filter_map(|s| s.live_carts.as_ref()) {
            let _ = writeln!(
                out,
                "\n| live carts | live actors (node) | activations/s | node RSS | bytes per live cart |"
            );
            let _ = writeln!(out, "|--:|--:|--:|--:|--:|");
            let opt = |v: Option<u64>| v.map_or("–".to_owned(), |v| v.to_string());
            if let Some(rss) = l.rss_before_bytes {
                let _ = writeln!(out, "| 0 | {} | – | {} | – |", opt(l.live_before), gib(rss));
            }
            for st in &l.steps {
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.0} | {} | {} |",
                    st.activated,
                    opt(st.live),
                    st.activations_per_s,
                    st.rss_bytes.map_or("–".to_owned(), gib),
                    opt(st.bytes_per_live_cart)
                );
            }
            if let (Some(n), Some(per)) = (l.lined_carts, l.bytes_per_lined_cart) {
                let _ = writeln!(out, "| {n} of them with 3 lines | – | – | – | {per} |");
            }
            if let Some(rss) = l.rss_after_passivation_bytes {
                let _ = writeln!(
                    out,
                    "| after passivation{} | {} | – | {} | – |",
                    l.rss_settle_s
                        .map_or(String::new(), |s| format!(" (settled in {s:.1} s)")),
                    opt(l.live_after_passivation),
                    gib(rss)
                );
            }
            if let Some(rate) = l.reactivations_per_s {
                let _ = writeln!(
                    out,
                    "| activated again from storage | – | {rate:.0} | – | – |"
                );
            }
        }
    }
    let targets: Vec<&TargetCheck> = runs.iter().flat_map(|r| r.targets.iter()).collect();
    if !targets.is_empty() {
        let _ = writeln!(out, "\n| target | fsync | measured | goal | met |");
        let _ = writeln!(out, "|---|---|--:|--:|:-:|");
        for t in targets {
            let _ = writeln!(
                out,
                "| {} | {} | {:.2} | {} {} | {} |",
                t.target,
                t.durability,
                t.measured,
                t.op,
                t.goal,
                if t.met { "yes" } else { "**no**" }
            );
        }
    }
    let notes: Vec<(&str, &String)> = runs
        .iter()
        .flat_map(|r| {
            r.scenarios
                .iter()
                .flat_map(|s| s.notes.iter().map(move |n| (s.name.as_str(), n)))
        })
        .collect();
    if !notes.is_empty() {
        let _ = writeln!(out);
        for (s, n) in notes {
            let _ = writeln!(out, "- {s}: {n}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::LatencySummary;

    fn m(name: &str, kind: &str, throughput: f64, p99_us: u64) -> Measurement {
        Measurement {
            name: name.into(),
            kind: kind.into(),
            description: String::new(),
            load: LoadMode::Closed,
            concurrency: 8,
            seconds: 1.0,
            ok: throughput as u64,
            errors: 0,
            errors_by_kind: Default::default(),
            throughput,
            latency: LatencySummary {
                p99_us,
                ..Default::default()
            },
            cpu_us_per_op: Default::default(),
        }
    }

    fn run_with(scenarios: Vec<ScenarioReport>) -> RunReport {
        RunReport {
            tool: "cartwheel-bench".into(),
            version: "0".into(),
            started_at: "now".into(),
            host: Host::default(),
            durability: "default".into(),
            settings: Settings {
                target: String::new(),
                nats_url: String::new(),
                duration_s: 1.0,
                warmup_s: 0.0,
                concurrency: 8,
                load: LoadMode::Closed,
                carts: 1,
            },
            scenarios,
            targets: vec![],
            notes: vec![],
        }
    }

    #[test]
    fn targets_are_judged_from_the_measurements() {
        let mut r = run_with(vec![
            ScenarioReport {
                name: "http".into(),
                measurements: vec![
                    m("axum-nats-echo", "baseline", 1000.0, 1000),
                    m("http-durable-echo", "baseline", 800.0, 2000),
                    m("http-add-item", "system", 700.0, 4000),
                ],
                ..Default::default()
            },
            ScenarioReport {
                name: "checkout".into(),
                measurements: vec![m("http-checkout", "system", 100.0, 9000)],
                ..Default::default()
            },
        ]);
        r.judge_targets();
        let by = |prefix: &str| r.targets.iter().find(|t| t.target.starts_with(prefix));
        let thr = by("HTTP add-item throughput / HTTP durable").map(|t| (t.measured, t.met));
        assert_eq!(thr, Some((0.875, true)));
        let raw = by("HTTP add-item throughput / raw").map(|t| (t.measured, t.met));
        assert_eq!(raw, Some((0.7, true)));
        let p99 = by("HTTP add-item p99").map(|t| (t.measured, t.met));
        assert_eq!(p99, Some((2.0, false)));
        let co = by("Checkout").map(|t| (t.measured, t.met));
        assert_eq!(co, Some((0.143, false)));
        assert!(by("WebSocket").is_none(), "no ws figures, no ws target");
    }

    #[test]
    fn markdown_has_a_row_per_measurement_and_the_targets() {
        let mut r = run_with(vec![ScenarioReport {
            name: "http".into(),
            measurements: vec![
                m("axum-nats-echo", "baseline", 1000.0, 1000),
                m("http-add-item", "system", 700.0, 2000),
            ],
            ratios: vec![Ratio::throughput(
                &m("http-add-item", "system", 700.0, 2000),
                &m("axum-nats-echo", "baseline", 1000.0, 1000),
            )],
            ..Default::default()
        }]);
        r.judge_targets();
        let md = markdown(&[r], Some("scripts/bench"), &[]);
        assert!(md.contains("| http | *axum-nats-echo* (baseline) | default |"));
        assert!(md.contains("| http | **http-add-item** | default |"));
        assert!(md.contains("http-add-item / axum-nats-echo throughput | default | 0.70 |"));
        assert!(md.contains("| yes |"));
        assert!(md.contains("Command: `scripts/bench`"));
    }
}

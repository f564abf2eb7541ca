//! Command-line arguments of `cartwheel bench` / `cartwheel-bench`.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// Cartwheel's load generator: every scenario right after its raw baseline.
#[derive(Debug, Clone, Parser)]
#[command(name = "cartwheel-bench", version)]
pub struct BenchArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: BenchCommand,
}

/// `run` measures; `report` merges runs into one JSON file and a Markdown table.
#[derive(Debug, Clone, Subcommand)]
pub enum BenchCommand {
    /// Run scenarios against a running Cartwheel (edge at --target, NATS at --nats-url).
    Run(Box<RunArgs>),
    /// Merge JSON results of `run --out` into one file and print the Markdown table.
    Report(ReportArgs),
}

/// A scenario (each runs its baseline first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Scenario {
    /// Nothing sent: the CPU the deployment uses at idle (`--idle-window`).
    Idle,
    /// NATS echo vs a cart command through the real actor (BusClient).
    Bus,
    /// axum + one NATS echo vs `POST /carts/{id}/items` and `GET /carts/{id}`.
    Http,
    /// NATS echo and a raw WebSocket echo vs an `add_item` round trip on `/ws`.
    Ws,
    /// N WebSocket subscribers of one cart: acknowledgement to push.
    Fanout,
    /// 3-line carts checked out concurrently over HTTP.
    Checkout,
    /// Activate N carts on one node; resident memory per live actor.
    LiveCarts,
    /// 1,000 concurrent reservations of one sku (group commit).
    HotSku,
    /// Every scenario above.
    All,
}

/// `run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Scenarios to run, in this order.
    #[arg(value_enum, default_values_t = [Scenario::All])]
    pub scenarios: Vec<Scenario>,
    /// Base URL of the edge.
    #[arg(
        long,
        env = "CARTWHEEL_BENCH_TARGET",
        default_value = "http://127.0.0.1:8080"
    )]
    pub target: String,
    /// NATS the nodes use (bus and live-carts scenarios, and every raw baseline).
    #[arg(
        long,
        env = "CARTWHEEL_NATS_URL",
        hide_env_values = true,
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// NATS credentials and TLS (the same as the nodes' and edges').
    #[command(flatten)]
    pub nats_auth: cartwheel_bus::connect::NatsAuth,
    /// Bearer token for an edge with auth on (`cartwheel token --sub bench --role admin`):
    /// sent on every HTTP request and when opening `/ws`.
    #[arg(long, env = "CARTWHEEL_BENCH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Subject prefix of the deployment.
    #[arg(long, env = "CARTWHEEL_PREFIX", default_value = "cw")]
    pub prefix: String,
    /// Partition count of the deployment.
    #[arg(long, env = "CARTWHEEL_PARTITIONS", default_value_t = 64)]
    pub partitions: u32,
    /// Measured time per workload (`10s`, `500ms`, `1m`).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Unmeasured time before each workload.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Requests in flight (closed loop), or the cap on them (open loop).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Open loop at this many requests per second (default: closed loop).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Carts the add-item workloads spread over.
    #[arg(long, default_value_t = 1000)]
    pub carts: usize,
    /// How long the idle scenario watches the processes' CPU time.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub idle_window: Duration,
    /// Subscriber counts of the fan-out scenario.
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
    pub fanout: Vec<usize>,
    /// Writes per fan-out size (also bounded by --duration).
    #[arg(long, default_value_t = 100)]
    pub fanout_writes: usize,
    /// 3-line carts prepared for the checkout scenario (the most it can check out).
    #[arg(long, default_value_t = 2000)]
    pub checkout_carts: u64,
    /// Live-cart counts to step through.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    pub live_steps: Vec<u64>,
    /// Live carts given 3 lines each after the last step (0: none).
    #[arg(long, default_value_t = 100_000)]
    pub live_lined: u64,
    /// Passivated carts activated again from storage after the passivation wait (0: none).
    #[arg(long, default_value_t = 200_000)]
    pub live_reactivate: u64,
    /// Activations in flight in the live-carts scenario.
    #[arg(long, default_value_t = 256)]
    pub live_concurrency: usize,
    /// After the last step, wait up to this long for the node to passivate the carts and
    /// report its memory again (0: skip; the node's passivate-after must be shorter).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub live_passivation_wait: Duration,
    /// Reservations in flight at once on one sku in the hot-sku scenario.
    #[arg(long, default_value_t = 1000)]
    pub hot_reservations: u64,
    /// Rounds of the hot-sku scenario (each on a fresh sku; the median is judged).
    #[arg(long, default_value_t = 3)]
    pub hot_rounds: u32,
    /// Pid of the node process, for its resident memory (live-carts).
    #[arg(long)]
    pub node_pid: Option<u32>,
    /// A process to charge CPU time to, as `name=pid` (repeatable; e.g. `node=123`,
    /// `edge=124`, `nats=125`): each measurement reports CPU µs per operation of each.
    #[arg(long, value_parser = parse_pid)]
    pub pid: Vec<(String, u32)>,
    /// The durability mode of the NATS server, recorded with every figure (`default`:
    /// fsync every 2 minutes; `always`: fsync every write).
    #[arg(long, default_value = "unknown")]
    pub durability: String,
    /// Print the JSON report on stdout instead of the Markdown table.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A note recorded in the report (repeatable).
    #[arg(long)]
    pub note: Vec<String>,
    /// No live progress line.
    #[arg(long)]
    pub no_progress: bool,
}

/// `report`.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// JSON files written by `run --out`.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Write the merged JSON here.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
    /// Write the Markdown table here (it is printed on stdout either way).
    #[arg(long)]
    pub md_out: Option<PathBuf>,
    /// Write the SVG chart here: throughput of each measurement beside its baselines,
    /// and the HTTP and WebSocket latency percentile curves.
    #[arg(long)]
    pub svg_out: Option<PathBuf>,
    /// The command that produced the runs, recorded in both outputs.
    #[arg(long)]
    pub command: Option<String>,
    /// A note recorded in both outputs (repeatable).
    #[arg(long)]
    pub note: Vec<String>,
}

impl RunArgs {
    /// The scenarios to run, `all` expanded, each once, in the order given.
    pub fn scenario_list(&self) -> Vec<Scenario> {
        let mut out = Vec::new();
        for s in &self.scenarios {
            let add: &[Scenario] = if *s == Scenario::All {
                &[
                    Scenario::Idle,
                    Scenario::Bus,
                    Scenario::Http,
                    Scenario::Ws,
                    Scenario::Fanout,
                    Scenario::Checkout,
                    Scenario::LiveCarts,
                    Scenario::HotSku,
                ]
            } else {
                std::slice::from_ref(s)
            };
            for a in add {
                if !out.contains(a) {
                    out.push(*a);
                }
            }
        }
        out
    }
}

/// Parses `name=pid`.
pub fn parse_pid(s: &str) -> Result<(String, u32), String> {
    let (name, pid) = s
        .split_once('=')
        .ok_or_else(|| format!("expected name=pid, got {s:?}"))?;
    let pid = pid
        .trim()
        .parse()
        .map_err(|_| format!("not a pid: {pid:?}"))?;
    Ok((name.trim().to_owned(), pid))
}

/// Parses `10s`, `500ms`, `2m`, `1.5s` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (try 10s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("unknown unit in {s:?} (ms, s or m)")),
    };
    if !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("out of range: {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("3h").is_err());
        assert!(parse_duration("-1s").is_err());
        assert_eq!(parse_pid("node=42"), Ok(("node".to_owned(), 42)));
        assert!(parse_pid("42").is_err());
    }

    #[test]
    fn all_expands_once_in_order() {
        let args = BenchArgs::try_parse_from(["b", "run", "ws", "all", "bus"]);
        let Ok(BenchArgs {
            command: BenchCommand::Run(run),
        }) = args
        else {
            panic!("parse failed: {args:?}");
        };
        assert_eq!(
            run.scenario_list(),
            vec![
                Scenario::Ws,
                Scenario::Idle,
                Scenario::Bus,
                Scenario::Http,
                Scenario::Fanout,
                Scenario::Checkout,
                Scenario::LiveCarts,
                Scenario::HotSku
            ]
        );
        assert_eq!(run.fanout, vec![1, 100, 1000]);
        assert_eq!(run.duration, Duration::from_secs(10));
    }
}

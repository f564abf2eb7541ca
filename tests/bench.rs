//! Keeps the load generator working: `cartwheel bench run all` at tiny scale (about a
//! second per workload) against `cartwheel up` with authentication on everywhere (a NATS
//! user and password for the bench as for the node and edge, a bearer token from
//! `cartwheel token` at the edge), then `cartwheel bench report` on its output. It checks that every scenario ran, succeeded and reported its fields — never
//! how fast anything was (the machine is shared; timings are not a test).

mod common;

use anyhow::Context;
use cartwheel_testkit::{NatsServer, NatsServerOptions};
use common::Proc;
use serde_json::Value;
use std::process::Stdio;
use std::time::Duration;

/// Upper bound on one bench command.
const BENCH_TIMEOUT: Duration = Duration::from_secs(240);

async fn bench(args: &[String]) -> anyhow::Result<String> {
    let mut cmd = tokio::process::Command::new(common::bin());
    cmd.arg("bench")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(BENCH_TIMEOUT, cmd.output())
        .await
        .context("bench did not finish in time")??;
    let stdout = String::from_utf8(out.stdout)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(
        out.status.success(),
        "bench {args:?} failed: {}\nstderr:\n{stderr}\nstdout:\n{stdout}",
        out.status
    );
    Ok(stdout)
}

fn check_measurement(scenario: &str, m: &Value) {
    let name = m["name"].as_str().unwrap_or_default();
    assert!(
        !name.is_empty(),
        "{scenario}: measurement without a name: {m}"
    );
    for field in ["throughput", "seconds", "ok", "errors", "concurrency"] {
        assert!(m[field].is_number(), "{scenario}/{name}: no {field}: {m}");
    }
    for field in [
        "count", "min_us", "mean_us", "p50_us", "p90_us", "p99_us", "p999_us", "max_us",
    ] {
        assert!(
            m["latency"][field].is_u64(),
            "{scenario}/{name}: no latency.{field}: {m}"
        );
    }
    assert!(m["load"]["mode"].is_string(), "{scenario}/{name}: {m}");
    assert!(m["errors_by_kind"].is_object(), "{scenario}/{name}: {m}");
    assert!(
        matches!(m["kind"].as_str(), Some("baseline" | "system")),
        "{scenario}/{name}: {m}"
    );
    assert!(
        m["ok"].as_u64().unwrap_or(0) > 0,
        "{scenario}/{name}: nothing succeeded: {m}"
    );
    assert_eq!(
        m["errors"].as_u64(),
        Some(0),
        "{scenario}/{name}: errors: {}",
        m["errors_by_kind"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_once_at_tiny_scale() -> anyhow::Result<()> {
    const NATS_PASSWORD: &str = "bench-pa55-w0rd";
    const JWT_SECRET: &str = "a-bench-secret-of-at-least-32-bytes!!";
    let nats = NatsServer::start_with(NatsServerOptions {
        extra_args: ["--user", "cw", "--pass", NATS_PASSWORD]
            .map(String::from)
            .to_vec(),
        ..NatsServerOptions::default()
    })
    .await?;
    let dir = tempfile::tempdir()?;
    let up = Proc::up(
        &dir.path().join("data"),
        &["--nats-url", &nats.url(), "--passivate-after-secs", "2"],
        &[
            ("CARTWHEEL_NATS_USER", "cw"),
            ("CARTWHEEL_NATS_PASSWORD", NATS_PASSWORD),
            ("CARTWHEEL_AUTH", "jwt"),
            ("CARTWHEEL_JWT_HS256_SECRET", JWT_SECRET),
        ],
    )
    .await?;
    let token = tokio::process::Command::new(common::bin())
        .args(["token", "--sub", "bench", "--role", "admin"])
        .env("CARTWHEEL_JWT_HS256_SECRET", JWT_SECRET)
        .output()
        .await?;
    anyhow::ensure!(token.status.success(), "cartwheel token: {token:?}");
    let token = String::from_utf8(token.stdout)?.trim().to_owned();
    let base = up.base.clone().context("up has an edge")?;
    let out_file = dir.path().join("run.json");
    let args: Vec<String> = [
        "run",
        "all",
        "--target",
        &base,
        "--nats-url",
        &nats.url(),
        "--nats-user",
        "cw",
        "--nats-password",
        NATS_PASSWORD,
        "--token",
        &token,
        "--node-pid",
        &up.child.pid().to_string(),
        "--durability",
        "default",
        "--duration",
        "1s",
        "--warmup",
        "200ms",
        "--concurrency",
        "4",
        "--carts",
        "8",
        "--idle-window",
        "1s",
        "--fanout",
        "1,5",
        "--fanout-writes",
        "5",
        "--checkout-carts",
        "12",
        "--live-steps",
        "40,80",
        "--live-concurrency",
        "8",
        "--live-lined",
        "20",
        "--live-reactivate",
        "40",
        "--hot-reservations",
        "30",
        "--hot-rounds",
        "2",
        "--live-passivation-wait",
        "20s",
        "--no-progress",
        "--json",
        "--out",
        &out_file.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let stdout = bench(&args).await?;
    let report: Value = serde_json::from_str(&stdout).with_context(|| stdout.clone())?;

    assert_eq!(report["tool"], "cartwheel-bench");
    assert_eq!(report["durability"], "default");
    assert!(
        report["host"]["cpus"].as_u64().unwrap_or(0) > 0,
        "{}",
        report["host"]
    );
    assert_eq!(report["settings"]["load"]["mode"], "closed");
    let scenarios = report["scenarios"].as_array().context("scenarios")?;
    let names: Vec<&str> = scenarios
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "idle",
            "bus",
            "http",
            "ws",
            "fanout",
            "checkout",
            "live-carts",
            "hot-sku"
        ]
    );
    for s in scenarios {
        let scenario = s["name"].as_str().unwrap_or_default();
        let ms = s["measurements"].as_array().context("measurements")?;
        assert!(!ms.is_empty(), "{scenario}: no measurements");
        for m in ms {
            check_measurement(scenario, m);
        }
        for r in s["ratios"].as_array().into_iter().flatten() {
            assert!(r["value"].is_number(), "{scenario}: ratio {r}");
        }
    }
    // Each comparison scenario measured its baseline first.
    for (scenario, baseline) in [
        ("bus", "nats-echo"),
        ("http", "axum-nats-echo"),
        ("ws", "nats-echo"),
    ] {
        let s = scenarios
            .iter()
            .find(|s| s["name"] == scenario)
            .context(scenario)?;
        assert_eq!(s["measurements"][0]["name"], baseline);
        assert_eq!(s["measurements"][0]["kind"], "baseline");
        assert!(!s["ratios"].as_array().context("ratios")?.is_empty());
    }
    // The durable echo (one KV compare-and-set per request) is the second baseline.
    for (scenario, durable) in [("bus", "bus-durable-echo"), ("http", "http-durable-echo")] {
        let s = scenarios
            .iter()
            .find(|s| s["name"] == scenario)
            .context(scenario)?;
        assert_eq!(s["measurements"][1]["name"], durable);
        assert_eq!(s["measurements"][1]["kind"], "baseline");
    }
    let fanout = scenarios
        .iter()
        .find(|s| s["name"] == "fanout")
        .context("fanout")?;
    let fanout_names: Vec<&str> = fanout["measurements"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert!(fanout_names.contains(&"fanout-5-last"), "{fanout_names:?}");

    let live = &scenarios
        .iter()
        .find(|s| s["name"] == "live-carts")
        .context("live")?["live_carts"];
    let steps = live["steps"].as_array().context("live steps")?;
    assert_eq!(steps.len(), 2, "{live}");
    assert_eq!(steps[1]["activated"], 80);
    assert!(steps[1]["live"].is_u64(), "{live}");
    assert!(steps[1]["rss_bytes"].as_u64().unwrap_or(0) > 0, "{live}");
    assert!(live["rss_after_passivation_bytes"].is_u64(), "{live}");
    assert_eq!(live["lined_carts"], 20, "{live}");
    assert!(live["bytes_per_lined_cart"].is_u64(), "{live}");
    // Every cart passivated (2 s) within the wait, and came back from storage.
    assert!(
        live["reactivations_per_s"].as_f64().unwrap_or(0.0) > 0.0,
        "{live}"
    );
    let hot = scenarios
        .iter()
        .find(|s| s["name"] == "hot-sku")
        .context("hot-sku")?;
    let hot_names: Vec<&str> = hot["measurements"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert_eq!(
        hot_names,
        ["hot-sku-reserve-30-r1", "hot-sku-reserve-30-r2"]
    );

    // The targets this run can judge (not the fan-out to 1,000: it ran 1 and 5) are
    // there, with a verdict.
    let targets = report["targets"].as_array().context("targets")?;
    assert!(targets.len() >= 4, "{targets:?}");
    assert!(
        targets
            .iter()
            .all(|t| t["met"].is_boolean() && t["measured"].is_number())
    );

    // `report` turns the saved run into the Markdown table and a combined JSON file.
    let combined = dir.path().join("combined.json");
    let md = bench(&[
        "report".to_string(),
        out_file.display().to_string(),
        "--command".into(),
        "cartwheel bench run all".into(),
        "--json-out".into(),
        combined.display().to_string(),
    ])
    .await?;
    assert!(md.contains("| scenario | measurement | fsync |"), "{md}");
    assert!(md.contains("**http-add-item**"), "{md}");
    assert!(
        md.contains("| target | fsync | measured | goal | met |"),
        "{md}"
    );
    let combined: Value = serde_json::from_str(&std::fs::read_to_string(&combined)?)?;
    assert_eq!(combined["runs"].as_array().map(Vec::len), Some(1));

    up.terminate().await?;
    Ok(())
}

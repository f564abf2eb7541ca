//! What `deploy/` ships, checked offline and against a running system: the Helm chart
//! renders, lints and validates against the Kubernetes schemas for every value set; the
//! alert rules and the scrape config pass promtool (with the rules' unit tests); the
//! dashboard parses (all in `deploy/check.py`); and every series the dashboard and the
//! rules use is in a real `/metrics` scrape of a node and an edge.

mod common;

use anyhow::{Context, ensure};
use cartwheel_testkit::{NatsServer, free_port};
use common::{Proc, scrape};
use serde_json::json;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The Python of `scripts/setup --test`'s venv (helm-python-sdk, kubernetes-validate).
fn python() -> anyhow::Result<PathBuf> {
    let py = root().join(".tools/venv/bin/python");
    ensure!(
        py.exists(),
        "{} is missing: run scripts/setup --test",
        py.display()
    );
    Ok(py)
}

/// `deploy/check.py` with `args`, promtool from `.tools/bin` first on PATH.
fn check_py(args: &[&str]) -> anyhow::Result<std::process::Output> {
    let path = format!(
        "{}:{}",
        root().join(".tools/bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new(python()?)
        .arg(root().join("deploy/check.py"))
        .args(args)
        .env("PATH", path)
        .current_dir(root())
        .output()
        .context("running deploy/check.py")
}

#[test]
fn the_chart_the_rules_and_the_dashboard_validate() -> anyhow::Result<()> {
    let out = check_py(&[])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // Every value set was rendered and validated, the rules were unit-tested.
    for set in [
        "default-values.yaml",
        "auth-values.yaml",
        "public-key-values.yaml",
        "stores-values.yaml",
        "three-nodes-values.yaml",
    ] {
        assert!(
            stdout.contains(&format!("{set}: ")) && stdout.contains("validated against Kubernetes"),
            "{set} not checked: {stdout}"
        );
    }
    assert!(stdout.contains("rules checked and unit-tested"), "{stdout}");
    assert!(stdout.contains("deploy: all checks passed"), "{stdout}");
    Ok(())
}

#[test]
fn the_chart_sets_only_variables_the_binary_reads() -> anyhow::Result<()> {
    let out = check_py(&["env-names"])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names = String::from_utf8(out.stdout)?;
    let mut checked = 0;
    for line in names.lines() {
        let (sub, name) = line.split_once(' ').context("`<subcommand> <NAME>`")?;
        let help = Command::new(env!("CARGO_BIN_EXE_cartwheel"))
            .args([sub, "--help"])
            .output()?;
        let help = String::from_utf8_lossy(&help.stdout);
        // `[env: NAME=value]`, or `[env: NAME]` when values are hidden.
        assert!(
            help.contains(&format!("[env: {name}=")) || help.contains(&format!("[env: {name}]")),
            "the chart sets {name} for `cartwheel {sub}`, which does not read it"
        );
        checked += 1;
    }
    assert!(checked >= 25, "too few variables found: {names}");
    Ok(())
}

/// Series names in a Prometheus text scrape (`name{…} value` / `name value`).
fn series(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_series_the_dashboard_and_the_alerts_use_is_scraped_from_a_running_system()
-> anyhow::Result<()> {
    let out = check_py(&["metric-names"])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let used: BTreeSet<String> = String::from_utf8(out.stdout)?
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(used.len() >= 15, "too few series found: {used:?}");

    // A node and an edge as Kubernetes runs them, with one checkout done.
    let nats = NatsServer::start().await?;
    let dir = tempfile::tempdir()?;
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    // The edge first: a read sent before any node serves waits for one (the owner-wait
    // series), as during a failover.
    let edge = Proc::edge(&nats.url(), dir.path().join("edge.log")).await?;
    let api = edge.api();
    let early = tokio::spawn({
        let api = api.clone();
        async move { api.get("/products").await }
    });
    let _node = Proc::node(
        &nats.url(),
        dir.path().join("node.log"),
        &[("CARTWHEEL_METRICS_ADDR", metrics_addr.as_str())],
    )
    .await?;
    // Answered or given up on (a slow start), the wait is recorded either way.
    early.await??;
    edge.wait_ready().await?;
    api.product("MUG", 1200, 5).await?;
    let cart = api.cart("uma").await?;
    let (s, _) = api
        .post(
            &format!("/carts/{cart}/items"),
            json!({"sku": "MUG", "qty": 1}),
        )
        .await?;
    assert_eq!(s, 200);
    let (s, _) = api.checkout(&cart, "k1").await?;
    assert!(s == 201 || s == 202, "checkout answered {s}");

    let mut scraped = series(&scrape(&format!("{}/metrics", api.base)).await?);
    scraped.extend(series(
        &scrape(&format!("http://{metrics_addr}/metrics")).await?,
    ));
    let missing: Vec<&String> = used.iter().filter(|n| !scraped.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "used by deploy/ but not scraped: {missing:?}\nscraped: {scraped:?}"
    );
    Ok(())
}

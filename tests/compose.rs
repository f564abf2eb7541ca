//! `compose.yaml` is a valid Compose file, and every service runs commands the binaries
//! really accept: each `--flag` of a `cartwheel` service appears in `cartwheel <sub>
//! --help`, each `CARTWHEEL_*` variable it sets is one that subcommand reads, and the NATS
//! service's flags appear in `nats-server --help`.
//!
//! There is no Docker engine on CI machines; Debian's `docker-compose` (Compose v1.29,
//! installed by `scripts/setup`) validates the file without one, and its PyYAML turns
//! the normalized file into JSON for the checks.

use anyhow::{Context as _, ensure};
use cartwheel_testkit::nats_server_bin;
use serde_json::Value;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `program` with `args` in the workspace root and returns its stdout; fails loudly
/// with its stderr (or with `hint` when it cannot be started).
fn run(program: &str, args: &[&str], hint: &str) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .current_dir(root())
        .output()
        .with_context(|| format!("cannot run {program}; {hint}"))?;
    ensure!(
        output.status.success(),
        "{program} {args:?} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The normalized compose file, as JSON.
fn compose_config() -> anyhow::Result<Value> {
    let hint = "install Debian's docker-compose (scripts/setup does)";
    run(
        "docker-compose",
        &["-f", "compose.yaml", "config", "-q"],
        hint,
    )?;
    let yaml = run("docker-compose", &["-f", "compose.yaml", "config"], hint)?;
    let mut python = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("running python3 (with PyYAML, a dependency of docker-compose)")?;
    python
        .stdin
        .take()
        .context("python3's stdin")?
        .write_all(yaml.as_bytes())?;
    let output = python.wait_with_output()?;
    ensure!(
        output.status.success(),
        "converting the compose file failed"
    );
    Ok(serde_json::from_slice(&output.stdout)?)
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `--flag` or `--flag=value` → `--flag`.
fn flags(args: &[String]) -> Vec<&str> {
    args.iter()
        .filter(|a| a.starts_with("--"))
        .map(|a| a.split('=').next().unwrap_or(a))
        .collect()
}

#[test]
fn compose_file_is_valid_and_uses_only_real_flags_and_settings() -> anyhow::Result<()> {
    let config = compose_config()?;
    let services = config["services"]
        .as_object()
        .expect("services in compose.yaml");
    for name in ["nats", "mongo", "redis", "node", "edge"] {
        assert!(services.contains_key(name), "no {name} service");
    }
    let volumes = config["volumes"].as_object().expect("named volumes");
    for name in ["nats-data", "mongo-data", "redis-data"] {
        assert!(volumes.contains_key(name), "no volume {name}");
    }

    let cartwheel = env!("CARGO_BIN_EXE_cartwheel");
    let mut checked = 0;
    for (name, service) in services {
        assert!(
            service["healthcheck"]["test"].is_array(),
            "service {name} has no health check"
        );
        let command = strings(&service["command"]);
        let uses_cartwheel = service["image"].as_str() == Some("cartwheel:latest");
        if uses_cartwheel {
            let sub = command
                .first()
                .unwrap_or_else(|| panic!("{name}: no subcommand"));
            let help = run(cartwheel, &[sub, "--help"], "the binary is built by cargo")?;
            for flag in flags(&command[1..]) {
                assert!(
                    help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                    "{name}: `cartwheel {sub}` has no flag {flag}"
                );
            }
            let env = service["environment"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            for key in env.keys().filter(|k| k.starts_with("CARTWHEEL_")) {
                // `[env: NAME=value]`, or `[env: NAME]` when values are hidden.
                assert!(
                    help.contains(&format!("[env: {key}="))
                        || help.contains(&format!("[env: {key}]")),
                    "{name}: `cartwheel {sub}` does not read {key}"
                );
            }
            checked += 1;
        } else if command.first().map(String::as_str) == Some("nats-server") {
            let bin = nats_server_bin();
            let output = Command::new(&bin)
                .arg("--help")
                .output()
                .expect("nats-server --help runs");
            // nats-server prints its usage on stdout or stderr depending on the version.
            let help = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            for flag in flags(&command[1..]) {
                assert!(
                    help.contains(&format!("{flag} ")),
                    "{name}: nats-server has no flag {flag}"
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 3, "nats, node and edge commands checked");

    // The nodes keep orders in MongoDB and carts in Redis, both services of this file.
    let node = &services["node"];
    let store = node["environment"]["CARTWHEEL_STORE"]
        .as_str()
        .unwrap_or("");
    assert!(store.starts_with("mongodb://mongo:"), "{store}");
    let carts = node["environment"]["CARTWHEEL_CART_STORE"]
        .as_str()
        .unwrap_or("");
    assert!(carts.starts_with("redis://redis:"), "{carts}");
    assert!(
        node["deploy"]["replicas"].as_u64().unwrap_or(1) >= 2,
        "two or more actor nodes"
    );
    // NATS with the least-privilege roles of deploy/nats: nodes and the edge sign in as
    // their own users.
    let nats = strings(&services["nats"]["command"]).join(" ");
    assert!(
        nats.contains("-c /etc/nats/nats-server.conf"),
        "NATS without the roles file: {nats}"
    );
    assert_eq!(node["environment"]["CARTWHEEL_NATS_USER"], "node");
    assert_eq!(
        services["edge"]["environment"]["CARTWHEEL_NATS_USER"],
        "edge"
    );
    let redis = strings(&services["redis"]["command"]).join(" ");
    assert!(
        redis.contains("--appendonly yes"),
        "Redis without AOF: {redis}"
    );
    Ok(())
}

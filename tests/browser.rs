//! The shop page at `/` in a real browser: starts `cartwheel up`, then runs the Playwright
//! script `tests/browser/run.mjs` (headless Debian Chromium, see the script for the steps)
//! against it and asserts its exit status — once with auth off (two pages on one cart;
//! checkouts answer before the saga settles and one shopper's payments are declined, so
//! orders turn CONFIRMED or FAILED on screen by push), once with JWT auth and the demo
//! sign-in on (sign in, shop, a cart closed to another person). The two runs take turns:
//! one Chromium at a time. Screenshots go to `test-artifacts/browser/`.
//!
//! Needs `node` (20+), `tests/browser/node_modules` (`scripts/setup` runs `npm ci` there)
//! and Chromium (`/usr/bin/chromium`, or `CARTWHEEL_CHROMIUM`). Without Chromium the test
//! says so loudly and passes — unless `CARTWHEEL_REQUIRE_BROWSER=1`, when it fails.

mod common;

use anyhow::{Context, bail};
use common::Proc;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The whole browser run must finish well within this (it takes ~15 s).
const BROWSER_RUN_LIMIT: Duration = Duration::from_secs(150);

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Writes straight to the process's stderr, past the test harness's output capture, so
/// a skip is seen in every `cargo test` run.
fn loud(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{text}");
    let _ = err.flush();
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `CARTWHEEL_CHROMIUM`, else Debian's `/usr/bin/chromium`, else `chromium` on PATH.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CARTWHEEL_CHROMIUM").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        return is_executable(&p).then_some(p);
    }
    let debian = PathBuf::from("/usr/bin/chromium");
    if is_executable(&debian) {
        return Some(debian);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("chromium"))
        .find(|p| is_executable(p))
}

/// `node` on PATH, checked to be version 20 or newer (playwright-core needs it).
fn node() -> anyhow::Result<PathBuf> {
    let node = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join("node"))
        .find(|p| is_executable(p))
        .context("`node` is not on PATH: run scripts/setup (it installs nodejs and npm)")?;
    let out = std::process::Command::new(&node)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", node.display()))?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .with_context(|| format!("unreadable node version {version:?}"))?;
    if major < 20 {
        bail!("node {version} is too old: playwright-core needs node 20 or newer");
    }
    Ok(node)
}

/// One browser run at a time (two Chromiums on two cores would only slow both).
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shop_page_works_in_headless_chromium() -> anyhow::Result<()> {
    run_page(
        "open",
        &[
            // Checkouts answer at once (202, the order not settled yet): the page must
            // show the result from its order subscription's pushes, never by polling.
            ("CARTWHEEL_CHECKOUT_WAIT_MS", "0"),
            // The script's "declined shopper" sees a pending order turn FAILED.
            ("CARTWHEEL_PAYMENT_DECLINE_USERS", "bt-declined-shopper"),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shop_page_signs_in_and_shops_with_auth_on() -> anyhow::Result<()> {
    run_page(
        "auth",
        &[
            ("CARTWHEEL_AUTH", "jwt"),
            (
                "CARTWHEEL_JWT_HS256_SECRET",
                "a-browser-test-secret-of-32-bytes-or-more",
            ),
            ("CARTWHEEL_DEMO_SIGN_IN", "true"),
        ],
    )
    .await
}

/// Starts `cartwheel up` with `envs` and runs `run.mjs` in `mode` against it.
async fn run_page(mode: &str, envs: &[(&str, &str)]) -> anyhow::Result<()> {
    let _turn = ONE_BROWSER.lock().await;
    let Some(chromium) = chromium() else {
        let required = std::env::var("CARTWHEEL_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
        loud(&format!(
            "\n{bar}\n!! BROWSER TESTS SKIPPED: Chromium is not installed (looked for \
             $CARTWHEEL_CHROMIUM, /usr/bin/chromium, chromium on PATH).\n!! Install it with \
             scripts/setup (Debian package `chromium`). The shop page was NOT tested in a \
             browser.\n{bar}\n",
            bar = "!".repeat(78)
        ));
        if required {
            bail!("CARTWHEEL_REQUIRE_BROWSER=1 but Chromium is not installed");
        }
        return Ok(());
    };
    let node = node()?;
    let root = workspace_root();
    let script = root.join("tests/browser/run.mjs");
    let modules = root.join("tests/browser/node_modules/playwright-core/package.json");
    if !modules.exists() {
        bail!(
            "{} is missing: run scripts/setup (it runs `npm ci` in tests/browser)",
            modules.display()
        );
    }

    let dir = tempfile::tempdir()?;
    let up = Proc::up(&dir.path().join("data"), &[], envs).await?;
    let base = up.base.clone().context("the edge's base URL")?;
    let artifacts = root.join("test-artifacts/browser");
    std::fs::create_dir_all(&artifacts)?;

    let started = Instant::now();
    // The script's output goes straight to the terminal: its steps and timings are the
    // useful part of a failure.
    let mut child = tokio::process::Command::new(&node)
        .arg(&script)
        .arg(&base)
        .arg(&artifacts)
        .arg(mode)
        .env("CARTWHEEL_CHROMIUM", &chromium)
        .current_dir(&root)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {} {}", node.display(), script.display()))?;
    let status = match tokio::time::timeout(BROWSER_RUN_LIMIT, child.wait()).await {
        Ok(status) => status?,
        Err(_) => {
            let _ = child.kill().await;
            bail!(
                "the browser run took longer than {BROWSER_RUN_LIMIT:?}; server log:\n{}",
                up.child.log_contents()
            );
        }
    };
    loud(&format!(
        "browser tests ({mode}): {} in {:.1} s; screenshots in {}",
        if status.success() { "passed" } else { "FAILED" },
        started.elapsed().as_secs_f64(),
        artifacts.display()
    ));
    if !status.success() {
        bail!(
            "the browser tests failed ({status}); see their output above and the screenshots \
             in {}; server log:\n{}",
            artifacts.display(),
            up.child.log_contents()
        );
    }
    let exit = up.terminate().await?;
    assert!(exit.success(), "cartwheel up exited with {exit}");
    Ok(())
}

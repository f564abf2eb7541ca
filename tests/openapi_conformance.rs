//! The edge's responses match its OpenAPI document: Schemathesis (PyPI, installed by
//! `scripts/setup` into `.tools/`) generates requests for every documented operation
//! against a running `cartwheel up` and checks each response's status, content type,
//! headers and body against the document, and that nothing answers 5xx.
//!
//! Bounded: a fixed seed, three examples per operation and a 25-second budget.

mod common;

use anyhow::Context;
use common::Proc;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

/// The schemathesis binary: `CARTWHEEL_SCHEMATHESIS`, then `.tools/bin`, then `PATH`.
fn schemathesis() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("CARTWHEEL_SCHEMATHESIS") {
        return Ok(PathBuf::from(p));
    }
    let tools = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/schemathesis");
    if tools.exists() {
        return Ok(tools);
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("schemathesis"))
                .find(|c| c.exists())
        })
        .unwrap_or(None);
    on_path.context(
        "schemathesis not found: run scripts/setup (it installs the pinned version into .tools/), \
         or set CARTWHEEL_SCHEMATHESIS",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_match_the_openapi_document() -> anyhow::Result<()> {
    let bin = schemathesis()?;
    let dir = tempfile::tempdir()?;
    let edge = Proc::up(&dir.path().join("data"), &[], &[]).await?;
    let api = edge.api();
    // Something for the generated requests to find.
    api.product("TEA", 450, 10).await?;
    let schema = format!("{}/openapi.json", api.base);
    let run = tokio::process::Command::new(&bin)
        .current_dir(dir.path())
        .args([
            "run",
            schema.as_str(),
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance,response_headers_conformance",
            "--max-examples",
            "3",
            "--max-time",
            "25",
            "--seed",
            "1",
            "--exclude-path",
            "/ws",
            "--no-color",
        ])
        .stdin(Stdio::null())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .context("schemathesis did not finish in 90 s")?
        .with_context(|| format!("running {}", bin.display()))?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found responses that do not match /openapi.json:\n{report}\n---- edge log ----\n{}",
        edge.child.log_contents()
    );
    assert!(report.contains("passed"), "{report}");
    Ok(())
}

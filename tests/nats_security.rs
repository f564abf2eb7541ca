//! Every process authenticates to NATS and can verify it over TLS: against real
//! nats-servers that require a user and password, a token, or TLS with client
//! certificates (mTLS), a process with the right settings serves, one without is refused
//! at once with a clear error, and no secret reaches its log.

mod common;

use cartwheel_testkit::{NatsServer, NatsServerOptions};
use common::Proc;
use std::path::PathBuf;
use std::time::Duration;

fn tls(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
        .display()
        .to_string()
}

async fn server(args: &[&str]) -> anyhow::Result<NatsServer> {
    NatsServer::start_with(NatsServerOptions {
        extra_args: args.iter().map(|s| s.to_string()).collect(),
        ..NatsServerOptions::default()
    })
    .await
}

/// `cartwheel up --nats-url URL` with `envs`: serves (a product write succeeds) and its
/// log does not contain `secret`.
async fn serves(nats: &NatsServer, envs: &[(&str, &str)], secret: &str) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let url = nats.url();
    let up = Proc::up(&dir.path().join("data"), &["--nats-url", &url], envs).await?;
    let api = up.api();
    api.product("MUG", 1200, 3).await?;
    let log = up.child.log_contents();
    assert!(!log.contains(secret), "a secret in the log:\n{log}");
    Ok(())
}

/// `cartwheel node` with `envs` against `nats`: exits at once (no 30 s of retries) with
/// an error that says why, and without `secret` in it.
async fn refused(
    nats: &NatsServer,
    envs: &[(&str, &str)],
    why: &str,
    secret: &str,
) -> anyhow::Result<()> {
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_cartwheel"))
            .args(["node", "--nats-url", &nats.url()])
            .envs(envs.iter().copied())
            .env("RUST_LOG", "info")
            .output(),
    )
    .await??;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "started without credentials:\n{text}"
    );
    assert!(text.to_lowercase().contains(why), "no {why:?} in:\n{text}");
    assert!(!text.contains(secret), "a secret in the output:\n{text}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password() -> anyhow::Result<()> {
    let nats = server(&["--user", "cartwheel", "--pass", "pa55-w0rd-s3cret"]).await?;
    serves(
        &nats,
        &[
            ("CARTWHEEL_NATS_USER", "cartwheel"),
            ("CARTWHEEL_NATS_PASSWORD", "pa55-w0rd-s3cret"),
        ],
        "pa55-w0rd-s3cret",
    )
    .await?;
    refused(&nats, &[], "authorization", "pa55-w0rd-s3cret").await?;
    refused(
        &nats,
        &[
            ("CARTWHEEL_NATS_USER", "cartwheel"),
            ("CARTWHEEL_NATS_PASSWORD", "wrong-pa55-w0rd"),
        ],
        "authorization",
        "wrong-pa55-w0rd",
    )
    .await?;
    // Credentials in the URL work too, and the log shows the URL without its password.
    let dir = tempfile::tempdir()?;
    let url = nats
        .url()
        .replace("nats://", "nats://cartwheel:pa55-w0rd-s3cret@");
    let up = Proc::up(&dir.path().join("data"), &["--nats-url", &url], &[]).await?;
    up.api().product("CUP", 900, 1).await?;
    let log = up.child.log_contents();
    assert!(!log.contains("pa55-w0rd-s3cret"), "{log}");
    assert!(log.contains("cartwheel:***@"), "{log}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token() -> anyhow::Result<()> {
    let nats = server(&["--auth", "t0ken-s3cret-value"]).await?;
    serves(
        &nats,
        &[("CARTWHEEL_NATS_TOKEN", "t0ken-s3cret-value")],
        "t0ken-s3cret-value",
    )
    .await?;
    refused(&nats, &[], "authorization", "t0ken-s3cret-value").await?;
    // One identity at a time.
    refused(
        &nats,
        &[
            ("CARTWHEEL_NATS_TOKEN", "t0ken-s3cret-value"),
            ("CARTWHEEL_NATS_USER", "a"),
            ("CARTWHEEL_NATS_PASSWORD", "b"),
        ],
        "one nats identity",
        "t0ken-s3cret-value",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates() -> anyhow::Result<()> {
    let (cert, key, ca) = (tls("server.pem"), tls("server-key.pem"), tls("ca.pem"));
    let nats = server(&[
        "--tls",
        "--tlscert",
        &cert,
        "--tlskey",
        &key,
        "--tlsverify",
        "--tlscacert",
        &ca,
    ])
    .await?;
    let (client_cert, client_key) = (tls("client.pem"), tls("client-key.pem"));
    serves(
        &nats,
        &[
            ("CARTWHEEL_NATS_TLS_CA", ca.as_str()),
            ("CARTWHEEL_NATS_TLS_CERT", client_cert.as_str()),
            ("CARTWHEEL_NATS_TLS_KEY", client_key.as_str()),
        ],
        "BEGIN",
    )
    .await?;
    // Without a client certificate the server refuses the handshake; without the CA the
    // client refuses the server's certificate.
    refused(
        &nats,
        &[("CARTWHEEL_NATS_TLS_CA", ca.as_str())],
        "tls",
        "BEGIN",
    )
    .await?;
    refused(
        &nats,
        &[
            ("CARTWHEEL_NATS_TLS_CERT", client_cert.as_str()),
            ("CARTWHEEL_NATS_TLS_KEY", client_key.as_str()),
        ],
        "certificate",
        "BEGIN",
    )
    .await?;
    // An expired client certificate (signed by the right CA) is refused at once too.
    let (expired, expired_key) = (tls("client-expired.pem"), tls("client-expired-key.pem"));
    refused(
        &nats,
        &[
            ("CARTWHEEL_NATS_TLS_CA", ca.as_str()),
            ("CARTWHEEL_NATS_TLS_CERT", expired.as_str()),
            ("CARTWHEEL_NATS_TLS_KEY", expired_key.as_str()),
        ],
        "tls",
        "BEGIN",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_private_server_of_up_requires_the_generated_password() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let up = Proc::up(&data, &[], &[]).await?;
    up.api().product("MUG", 1200, 3).await?;
    let creds = std::fs::read_to_string(data.join("nats-credentials"))?;
    let mode = std::fs::metadata(data.join("nats-credentials"))?
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "readable by others: {mode:o}");
    let password = creds
        .lines()
        .find_map(|l| l.strip_prefix("password="))
        .expect("a password line")
        .to_owned();
    assert!(password.len() >= 32);
    let conf = std::fs::read_to_string(data.join("nats-server.conf"))?;
    let port = conf
        .lines()
        .find_map(|l| l.strip_prefix("listen: 127.0.0.1:"))
        .expect("a loopback listen line")
        .trim()
        .to_owned();
    let url = format!("nats://127.0.0.1:{port}");
    // Without the password: refused. With it: the buckets are there.
    let anonymous = async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(2));
    let refused = tokio::time::timeout(Duration::from_secs(5), anonymous.connect(&url)).await;
    assert!(!matches!(refused, Ok(Ok(_))), "an anonymous client got in");
    let client = async_nats::ConnectOptions::new()
        .user_and_password("cartwheel".into(), password.clone())
        .connect(&url)
        .await?;
    let js = async_nats::jetstream::new(client);
    assert!(js.get_key_value("cw_products").await.is_ok());
    // The password is not in the log.
    assert!(!up.child.log_contents().contains(&password));
    Ok(())
}

/// `--help` shows where each setting comes from, never a secret's value: every variable
/// that can carry one (passwords, tokens, URLs with user info, store URIs) is set to a
/// marked value, and no subcommand's help prints it.
#[tokio::test]
async fn help_never_shows_a_secret_from_the_environment() -> anyhow::Result<()> {
    const MARK: &str = "S3CRET-MARK";
    let url = format!("nats://u:{MARK}@127.0.0.1:4222");
    let mongo = format!("mongodb://app:{MARK}@db:27017/shop");
    let redis = format!("redis://:{MARK}@cache:6379/0");
    let envs = [
        ("CARTWHEEL_NATS_URL", url.as_str()),
        ("CARTWHEEL_NATS_PASSWORD", MARK),
        ("CARTWHEEL_NATS_TOKEN", MARK),
        ("CARTWHEEL_JWT_HS256_SECRET", MARK),
        ("CARTWHEEL_STORE", mongo.as_str()),
        ("CARTWHEEL_CART_STORE", redis.as_str()),
        ("CARTWHEEL_RATE_LIMIT_REDIS", redis.as_str()),
        ("CARTWHEEL_OTLP_ENDPOINT", url.as_str()),
        ("CARTWHEEL_BENCH_TOKEN", MARK),
    ];
    for sub in [
        &["up"][..],
        &["node"],
        &["edge"],
        &["cluster"],
        &["bench", "run"],
        &["token"],
    ] {
        let out = tokio::process::Command::new(common::bin())
            .args(sub)
            .arg("--help")
            .envs(envs)
            .output()
            .await?;
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{sub:?} --help: {out:?}");
        // The help does name the variables (so the check looks at the right text).
        assert!(help.contains("CARTWHEEL_"), "{sub:?} --help:\n{help}");
        assert!(
            !help.contains(MARK),
            "{sub:?} --help shows a secret:\n{help}"
        );
    }
    Ok(())
}

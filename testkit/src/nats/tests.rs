//! Tests of the `nats-server` harness against the real binary.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use super::*;

async fn connects(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

/// Creates stream `name` on the server and stores one acknowledged message in it.
async fn store_one_message(url: &str, name: &str) {
    let client = connect(url).await.unwrap();
    let js = jetstream::new(client);
    js.create_stream(stream::Config {
        name: name.to_owned(),
        subjects: vec![format!("{name}.>")],
        ..stream::Config::default()
    })
    .await
    .unwrap();
    js.publish(format!("{name}.one"), "payload".into())
        .await
        .unwrap()
        .await
        .unwrap();
}

async fn message_count(url: &str, name: &str) -> u64 {
    let client = connect(url).await.unwrap();
    let js = jetstream::new(client);
    let mut stream = js.get_stream(name).await.unwrap();
    stream.info().await.unwrap().state.messages
}

#[tokio::test]
async fn starts_with_jetstream_on_a_loopback_port() {
    let server = NatsServer::start().await.unwrap();
    assert_ne!(server.port(), 0);
    let (user, password) = server.credentials().unwrap();
    assert_eq!(
        server.url(),
        format!("nats://{user}:{password}@127.0.0.1:{}", server.port())
    );
    assert!(connects(server.port()).await);
    // The server requires the credentials: an anonymous client is refused.
    let plain = format!("nats://127.0.0.1:{}", server.port());
    assert!(async_nats::connect(plain.as_str()).await.is_err());
    assert!(server.store_dir().starts_with(server.temp_dir()));

    store_one_message(&server.url(), "ORDERS").await;
    assert_eq!(message_count(&server.url(), "ORDERS").await, 1);
    assert!(server.store_dir().join("jetstream").is_dir());
}

#[tokio::test]
async fn two_servers_get_different_ports() {
    let (a, b) = tokio::join!(NatsServer::start(), NatsServer::start());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a.port(), b.port());
    assert_ne!(a.store_dir(), b.store_dir());
}

#[tokio::test]
async fn kill_and_restart_keep_the_port_and_the_data() {
    let mut server = NatsServer::start().await.unwrap();
    let port = server.port();
    store_one_message(&server.url(), "CARTS").await;

    server.kill().unwrap();
    assert_eq!(server.pid(), None);
    assert!(
        !connects(port).await,
        "a killed server must not accept connections"
    );

    server.restart().await.unwrap();
    assert_eq!(server.port(), port);
    assert!(connects(port).await);
    assert_eq!(message_count(&server.url(), "CARTS").await, 1);

    // Restarting a running server kills it first.
    let pid = server.pid();
    server.restart().await.unwrap();
    assert_ne!(server.pid(), pid);
    assert_eq!(message_count(&server.url(), "CARTS").await, 1);
}

#[tokio::test]
async fn sync_always_servers_keep_acknowledged_data() {
    let mut server = NatsServer::start_with(NatsServerOptions {
        sync_always: true,
        ..NatsServerOptions::default()
    })
    .await
    .unwrap();
    let config = fs::read_to_string(server.temp_dir().join("nats-server.conf")).unwrap();
    assert!(config.contains("sync_interval: always"), "{config}");

    store_one_message(&server.url(), "EVENTS").await;
    server.kill().unwrap();
    server.restart().await.unwrap();
    assert_eq!(message_count(&server.url(), "EVENTS").await, 1);
}

#[tokio::test]
async fn drop_kills_the_server_and_deletes_its_temp_dir() {
    let server = NatsServer::start().await.unwrap();
    let port = server.port();
    let temp_dir = server.temp_dir().to_owned();
    drop(server);
    assert!(!temp_dir.exists());
    assert!(!connects(port).await);
}

#[tokio::test]
async fn a_given_store_dir_outlives_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("nested/store");
    let first = NatsServer::start_with_dir(store.clone()).await.unwrap();
    assert_eq!(first.store_dir(), store);
    store_one_message(&first.url(), "INVENTORY").await;
    drop(first);
    assert!(store.join("jetstream").is_dir());

    let second = NatsServer::start_with_dir(store.clone()).await.unwrap();
    assert_eq!(message_count(&second.url(), "INVENTORY").await, 1);
}

#[tokio::test]
async fn restart_fails_loudly_when_the_port_was_taken() {
    let mut server = NatsServer::start().await.unwrap();
    server.kill().unwrap();
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", server.port())).unwrap();
    let started = std::time::Instant::now();
    let err = server.restart().await.unwrap_err();
    assert!(
        format!("{err:#}").contains("did not become ready"),
        "{err:#}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "an early exit must not wait for the timeout"
    );
}

fn fake_executable(path: &Path) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, "#!/bin/sh\n").unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn the_env_var_wins_and_must_be_usable() {
    let dir = tempfile::tempdir().unwrap();
    let custom = dir.path().join("custom/nats-server");
    fake_executable(&custom);
    let root = dir.path().join("root");
    fake_executable(&root.join(".tools/bin/nats-server"));

    let found = resolve_bin(Some(custom.clone().into()), &root, None).unwrap();
    assert_eq!(found, custom);

    let missing = dir.path().join("missing/nats-server");
    let err = resolve_bin(Some(missing.into()), &root, None).unwrap_err();
    assert!(err.to_string().contains("scripts/setup"), "{err}");

    // A bare name is looked up on PATH.
    let path_var = OsString::from(dir.path().join("custom"));
    let found = resolve_bin(Some("nats-server".into()), &root, Some(path_var)).unwrap();
    assert_eq!(found, custom);
}

#[test]
fn tools_bin_comes_before_path() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let tools = root.join(".tools/bin/nats-server");
    let on_path = dir.path().join("usr/bin/nats-server");
    fake_executable(&on_path);
    let path_var = Some(OsString::from(on_path.parent().unwrap()));

    assert_eq!(resolve_bin(None, &root, path_var.clone()).unwrap(), on_path);
    fake_executable(&tools);
    assert_eq!(resolve_bin(None, &root, path_var).unwrap(), tools);
}

#[test]
fn nothing_usable_is_an_error_with_the_hint() {
    let dir = tempfile::tempdir().unwrap();
    let not_executable = dir.path().join("bin/nats-server");
    fs::create_dir_all(not_executable.parent().unwrap()).unwrap();
    fs::write(&not_executable, "").unwrap();
    let path_var = Some(OsString::from(dir.path().join("bin")));
    let err = resolve_bin(Some(OsString::new()), dir.path(), path_var).unwrap_err();
    assert!(err.to_string().contains("scripts/setup"), "{err}");
}

#[test]
fn reads_the_port_from_the_log() {
    let log = "[1] 2026/01/01 00:00:00.000000 [INF] Listening for client connections on 127.0.0.1:41234\n\
               [1] 2026/01/01 00:00:00.000001 [INF] Server is ready\n";
    assert_eq!(listening_port(log), Some(41234));
    assert_eq!(listening_port("[INF] Starting nats-server\n"), None);
}

#[test]
fn the_sync_config_quotes_the_store_dir() {
    let config = sync_always_config(Path::new("/tmp/a \"b\"/js"));
    assert!(
        config.contains(r#"store_dir: "/tmp/a \"b\"/js""#),
        "{config}"
    );
    assert!(config.contains("sync_interval: always"), "{config}");
}

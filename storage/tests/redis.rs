//! The Redis backend: the conformance suite against a real redis-server (every entity kind
//! in Redis), plus what only this backend has (the idle TTL, the start-up persistence
//! check, raw documents of older and newer shapes, start-up errors).
//!
//! Every test starts its own redis-server (testkit) with the append-only file on, and uses
//! its own random key prefix.

mod conformance;

use anyhow::{Context as _, bail, ensure};
use cartwheel_bus::names::Names;
use cartwheel_domain::{Cart, Timestamp};
use cartwheel_storage::redis::{self, Persistence, Redis, RedisSettings};
use cartwheel_storage::{EntityStore, Record, StoreError};
use cartwheel_testkit::{RedisServer, RedisServerOptions, free_port, wait_for};
use conformance::{Backend, fixtures};
use std::time::{Duration, Instant};

/// Key prefixes of their own for one test.
fn fresh_names() -> Names {
    Names::new(&format!("t{}", uuid::Uuid::new_v4().simple()))
}

async fn backend() -> anyhow::Result<Backend> {
    let server = RedisServer::start().await?;
    let redis = Redis::open(&server.url(), &RedisSettings::default()).await?;
    let stores = redis::stores(&redis, &fresh_names());
    Ok(Backend::with_server(stores, server, redis))
}

#[async_trait::async_trait]
impl conformance::Server for RedisServer {
    fn kill(&mut self) -> anyhow::Result<()> {
        RedisServer::kill(self)
    }

    async fn restart(&mut self) -> anyhow::Result<()> {
        RedisServer::restart(self).await
    }
}

conformance::suite!(backend());

/// A raw command's reply.
async fn raw<T: ::redis::FromRedisValue>(
    redis: &Redis,
    cmd: &mut ::redis::Cmd,
) -> anyhow::Result<T> {
    Ok(cmd.query_async(&mut redis.connection()).await?)
}

/// Every write and every load sets the key's time to live to the idle TTL again; a key
/// nobody touches for that long is gone, and its id can be created again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_idle_ttl_is_refreshed_by_writes_and_loads_and_expires_idle_carts()
-> anyhow::Result<()> {
    let server = RedisServer::start().await?;
    let ttl = Duration::from_secs(600);
    let redis = Redis::open(
        &server.url(),
        &RedisSettings {
            idle_ttl: Some(ttl),
            ..RedisSettings::default()
        },
    )
    .await?;
    let carts = redis.store::<Cart>(&fresh_names().carts_bucket());
    let key = carts.key("cart-1");
    let pttl = |redis: &Redis| {
        let key = key.clone();
        let redis = redis.clone();
        async move { raw::<i64>(&redis, ::redis::cmd("PTTL").arg(&key)).await }
    };

    let record = Record::new(fixtures::cart("cart-1", "user-1"));
    let revision = carts.create("cart-1", &record).await?;
    let fresh = pttl(&redis).await?;
    ensure!(
        fresh > 590_000 && fresh <= 600_000,
        "TTL after create: {fresh} ms"
    );

    // Shorten it by hand, then each kind of access must put it back.
    raw::<i64>(&redis, ::redis::cmd("PEXPIRE").arg(&key).arg(1_000)).await?;
    let revision = carts.update("cart-1", &record, revision).await?;
    ensure!(pttl(&redis).await? > 590_000, "an update refreshes the TTL");
    raw::<i64>(&redis, ::redis::cmd("PEXPIRE").arg(&key).arg(1_000)).await?;
    carts.load("cart-1").await?.context("loads")?;
    ensure!(pttl(&redis).await? > 590_000, "a load refreshes the TTL");

    // Left alone past its TTL, the cart is gone; the id is free again. (Polled with
    // EXISTS: a load would refresh the TTL.)
    raw::<i64>(&redis, ::redis::cmd("PEXPIRE").arg(&key).arg(50)).await?;
    wait_for(
        "the idle cart to expire",
        Duration::from_secs(5),
        || async {
            raw::<i64>(&redis, ::redis::cmd("EXISTS").arg(&key))
                .await
                .is_ok_and(|n| n == 0)
        },
    )
    .await?;
    ensure!(carts.load("cart-1").await?.is_none());
    match carts.update("cart-1", &record, revision).await {
        Err(StoreError::Conflict { .. }) => {}
        other => bail!("an update of an expired cart: {other:?}"),
    }
    ensure!(carts.create("cart-1", &record).await? == 1);

    // Without an idle TTL, keys never expire.
    let forever = Redis::open(
        &server.url(),
        &RedisSettings {
            idle_ttl: None,
            ..RedisSettings::default()
        },
    )
    .await?;
    let kept = forever.store::<Cart>(&fresh_names().carts_bucket());
    kept.create("cart-1", &record).await?;
    let ttl: i64 = raw(&forever, ::redis::cmd("PTTL").arg(kept.key("cart-1"))).await?;
    ensure!(ttl == -1, "PTTL {ttl}: the key should have no expiry");
    Ok(())
}

/// `open` reports the server's persistence: the append-only file with its fsync policy,
/// off, or unknown when `CONFIG` is disabled (as managed services often do).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_open_checks_that_the_append_only_file_is_on() -> anyhow::Result<()> {
    let (aof, off, no_config) = tokio::join!(
        RedisServer::start(),
        RedisServer::start_with(RedisServerOptions {
            append_only: false,
            ..RedisServerOptions::default()
        }),
        RedisServer::start_with(RedisServerOptions {
            extra_args: vec!["--rename-command".into(), "CONFIG".into(), String::new()],
            ..RedisServerOptions::default()
        }),
    );
    let settings = RedisSettings::default();
    let aof = Redis::open(&aof?.url(), &settings).await?;
    assert_eq!(
        aof.persistence(),
        &Persistence::AppendOnly {
            fsync: "everysec".to_owned()
        }
    );
    let off = Redis::open(&off?.url(), &settings).await?;
    assert_eq!(off.persistence(), &Persistence::Off);
    let no_config = Redis::open(&no_config?.url(), &settings).await?;
    ensure!(
        matches!(no_config.persistence(), Persistence::Unknown(_)),
        "{:?}",
        no_config.persistence()
    );
    Ok(())
}

/// A malformed URL, or a server that is not there, is a clear `Unavailable` at once, not
/// a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_open_fails_fast_on_a_bad_url_or_no_server() -> anyhow::Result<()> {
    let settings = RedisSettings::default();
    for url in ["not a url", "http://127.0.0.1:6379", "redis://:secret@"] {
        match Redis::open(url, &settings).await {
            Err(StoreError::Unavailable(m)) => ensure!(!m.contains("secret"), "{m}"),
            other => bail!("{url}: expected Unavailable, got {other:?}"),
        }
    }
    let started = Instant::now();
    let nobody = format!("redis://127.0.0.1:{}/", free_port());
    match Redis::open(&nobody, &settings).await {
        Err(StoreError::Unavailable(m)) => ensure!(m.contains("cannot reach"), "{m}"),
        other => bail!("no server: expected Unavailable, got {other:?}"),
    }
    ensure!(
        started.elapsed() <= settings.open_timeout + Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    Ok(())
}

/// A cart stored before `Cart::checkout` and the outbox existed, and one from a newer node
/// with fields this node does not know, both load; the old one can be written back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_older_and_newer_document_shapes_load() -> anyhow::Result<()> {
    let server = RedisServer::start().await?;
    let redis = Redis::open(&server.url(), &RedisSettings::default()).await?;
    let carts = redis.store::<Cart>(&fresh_names().carts_bucket());
    let now = fixtures::cart("cart-old", "user-1");

    let mut old = serde_json::to_value(&now)?;
    old.as_object_mut().context("an object")?.remove("checkout");
    let old_doc = serde_json::json!({ "state": old });
    raw::<i64>(
        &redis,
        ::redis::cmd("HSET")
            .arg(carts.key("cart-old"))
            .arg("rev")
            .arg(7)
            .arg("doc")
            .arg(old_doc.to_string()),
    )
    .await?;
    let loaded = carts.load("cart-old").await?.context("loads")?;
    assert_eq!(loaded.record, Record::new(now.clone()));
    assert_eq!(loaded.revision, 7);
    let next = carts.update("cart-old", &loaded.record, 7).await?;
    assert_eq!(next, 8);

    let mut newer = serde_json::to_value(&now)?;
    newer["gift_wrap"] = serde_json::json!(true);
    let newer_doc = serde_json::json!({ "state": newer, "outbox": [], "trace": "next" });
    raw::<i64>(
        &redis,
        ::redis::cmd("HSET")
            .arg(carts.key("cart-next"))
            .arg("rev")
            .arg(1)
            .arg("doc")
            .arg(newer_doc.to_string()),
    )
    .await?;
    let loaded = carts.load("cart-next").await?.context("loads")?;
    assert_eq!(loaded.record.state, now);

    // Garbage is a codec error, not a crash or an empty cart.
    raw::<i64>(
        &redis,
        ::redis::cmd("HSET")
            .arg(carts.key("cart-bad"))
            .arg("rev")
            .arg(1)
            .arg("doc")
            .arg("{"),
    )
    .await?;
    ensure!(matches!(
        carts.load("cart-bad").await,
        Err(StoreError::Codec(_))
    ));
    Ok(())
}

/// The stored document is one hash per cart with `rev` and readable JSON in `doc`, with
/// timestamps as RFC 3339 strings and money as integers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_documents_are_one_readable_hash_per_cart() -> anyhow::Result<()> {
    let server = RedisServer::start().await?;
    let redis = Redis::open(&server.url(), &RedisSettings::default()).await?;
    let names = fresh_names();
    let carts = redis.store::<Cart>(&names.carts_bucket());
    let cart = fixtures::cart("cart-1", "user-1");
    carts.create("cart-1", &Record::new(cart.clone())).await?;

    assert_eq!(
        carts.key("cart-1"),
        format!("{}:cart-1", names.carts_bucket())
    );
    let (rev, doc): (u64, String) = raw(
        &redis,
        ::redis::cmd("HMGET")
            .arg(carts.key("cart-1"))
            .arg("rev")
            .arg("doc"),
    )
    .await?;
    assert_eq!(rev, 1);
    let doc: serde_json::Value = serde_json::from_str(&doc)?;
    assert_eq!(doc["state"]["id"], "cart-1");
    assert_eq!(doc["state"]["total"], cart.total);
    assert_eq!(
        doc["state"]["created_at"],
        Timestamp(cart.created_at.millis()).to_string()
    );
    ensure!(doc["outbox"].as_array().is_some_and(Vec::is_empty));
    Ok(())
}

/// A client that was idle while the server restarted does not fail its first read: the
/// read finds the old connection dead and is sent again on a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_an_idle_client_reads_at_once_after_a_server_restart() -> anyhow::Result<()> {
    let mut server = RedisServer::start().await?;
    let redis = Redis::open(&server.url(), &RedisSettings::default()).await?;
    let carts = redis.store::<Cart>(&fresh_names().carts_bucket());
    let record = Record::new(fixtures::cart("cart-1", "user-1"));
    let revision = carts.create("cart-1", &record).await?;

    server.kill()?;
    server.restart().await?;
    let loaded = carts.load("cart-1").await?.context("lost")?;
    assert_eq!((loaded.record, loaded.revision), (record, revision));
    assert_eq!(carts.ids().await?, ["cart-1"]);
    Ok(())
}

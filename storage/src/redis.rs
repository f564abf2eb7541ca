//! The Redis backend: carts for production deployments.
//!
//! * **Layout.** One hash per entity at key `{bucket}:{id}` (the bucket named by
//!   [`Names`](cartwheel_bus::names::Names), e.g. `cw_carts:3f2a…`) with two fields: `rev`, the write counter, and
//!   `doc`, the [`Record`] as JSON — readable with `redis-cli HGETALL`. A field added to a
//!   domain struct later with `#[serde(default)]` still reads old documents.
//! * **Revisions and compare-and-set.** Lua scripts, which Redis runs atomically: `create`
//!   writes `rev = 1` only if the key does not exist; `update` writes only if `rev` still
//!   equals the expected revision, then increments it (`HINCRBY`). Either answers 0 when
//!   refused, which is [`StoreError::Conflict`].
//! * **Outbox.** The events are inside `doc`, written by the same script as the state.
//! * **Idle expiry.** Every key gets [`RedisSettings::idle_ttl`] (default 30 days) as its
//!   time to live, refreshed by every write and every load (a load is an actor's
//!   activation: someone is using the cart). An abandoned cart disappears by itself; a
//!   cart in use never does. An actor that serves a cart from memory does not touch Redis,
//!   but actors passivate after minutes of idleness, far below the TTL.
//! * **Durability.** As configured on the server. [`Redis::open`] asks `CONFIG GET
//!   appendonly` and warns loudly when the append-only file is off (a restart then loses
//!   every cart written since the last snapshot), or when it cannot tell (managed Redis
//!   services often disable `CONFIG`). With `appendonly yes` and the default
//!   `appendfsync everysec`, a crash of the server machine loses at most about one second
//!   of acknowledged cart writes; a crash of the Redis process alone loses nothing.
//! * **Lists.** Carts need none. So that the whole conformance suite runs on this backend,
//!   [`CatalogIndex`](crate::CatalogIndex) and [`OrderIndex`](crate::OrderIndex) are
//!   answered by scanning (`redis/index.rs`), like the NATS KV backend: fine for tests and
//!   small data, not what orders and products should use in production (MongoDB).
//! * **Errors and timeouts.** A [`ConnectionManager`] reconnects by itself after the server
//!   goes away; every call is bounded by [`RedisSettings::timeout`], so while the server is
//!   down calls fail fast as [`StoreError::Unavailable`], and they succeed again once it is
//!   back. An `Unavailable` write has an unknown outcome, which compare-and-set makes safe.
//!
//! This module knows keys and scripts only: it never publishes events.

mod index;

use crate::error::StoreError;
use crate::redact::redact;
use crate::{EntityStore, Record, Revision, Versioned};
use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::LazyLock;
use std::time::Duration;

/// `KEYS[1]` the key, `ARGV[1]` the document, `ARGV[2]` the TTL in ms (0: none).
/// Returns the new revision (1), or 0 if the key exists.
const CREATE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'doc', ARGV[1], 'rev', 1)
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
";

/// `KEYS[1]` the key, `ARGV[1]` the document, `ARGV[2]` the expected revision in decimal,
/// `ARGV[3]` the TTL in ms (0: none). Returns the new revision, or 0 if the stored one is
/// not the expected one (or there is none).
const UPDATE: &str = r"
if redis.call('HGET', KEYS[1], 'rev') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'doc', ARGV[1])
local rev = redis.call('HINCRBY', KEYS[1], 'rev', 1)
if tonumber(ARGV[3]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return rev
";

/// `KEYS[1]` the key, `ARGV[1]` the TTL in ms (0: none). Returns `[rev, doc]` (both nil
/// if the key does not exist) and refreshes the TTL of an existing key.
const LOAD: &str = r"
local v = redis.call('HMGET', KEYS[1], 'rev', 'doc')
if v[1] and tonumber(ARGV[1]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return v
";

static CREATE_SCRIPT: LazyLock<::redis::Script> = LazyLock::new(|| ::redis::Script::new(CREATE));
static UPDATE_SCRIPT: LazyLock<::redis::Script> = LazyLock::new(|| ::redis::Script::new(UPDATE));
static LOAD_SCRIPT: LazyLock<::redis::Script> = LazyLock::new(|| ::redis::Script::new(LOAD));

/// Keys fetched per `SCAN` round trip by [`EntityStore::ids`].
const SCAN_COUNT: usize = 500;

/// How the backend connects, waits and expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// Time to live of an entity since its last write or load; `None`: forever.
    pub idle_ttl: Option<Duration>,
    /// The longest any one call may take (also the connect and response timeouts of the
    /// connection).
    pub timeout: Duration,
    /// The longest [`Redis::open`] may take to connect and check the server.
    pub open_timeout: Duration,
}

/// Thirty days: how long an untouched cart is kept by default.
pub const DEFAULT_IDLE_TTL: Duration = Duration::from_secs(30 * 24 * 60 * 60);

impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings {
            idle_ttl: Some(DEFAULT_IDLE_TTL),
            timeout: Duration::from_secs(2),
            open_timeout: Duration::from_secs(5),
        }
    }
}

/// What the server said about its persistence at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Persistence {
    /// The append-only file is on, with this `appendfsync` policy (`everysec`, `always`
    /// or `no`).
    AppendOnly {
        /// The fsync policy.
        fsync: String,
    },
    /// The append-only file is off: a restart loses what the last snapshot did not have.
    Off,
    /// The server would not say (e.g. `CONFIG` is disabled); why.
    Unknown(String),
}

/// A connection to Redis and the persistence it reported; entity stores are made from it.
#[derive(Clone)]
pub struct Redis {
    conn: ConnectionManager,
    settings: RedisSettings,
    persistence: Persistence,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("persistence", &self.persistence)
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// Connects to `url` (`redis://[:password@]host:port[/db]`, or `rediss://` for TLS
    /// when the driver is built with it), pings the server, and checks that the
    /// append-only file is on, logging a loud warning when it is not or cannot be told.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] naming the problem when the URL is malformed or the
    /// server does not answer within [`RedisSettings::open_timeout`].
    pub async fn open(url: &str, settings: &RedisSettings) -> Result<Redis, StoreError> {
        let shown = redact(url);
        let client = ::redis::Client::open(url)
            .map_err(|e| StoreError::Unavailable(format!("invalid Redis URL {shown}: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(3)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let unreachable = |why: &dyn std::fmt::Display| {
            StoreError::Unavailable(format!("cannot reach Redis at {shown}: {why}"))
        };
        let mut conn = tokio::time::timeout(
            settings.open_timeout,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| unreachable(&format!("no answer within {:?}", settings.open_timeout)))?
        .map_err(|e| unreachable(&e))?;
        let pong: String = tokio::time::timeout(
            settings.open_timeout,
            ::redis::cmd("PING").query_async(&mut conn),
        )
        .await
        .map_err(|_| unreachable(&format!("no answer within {:?}", settings.open_timeout)))?
        .map_err(|e| unreachable(&e))?;
        if pong != "PONG" {
            return Err(unreachable(&format!("PING answered {pong:?}")));
        }
        let persistence = tokio::time::timeout(settings.open_timeout, persistence(&mut conn))
            .await
            .unwrap_or_else(|_| Persistence::Unknown("CONFIG GET did not answer".to_owned()));
        warn_about(&persistence, &shown);
        Ok(Redis {
            conn,
            settings: settings.clone(),
            persistence,
        })
    }

    /// What the server said about its persistence when it was opened.
    pub fn persistence(&self) -> &Persistence {
        &self.persistence
    }

    /// The store of `T` under the key prefix `{bucket}:`.
    pub fn store<T>(&self, bucket: &str) -> RedisStore<T> {
        RedisStore {
            conn: self.conn.clone(),
            prefix: format!("{bucket}:"),
            settings: self.settings.clone(),
            _entity: PhantomData,
        }
    }

    /// The connection, for tools and tests that need raw access.
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }
}

/// Asks the server whether the append-only file is on, and its fsync policy.
async fn persistence(conn: &mut ConnectionManager) -> Persistence {
    let appendonly = match config_get(conn, "appendonly").await {
        Ok(Some(v)) => v,
        Ok(None) => return Persistence::Unknown("CONFIG GET appendonly answered nothing".into()),
        Err(e) => return Persistence::Unknown(format!("CONFIG GET appendonly refused: {e}")),
    };
    if appendonly != "yes" {
        return Persistence::Off;
    }
    let fsync = match config_get(conn, "appendfsync").await {
        Ok(Some(v)) => v,
        Ok(None) => "unknown".to_owned(),
        Err(e) => format!("unknown ({e})"),
    };
    Persistence::AppendOnly { fsync }
}

/// One `CONFIG GET` parameter (an array in RESP2, a map in RESP3; both read as a map).
async fn config_get(
    conn: &mut ConnectionManager,
    name: &str,
) -> ::redis::RedisResult<Option<String>> {
    let mut values: HashMap<String, String> = ::redis::cmd("CONFIG")
        .arg("GET")
        .arg(name)
        .query_async(conn)
        .await?;
    Ok(values.remove(name))
}

fn warn_about(persistence: &Persistence, shown: &str) {
    match persistence {
        Persistence::AppendOnly { fsync } if fsync == "everysec" || fsync == "always" => {
            tracing::info!(redis = shown, appendfsync = %fsync, "Redis append-only file is on");
        }
        Persistence::AppendOnly { fsync } => tracing::warn!(
            redis = shown,
            appendfsync = %fsync,
            "Redis append-only file is on, but appendfsync is not `everysec` or `always`: \
             a machine crash may lose many seconds of acknowledged cart changes"
        ),
        Persistence::Off => tracing::warn!(
            redis = shown,
            "REDIS PERSISTENCE IS OFF (appendonly no): a Redis restart loses every cart \
             change since the last snapshot. Set `appendonly yes` on the server."
        ),
        Persistence::Unknown(why) => tracing::warn!(
            redis = shown,
            reason = %why,
            "COULD NOT CHECK REDIS PERSISTENCE: make sure the server runs with \
             `appendonly yes`, or carts are lost when it restarts"
        ),
    }
}

/// One kind of entity in Redis hashes under one key prefix. Cheap to clone.
pub struct RedisStore<T> {
    conn: ConnectionManager,
    /// `{bucket}:`; the key of an entity is this plus its id.
    prefix: String,
    settings: RedisSettings,
    _entity: PhantomData<fn() -> T>,
}

impl<T> Clone for RedisStore<T> {
    fn clone(&self) -> Self {
        RedisStore {
            conn: self.conn.clone(),
            prefix: self.prefix.clone(),
            settings: self.settings.clone(),
            _entity: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for RedisStore<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl<T> RedisStore<T> {
    /// The key of `id`.
    pub fn key(&self, id: &str) -> String {
        format!("{}{id}", self.prefix)
    }

    /// The TTL argument of the scripts, in milliseconds (0: none).
    fn ttl_ms(&self) -> u64 {
        self.settings.idle_ttl.map_or(0, |d| {
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
        })
    }

    /// Like [`RedisStore::call`], for reads (which may run twice): a read that fails
    /// because the connection died under an idle client (the server restarted meanwhile)
    /// is sent once more, on the new connection the manager opens. Writes are never sent
    /// twice: after such a failure their outcome is unknown, and the caller decides.
    async fn read<R, Fut>(
        &self,
        doing: &str,
        id: &str,
        op: impl Fn() -> Fut,
    ) -> Result<R, StoreError>
    where
        Fut: Future<Output = ::redis::RedisResult<R>>,
    {
        self.call(doing, id, || async {
            match op().await {
                Err(e) if e.is_io_error() || e.is_connection_dropped() => op().await,
                other => other,
            }
        })
        .await
    }

    /// Runs one call within the timeout, mapping every failure to `Unavailable`. A server
    /// that refuses a command it did not run and asks to wait (`LOADING` while a
    /// restarted Redis reads its data back, `TRYAGAIN`, `MASTERDOWN`) is asked again
    /// after a short pause, within the same timeout: such a refusal applied nothing, so
    /// this holds for writes too.
    async fn call<R, Fut>(
        &self,
        doing: &str,
        id: &str,
        op: impl Fn() -> Fut,
    ) -> Result<R, StoreError>
    where
        Fut: Future<Output = ::redis::RedisResult<R>>,
    {
        let mut last: Option<String> = None;
        let attempts = async {
            let mut pause = Duration::from_millis(20);
            loop {
                match op().await {
                    Err(e) if matches!(e.retry_method(), ::redis::RetryMethod::WaitAndRetry) => {
                        last = Some(e.to_string());
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_millis(200));
                    }
                    other => return other,
                }
            }
        };
        let outcome = tokio::time::timeout(self.settings.timeout, attempts).await;
        match outcome {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(StoreError::Unavailable(format!(
                "{doing} {}{id}: {e}",
                self.prefix
            ))),
            Err(_) => Err(StoreError::Unavailable(match last {
                Some(e) => format!("{doing} {}{id}: {e}", self.prefix),
                None => format!(
                    "{doing} {}{id}: no answer within {:?}",
                    self.prefix, self.settings.timeout
                ),
            })),
        }
    }
}

#[async_trait]
impl<T> EntityStore<T> for RedisStore<T>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    async fn load(&self, id: &str) -> Result<Option<Versioned<T>>, StoreError> {
        let (key, ttl) = (self.key(id), self.ttl_ms());
        let (rev, doc): (Option<u64>, Option<Vec<u8>>) = self
            .read("reading", id, || {
                let mut conn = self.conn.clone();
                let (key, ttl) = (key.clone(), ttl);
                async move { LOAD_SCRIPT.key(key).arg(ttl).invoke_async(&mut conn).await }
            })
            .await?;
        match (rev, doc) {
            (Some(revision), Some(doc)) => {
                let record = serde_json::from_slice(&doc)
                    .map_err(|e| StoreError::Codec(format!("decoding {}{id}: {e}", self.prefix)))?;
                Ok(Some(Versioned { record, revision }))
            }
            (None, None) => Ok(None),
            _ => Err(StoreError::Codec(format!(
                "{}{id} is a hash without both `rev` and `doc`",
                self.prefix
            ))),
        }
    }

    async fn create(&self, id: &str, record: &Record<T>) -> Result<Revision, StoreError> {
        let doc = encode(record)?;
        let revision: u64 = self
            .call("creating", id, || {
                let mut conn = self.conn.clone();
                let (key, doc, ttl) = (self.key(id), doc.clone(), self.ttl_ms());
                async move {
                    CREATE_SCRIPT
                        .key(key)
                        .arg(doc)
                        .arg(ttl)
                        .invoke_async(&mut conn)
                        .await
                }
            })
            .await?;
        match revision {
            0 => Err(StoreError::Conflict { key: id.to_owned() }),
            r => Ok(r),
        }
    }

    async fn update(
        &self,
        id: &str,
        record: &Record<T>,
        expected: Revision,
    ) -> Result<Revision, StoreError> {
        if expected == 0 {
            return Err(StoreError::Conflict { key: id.to_owned() });
        }
        let doc = encode(record)?;
        let revision: u64 = self
            .call("writing", id, || {
                let mut conn = self.conn.clone();
                let (key, doc, ttl) = (self.key(id), doc.clone(), self.ttl_ms());
                async move {
                    UPDATE_SCRIPT
                        .key(key)
                        .arg(doc)
                        .arg(expected.to_string())
                        .arg(ttl)
                        .invoke_async(&mut conn)
                        .await
                }
            })
            .await?;
        match revision {
            0 => Err(StoreError::Conflict { key: id.to_owned() }),
            r => Ok(r),
        }
    }

    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn ids(&self) -> Result<Vec<String>, StoreError> {
        self.scan_ids().await
    }
}

impl<T> RedisStore<T> {
    /// Every id under the prefix, sorted, by `SCAN` (which does not block the server).
    async fn scan_ids(&self) -> Result<Vec<String>, StoreError> {
        let pattern = format!("{}*", self.prefix);
        let mut cursor: u64 = 0;
        let mut ids = Vec::new();
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .read("listing", "*", || {
                    let mut conn = self.conn.clone();
                    let mut scan = ::redis::cmd("SCAN");
                    scan.arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(SCAN_COUNT);
                    async move { scan.query_async(&mut conn).await }
                })
                .await?;
            ids.extend(
                keys.into_iter()
                    .filter_map(|k| k.strip_prefix(&self.prefix).map(str::to_owned)),
            );
            if next == 0 {
                break;
            }
            cursor = next;
        }
        // SCAN may return a key more than once.
        ids.sort();
        ids.dedup();
        Ok(ids)
    }
}

fn encode<T: Serialize>(record: &Record<T>) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(record).map_err(|e| StoreError::Codec(e.to_string()))
}

/// Every entity kind in Redis under the buckets named by `names` (carts are what Redis is
/// for in production; the rest is for tests and small deployments, see the module doc).
pub fn stores(redis: &Redis, names: &cartwheel_bus::names::Names) -> crate::Stores {
    use cartwheel_domain::{Order, Product};
    use std::sync::Arc;
    let products = Arc::new(redis.store::<Product>(&names.products_bucket()));
    let orders = Arc::new(redis.store::<Order>(&names.orders_bucket()));
    crate::Stores {
        carts: Arc::new(redis.store(&names.carts_bucket())),
        orders: orders.clone(),
        products: products.clone(),
        inventory: Arc::new(redis.store(&names.inventory_bucket())),
        catalog: products,
        order_index: orders,
    }
}

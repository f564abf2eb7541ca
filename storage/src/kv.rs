//! The NATS JetStream KV backend: the embedded default, so NATS is the only dependency.
//!
//! One KV bucket per entity kind (`{prefix}_carts`, `{prefix}_orders`, `{prefix}_products`,
//! `{prefix}_inventory`, named by [`Names`]). The key is the entity id (ids are
//! `[A-Za-z0-9_-]{1,64}`, always valid KV keys) and the value is the [`Record`] in named
//! MessagePack ([`cartwheel_bus::codec`]), so a record written by an older node still
//! decodes after a field with a serde default was added.
//!
//! * **Revisions.** The [`Revision`] is the KV entry revision: the sequence of the write in
//!   the bucket's stream. It grows on every write of a key but is shared by all keys of a
//!   bucket, so it does not count one key's writes. `update` is JetStream's
//!   expected-last-subject-sequence publish: the server refuses it atomically when anything
//!   was written to the key since, which is the fence placement relies on.
//! * **Deletes.** Cartwheel never deletes a record. A key whose last entry is a delete or
//!   purge marker reads as absent, and `create` succeeds on it again.
//! * **List queries are answered by scanning.** [`CatalogIndex`](crate::CatalogIndex) and
//!   [`OrderIndex`](crate::OrderIndex) read the latest value of every key in one streamed
//!   pass (an ordered consumer with "last per subject" delivery, which ends once every key
//!   listed at its start was delivered), then filter, sort and page with the shared rules
//!   of [`query`](crate::query). Product keys up to the cursor are not even decoded. That
//!   is fine for a laptop-sized catalog and order history; the MongoDB backend answers the
//!   same queries from real indexes.
//! * **Durability.** A write is acknowledged by JetStream only after it is written to the
//!   stream's file store (buckets use file storage), and on a cluster only once a quorum of
//!   replicas has it. A `kill -9` of nats-server keeps every acknowledged write, because it
//!   is in the OS page cache (the `kv_acknowledged_writes_survive_kill_9_and_restart` test
//!   checks this); to survive a power cut as well, run nats-server with `sync_interval:
//!   always`, or replicate the buckets (`replicas: 3`).
//! * **Errors and timeouts.** Connection failures and timeouts map to
//!   [`StoreError::Unavailable`] after the JetStream context's timeout
//!   (`ContextBuilder::timeout`, which also bounds waiting for a write's acknowledgement).
//!   An `Unavailable` write has an unknown outcome: the client may still deliver it after
//!   reconnecting. That is safe because every write is compare-and-set: a retry answers
//!   `Conflict`, and the caller reloads. Refused compare-and-set maps to
//!   [`StoreError::Conflict`], undecodable values to [`StoreError::Codec`].
//!
//! * **The write is the event.** Every bucket republishes each value it stores to
//!   `{prefix}.live.{kind}.{id}` (the live pushes), and each kind's event stream sources
//!   the bucket's stream with a subject transform to `{prefix}.evt.{kind}.{id}` (set up by
//!   the node, `cartwheel_bus::events::ensure_streams`). Both happen inside nats-server
//!   after the write is stored, so a refused compare-and-set is never published. A
//!   bucket keeps [`KvSettings::history`] revisions per key: the event stream copies a
//!   revision before it is dropped unless that many newer writes of the key happen while
//!   the stream cannot source (64: a leader election of the event stream is seconds).
//!
//! This module knows buckets and keys only: it never publishes events or talks to actors.

mod index;
mod scan;

use crate::error::StoreError;
use crate::{EntityStore, Record, Revision, Stores, Versioned};
use async_nats::jetstream;
use async_nats::jetstream::kv::{self, EntryErrorKind, Operation, UpdateErrorKind};
use async_nats::jetstream::stream::StorageType;
use async_trait::async_trait;
use bytes::Bytes;
use cartwheel_bus::codec;
use cartwheel_bus::names::Names;
use cartwheel_domain::{Order, Product};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::marker::PhantomData;
use std::sync::Arc;

/// Most revisions a KV bucket may keep per key (a JetStream KV limit).
const MAX_HISTORY: i64 = 64;

/// How the buckets are created when they do not exist yet. Existing buckets are opened as
/// they are (a differing configuration is logged, never changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvSettings {
    /// Copies of every bucket in a JetStream cluster: 1 for a single server, 3 for a
    /// production cluster.
    pub replicas: usize,
    /// Revisions kept per key, 1..=64. The event stream sources every revision from the
    /// bucket, so a revision must outlive the moment the source copies it: with 64, a key
    /// would need 64 newer writes while its event stream cannot source.
    pub history: i64,
}

impl Default for KvSettings {
    fn default() -> Self {
        KvSettings {
            replicas: 1,
            history: MAX_HISTORY,
        }
    }
}

/// Opens (creating them if missing) the carts, orders, products and inventory buckets
/// named by `names`, and returns them as a full set of stores.
///
/// Safe to call from several nodes at once: a node whose create loses the race opens the
/// bucket the winner created.
///
/// # Errors
///
/// [`StoreError::Unavailable`] when the server cannot be reached, JetStream is not enabled,
/// a bucket can be neither opened nor created, or `settings` are out of range.
pub async fn open(
    js: &jetstream::Context,
    names: &Names,
    settings: &KvSettings,
) -> Result<Stores, StoreError> {
    let (carts, orders, products, inventory) = futures::try_join!(
        KvStore::open(js, names, "cart", settings),
        KvStore::<Order>::open(js, names, "order", settings),
        KvStore::<Product>::open(js, names, "product", settings),
        KvStore::open(js, names, "inventory", settings),
    )?;
    let orders = Arc::new(orders);
    let products = Arc::new(products);
    Ok(Stores {
        carts: Arc::new(carts),
        orders: orders.clone(),
        products: products.clone(),
        inventory: Arc::new(inventory),
        catalog: products,
        order_index: orders,
    })
}

/// One kind of entity in one KV bucket. Cheap to clone.
pub struct KvStore<T> {
    kv: kv::Store,
    /// For the inboxes of scan consumers (a bucket handle does not expose its client).
    client: async_nats::Client,
    /// Whether the bucket republishes its values (opened by [`KvStore::open`]).
    delivers: bool,
    /// `fn() -> T`: the store holds no `T`, so it is `Send + Sync` whatever `T` is.
    _entity: PhantomData<fn() -> T>,
}

impl<T> Clone for KvStore<T> {
    fn clone(&self) -> Self {
        KvStore {
            kv: self.kv.clone(),
            client: self.client.clone(),
            delivers: self.delivers,
            _entity: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for KvStore<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvStore")
            .field("bucket", &self.kv.name)
            .finish_non_exhaustive()
    }
}

impl<T> KvStore<T> {
    /// Opens the bucket of entity kind `kind` (`cart`, `order`, `product`, `inventory`),
    /// creating it with `settings` if it does not exist, and makes it republish every
    /// stored value to the kind's live subjects (an existing bucket of an older release
    /// gets the republish and `settings.history` added).
    pub async fn open(
        js: &jetstream::Context,
        names: &Names,
        kind: &str,
        settings: &KvSettings,
    ) -> Result<KvStore<T>, StoreError> {
        let bucket = names.entity_bucket(kind);
        let republish = jetstream::stream::Republish {
            source: Names::kv_subjects(&bucket),
            destination: names.live_subjects(kind),
            headers_only: false,
        };
        let kv = open_bucket(js, &bucket, settings, republish).await?;
        Ok(KvStore {
            kv,
            client: js.client(),
            delivers: true,
            _entity: PhantomData,
        })
    }

    /// A store over an already opened bucket; `client` is the connection it was opened on.
    /// The node publishes its records' events itself (nothing says the bucket
    /// republishes).
    pub fn new(client: async_nats::Client, kv: kv::Store) -> KvStore<T> {
        KvStore {
            kv,
            client,
            delivers: false,
            _entity: PhantomData,
        }
    }

    /// The underlying bucket, for tools and tests that need raw access.
    pub fn bucket(&self) -> &kv::Store {
        &self.kv
    }

    /// The latest value of every key that passes `keep`, decoded, in key order.
    pub(crate) async fn scan_records(
        &self,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Vec<(String, Record<T>)>, StoreError>
    where
        T: DeserializeOwned,
    {
        let values = scan::latest(&self.kv, &self.client, scan::Payload::Values, keep).await?;
        values
            .into_iter()
            .map(|(key, bytes)| {
                let record = decode(&self.kv.name, &key, &bytes)?;
                Ok((key, record))
            })
            .collect()
    }
}

#[async_trait]
impl<T> EntityStore<T> for KvStore<T>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    async fn load(&self, id: &str) -> Result<Option<Versioned<T>>, StoreError> {
        let entry = match self.kv.entry(id).await {
            Ok(entry) => entry,
            // No entity can have an id that is not a valid key.
            Err(e) if e.kind() == EntryErrorKind::InvalidKey => return Ok(None),
            Err(e) => return Err(self.unavailable("reading", id, &e)),
        };
        match entry {
            Some(entry) if entry.operation == Operation::Put => Ok(Some(Versioned {
                record: decode(&self.kv.name, id, &entry.value)?,
                revision: entry.revision,
            })),
            _ => Ok(None),
        }
    }

    async fn create(&self, id: &str, record: &Record<T>) -> Result<Revision, StoreError> {
        let value = encode(record)?;
        // Not `kv::Store::create`: after a failed first attempt it looks the key up and
        // reports "already exists" when it finds a value, even if the failure was a timeout
        // and the value found is this very write. Here a timeout stays a timeout.
        match self.kv.update(id, value.clone(), 0).await {
            Ok(revision) => Ok(revision),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                // The key has entries. Only a delete or purge marker may be written over.
                match self.kv.entry(id).await {
                    Ok(Some(entry)) if entry.operation != Operation::Put => {
                        self.write(id, value, entry.revision).await
                    }
                    Ok(_) => Err(conflict(id)),
                    Err(e) => Err(self.unavailable("reading", id, &e)),
                }
            }
            Err(e) => Err(self.update_error(id, &e)),
        }
    }

    async fn update(
        &self,
        id: &str,
        record: &Record<T>,
        expected: Revision,
    ) -> Result<Revision, StoreError> {
        // JetStream reads "expected last sequence 0" as "the key must not exist", which would
        // turn this update into a create. No record is ever stored at revision 0.
        if expected == 0 {
            return Err(conflict(id));
        }
        self.write(id, encode(record)?, expected).await
    }

    fn backend(&self) -> &'static str {
        "nats"
    }

    fn delivers_events(&self) -> bool {
        self.delivers
    }

    async fn ids(&self) -> Result<Vec<String>, StoreError> {
        let keys = scan::latest(&self.kv, &self.client, scan::Payload::KeysOnly, |_| true).await?;
        Ok(keys.into_keys().collect())
    }
}

impl<T> KvStore<T> {
    /// Compare-and-set write of `value` at `expected`.
    async fn write(
        &self,
        id: &str,
        value: Bytes,
        expected: Revision,
    ) -> Result<Revision, StoreError> {
        self.kv
            .update(id, value, expected)
            .await
            .map_err(|e| self.update_error(id, &e))
    }

    fn update_error(&self, id: &str, e: &kv::UpdateError) -> StoreError {
        match e.kind() {
            UpdateErrorKind::WrongLastRevision => conflict(id),
            UpdateErrorKind::InvalidKey => {
                StoreError::InvalidQuery(format!("{id:?} is not a valid storage key"))
            }
            UpdateErrorKind::TimedOut | UpdateErrorKind::Other => {
                self.unavailable("writing", id, e)
            }
        }
    }

    fn unavailable(&self, doing: &str, id: &str, e: &dyn std::fmt::Display) -> StoreError {
        StoreError::Unavailable(format!("{doing} {}/{id}: {e}", self.kv.name))
    }
}

/// Opens bucket `name`, creating it if missing; see [`open`]. An existing bucket without
/// `republish` (or keeping fewer revisions than `settings.history`) is updated to
/// republish and keep them.
async fn open_bucket(
    js: &jetstream::Context,
    name: &str,
    settings: &KvSettings,
    republish: jetstream::stream::Republish,
) -> Result<kv::Store, StoreError> {
    if !(1..=MAX_HISTORY).contains(&settings.history) || settings.replicas == 0 {
        return Err(StoreError::Unavailable(format!(
            "invalid KV settings for bucket {name}: history must be 1..={MAX_HISTORY} and \
             replicas at least 1"
        )));
    }
    let config = kv::Config {
        bucket: name.to_owned(),
        description: "Cartwheel entity records".to_owned(),
        history: settings.history,
        num_replicas: settings.replicas,
        storage: StorageType::File,
        republish: Some(republish.clone()),
        ..kv::Config::default()
    };
    let store = open_or_create(js, config).await?;
    upgraded(js, store, &republish, settings.history).await
}

/// `store`, republishing with `republish` and keeping at least `history` revisions: a
/// bucket created by an older release (no republish, one revision) is updated in place.
/// Several nodes may do this at once; the update is the same from each.
async fn upgraded(
    js: &jetstream::Context,
    store: kv::Store,
    republish: &jetstream::stream::Republish,
    history: i64,
) -> Result<kv::Store, StoreError> {
    let mut config = store.stream.cached_info().config.clone();
    let current = config
        .republish
        .as_ref()
        .map(|r| (&r.source, &r.destination));
    if current == Some((&republish.source, &republish.destination))
        && config.max_messages_per_subject >= history
    {
        return Ok(store);
    }
    tracing::info!(bucket = %store.name, history, destination = %republish.destination,
        "updating KV bucket: republish its values and keep revisions for the event stream");
    config.republish = Some(republish.clone());
    config.max_messages_per_subject = config.max_messages_per_subject.max(history);
    cartwheel_bus::retry_at_startup(&format!("updating KV bucket {}", store.name), || async {
        js.update_stream(&config).await.map_err(|e| e.to_string())
    })
    .await
    .map_err(StoreError::Unavailable)?;
    Ok(store)
}

/// Opens the bucket `config` names, creating it with `config` when it does not exist, and
/// returns it once it answers a read. A fresh replicated cluster, or one electing a
/// leader, answers the first bucket requests with timeouts and "no responders", and
/// several nodes may be creating the same bucket at once: every step is retried for up
/// to [`cartwheel_bus::STARTUP_WAIT`] instead of failing the node's start. An existing
/// bucket is used as it is (a warning says when its history or replicas differ from
/// `config`).
pub async fn open_or_create(
    js: &jetstream::Context,
    config: kv::Config,
) -> Result<kv::Store, StoreError> {
    let name = config.bucket.clone();
    let started = std::time::Instant::now();
    loop {
        match open_once(js, &config).await {
            Ok(store) => return answering(store, &name, started).await,
            Err(e) if started.elapsed() >= cartwheel_bus::STARTUP_WAIT => {
                return Err(StoreError::Unavailable(e));
            }
            Err(e) => {
                tracing::info!(bucket = %name, error = %e, "KV bucket not available yet; trying again");
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
        }
    }
}

/// One attempt to open the bucket of `config`, creating it when it does not exist.
async fn open_once(js: &jetstream::Context, config: &kv::Config) -> Result<kv::Store, String> {
    let name = config.bucket.as_str();
    match js.get_key_value(name).await {
        Ok(store) => {
            warn_if_different(&store, config);
            return Ok(store);
        }
        Err(e) if !cartwheel_bus::error::is_missing_bucket(&e) => {
            return Err(format!("opening KV bucket {name}: {e}"));
        }
        Err(_) => {}
    }
    match js.create_key_value(config.clone()).await {
        Ok(store) => {
            tracing::info!(bucket = name, "created KV bucket");
            Ok(store)
        }
        // Another node may have created it since we looked; then opening it succeeds.
        Err(create_error) => js
            .get_key_value(name)
            .await
            .map_err(|_| format!("creating KV bucket {name}: {create_error}")),
    }
}

/// Returns `store` once it answers a read. A replicated bucket just created (or whose
/// stream is electing a leader) answers "no responders" for a moment; a node must not
/// take partitions, and answer 503s, before its buckets can be read.
async fn answering(
    store: kv::Store,
    name: &str,
    started: std::time::Instant,
) -> Result<kv::Store, StoreError> {
    loop {
        match store.entry("ready-probe").await {
            Ok(_) => return Ok(store),
            Err(e) if started.elapsed() >= cartwheel_bus::STARTUP_WAIT => {
                return Err(StoreError::Unavailable(format!(
                    "KV bucket {name} does not answer reads: {e}"
                )));
            }
            Err(e) => {
                tracing::debug!(bucket = name, error = %e, "bucket not answering yet");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

fn warn_if_different(store: &kv::Store, wanted: &kv::Config) {
    let config = &store.stream.cached_info().config;
    if config.max_messages_per_subject != wanted.history
        || config.num_replicas != wanted.num_replicas
    {
        tracing::warn!(
            bucket = %store.name,
            history = config.max_messages_per_subject,
            replicas = config.num_replicas,
            wanted_history = wanted.history,
            wanted_replicas = wanted.num_replicas,
            "existing KV bucket differs from the configured settings; using it as it is"
        );
    }
}

fn conflict(id: &str) -> StoreError {
    StoreError::Conflict { key: id.to_owned() }
}

fn encode<T: Serialize>(record: &Record<T>) -> Result<Bytes, StoreError> {
    codec::encode(record).map_err(|e| StoreError::Codec(e.to_string()))
}

fn decode<T: DeserializeOwned>(
    bucket: &str,
    key: &str,
    bytes: &[u8],
) -> Result<Record<T>, StoreError> {
    codec::decode(bytes).map_err(|e| StoreError::Codec(format!("{bucket}/{key}: {e}")))
}

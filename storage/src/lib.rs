//! Persistence behind small traits.
//!
//! * [`EntityStore`]: load one entity and save it with compare-and-set on its revision.
//!   The revision is the fence placement relies on: a node that lost ownership without
//!   knowing cannot overwrite newer state.
//! * [`CatalogIndex`] and [`OrderIndex`]: the read-side queries.
//! * Backends: [`memory`] (unit tests of actor logic), [`kv`] (NATS JetStream KV, the
//!   embedded default, so NATS is the only dependency), and for production [`mongo`]
//!   (orders, products, inventory) and [`redis`] (carts). A [`Stores`] bundle may mix them.
//!   Every backend passes the same conformance suite (`storage/tests/conformance`).
//!   [`select`] opens the mix a node's configuration names.
//!
//! A stored document is a [`Record`]: the entity's state plus the events of the change that
//! produced it, stored in the same write. How they reach JetStream depends on the backend:
//!
//! * **NATS KV delivers them itself** ([`EntityStore::delivers_events`]): the record keeps
//!   each event as a [`Change`] (the event without the entity, which is the state), the
//!   bucket republishes every stored value to `{prefix}.live.{kind}.{id}` for live pushes,
//!   and each kind's event stream *sources* the bucket's stream, so the compare-and-set
//!   write is the event: one durable write per change, and a refused write is never
//!   published.
//! * **MongoDB and Redis** keep them in the record's *outbox*, which the node publishes
//!   after the write; an event can never be lost between the store write and the publish,
//!   because whoever activates the entity next publishes the outbox again (JetStream
//!   de-duplicates by `Nats-Msg-Id`).
//!
//! This crate never sends a request to an actor and never touches the edge.

pub mod error;
pub mod kv;
pub mod memory;
pub mod mongo;
pub mod query;
/// Connection URLs without their passwords (kept in `cartwheel_bus`, shared by every crate).
pub use cartwheel_bus::redact;
pub mod redis;
pub mod select;

use async_trait::async_trait;
use cartwheel_bus::messages::{CatalogQuery, OrdersQuery, Page};
use cartwheel_domain::{Cart, Change, Event, Inventory, Order, Product};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub use cartwheel_bus::redact::redact;
pub use error::StoreError;

/// A backend's opaque write token: NATS KV's revision, or the document version elsewhere.
pub type Revision = u64;

/// What is stored for one entity: its state and the events of its last change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record<T> {
    /// The entity.
    pub state: T,
    /// Events the node publishes itself and that were not acknowledged yet (backends
    /// that do not deliver events), re-published on the next activation.
    #[serde(default)]
    pub outbox: Vec<Event>,
    /// The events of the change that produced `state`, without the entity, on a backend
    /// that delivers them itself ([`EntityStore::delivers_events`]): the stored value is
    /// the event. Empty in records of older releases, whose events are in `outbox`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<Change>,
    /// The last commands applied to the entity, oldest first, at most
    /// [`Applied::WINDOW`]: a repeat of one of them (a retried request, a client resending
    /// after a timeout) is answered, not applied again. Stored in the same write as the
    /// state, so it holds across restarts and partition moves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub applied: Vec<Applied>,
}

impl<T> Record<T> {
    /// A record without pending events.
    pub fn new(state: T) -> Record<T> {
        Record {
            state,
            outbox: Vec::new(),
            applied: Vec::new(),
            changes: Vec::new(),
        }
    }

    /// What this record remembers of the command `command_id`, if it is in the window.
    pub fn applied(&self, command_id: &str) -> Option<&Applied> {
        let key = Applied::key(command_id);
        self.applied.iter().rev().find(|a| a.command == key)
    }
}

/// One command an entity applied, remembered so that its repeat changes nothing.
///
/// Hashes rather than strings keep it small (24 bytes per entry, in every live entity and
/// every stored record): FNV-1a 64 cut to 63 bits, so every backend (BSON has no
/// unsigned integers) stores it as a plain integer. A collision needs two commands of one
/// entity within the window whose ids share 63 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Hash of the command id.
    #[serde(rename = "c")]
    pub command: u64,
    /// Hash of the command itself: the same id with another command is not a repeat.
    #[serde(rename = "f")]
    pub fingerprint: u64,
    /// The entity version the command produced.
    #[serde(rename = "v")]
    pub version: u64,
}

impl Applied {
    /// How many commands a record remembers. A repeat arrives within seconds (a requester
    /// retrying, a client resending after a timeout); 16 covers that many other changes
    /// of the same entity in between.
    pub const WINDOW: usize = 16;

    /// The entry for `command_id` with the encoded command `command` at `version`.
    pub fn new(command_id: &str, command: &[u8], version: u64) -> Applied {
        Applied {
            command: Applied::key(command_id),
            fingerprint: hash63(command),
            version,
        }
    }

    /// The stored key of a command id.
    pub fn key(command_id: &str) -> u64 {
        hash63(command_id.as_bytes())
    }

    /// Whether `command` (encoded) is the command this entry remembers.
    pub fn same_command(&self, command: &[u8]) -> bool {
        self.fingerprint == hash63(command)
    }

    /// `window` with `entry` appended, oldest entries dropped past [`Applied::WINDOW`].
    pub fn push(window: &[Applied], entry: Applied) -> Vec<Applied> {
        let keep = window.len().saturating_sub(Applied::WINDOW - 1);
        let mut out = Vec::with_capacity(Applied::WINDOW.min(window.len() + 1));
        out.extend_from_slice(&window[keep..]);
        out.push(entry);
        out
    }
}

/// FNV-1a 64 of `bytes`, top bit cleared.
fn hash63(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h >> 1
}

/// A loaded record and the revision to pass back when saving it.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    /// The stored record.
    pub record: Record<T>,
    /// The revision it was read at.
    pub revision: Revision,
}

/// Load and compare-and-set save of one kind of entity, keyed by id.
#[async_trait]
pub trait EntityStore<T>: Send + Sync + 'static {
    /// The record of `id`, or `None`.
    async fn load(&self, id: &str) -> Result<Option<Versioned<T>>, StoreError>;

    /// Stores a new record; [`StoreError::Conflict`] if `id` exists.
    async fn create(&self, id: &str, record: &Record<T>) -> Result<Revision, StoreError>;

    /// Replaces the record stored at `expected`; [`StoreError::Conflict`] if anything
    /// else was written since.
    async fn update(
        &self,
        id: &str,
        record: &Record<T>,
        expected: Revision,
    ) -> Result<Revision, StoreError>;

    /// Every id in the store (for recovery sweeps and small scans).
    async fn ids(&self) -> Result<Vec<String>, StoreError>;

    /// The backend's name, for metrics: `nats`, `mongodb`, `redis` or `memory`.
    fn backend(&self) -> &'static str;

    /// Whether a stored record's [`Record::changes`] reach the event stream and the live
    /// subject without the node publishing them (NATS KV: republish and a sourced stream).
    /// When `false` the node publishes the record's outbox after each write.
    fn delivers_events(&self) -> bool {
        false
    }
}

/// Product lists: by category and/or active flag, ordered by sku, cursor-paginated.
#[async_trait]
pub trait CatalogIndex: Send + Sync + 'static {
    /// One page of products.
    async fn list_products(&self, query: &CatalogQuery) -> Result<Page<Product>, StoreError>;
}

/// Order lists: by user and/or status, newest first, cursor-paginated.
#[async_trait]
pub trait OrderIndex: Send + Sync + 'static {
    /// One page of orders.
    async fn list_orders(&self, query: &OrdersQuery) -> Result<Page<Order>, StoreError>;
}

/// Every store a node needs, as trait objects so backends can be mixed (e.g. carts in
/// one backend, orders in another).
#[derive(Clone)]
pub struct Stores {
    /// Carts.
    pub carts: Arc<dyn EntityStore<Cart>>,
    /// Orders.
    pub orders: Arc<dyn EntityStore<Order>>,
    /// Products.
    pub products: Arc<dyn EntityStore<Product>>,
    /// Inventory records.
    pub inventory: Arc<dyn EntityStore<Inventory>>,
    /// Product lists.
    pub catalog: Arc<dyn CatalogIndex>,
    /// Order lists.
    pub order_index: Arc<dyn OrderIndex>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores").finish_non_exhaustive()
    }
}

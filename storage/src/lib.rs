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
//! A stored document is a [`Record`]: the entity's state plus its *outbox*, the events of
//! the change that produced it. The events are stored with the state in one write, so an
//! event can never be lost between the store write and the JetStream publish: whoever
//! activates the entity next publishes the outbox again (JetStream de-duplicates by
//! `Nats-Msg-Id`).
//!
//! This crate never sends a request to an actor and never touches the edge.

pub mod error;
pub mod kv;
pub mod memory;
pub mod mongo;
pub mod query;
mod redact;
pub mod redis;
pub mod select;

use async_trait::async_trait;
use cartwheel_bus::messages::{CatalogQuery, OrdersQuery, Page};
use cartwheel_domain::{Cart, Event, Inventory, Order, Product};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub use error::StoreError;
pub use redact::redact;

/// A backend's opaque write token: NATS KV's revision, or the document version elsewhere.
pub type Revision = u64;

/// What is stored for one entity: its state and the events of its last change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record<T> {
    /// The entity.
    pub state: T,
    /// Events of the change that produced `state`, re-published on the next activation.
    #[serde(default)]
    pub outbox: Vec<Event>,
}

impl<T> Record<T> {
    /// A record without pending events.
    pub fn new(state: T) -> Record<T> {
        Record {
            state,
            outbox: Vec::new(),
        }
    }
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

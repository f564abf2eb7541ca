//! What every actor of a node shares: stores, the bus, JetStream, settings, the clock.

use crate::catalog::Catalog;
use crate::payment::PaymentPort;
use crate::placement::LeaseGuard;
use async_nats::jetstream;
use cartwheel_bus::{BusClient, Names};
use cartwheel_domain::Timestamp;
use cartwheel_storage::Stores;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Tunables of a node.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// How long an entity actor may stay idle before it is passivated.
    pub passivate_after: Duration,
    /// How often supervisors look for idle actors.
    pub passivation_tick: Duration,
    /// Reservations older than this are dropped (sagas abandoned for good).
    pub reservation_ttl: Duration,
    /// Most commands a node handles at once (back-pressure on the subscriptions).
    pub max_in_flight: usize,
    /// This node's id in the cluster.
    pub node_id: String,
    /// How long a partition lease lives without renewal (failover time after a crash).
    pub lease_ttl: Duration,
}

impl Default for NodeSettings {
    fn default() -> Self {
        NodeSettings {
            passivate_after: Duration::from_secs(120),
            passivation_tick: Duration::from_secs(10),
            reservation_ttl: Duration::from_secs(15 * 60),
            max_in_flight: 4096,
            node_id: format!("node-{}", uuid::Uuid::new_v4().simple()),
            lease_ttl: Duration::from_secs(6),
        }
    }
}

/// Deliberate faults for tests and chaos runs. Empty in production.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Adding this sku to a cart panics inside the cart actor (tests supervision).
    pub panic_on_sku: Option<String>,
}

/// Shared dependencies of every actor on a node.
#[derive(Clone)]
pub struct Ctx {
    /// Storage.
    pub stores: Stores,
    /// Requests to other actors (possibly on other nodes).
    pub bus: BusClient,
    /// Event publishing.
    pub js: jetstream::Context,
    /// The payment port of the checkout saga.
    pub payment: Arc<dyn PaymentPort>,
    /// Tunables.
    pub settings: NodeSettings,
    /// Deliberate faults (tests only).
    pub faults: Faults,
    /// Which partitions this node holds leases for right now.
    pub guard: Arc<LeaseGuard>,
    /// Every product, kept current from the product events (replaced by the node's own
    /// at start; the default is empty, so products are read from storage).
    pub catalog: Arc<Catalog>,
    /// Events their stream has not acknowledged yet, and the tasks retrying them.
    pub outboxes: Arc<crate::persist::Outboxes>,
}

impl Ctx {
    /// Subject and bucket names.
    pub fn names(&self) -> &Names {
        self.bus.names()
    }

    /// The current wall-clock time.
    pub fn now(&self) -> Timestamp {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Timestamp(ms)
    }
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

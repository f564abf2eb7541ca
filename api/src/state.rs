//! What every handler and socket shares: the bus client, the settings, the cart hub, the
//! remembered owners, the socket counts and the shutdown machinery. Cheap to clone (one `Arc`).

use crate::EdgeConfig;
use crate::access::Owners;
use crate::limits::SocketCounts;
use crate::ws::hub::Hub;
use cartwheel_bus::BusClient;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The router state.
#[derive(Clone)]
pub(crate) struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    bus: BusClient,
    config: EdgeConfig,
    hub: Arc<Hub>,
    /// Cancelled when the edge starts shutting down: every socket closes with 1001.
    closing: CancellationToken,
    /// Every live WebSocket connection, so shutdown can wait for them to close.
    sockets: TaskTracker,
    /// Remembered owners of carts and orders (they never change).
    owners: Owners,
    /// Live WebSocket connections per user.
    socket_counts: Arc<SocketCounts>,
}

impl AppState {
    /// Builds the state; spawns nothing.
    pub(crate) fn new(bus: BusClient, config: EdgeConfig) -> AppState {
        let hub = Arc::new(Hub::new(bus.clone()));
        AppState {
            inner: Arc::new(Inner {
                bus,
                config,
                hub,
                closing: CancellationToken::new(),
                sockets: TaskTracker::new(),
                owners: Owners::default(),
                socket_counts: Arc::new(SocketCounts::default()),
            }),
        }
    }

    /// The bus client.
    pub(crate) fn bus(&self) -> &BusClient {
        &self.inner.bus
    }

    /// The settings.
    pub(crate) fn config(&self) -> &EdgeConfig {
        &self.inner.config
    }

    /// The cart hub shared by every socket of this edge.
    pub(crate) fn hub(&self) -> &Arc<Hub> {
        &self.inner.hub
    }

    /// Cancelled when the edge shuts down.
    pub(crate) fn closing(&self) -> &CancellationToken {
        &self.inner.closing
    }

    /// Tracks WebSocket connection tasks.
    pub(crate) fn sockets(&self) -> &TaskTracker {
        &self.inner.sockets
    }

    /// Remembered owners of carts and orders.
    pub(crate) fn owners(&self) -> &Owners {
        &self.inner.owners
    }

    /// Live WebSocket connections per user.
    pub(crate) fn socket_counts(&self) -> &Arc<SocketCounts> {
        &self.inner.socket_counts
    }
}

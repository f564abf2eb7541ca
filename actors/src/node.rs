//! Starting and stopping a node.
//!
//! Start: event streams exist → the placement loop joins the cluster and takes this
//! node's share of partitions (each with its supervisors and subscriptions) → read-side
//! query responders. Stop: the placement loop leaves — every partition stops taking
//! commands, finishes and answers those in flight, and its lease is deleted so a
//! successor takes it at once. Every acknowledged change is already stored.

use crate::catalog::Catalog;
use crate::ctx::Ctx;
use crate::partition::KindStats;
use crate::placement::{LeaseGuard, Placement, PlacementState};
use crate::query;
use cartwheel_bus::events::{self, StreamSettings};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What can go wrong starting a node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// JetStream streams could not be set up.
    #[error("event streams: {0}")]
    Streams(#[from] cartwheel_bus::BusError),
    /// A subscription failed.
    #[error("subscribe: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
    /// A supervisor could not be spawned.
    #[error("spawn supervisor: {0}")]
    Spawn(String),
    /// The placement buckets could not be set up.
    #[error("placement: {0}")]
    Placement(String),
}

/// The kinds whose store delivers their events (NATS KV): their event streams source
/// the buckets.
fn sourced_kinds(stores: &cartwheel_storage::Stores) -> Vec<&'static str> {
    let delivers = [
        ("cart", stores.carts.delivers_events()),
        ("order", stores.orders.delivers_events()),
        ("inventory", stores.inventory.delivers_events()),
        ("product", stores.products.delivers_events()),
    ];
    delivers
        .into_iter()
        .filter_map(|(kind, yes)| yes.then_some(kind))
        .collect()
}

/// A running node.
pub struct Node {
    ctx: Ctx,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    placement: JoinHandle<()>,
    queries: JoinHandle<()>,
    stats: KindStats,
    placement_state: Arc<PlacementState>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("node_id", &self.ctx.settings.node_id)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Starts a node on `ctx` (its lease guard is replaced by the node's own); returns
    /// once the first placement round is done, so the node serves its share.
    pub async fn start(mut ctx: Ctx, streams: &StreamSettings) -> Result<Node, NodeError> {
        events::ensure_streams(&ctx.js, ctx.names(), streams, &sourced_kinds(&ctx.stores)).await?;
        ctx.guard = Arc::new(LeaseGuard::new(ctx.bus.config().partitions));
        let shutdown = CancellationToken::new();
        // Products priced from memory before the node serves any cart.
        ctx.catalog = Catalog::start(&ctx.js, ctx.names(), &ctx.stores, shutdown.clone()).await;
        let tracker = TaskTracker::new();
        let limiter = Arc::new(Semaphore::new(ctx.settings.max_in_flight));
        let stats = KindStats::default();

        let placement_state = Arc::new(PlacementState::default());
        let placement = Placement::new(
            ctx.clone(),
            stats.clone(),
            limiter,
            streams.replicas,
            placement_state.clone(),
        )
        .await?;
        let (first_tx, first_rx) = tokio::sync::oneshot::channel();
        let placement = tokio::spawn(placement.run(shutdown.clone(), first_tx));
        let _ = first_rx.await;

        let queries = tokio::spawn({
            let q = query::Queries {
                nats: ctx.bus.nats().clone(),
                names: ctx.names().clone(),
                stores: ctx.stores.clone(),
                js: ctx.js.clone(),
                partitions: ctx.bus.config().partitions,
            };
            let (tracker, shutdown) = (tracker.clone(), shutdown.clone());
            async move {
                if let Err(e) = query::serve(q, tracker, shutdown).await {
                    tracing::error!(error = %e, "query subscription failed");
                }
            }
        });
        let _ = ctx.bus.nats().flush().await;
        tracing::info!(node_id = %ctx.settings.node_id, "node joined");
        Ok(Node {
            ctx,
            shutdown,
            tracker,
            placement,
            queries,
            stats,
            placement_state,
        })
    }

    /// What the placement loop reports: whether the node holds exactly its share, and
    /// how many partitions it holds.
    pub fn placement(&self) -> &Arc<PlacementState> {
        &self.placement_state
    }

    /// Actor counters by kind.
    pub fn stats(&self) -> &KindStats {
        &self.stats
    }

    /// The node's shared context.
    pub fn ctx(&self) -> &Ctx {
        &self.ctx
    }

    /// Hands every partition over and stops, bounded by `timeout`.
    pub async fn shutdown(self, timeout: Duration) {
        self.shutdown.cancel();
        let work = async {
            let _ = self.placement.await;
            let _ = self.queries.await;
            self.tracker.close();
            self.tracker.wait().await;
        };
        if tokio::time::timeout(timeout, work).await.is_err() {
            tracing::warn!("node did not stop within the shutdown timeout");
        }
    }
}

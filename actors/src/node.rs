//! Starting and stopping a node.
//!
//! Start: event streams exist → one supervisor per (kind, partition) → subscriptions per
//! kind and for queries → flush (so the server has registered them) → a recovery sweep
//! that activates orders whose saga did not finish. Stop: stop taking commands (drain the
//! subscriptions), let in-flight commands finish and answer, then stop the actor tree.
//! Every acknowledged change is already stored, so nothing is lost.

use crate::cart::CartBehavior;
use crate::ctx::Ctx;
use crate::entity::Behavior;
use crate::host::{self, Routes};
use crate::inventory::InventoryBehavior;
use crate::order::OrderBehavior;
use crate::query;
use crate::supervisor::{ActorStats, Supervisor, SupervisorMsg};
use cartwheel_bus::events::{self, StreamSettings};
use cartwheel_bus::messages::OrderCommand;
use cartwheel_domain::SagaStep;
use ractor::{Actor, ActorCell};
use std::collections::HashMap;
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
    /// The NATS connection could not be flushed.
    #[error("flush: {0}")]
    Flush(String),
}

/// A running node.
pub struct Node {
    ctx: Ctx,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    serving: Vec<JoinHandle<()>>,
    supervisors: Vec<ActorCell>,
    stats: HashMap<&'static str, Arc<ActorStats>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").finish_non_exhaustive()
    }
}

async fn start_kind<B: Behavior>(
    ctx: &Ctx,
    stats: Arc<ActorStats>,
    limiter: Arc<Semaphore>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
    cells: &mut Vec<ActorCell>,
) -> Result<JoinHandle<()>, NodeError>
where
    B::Command: Send,
{
    let partitions = ctx.bus.config().partitions;
    let mut supervisors = Vec::with_capacity(partitions as usize);
    for _ in 0..partitions {
        let (sup, _handle) =
            Actor::spawn(None, Supervisor::<B>::new(ctx.clone(), stats.clone()), ())
                .await
                .map_err(|e| NodeError::Spawn(e.to_string()))?;
        cells.push(sup.get_cell());
        supervisors.push(sup);
    }
    let routes: Arc<Routes<B>> = Arc::new(Routes {
        names: ctx.names().clone(),
        supervisors,
    });
    // Subscribe now so errors surface at start, then serve in the background.
    let nats = ctx.bus.nats().clone();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let tracker2 = tracker.clone();
    let shutdown2 = shutdown.clone();
    let handle = tokio::spawn(async move {
        let r = host::serve::<B>(nats, routes, limiter, tracker2, shutdown2, ready_tx).await;
        if let Err(e) = r {
            tracing::error!(kind = B::KIND.as_str(), error = %e, "command subscription failed");
        }
    });
    ready_rx
        .await
        .map_err(|_| NodeError::Spawn(format!("{} host ended early", B::KIND.as_str())))?
        .map_err(NodeError::Subscribe)?;
    Ok(handle)
}

impl Node {
    /// Starts a node on `ctx`; returns once it is subscribed and serving.
    pub async fn start(ctx: Ctx, streams: &StreamSettings) -> Result<Node, NodeError> {
        events::ensure_streams(&ctx.js, ctx.names(), streams).await?;
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let limiter = Arc::new(Semaphore::new(ctx.settings.max_in_flight));
        let mut cells = Vec::new();
        let mut stats = HashMap::new();
        let mut serving = Vec::new();

        let s = Arc::new(ActorStats::default());
        stats.insert("cart", s.clone());
        serving.push(
            start_kind::<CartBehavior>(&ctx, s, limiter.clone(), &tracker, &shutdown, &mut cells)
                .await?,
        );
        let s = Arc::new(ActorStats::default());
        stats.insert("inventory", s.clone());
        serving.push(
            start_kind::<InventoryBehavior>(
                &ctx,
                s,
                limiter.clone(),
                &tracker,
                &shutdown,
                &mut cells,
            )
            .await?,
        );
        let s = Arc::new(ActorStats::default());
        stats.insert("order", s.clone());
        serving.push(
            start_kind::<OrderBehavior>(&ctx, s, limiter, &tracker, &shutdown, &mut cells).await?,
        );

        let q = tokio::spawn({
            let (nats, names, stores) = (
                ctx.bus.nats().clone(),
                ctx.names().clone(),
                ctx.stores.clone(),
            );
            let (tracker, shutdown) = (tracker.clone(), shutdown.clone());
            async move {
                if let Err(e) = query::serve(nats, names, stores, tracker, shutdown).await {
                    tracing::error!(error = %e, "query subscription failed");
                }
            }
        });
        serving.push(q);
        ctx.bus
            .nats()
            .flush()
            .await
            .map_err(|e| NodeError::Flush(e.to_string()))?;

        tracker.spawn(recovery_sweep(ctx.clone(), shutdown.clone()));
        Ok(Node {
            ctx,
            shutdown,
            tracker,
            serving,
            supervisors: cells,
            stats,
        })
    }

    /// Actor counters by kind (`cart`, `inventory`, `order`).
    pub fn stats(&self) -> &HashMap<&'static str, Arc<ActorStats>> {
        &self.stats
    }

    /// The node's shared context.
    pub fn ctx(&self) -> &Ctx {
        &self.ctx
    }

    /// Stops taking commands, finishes and answers those in flight, then stops every
    /// actor. Bounded by `timeout`.
    pub async fn shutdown(self, timeout: Duration) {
        self.shutdown.cancel();
        let work = async {
            for h in self.serving {
                let _ = h.await;
            }
            self.tracker.close();
            self.tracker.wait().await;
        };
        if tokio::time::timeout(timeout, work).await.is_err() {
            tracing::warn!("in-flight commands did not finish within the shutdown timeout");
        }
        for cell in &self.supervisors {
            cell.stop(Some("node shutting down".into()));
        }
        for cell in self.supervisors {
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while cell.get_status() != ractor::ActorStatus::Stopped {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await;
        }
    }
}

/// Activates every order whose saga did not finish (a crash mid-saga), so it resumes.
async fn recovery_sweep(ctx: Ctx, shutdown: CancellationToken) {
    let ids = match ctx.stores.orders.ids().await {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!(error = %e, "recovery sweep: cannot list orders");
            return;
        }
    };
    let mut resumed = 0u32;
    for id in ids {
        if shutdown.is_cancelled() {
            return;
        }
        let Ok(Some(v)) = ctx.stores.orders.load(&id).await else {
            continue;
        };
        if v.record.state.saga_step == SagaStep::Done {
            continue;
        }
        resumed += 1;
        if let Err(e) = ctx.bus.order(&id, &OrderCommand::Get, "recovery").await {
            tracing::warn!(order = %id, error = %e, "recovery sweep: activation failed");
        }
    }
    if resumed > 0 {
        tracing::info!(resumed, "recovery sweep resumed unfinished sagas");
    }
}

/// The supervisor message type of a kind (re-exported for tests).
pub type CartSupervisorMsg = SupervisorMsg<CartBehavior>;

//! Everything a node runs for one partition it holds: a supervisor and a subscription
//! per entity kind. Started when the lease is taken, stopped when it is handed over
//! (gracefully) or lost (at once).

use crate::cart::CartBehavior;
use crate::ctx::Ctx;
use crate::entity::Behavior;
use crate::host::{self, Routes};
use crate::inventory::InventoryBehavior;
use crate::node::NodeError;
use crate::order::OrderBehavior;
use crate::supervisor::{ActorStats, Supervisor, SupervisorMsg};
use futures::future::BoxFuture;
use ractor::{Actor, ActorCell};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Actor counters per kind, shared by every partition of a node.
#[derive(Debug, Default, Clone)]
pub struct KindStats {
    /// Carts.
    pub cart: Arc<ActorStats>,
    /// Skus.
    pub inventory: Arc<ActorStats>,
    /// Orders.
    pub order: Arc<ActorStats>,
}

/// Asks one supervisor to finish its turns and stop; the future resolves when it has.
type Drain = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send + Sync>;

/// A held partition's runtime.
pub struct PartitionRuntime {
    partition: u32,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    serving: Vec<JoinHandle<()>>,
    supervisors: Vec<ActorCell>,
    /// One per supervisor: asks it to finish its turns and stop (see
    /// [`crate::supervisor::SupervisorMsg::Drain`]); resolves when it has.
    drains: Vec<Drain>,
}

async fn start_kind<B: Behavior>(
    ctx: &Arc<Ctx>,
    partition: u32,
    stats: Arc<ActorStats>,
    limiter: Arc<Semaphore>,
    rt: &mut PartitionRuntime,
) -> Result<(), NodeError> {
    let (sup, _handle) = Actor::spawn(None, Supervisor::<B>::new(ctx.clone(), stats), ())
        .await
        .map_err(|e| NodeError::Spawn(e.to_string()))?;
    rt.supervisors.push(sup.get_cell());
    let drained = sup.clone();
    rt.drains.push(Box::new(move || {
        Box::pin(async move {
            let _ = drained.call(SupervisorMsg::Drain, None).await;
        })
    }));
    let routes = Arc::new(Routes {
        names: ctx.names().clone(),
        partition,
        supervisor: sup,
        guard: ctx.guard.clone(),
    });
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    rt.serving.push(tokio::spawn(host::serve::<B>(
        ctx.bus.nats().clone(),
        routes,
        limiter,
        rt.tracker.clone(),
        rt.shutdown.clone(),
        ready_tx,
    )));
    ready_rx
        .await
        .map_err(|_| NodeError::Spawn("host ended early".into()))?
        .map_err(NodeError::Subscribe)
}

impl PartitionRuntime {
    /// Spawns the supervisors and subscribes; returns once subscribed.
    pub async fn start(
        ctx: &Ctx,
        partition: u32,
        stats: &KindStats,
        limiter: Arc<Semaphore>,
    ) -> Result<PartitionRuntime, NodeError> {
        let mut rt = PartitionRuntime {
            partition,
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            serving: Vec::new(),
            supervisors: Vec::new(),
            drains: Vec::new(),
        };
        // One context per partition behind an `Arc`: every turn shares it.
        let ctx = &Arc::new(ctx.clone());
        let started = async {
            start_kind::<CartBehavior>(
                ctx,
                partition,
                stats.cart.clone(),
                limiter.clone(),
                &mut rt,
            )
            .await?;
            start_kind::<InventoryBehavior>(
                ctx,
                partition,
                stats.inventory.clone(),
                limiter.clone(),
                &mut rt,
            )
            .await?;
            start_kind::<OrderBehavior>(ctx, partition, stats.order.clone(), limiter, &mut rt).await
        }
        .await;
        match started {
            Ok(()) => Ok(rt),
            Err(e) => {
                rt.abort();
                Err(e)
            }
        }
    }

    /// The partition.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// Hand-over: stop taking commands, route what was taken, let every entity finish
    /// its queue, answer every request, then stop. Bounded by `timeout`: past it the
    /// partition's guard is revoked before its actors are stopped, so what they still
    /// held is answered "moved while this request ran" (a cart's resent to the new
    /// owner), never "failed".
    pub async fn stop(self, timeout: Duration, guard: &crate::placement::LeaseGuard) {
        self.shutdown.cancel();
        let work = async {
            for h in self.serving {
                let _ = h.await;
            }
            futures::future::join_all(self.drains.into_iter().map(|d| d())).await;
            self.tracker.close();
            self.tracker.wait().await;
        };
        if tokio::time::timeout(timeout, work).await.is_err() {
            tracing::warn!(partition = self.partition, "partition did not stop in time");
            guard.revoke(self.partition);
        }
        for sup in &self.supervisors {
            sup.stop(None);
        }
    }

    /// Lease lost: stop at once. Whatever is in flight is answered `unavailable` by the
    /// lease guard or fenced by compare-and-set.
    pub fn abort(self) {
        self.shutdown.cancel();
        for sup in &self.supervisors {
            sup.stop(Some("lease lost".into()));
        }
        self.tracker.close();
    }
}

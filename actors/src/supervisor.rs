//! One supervisor per (kind, partition): routes commands to entity actors, activating
//! them on first use, passivating idle ones, and forgetting failed ones.
//!
//! The supervisor is the only router of its partition, so passivation is race-free: an
//! idle actor is removed from the routing map *before* it is stopped, and a later command
//! for that id activates a fresh actor from storage.

use crate::ctx::Ctx;
use crate::entity::{Behavior, EntityActor, EntityArgs, EntityMsg};
use bytes::Bytes;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// Counters of one node's actors, shared by every supervisor of a kind.
#[derive(Debug, Default)]
pub struct ActorStats {
    /// Actors alive now.
    pub live: AtomicU64,
    /// Activations since start.
    pub activations: AtomicU64,
    /// Passivations since start.
    pub passivations: AtomicU64,
    /// Failures (panics or errors) since start.
    pub failures: AtomicU64,
}

/// Messages to a supervisor.
pub enum SupervisorMsg<B: Behavior> {
    /// Deliver a command to the actor of `id`.
    Route {
        /// Entity id.
        id: String,
        /// The command.
        cmd: B::Command,
        /// Request id and command id.
        origin: crate::entity::Origin,
        /// Reply port.
        reply: RpcReplyPort<Bytes>,
        /// The command's span (carrying the caller's trace), entered by the actor.
        span: tracing::Span,
    },
    /// Passivate actors idle for longer than the configured time.
    Tick,
}

struct Child<B: Behavior> {
    actor: ActorRef<EntityMsg<B>>,
    last_used: Instant,
    busy: Arc<AtomicBool>,
}

/// Supervisor state.
pub struct SupervisorState<B: Behavior> {
    children: HashMap<String, Child<B>>,
    by_actor: HashMap<ActorId, String>,
}

/// The supervisor of one partition of one kind.
pub struct Supervisor<B: Behavior> {
    ctx: Ctx,
    stats: Arc<ActorStats>,
    _b: PhantomData<fn() -> B>,
}

impl<B: Behavior> Supervisor<B> {
    /// A supervisor over `ctx`, counting into `stats`.
    pub fn new(ctx: Ctx, stats: Arc<ActorStats>) -> Supervisor<B> {
        Supervisor {
            ctx,
            stats,
            _b: PhantomData,
        }
    }

    fn forget(&self, state: &mut SupervisorState<B>, cell: &ActorCell) {
        if let Some(id) = state.by_actor.remove(&cell.get_id()) {
            // Only remove the routing entry if it still points at this actor.
            if state
                .children
                .get(&id)
                .is_some_and(|c| c.actor.get_id() == cell.get_id())
            {
                state.children.remove(&id);
            }
            self.stats.live.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl<B: Behavior> Actor for Supervisor<B> {
    type Msg = SupervisorMsg<B>;
    type State = SupervisorState<B>;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        _args: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(self.ctx.settings.passivation_tick, || SupervisorMsg::Tick);
        Ok(SupervisorState {
            children: HashMap::new(),
            by_actor: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Route {
                id,
                cmd,
                origin,
                reply,
                span,
            } => {
                if !state.children.contains_key(&id) {
                    let busy = Arc::new(AtomicBool::new(false));
                    let args = EntityArgs {
                        id: id.clone(),
                        busy: busy.clone(),
                    };
                    match Actor::spawn_linked(
                        None,
                        EntityActor::<B>::new(self.ctx.clone()),
                        args,
                        myself.get_cell(),
                    )
                    .await
                    {
                        Ok((actor, _handle)) => {
                            state.by_actor.insert(actor.get_id(), id.clone());
                            state.children.insert(
                                id.clone(),
                                Child {
                                    actor,
                                    last_used: Instant::now(),
                                    busy,
                                },
                            );
                            self.stats.live.fetch_add(1, Ordering::Relaxed);
                            self.stats.activations.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            // Dropping `reply` makes the host answer with an error.
                            tracing::error!(kind = B::KIND.as_str(), %id, error = %e, "actor spawn failed");
                            return Ok(());
                        }
                    }
                }
                if let Some(child) = state.children.get_mut(&id) {
                    child.last_used = Instant::now();
                    // If the actor is stopping, the message (and its reply port) is
                    // dropped and the host answers with an error.
                    let _ = child.actor.send_message(EntityMsg::Command {
                        cmd,
                        origin,
                        reply,
                        span,
                    });
                }
            }
            SupervisorMsg::Tick => {
                let limit = self.ctx.settings.passivate_after;
                let idle: Vec<String> = state
                    .children
                    .iter()
                    .filter(|(_, c)| {
                        c.last_used.elapsed() >= limit && !c.busy.load(Ordering::Relaxed)
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                for id in idle {
                    if let Some(child) = state.children.remove(&id) {
                        // Drain: anything already queued is handled, then the actor stops.
                        let _ = child.actor.drain();
                        self.stats.passivations.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // The partition is being handed over (or the node stops): every actor handles what
        // is already in its mailbox, then stops. State is stored already; this only makes
        // sure no accepted command is dropped.
        let drains = state.children.drain().map(|(_, child)| async move {
            let _ = child
                .actor
                .drain_and_wait(Some(std::time::Duration::from_secs(10)))
                .await;
        });
        futures::future::join_all(drains).await;
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorFailed(cell, err) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(kind = B::KIND.as_str(), error = %err,
                    "entity actor failed; it restarts from stored state on the next message");
                self.forget(state, &cell);
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => self.forget(state, &cell),
            _ => {}
        }
        Ok(())
    }
}

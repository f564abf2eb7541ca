//! The generic entity actor: one per live cart, order or sku.
//!
//! The actor struct holds only dependencies; its state is built lazily on the first
//! message (loaded from storage) so the supervisor never waits on storage while spawning.
//! Messages are handled one at a time, so behaviours need no locks. An error returned by
//! a behaviour (or a panic) fails the actor: the supervisor forgets it, every pending
//! reply port is dropped (the host answers those requests with an error), and the next
//! message activates a fresh actor from stored state.

use crate::ctx::Ctx;
use bytes::Bytes;
use cartwheel_bus::names::EntityKind;
use cartwheel_storage::StoreError;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::de::DeserializeOwned;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The rules of one kind of entity, plugged into [`EntityActor`].
pub trait Behavior: Send + Sync + Sized + 'static {
    /// Commands from the bus.
    type Command: DeserializeOwned + Send + 'static;
    /// The loaded state.
    type State: Send + 'static;
    /// Messages an actor sends itself (timers, saga steps).
    type Internal: Send + 'static;
    /// Which kind this is.
    const KIND: EntityKind;
    /// Whether every command of this kind is safe to deliver again: a repeat is
    /// recognised by its command id (or is idempotent by nature) and answered without a
    /// second effect. A turn cut short by a lapsing lease is then answered "moving" and
    /// the requester resends it to the new owner; for other kinds its outcome is
    /// unknown, and the answer says so.
    const RESEND_SAFE: bool = false;

    /// Whether only nodes may send `cmd` (a saga's steps, an order's placement). Such a
    /// command is accepted on the entity's internal subject only (`Names::entity_internal`),
    /// which edges' NATS users may not publish to; on the public subject it is refused.
    fn internal_only(_cmd: &Self::Command) -> bool {
        false
    }

    /// The storage backend this kind's records live in (a metrics label).
    fn backend(ctx: &Ctx) -> &'static str;

    /// Loads the stored state of `id` (absent entities load as "not there yet").
    fn load(ctx: &Ctx, id: &str) -> impl Future<Output = Result<Self::State, StoreError>> + Send;

    /// Runs once after loading: re-publish the outbox, resume sagas.
    fn activated(
        ctx: &Ctx,
        me: &ActorRef<EntityMsg<Self>>,
        state: &mut Self::State,
    ) -> impl Future<Output = ()> + Send;

    /// Handles one command. The behaviour must send exactly one reply on `reply`, now or
    /// later (it may keep the port in its state, e.g. to answer when a saga settles).
    fn handle(
        ctx: &Ctx,
        me: &ActorRef<EntityMsg<Self>>,
        id: &str,
        state: &mut Self::State,
        cmd: Self::Command,
        origin: &Origin,
        reply: RpcReplyPort<Bytes>,
    ) -> impl Future<Output = Result<(), ActorProcessingErr>> + Send;

    /// Handles a message the actor sent itself.
    fn internal(
        ctx: &Ctx,
        me: &ActorRef<EntityMsg<Self>>,
        id: &str,
        state: &mut Self::State,
        msg: Self::Internal,
    ) -> impl Future<Output = Result<(), ActorProcessingErr>> + Send;

    /// Runs when the actor stops (passivation, hand-over, node stop): answer anything
    /// still parked.
    fn stopped(_state: &mut Self::State) {}

    /// Whether the actor has work of its own in progress (it must not be passivated).
    fn busy(_state: &Self::State) -> bool {
        false
    }
}

/// Where a command came from: its request id, and what identifies it as one command
/// however often it is delivered.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The request id, for logs and events.
    pub request_id: String,
    /// The command id (`Cw-Command-Id`, else the request id): a command delivered again
    /// under the same id is a repeat, answered without being applied twice.
    pub command_id: String,
    /// Whether the command id was given (`Cw-Command-Id`) rather than taken from the
    /// request id. Only a given id used for a different command is refused; a reused
    /// request id with a different command is just a new command.
    pub explicit: bool,
    /// The command as it came over the wire (its fingerprint tells a repeat from a
    /// different command that reuses the id).
    pub payload: Bytes,
}

/// A message to an entity actor.
pub enum EntityMsg<B: Behavior> {
    /// A command from the bus, with its reply port.
    Command {
        /// The decoded command.
        cmd: B::Command,
        /// Its request id and command id.
        origin: Origin,
        /// Where the encoded `Reply<T>` goes.
        reply: RpcReplyPort<Bytes>,
        /// The command's span: loading, handling and every request the behaviour makes
        /// run inside it, so they join the caller's trace.
        span: tracing::Span,
    },
    /// A message from the actor to itself.
    Internal(B::Internal),
}

/// Start-up arguments of an entity actor.
pub struct EntityArgs {
    /// The entity id.
    pub id: String,
    /// Set while the behaviour reports itself busy; read by the supervisor.
    pub busy: Arc<AtomicBool>,
}

/// The actor state: the id, and the behaviour's state once loaded.
pub struct EntityState<B: Behavior> {
    id: String,
    loaded: Option<B::State>,
    busy: Arc<AtomicBool>,
}

/// The ractor actor running a [`Behavior`].
pub struct EntityActor<B: Behavior> {
    ctx: Ctx,
    _b: PhantomData<fn() -> B>,
}

impl<B: Behavior> EntityActor<B> {
    /// An actor over `ctx`.
    pub fn new(ctx: Ctx) -> EntityActor<B> {
        EntityActor {
            ctx,
            _b: PhantomData,
        }
    }
}

impl<B: Behavior> Actor for EntityActor<B> {
    type Msg = EntityMsg<B>;
    type State = EntityState<B>;
    type Arguments = EntityArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: EntityArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(EntityState {
            id: args.id,
            loaded: None,
            busy: args.busy,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(loaded) = state.loaded.as_mut() {
            B::stopped(loaded);
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // The lease fence, again at the actor: a command queued before this node lost the
        // partition (paused past its lease) or a saga step it scheduled must have no
        // effect anywhere — the new owner has taken over and resumes from storage.
        let partition =
            cartwheel_bus::names::partition(&state.id, self.ctx.bus.config().partitions);
        if !self.ctx.guard.holds(partition) {
            if let EntityMsg::Command { reply, .. } = msg {
                let _ = reply.send(crate::persist::encode_error(
                    &cartwheel_bus::ApiError::unavailable(format!(
                        "partition {partition} is no longer held by this node; retry"
                    )),
                ));
            }
            return Ok(());
        }
        let span = match &msg {
            EntityMsg::Command { span, .. } => span.clone(),
            EntityMsg::Internal(_) => tracing::Span::none(),
        };
        if state.loaded.is_none() {
            let started = std::time::Instant::now();
            // The behaviour's futures are boxed here and below: inline, the state machine
            // of everything a handler may await (storage, JetStream, the checkout saga)
            // would live in every idle actor's task, about 10 KB per live entity
            // (measured with `cartwheel bench run live-carts`).
            let loaded = Box::pin(
                B::load(&self.ctx, &state.id)
                    .instrument(tracing::info_span!(parent: &span, "storage", op = "load")),
            )
            .await;
            crate::persist::record_storage(
                B::KIND.as_str(),
                B::backend(&self.ctx),
                "load",
                started,
                loaded.is_ok(),
            );
            let mut loaded = match loaded {
                Ok(loaded) => loaded,
                Err(e) => {
                    return match msg {
                        // Answered with the storage error (`unavailable` while the store
                        // is down, not the `internal` of a dropped reply port); the actor
                        // stays unloaded and the next message tries the load again.
                        EntityMsg::Command { reply, .. } => {
                            let error = crate::persist::store_error(&e);
                            let _ = reply.send(crate::persist::encode_error(&error));
                            Ok(())
                        }
                        // Nothing waits for an internal message: fail, restart from storage.
                        EntityMsg::Internal(_) => Err(e.into()),
                    };
                }
            };
            Box::pin(B::activated(&self.ctx, &myself, &mut loaded)).await;
            state.loaded = Some(loaded);
        }
        let Some(loaded) = state.loaded.as_mut() else {
            return Err("entity state missing after load".into());
        };
        let result = match msg {
            EntityMsg::Command {
                cmd,
                origin,
                reply,
                span,
            } => {
                let started = std::time::Instant::now();
                let handled = Box::pin(cartwheel_bus::headers::in_trace(
                    span.context(),
                    B::handle(&self.ctx, &myself, &state.id, loaded, cmd, &origin, reply)
                        .instrument(span.clone()),
                ))
                .await;
                span.in_scope(|| {
                    tracing::debug!(
                        elapsed_us =
                            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                        "command handled"
                    );
                });
                handled
            }
            EntityMsg::Internal(m) => {
                Box::pin(B::internal(&self.ctx, &myself, &state.id, loaded, m)).await
            }
        };
        state.busy.store(B::busy(loaded), Ordering::Relaxed);
        result
    }
}

//! The behaviour of an entity kind, and one turn of one entity.
//!
//! Entities are data, not actors: the partition's supervisor (a ractor actor, one per
//! kind and partition) holds every live entity of its partition as a slot — its state
//! and its queue of commands — and runs at most one turn per entity at a time, each in a
//! short-lived task (see [`crate::supervisor`]). A turn loads the state from storage when
//! the entity is not loaded yet, then hands the behaviour one command (or one group of
//! commands a behaviour applies together, [`Behavior::batchable`]), or one message the
//! entity sent itself. An error returned by a behaviour, or a panic, fails that turn
//! alone: its callers' reply ports are dropped (the host answers them with a typed
//! error), the entity's state is forgotten and reloaded from storage by its next turn,
//! and every other entity runs on.

use crate::ctx::Ctx;
use crate::supervisor::SupervisorMsg;
use bytes::Bytes;
use cartwheel_bus::names::EntityKind;
use cartwheel_storage::StoreError;
use ractor::{ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::de::DeserializeOwned;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The rules of one kind of entity, run by the partition's supervisor.
pub trait Behavior: Send + Sync + Sized + 'static {
    /// Commands from the bus.
    type Command: DeserializeOwned + Send + 'static;
    /// The loaded state.
    type State: Send + 'static;
    /// Messages an entity sends itself (timers, saga steps).
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

    /// Whether `cmd` may share a turn with the batchable commands queued right behind it
    /// ([`Behavior::handle_batch`], a group commit). Not by default.
    fn batchable(_cmd: &Self::Command) -> bool {
        false
    }

    /// The storage backend this kind's records live in (a metrics label).
    fn backend(ctx: &Ctx) -> &'static str;

    /// Loads the stored state of `id` (absent entities load as "not there yet").
    fn load(ctx: &Ctx, id: &str) -> impl Future<Output = Result<Self::State, StoreError>> + Send;

    /// Runs once after loading: re-publish the outbox, resume sagas.
    fn activated(
        ctx: &Ctx,
        me: &Me<Self>,
        state: &mut Self::State,
    ) -> impl Future<Output = ()> + Send;

    /// Handles one command. The behaviour must send exactly one reply on `reply`, now or
    /// later (it may keep the port in its state, e.g. to answer when a saga settles).
    fn handle(
        ctx: &Ctx,
        me: &Me<Self>,
        id: &str,
        state: &mut Self::State,
        cmd: Self::Command,
        origin: &Origin,
        reply: RpcReplyPort<Bytes>,
    ) -> impl Future<Output = Result<(), ActorProcessingErr>> + Send;

    /// Handles commands that arrived one after another, all [`Behavior::batchable`], in
    /// one turn: a behaviour that overrides it applies them in order and stores the
    /// result once, and still answers each command on its own port (a refused one
    /// changing nothing). By default they are handled one by one.
    fn handle_batch(
        ctx: &Ctx,
        me: &Me<Self>,
        id: &str,
        state: &mut Self::State,
        batch: Vec<Queued<Self>>,
    ) -> impl Future<Output = Result<(), ActorProcessingErr>> + Send {
        async move {
            for q in batch {
                Self::handle(ctx, me, id, state, q.cmd, &q.origin, q.reply).await?;
            }
            Ok(())
        }
    }

    /// Handles a message the entity sent itself.
    fn internal(
        ctx: &Ctx,
        me: &Me<Self>,
        id: &str,
        state: &mut Self::State,
        msg: Self::Internal,
    ) -> impl Future<Output = Result<(), ActorProcessingErr>> + Send;

    /// Runs when the entity is put away (passivation, hand-over, node stop): answer
    /// anything still parked.
    fn stopped(_state: &mut Self::State) {}

    /// Whether the entity has work of its own in progress (it must not be passivated).
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

/// A command waiting for its entity's turn.
pub struct Queued<B: Behavior> {
    /// The decoded command.
    pub cmd: B::Command,
    /// Its request id and command id.
    pub origin: Origin,
    /// Where the encoded `Reply<T>` goes.
    pub reply: RpcReplyPort<Bytes>,
    /// The command's span: loading, handling and every request the behaviour makes run
    /// inside it, so they join the caller's trace.
    pub span: tracing::Span,
}

/// What one turn does.
pub(crate) enum Work<B: Behavior> {
    /// One command.
    One(Queued<B>),
    /// Batchable commands, in arrival order.
    Batch(Vec<Queued<B>>),
    /// A message the entity sent itself.
    Internal(B::Internal),
}

/// An entity's address for messages to itself: its supervisor, its id, and the
/// generation of its state (a message sent by a state that has since failed or been put
/// away is dropped, as a message to a stopped actor was).
pub struct Me<B: Behavior> {
    pub(crate) supervisor: ActorRef<SupervisorMsg<B>>,
    pub(crate) id: Arc<str>,
    pub(crate) generation: u64,
}

impl<B: Behavior> Clone for Me<B> {
    fn clone(&self) -> Self {
        Me {
            supervisor: self.supervisor.clone(),
            id: self.id.clone(),
            generation: self.generation,
        }
    }
}

impl<B: Behavior> Me<B> {
    /// Queues `msg` for a later turn of this entity.
    pub fn send(&self, msg: B::Internal) {
        let _ = self.supervisor.send_message(SupervisorMsg::Internal {
            id: self.id.clone(),
            generation: self.generation,
            msg,
        });
    }

    /// Queues `msg` for a turn of this entity after `delay`.
    pub fn send_after(&self, delay: Duration, msg: B::Internal) {
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            me.send(msg);
        });
    }

    /// The entity id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// What a finished turn hands back to the supervisor.
pub enum TurnEnd<S> {
    /// The turn ran.
    Done {
        /// The state (`None`: still not loaded, e.g. storage was down).
        state: Option<Box<S>>,
        /// Whether it has work of its own in progress ([`Behavior::busy`]).
        busy: bool,
    },
    /// The behaviour failed (an error or a panic): the state is forgotten.
    Failed(String),
}

/// Runs one turn of entity `me.id`: the lease fence, the load when `state` is `None`,
/// then `work`.
pub(crate) async fn turn<B: Behavior>(
    ctx: Arc<Ctx>,
    me: Me<B>,
    state: Option<Box<B::State>>,
    work: Work<B>,
) -> TurnEnd<B::State> {
    let run = std::panic::AssertUnwindSafe(run_turn(&ctx, &me, state, work));
    match futures::FutureExt::catch_unwind(run).await {
        Ok(Ok(state)) => {
            let busy = state.as_deref().is_some_and(B::busy);
            TurnEnd::Done { state, busy }
        }
        Ok(Err(e)) => TurnEnd::Failed(e.to_string()),
        Err(panic) => TurnEnd::Failed(
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "panic".to_owned()),
        ),
    }
}

fn answer_all<B: Behavior>(work: Work<B>, body: &Bytes) {
    match work {
        Work::One(q) => {
            let _ = q.reply.send(body.clone());
        }
        Work::Batch(batch) => {
            for q in batch {
                let _ = q.reply.send(body.clone());
            }
        }
        Work::Internal(_) => {}
    }
}

async fn run_turn<B: Behavior>(
    ctx: &Ctx,
    me: &Me<B>,
    state: Option<Box<B::State>>,
    work: Work<B>,
) -> Result<Option<Box<B::State>>, ActorProcessingErr> {
    // The lease fence, again at the entity: a command queued before this node lost the
    // partition (paused past its lease) or a saga step it scheduled must have no effect
    // anywhere — the new owner has taken over and resumes from storage.
    let partition = cartwheel_bus::names::partition(&me.id, ctx.bus.config().partitions);
    if !ctx.guard.holds(partition) {
        answer_all(
            work,
            &crate::persist::encode_error(&cartwheel_bus::ApiError::unavailable(format!(
                "partition {partition} is no longer held by this node; retry"
            ))),
        );
        return Ok(state);
    }
    let span = match &work {
        Work::One(q) => q.span.clone(),
        Work::Batch(b) => b
            .first()
            .map_or_else(tracing::Span::none, |q| q.span.clone()),
        Work::Internal(_) => tracing::Span::none(),
    };
    let mut state = match state {
        Some(state) => state,
        None => {
            let started = std::time::Instant::now();
            // Every behaviour future is boxed: inline, the state machine of everything a
            // handler may await (storage, JetStream, the checkout saga) would make each
            // turn's task several KB, copied whole on every spawn and poll stage
            // (callgrind: 42 % of a node's instructions were those memcpys).
            let loaded = Box::pin(
                B::load(ctx, &me.id)
                    .instrument(tracing::info_span!(parent: &span, "storage", op = "load")),
            )
            .await;
            crate::persist::record_storage(
                B::KIND.as_str(),
                B::backend(ctx),
                "load",
                started,
                loaded.is_ok(),
            );
            match loaded {
                Ok(loaded) => {
                    let mut loaded = Box::new(loaded);
                    Box::pin(B::activated(ctx, me, &mut loaded)).await;
                    loaded
                }
                // Commands are answered with the storage error (`unavailable` while the
                // store is down, not the `internal` of a dropped reply port); the entity
                // stays unloaded and its next turn tries the load again.
                Err(e) if !matches!(work, Work::Internal(_)) => {
                    let error = crate::persist::store_error(&e);
                    answer_all(work, &crate::persist::encode_error(&error));
                    return Ok(None);
                }
                // Nothing waits for an internal message: fail, restart from storage.
                Err(e) => return Err(e.into()),
            }
        }
    };
    match work {
        Work::One(q) => {
            let started = std::time::Instant::now();
            let handled = Box::pin(cartwheel_bus::headers::in_trace(
                q.span.context(),
                B::handle(ctx, me, &me.id, &mut state, q.cmd, &q.origin, q.reply)
                    .instrument(q.span.clone()),
            ))
            .await;
            if tracing::enabled!(tracing::Level::DEBUG) {
                q.span.in_scope(|| {
                    tracing::debug!(
                        elapsed_us =
                            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                        "command handled"
                    );
                });
            }
            handled?;
        }
        Work::Batch(batch) => {
            tracing::debug!(parent: &span, commands = batch.len(), "group of commands");
            Box::pin(cartwheel_bus::headers::in_trace(
                span.context(),
                B::handle_batch(ctx, me, &me.id, &mut state, batch).instrument(span.clone()),
            ))
            .await?;
        }
        Work::Internal(m) => Box::pin(B::internal(ctx, me, &me.id, &mut state, m)).await?,
    }
    Ok(Some(state))
}

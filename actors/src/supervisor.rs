//! One supervisor per (kind, partition): it hosts the partition's live entities of its
//! kind as data and runs their turns.
//!
//! Each live entity is a slot in one map: its state (once loaded), its queue of commands
//! and messages, and whether a turn of it runs now. A command for an id that has no slot
//! activates one (the first turn loads the state from storage). At most one turn per
//! entity runs at a time, each in a short-lived task that hands the state back when it
//! ends, so an entity's commands run one at a time in arrival order, and entities run in
//! parallel. An entity costs its state and a map entry (no actor, mailbox or task of its
//! own while idle), which is what lets a node hold a million of them.
//!
//! A turn that fails (an error or a panic) fails its entity alone: the supervisor
//! forgets that entity's state, and the entity's next turn reloads it from storage.
//! The supervisor is the only router of its partition, so passivation is race-free: an
//! idle entity (no turn running, nothing queued, no work of its own) is removed from the
//! map, and a later command for that id activates it again from storage.

use crate::ctx::Ctx;
use crate::entity::{Behavior, Me, Queued, TurnEnd, Work, turn};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Most commands one group-commit turn takes from an entity's queue.
pub const MAX_BATCH: usize = 1024;

/// Counters of one node's entities, shared by every supervisor of a kind.
#[derive(Debug, Default)]
pub struct ActorStats {
    /// Entities live (activated, not passivated) now.
    pub live: AtomicU64,
    /// Activations since start.
    pub activations: AtomicU64,
    /// Passivations since start.
    pub passivations: AtomicU64,
    /// Failed turns (panics or errors) since start.
    pub failures: AtomicU64,
}

/// Messages to a supervisor.
pub enum SupervisorMsg<B: Behavior> {
    /// Deliver a command to the entity `id`.
    Route {
        /// Entity id.
        id: String,
        /// The command.
        cmd: B::Command,
        /// Request id and command id.
        origin: crate::entity::Origin,
        /// Reply port.
        reply: RpcReplyPort<bytes::Bytes>,
        /// The command's span (carrying the caller's trace), entered by the turn.
        span: tracing::Span,
    },
    /// A message an entity sent itself ([`Me::send`]).
    Internal {
        /// Entity id.
        id: Arc<str>,
        /// The generation of the state that sent it.
        generation: u64,
        /// The message.
        msg: B::Internal,
    },
    /// A turn ended.
    TurnDone {
        /// Entity id.
        id: Arc<str>,
        /// The generation the turn ran on.
        generation: u64,
        /// What it hands back.
        end: TurnEnd<B::State>,
    },
    /// Passivate entities idle for longer than the configured time.
    Tick,
    /// Hand-over: finish every turn and everything queued (messages entities send
    /// themselves from now on are dropped), put every entity away, answer, and stop.
    Drain(RpcReplyPort<()>),
}

/// Queued work of a slot.
enum Pending<B: Behavior> {
    Command(Queued<B>),
    Internal(B::Internal),
}

/// One live entity.
struct Slot<B: Behavior> {
    /// The loaded state; `None` before the first load, after a failure, and while a turn
    /// holds it.
    state: Option<Box<B::State>>,
    /// Work waiting for the running turn; allocated only while there is some (an idle
    /// entity's queue costs one pointer, not a buffer). Boxed because a million idle
    /// slots pay for its size: 8 bytes instead of a `VecDeque`'s 32.
    #[allow(clippy::box_collection)]
    queue: Option<Box<VecDeque<Pending<B>>>>,
    /// The running turn, if any.
    running: Option<tokio::task::AbortHandle>,
    /// Identifies the current state: bumped when a failure forgets it, so messages the
    /// old state sent itself are dropped.
    generation: u64,
    /// Milliseconds since the supervisor started, at the last command.
    last_used: u64,
    busy: bool,
}

/// Supervisor state.
pub struct SupervisorState<B: Behavior> {
    slots: HashMap<Arc<str>, Slot<B>>,
    next_generation: u64,
    running: usize,
    draining: Option<RpcReplyPort<()>>,
    epoch: Instant,
}

/// The supervisor of one partition of one kind.
pub struct Supervisor<B: Behavior> {
    ctx: Arc<Ctx>,
    stats: Arc<ActorStats>,
    _b: PhantomData<fn() -> B>,
}

impl<B: Behavior> Supervisor<B> {
    /// A supervisor over `ctx`, counting into `stats`.
    pub fn new(ctx: Arc<Ctx>, stats: Arc<ActorStats>) -> Supervisor<B> {
        Supervisor {
            ctx,
            stats,
            _b: PhantomData,
        }
    }

    /// Gives `id` the work `pending`: a turn of its own now when none runs and nothing
    /// waits, else a place at the end of its queue.
    fn offer(
        &self,
        myself: &ActorRef<SupervisorMsg<B>>,
        st: &mut SupervisorState<B>,
        id: &Arc<str>,
        pending: Pending<B>,
    ) {
        let Some(slot) = st.slots.get_mut(id) else {
            return;
        };
        if slot.running.is_none() && slot.queue.is_none() {
            let work = match pending {
                Pending::Command(q) => Work::One(q),
                Pending::Internal(m) => Work::Internal(m),
            };
            self.start(myself, slot, id, work);
            st.running += 1;
        } else {
            slot.queue.get_or_insert_default().push_back(pending);
        }
    }

    /// Starts the next turn of `id` if it has work waiting and none runs: the next item,
    /// or the longest run of batchable commands at the head of its queue.
    fn pump(
        &self,
        myself: &ActorRef<SupervisorMsg<B>>,
        st: &mut SupervisorState<B>,
        id: &Arc<str>,
    ) {
        let Some(slot) = st.slots.get_mut(id) else {
            return;
        };
        if slot.running.is_some() {
            return;
        }
        let Some(queue) = slot.queue.as_mut() else {
            return;
        };
        let work = match queue.pop_front() {
            None => None,
            Some(Pending::Internal(m)) => Some(Work::Internal(m)),
            Some(Pending::Command(q)) if B::batchable(&q.cmd) => {
                let mut batch = vec![q];
                while batch.len() < MAX_BATCH
                    && matches!(queue.front(), Some(Pending::Command(n)) if B::batchable(&n.cmd))
                {
                    if let Some(Pending::Command(n)) = queue.pop_front() {
                        batch.push(n);
                    }
                }
                Some(if batch.len() == 1 {
                    Work::One(batch.remove(0))
                } else {
                    Work::Batch(batch)
                })
            }
            Some(Pending::Command(q)) => Some(Work::One(q)),
        };
        if queue.is_empty() {
            slot.queue = None;
        }
        if let Some(work) = work {
            self.start(myself, slot, id, work);
            st.running += 1;
        }
    }

    /// Runs `work` as the next turn of the entity in `slot`.
    fn start(
        &self,
        myself: &ActorRef<SupervisorMsg<B>>,
        slot: &mut Slot<B>,
        id: &Arc<str>,
        work: Work<B>,
    ) {
        let me = Me {
            supervisor: myself.clone(),
            id: id.clone(),
            generation: slot.generation,
        };
        let ctx = self.ctx.clone();
        let state = slot.state.take();
        let task = tokio::spawn(async move {
            let (supervisor, id, generation) =
                (me.supervisor.clone(), me.id.clone(), me.generation);
            let end = turn::<B>(ctx, me, state, work).await;
            let _ = supervisor.send_message(SupervisorMsg::TurnDone {
                id,
                generation,
                end,
            });
        });
        slot.running = Some(task.abort_handle());
    }

    fn now(st: &SupervisorState<B>) -> u64 {
        u64::try_from(st.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Ends a drain once no turn runs: every entity put away, the caller answered.
    fn finish_drain(&self, myself: &ActorRef<SupervisorMsg<B>>, st: &mut SupervisorState<B>) {
        if st.running > 0 {
            return;
        }
        if let Some(port) = st.draining.take() {
            self.put_away_all(st);
            let _ = port.send(());
            myself.stop(None);
        }
    }

    fn put_away_all(&self, st: &mut SupervisorState<B>) {
        let n = st.slots.len() as u64;
        for (_, mut slot) in st.slots.drain() {
            if let Some(task) = slot.running.take() {
                task.abort();
            }
            if let Some(state) = slot.state.as_deref_mut() {
                B::stopped(state);
            }
        }
        st.running = 0;
        self.stats.live.fetch_sub(n, Ordering::Relaxed);
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
            slots: HashMap::new(),
            next_generation: 0,
            running: 0,
            draining: None,
            epoch: Instant::now(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Route {
                id,
                cmd,
                origin,
                reply,
                span,
            } => {
                let now = Self::now(st);
                let key: Arc<str> = match st.slots.get_key_value(id.as_str()) {
                    Some((key, _)) => key.clone(),
                    None => {
                        let key: Arc<str> = id.into();
                        st.next_generation += 1;
                        st.slots.insert(
                            key.clone(),
                            Slot {
                                state: None,
                                queue: None,
                                running: None,
                                generation: st.next_generation,
                                last_used: now,
                                busy: false,
                            },
                        );
                        self.stats.live.fetch_add(1, Ordering::Relaxed);
                        self.stats.activations.fetch_add(1, Ordering::Relaxed);
                        key
                    }
                };
                if let Some(slot) = st.slots.get_mut(&key) {
                    slot.last_used = now;
                }
                let q = Queued {
                    cmd,
                    origin,
                    reply,
                    span,
                };
                self.offer(&myself, st, &key, Pending::Command(q));
            }
            SupervisorMsg::Internal {
                id,
                generation,
                msg,
            } => {
                // A message of a state that failed, or was put away, is dropped; so is
                // any sent during a hand-over (the new owner resumes from storage).
                if st.draining.is_some() {
                    return Ok(());
                }
                if st
                    .slots
                    .get(&id)
                    .is_some_and(|s| s.generation == generation)
                {
                    self.offer(&myself, st, &id, Pending::Internal(msg));
                }
            }
            SupervisorMsg::TurnDone {
                id,
                generation,
                end,
            } => {
                st.running = st.running.saturating_sub(1);
                let now = Self::now(st);
                let mut fresh = None;
                if let Some(slot) = st.slots.get_mut(&id) {
                    slot.running = None;
                    if slot.generation == generation {
                        match end {
                            TurnEnd::Done { state, busy } => {
                                slot.state = state;
                                slot.busy = busy;
                            }
                            TurnEnd::Failed(error) => {
                                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                                tracing::error!(kind = B::KIND.as_str(), id = %id, %error,
                                    "entity turn failed; the entity reloads from stored state on its next turn");
                                slot.state = None;
                                slot.busy = false;
                                fresh = Some(());
                            }
                        }
                    }
                    slot.last_used = now;
                }
                if fresh.is_some() {
                    st.next_generation += 1;
                    let generation = st.next_generation;
                    if let Some(slot) = st.slots.get_mut(&id) {
                        slot.generation = generation;
                    }
                }
                self.pump(&myself, st, &id);
                self.finish_drain(&myself, st);
            }
            SupervisorMsg::Tick => {
                if st.draining.is_some() {
                    return Ok(());
                }
                let limit = u64::try_from(self.ctx.settings.passivate_after.as_millis())
                    .unwrap_or(u64::MAX);
                let now = Self::now(st);
                let before = st.slots.len();
                st.slots.retain(|_, slot| {
                    let idle = slot.running.is_none()
                        && slot.queue.is_none()
                        && !slot.busy
                        && now.saturating_sub(slot.last_used) >= limit;
                    if idle && let Some(state) = slot.state.as_deref_mut() {
                        B::stopped(state);
                    }
                    !idle
                });
                let passivated = (before - st.slots.len()) as u64;
                if passivated > 0 {
                    self.stats
                        .passivations
                        .fetch_add(passivated, Ordering::Relaxed);
                    self.stats.live.fetch_sub(passivated, Ordering::Relaxed);
                    // Give the map's memory back when most of it went.
                    if st.slots.capacity() > 4 * st.slots.len().max(16) {
                        st.slots.shrink_to_fit();
                    }
                }
            }
            SupervisorMsg::Drain(port) => {
                st.draining = Some(port);
                // Queued internal messages are dropped with the rest of the hand-over's
                // self-messages; queued commands still run.
                for slot in st.slots.values_mut() {
                    if let Some(queue) = slot.queue.as_mut() {
                        queue.retain(|p| matches!(p, Pending::Command(_)));
                        if queue.is_empty() {
                            slot.queue = None;
                        }
                    }
                }
                self.finish_drain(&myself, st);
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Stopped without a drain (the lease was lost, or the node stops at once): turns
        // still running are cut short (their callers are answered by the host and the
        // lease guard), parked requests are answered, and nothing more is written.
        if let Some(port) = st.draining.take() {
            let _ = port.send(());
        }
        self.put_away_all(st);
        Ok(())
    }
}

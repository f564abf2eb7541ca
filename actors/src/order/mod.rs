//! The order behaviour: stores orders, runs their checkout saga, answers when it settles.
//!
//! `Place` stores a `PENDING` order (idempotently: the order id is derived from the cart
//! and the idempotency key) and starts the saga. The saga runs as messages the actor
//! sends itself, one step per message, each step persisted with the order
//! ([`cartwheel_domain::SagaStep`]), so reads interleave with a running saga and a new
//! owner resumes exactly where the last one stopped. Requests that wait for the outcome
//! park their reply port until the saga's step is `Done` or their deadline passes.

mod saga;

use crate::ctx::Ctx;
use crate::entity::{Behavior, Me, Origin};
use crate::persist::{WriteError, encode_reply, publish_outbox, retry_once, save, store_error};
use bytes::Bytes;
use cartwheel_bus::ApiError;
use cartwheel_bus::messages::{OrderCommand, Reply};
use cartwheel_bus::names::EntityKind;
use cartwheel_domain::{Event, Order, OrderStatus, SagaStep};
use cartwheel_storage::{StoreError, Versioned};
use ractor::{ActorProcessingErr, RpcReplyPort};
use std::time::Duration;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// How long a cancel waits for the stock to be returned before answering.
const CANCEL_WAIT: Duration = Duration::from_secs(5);

/// Order behaviour.
pub struct OrderBehavior;

/// Messages an order actor sends itself.
pub enum OrderInternal {
    /// Run the next saga step.
    Advance,
    /// A waiter's deadline passed: answer it with the order as it is.
    WaiterTimeout(u64),
}

struct Waiter {
    id: u64,
    reply: RpcReplyPort<Bytes>,
}

/// An order actor's state.
pub struct OrderState {
    current: Option<Versioned<Order>>,
    waiters: Vec<Waiter>,
    next_waiter: u64,
    advance_queued: bool,
    retry_delay: Duration,
    /// The trace of the command that started the running saga: its steps (and the
    /// inventory requests they make) join that trace, so one checkout is one trace.
    trace: Option<opentelemetry::Context>,
}

impl OrderState {
    fn order(&self) -> Option<&Order> {
        self.current.as_ref().map(|v| &v.record.state)
    }

    fn settled(&self) -> bool {
        self.order().is_none_or(|o| o.saga_step == SagaStep::Done)
    }
}

fn reply_order(reply: RpcReplyPort<Bytes>, r: Reply<Order>) {
    let _ = reply.send(encode_reply(&r));
}

fn answer_waiters(state: &mut OrderState) {
    let Some(order) = state.order().cloned() else {
        return;
    };
    for w in state.waiters.drain(..) {
        reply_order(w.reply, Ok(order.clone()));
    }
}

/// Parks `reply` until the saga settles or `wait` passes.
fn park(
    me: &Me<OrderBehavior>,
    state: &mut OrderState,
    reply: RpcReplyPort<Bytes>,
    wait: Duration,
) {
    let id = state.next_waiter;
    state.next_waiter += 1;
    state.waiters.push(Waiter { id, reply });
    me.send_after(wait, OrderInternal::WaiterTimeout(id));
}

/// Queues the next saga step unless one is queued already.
fn advance(me: &Me<OrderBehavior>, state: &mut OrderState) {
    if !state.advance_queued && !state.settled() {
        state.advance_queued = true;
        me.send(OrderInternal::Advance);
    }
}

/// Stores `order` with one status event, reloading on conflict (the caller re-reads).
async fn save_order(
    ctx: &Ctx,
    id: &str,
    state: &mut OrderState,
    order: Order,
    events: Vec<Event>,
    request_id: &str,
) -> Result<(), WriteError> {
    save(
        ctx,
        &*ctx.stores.orders,
        id,
        &mut state.current,
        order,
        events,
        None,
        request_id,
    )
    .await
}

async fn reload(ctx: &Ctx, id: &str, state: &mut OrderState) -> Result<(), ApiError> {
    state.current = ctx
        .stores
        .orders
        .load(id)
        .await
        .map_err(|e| store_error(&e))?;
    Ok(())
}

#[allow(clippy::too_many_arguments)] // one request's parts; bundling them adds nothing
async fn place(
    ctx: &Ctx,
    me: &Me<OrderBehavior>,
    id: &str,
    state: &mut OrderState,
    order: Order,
    wait: Duration,
    request_id: &str,
    reply: RpcReplyPort<Bytes>,
) {
    if order.id != id
        || order.status != OrderStatus::Pending
        || order.saga_step != SagaStep::Reserve
    {
        return reply_order(
            reply,
            Err(ApiError::invalid(
                "a placed order must be a new PENDING order with this id",
            )),
        );
    }
    if state.current.is_none() {
        let events = vec![Event::OrderCreated {
            order: order.clone(),
        }];
        match save_order(ctx, id, state, order, events, request_id).await {
            Ok(()) => {}
            Err(WriteError::Conflict) => {
                // Placed concurrently by someone else: use theirs.
                if let Err(e) = reload(ctx, id, state).await {
                    return reply_order(reply, Err(e));
                }
            }
            Err(WriteError::Failed(e)) => return reply_order(reply, Err(e)),
        }
    }
    if state.settled() {
        let r = state
            .order()
            .cloned()
            .ok_or_else(|| ApiError::internal("order vanished"));
        return reply_order(reply, r);
    }
    park(me, state, reply, wait);
    advance(me, state);
}

/// What a status change came to.
enum Changed {
    /// Done: answer with the order.
    Settled(Box<Order>),
    /// Compensations still run: wait for them (`advance`: this call started them).
    Wait { advance: bool },
}

/// One attempt at moving the order to `to` (see [`change_status`]).
async fn try_change(
    ctx: &Ctx,
    id: &str,
    state: &mut OrderState,
    to: OrderStatus,
    request_id: &str,
) -> Result<Changed, WriteError> {
    let Some(mut order) = state.order().cloned() else {
        return Err(WriteError::Failed(ApiError::not_found(format!(
            "order {id} not found"
        ))));
    };
    if order.status == to {
        // Idempotent: already there (a cancel may still be returning stock).
        if state.settled() {
            return Ok(Changed::Settled(Box::new(order)));
        }
        return Ok(Changed::Wait { advance: false });
    }
    let step = match to {
        OrderStatus::Completed => order.saga_step,
        OrderStatus::Cancelled => SagaStep::Restock,
        _ => {
            return Err(WriteError::Failed(ApiError::invalid(format!(
                "status can be set to COMPLETED or CANCELLED only, not {}",
                to.as_str()
            ))));
        }
    };
    let from = order.status;
    order
        .transition(to, step, ctx.now())
        .map_err(|e| WriteError::Failed(e.into()))?;
    let events = vec![Event::OrderStatusUpdated {
        order: order.clone(),
        from,
    }];
    save_order(ctx, id, state, order.clone(), events, request_id).await?;
    if state.settled() {
        return Ok(Changed::Settled(Box::new(order)));
    }
    Ok(Changed::Wait { advance: true })
}

async fn change_status(
    ctx: &Ctx,
    me: &Me<OrderBehavior>,
    id: &str,
    state: &mut OrderState,
    to: OrderStatus,
    request_id: &str,
    reply: RpcReplyPort<Bytes>,
) {
    let changed = retry_once!(
        format!("order {id}"),
        try_change(ctx, id, state, to, request_id),
        reload(ctx, id, state),
    );
    match changed {
        Ok(Changed::Settled(order)) => reply_order(reply, Ok(*order)),
        Ok(Changed::Wait { advance: started }) => {
            park(me, state, reply, CANCEL_WAIT);
            if started {
                advance(me, state);
            }
        }
        Err(e) => reply_order(reply, Err(e)),
    }
}

impl Behavior for OrderBehavior {
    type Command = OrderCommand;
    type State = OrderState;
    type Internal = OrderInternal;
    const KIND: EntityKind = EntityKind::Order;

    fn internal_only(cmd: &OrderCommand) -> bool {
        cmd.is_internal()
    }

    fn backend(ctx: &Ctx) -> &'static str {
        ctx.stores.orders.backend()
    }

    async fn load(ctx: &Ctx, id: &str) -> Result<OrderState, StoreError> {
        Ok(OrderState {
            current: ctx.stores.orders.load(id).await?,
            waiters: Vec::new(),
            next_waiter: 0,
            advance_queued: false,
            retry_delay: saga::MIN_RETRY,
            trace: None,
        })
    }

    async fn activated(ctx: &Ctx, me: &Me<Self>, state: &mut OrderState) {
        if let Some(v) = &mut state.current {
            publish_outbox(ctx, &mut v.record.outbox, None).await;
        }
        // A saga left unfinished by a crash or a move resumes here.
        advance(me, state);
    }

    async fn handle(
        ctx: &Ctx,
        me: &Me<Self>,
        id: &str,
        state: &mut OrderState,
        cmd: OrderCommand,
        origin: &Origin,
        reply: RpcReplyPort<Bytes>,
    ) -> Result<(), ActorProcessingErr> {
        let request_id = origin.request_id.as_str();
        match cmd {
            OrderCommand::Place { order, wait_ms } => {
                state.trace = Some(tracing::Span::current().context());
                place(
                    ctx,
                    me,
                    id,
                    state,
                    *order,
                    Duration::from_millis(wait_ms),
                    request_id,
                    reply,
                )
                .await;
            }
            OrderCommand::Get => {
                let r = state
                    .order()
                    .cloned()
                    .ok_or_else(|| ApiError::not_found(format!("order {id} not found")));
                reply_order(reply, r);
            }
            OrderCommand::Cancel => {
                state.trace = Some(tracing::Span::current().context());
                change_status(
                    ctx,
                    me,
                    id,
                    state,
                    OrderStatus::Cancelled,
                    request_id,
                    reply,
                )
                .await;
            }
            OrderCommand::SetStatus { status } => {
                change_status(ctx, me, id, state, status, request_id, reply).await;
            }
        }
        Ok(())
    }

    async fn internal(
        ctx: &Ctx,
        me: &Me<Self>,
        id: &str,
        state: &mut OrderState,
        msg: OrderInternal,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            OrderInternal::Advance => {
                state.advance_queued = false;
                let span =
                    tracing::info_span!("saga", order = %id, trace_id = tracing::field::Empty);
                if let Some(cx) = state.trace.clone() {
                    let _ = span.set_parent(cx);
                    if let Some(t) = cartwheel_bus::headers::trace_id_of(&span) {
                        span.record("trace_id", t.as_str());
                    }
                }
                let cx = span.context();
                cartwheel_bus::headers::in_trace(
                    cx,
                    saga::step(ctx, me, id, state).instrument(span),
                )
                .await;
                if state.settled() {
                    state.trace = None;
                }
                if state.settled() {
                    answer_waiters(state);
                } else {
                    advance(me, state);
                }
            }
            OrderInternal::WaiterTimeout(wid) => {
                if let Some(pos) = state.waiters.iter().position(|w| w.id == wid) {
                    let w = state.waiters.swap_remove(pos);
                    let r = state
                        .order()
                        .cloned()
                        .ok_or_else(|| ApiError::internal("order vanished"));
                    reply_order(w.reply, r);
                }
            }
        }
        Ok(())
    }

    fn stopped(state: &mut OrderState) {
        // Parked requests get the order as it is (the edge answers 202 PENDING); the saga
        // resumes wherever the order is activated next.
        answer_waiters(state);
    }

    fn busy(state: &OrderState) -> bool {
        !state.settled() || !state.waiters.is_empty()
    }
}

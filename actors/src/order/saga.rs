//! One step of the checkout saga at a time.
//!
//! | step | does | then |
//! |---|---|---|
//! | `Reserve` | reserve every line (idempotent per order) | all held: `PRODUCT_RESERVED`/`Pay`; any refused: `FAILED`/`Release` |
//! | `Pay` | ask the payment port | approved: `CONFIRMED`/`Commit`; declined: `FAILED`/`Release` |
//! | `Commit` | commit every line | `Done` |
//! | `Release` | release every line (also lines never reserved: a no-op) | `Done` |
//! | `Restock` | return a cancelled order's stock | `Done` |
//!
//! Reserve-every-line-or-none holds because a failure releases *every* line of the
//! order, reserved or not, and release is idempotent. Commit, release and restock are
//! retried with backoff on transient errors until they succeed.

use super::{OrderBehavior, OrderState, reload};
use crate::ctx::Ctx;
use crate::entity::Me;
use crate::persist::WriteError;
use cartwheel_bus::BusError;
use cartwheel_bus::messages::InventoryCommand;
use cartwheel_domain::{ErrorCode, Event, Order, OrderLine, OrderStatus, SagaStep};
use futures::future::join_all;
use std::time::Duration;

/// First retry delay of a failed cleanup step.
pub const MIN_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);
/// How long the reserve step keeps retrying transient failures before failing the order.
/// Two minutes: a hot sku serializes its reservations (a thousand checkouts of one sku
/// take tens of seconds on a loaded machine, issue 11), and a failover adds seconds; an
/// order failed for impatience while its stock was there (its hold possibly taken,
/// then released after every other buyer had given up) leaves that stock unsold — the
/// 1,000-checkout kill -9 test saw 97 of 100 units sold with 30 s. The shopper is not
/// kept waiting: checkout answers `202 PENDING` after `CARTWHEEL_CHECKOUT_WAIT_MS`.
const RESERVE_PATIENCE_MS: i64 = 120_000;

fn transient(e: &BusError) -> bool {
    matches!(
        e.code(),
        ErrorCode::Unavailable | ErrorCode::Timeout | ErrorCode::Internal
    )
}

/// Sends one inventory command per line of the order, all at once.
async fn for_each_line(
    ctx: &Ctx,
    order: &Order,
    make: impl Fn(&OrderLine) -> InventoryCommand,
    request_id: &str,
) -> Vec<Result<(), BusError>> {
    let futs = order.items.iter().map(|line| {
        let cmd = make(line);
        async move { ctx.bus.stock(&line.sku, &cmd, request_id).await.map(|_| ()) }
    });
    join_all(futs).await
}

/// Runs the current step again after the backoff delay, doubling it up to `MAX_RETRY`.
fn retry_later(me: &Me<OrderBehavior>, state: &mut OrderState) {
    metrics::counter!("cartwheel_saga_step_retries_total").increment(1);
    let delay = state.retry_delay;
    state.retry_delay = (delay * 2).min(MAX_RETRY);
    me.send_after(delay, super::OrderInternal::Advance);
    state.advance_queued = true;
}

/// Where a saga step leads.
enum Next {
    /// A new status and the step after it.
    Status(OrderStatus, SagaStep),
    /// `FAILED` with a reason; the release step follows.
    Fail(String),
    /// The cleanup step finished.
    Done,
}

/// Moves the order on as `next` says and stores it; on a conflict, reloads (the next
/// Advance re-reads the stored step).
async fn transition(
    ctx: &Ctx,
    id: &str,
    state: &mut OrderState,
    mut order: Order,
    next: Next,
    request_id: &str,
) {
    let now = ctx.now();
    let from = order.status;
    let outcome = match &next {
        Next::Fail(_) => Some("failed"),
        Next::Status(OrderStatus::Confirmed, _) => Some("confirmed"),
        _ => None,
    };
    let events = match next {
        Next::Fail(reason) => {
            if order.fail(reason, now).is_err() {
                return;
            }
            vec![Event::OrderStatusUpdated {
                order: order.clone(),
                from,
            }]
        }
        Next::Status(to, step) => {
            if order.transition(to, step, now).is_err() {
                return;
            }
            vec![Event::OrderStatusUpdated {
                order: order.clone(),
                from,
            }]
        }
        Next::Done => {
            order.step_done(now);
            Vec::new()
        }
    };
    match super::save_order(ctx, id, state, order, events, request_id).await {
        Ok(()) => {
            if let Some(outcome) = outcome {
                metrics::counter!("cartwheel_saga_outcomes_total", "outcome" => outcome)
                    .increment(1);
            }
        }
        Err(WriteError::Conflict) => {
            if let Err(e) = reload(ctx, id, state).await {
                tracing::warn!(order = id, error = %e, "reload after saga conflict failed");
            }
        }
        Err(WriteError::Failed(e)) => {
            tracing::warn!(order = id, error = %e, "saga step not stored; will retry");
        }
    }
}

/// Runs the saga step the stored order is at.
pub async fn step(ctx: &Ctx, me: &Me<OrderBehavior>, id: &str, state: &mut OrderState) {
    let Some(order) = state.order().cloned() else {
        return;
    };
    let request_id = format!("saga-{id}");
    let rid = request_id.as_str();
    let version_before = order.version;
    match order.saga_step {
        SagaStep::Done => {}
        SagaStep::Reserve => {
            let results = for_each_line(
                ctx,
                &order,
                |line| InventoryCommand::Reserve {
                    order_id: order.id.clone(),
                    qty: u64::from(line.qty),
                },
                rid,
            )
            .await;
            // A sku whose partition is moving (or a node that died) answers `unavailable`
            // or not at all: retry the whole step (reserve is idempotent per order) for a
            // while before giving up, so a failover does not fail the orders it touches.
            let only_transient = results
                .iter()
                .all(|r| r.as_ref().err().is_none_or(transient));
            let young = ctx.now().millis() - order.created_at.millis() < RESERVE_PATIENCE_MS;
            if only_transient && results.iter().any(Result::is_err) && young {
                retry_later(me, state);
                return;
            }
            let failure = results.iter().zip(&order.items).find_map(|(r, line)| {
                r.as_ref().err().map(|e| match e {
                    BusError::Remote(api) => format!("{}: {}", api.code, api.message),
                    other => format!("{} unavailable: {other}", line.sku),
                })
            });
            match failure {
                None => {
                    transition(
                        ctx,
                        id,
                        state,
                        order,
                        Next::Status(OrderStatus::ProductReserved, SagaStep::Pay),
                        rid,
                    )
                    .await;
                }
                Some(reason) => {
                    transition(ctx, id, state, order, Next::Fail(reason), rid).await;
                }
            }
        }
        SagaStep::Pay => match ctx.payment.charge(&order).await {
            Ok(()) => {
                transition(
                    ctx,
                    id,
                    state,
                    order,
                    Next::Status(OrderStatus::Confirmed, SagaStep::Commit),
                    rid,
                )
                .await;
            }
            Err(reason) => {
                transition(ctx, id, state, order, Next::Fail(reason), rid).await;
            }
        },
        SagaStep::Commit | SagaStep::Release | SagaStep::Restock => {
            let which = order.saga_step;
            let results = for_each_line(
                ctx,
                &order,
                |_| {
                    let order_id = order.id.clone();
                    match which {
                        SagaStep::Commit => InventoryCommand::Commit { order_id },
                        SagaStep::Restock => InventoryCommand::Restock { order_id },
                        _ => InventoryCommand::Release { order_id },
                    }
                },
                rid,
            )
            .await;
            let mut retry = false;
            for (r, line) in results.iter().zip(&order.items) {
                if let Err(e) = r {
                    if transient(e) {
                        retry = true;
                    } else {
                        // A business refusal will not change on retry (e.g. a hold that
                        // expired before commit): record it loudly and move on.
                        tracing::error!(order = id, sku = %line.sku, step = ?which, error = %e,
                            "saga cleanup refused; not retrying");
                    }
                }
            }
            if retry {
                retry_later(me, state);
                return;
            }
            transition(ctx, id, state, order, Next::Done, rid).await;
        }
    }
    if state.order().is_some_and(|o| o.version > version_before) {
        state.retry_delay = MIN_RETRY;
    } else if !state.advance_queued && !state.settled() {
        // The step did not store anything (storage down): try again later.
        retry_later(me, state);
    }
}

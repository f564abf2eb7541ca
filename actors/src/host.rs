//! The bus side of a kind in one partition: subscribe to its command subjects, decode,
//! route to the partition's supervisor, and always answer — with the actor's reply, or
//! with a typed error when the command is malformed, the lease is gone, or the actor
//! failed while handling it.
//!
//! Routing happens in the subscription loop itself (decoding is cheap and sending to the
//! supervisor never blocks), so when the loop ends every taken command is already in the
//! supervisor's mailbox: draining the supervisor then hands each one to its actor.

use crate::entity::{Behavior, Origin};
use crate::persist::encode_error;
use crate::placement::LeaseGuard;
use crate::supervisor::SupervisorMsg;
use async_nats::{Client, Message, Subject};
use bytes::Bytes;
use cartwheel_bus::names::Names;
use cartwheel_bus::{ApiError, codec, headers};
use cartwheel_domain::validate;
use futures::StreamExt;
use ractor::concurrency::OneshotReceiver;
use ractor::{ActorRef, RpcReplyPort};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The longest a node waits for one of its own actors before answering `internal`.
const ACTOR_DEADLINE: Duration = Duration::from_secs(60);

/// Routing of one kind in one partition.
pub struct Routes<B: Behavior> {
    /// Names (to parse subjects).
    pub names: Names,
    /// The partition served.
    pub partition: u32,
    /// Its supervisor.
    pub supervisor: ActorRef<SupervisorMsg<B>>,
    /// Whether this node still holds the partition's lease.
    pub guard: Arc<LeaseGuard>,
}

/// Subscribes to the command subjects of `B::KIND` in one partition (public and internal,
/// `{prefix}.{kind}.{p}.>`) and serves them until `shutdown`; then drains the
/// subscription so buffered commands are still routed.
///
/// No queue group: only the holder of the partition's lease subscribes. A node that lost
/// its lease without noticing (paused past it) may still be subscribed; the lease guard
/// makes it answer `unavailable` instead of handling the command.
pub async fn serve<B: Behavior>(
    nats: Client,
    routes: Arc<Routes<B>>,
    limiter: Arc<Semaphore>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    ready: tokio::sync::oneshot::Sender<Result<(), async_nats::SubscribeError>>,
) {
    let kind = B::KIND;
    let sub = nats
        .subscribe(routes.names.entity_partition(kind, routes.partition))
        .await;
    let mut sub = match sub {
        Ok(s) => {
            let _ = ready.send(Ok(()));
            s
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut draining = false;
    loop {
        // The lease fence at the subscription: once the guard lapses this node stops
        // being a subscriber (before the lease can be anyone else's, and so also across
        // the client's re-subscription after a reconnect). Placement drops the partition.
        let lapse = routes.guard.deadline(routes.partition);
        let msg = tokio::select! {
            m = sub.next() => m,
            _ = shutdown.cancelled(), if !draining => {
                draining = true;
                if let Err(e) = sub.drain().await {
                    tracing::warn!(error = %e, kind = kind.as_str(), "drain failed");
                    break;
                }
                continue;
            }
            _ = sleep_until_lapse(lapse), if !draining => {
                if routes.guard.holds(routes.partition) {
                    continue; // renewed meanwhile
                }
                tracing::warn!(kind = kind.as_str(), partition = routes.partition,
                    "lease guard lapsed; unsubscribing");
                let _ = sub.unsubscribe().await;
                break;
            }
        };
        let Some(msg) = msg else { break };
        let Some(reply_to) = msg.reply.clone() else {
            continue;
        };
        let Ok(permit) = limiter.clone().acquire_owned().await else {
            break;
        };
        let request_id =
            headers::request_id(msg.headers.as_ref()).unwrap_or_else(headers::new_request_id);
        let routed = route::<B>(&routes, &msg, request_id.clone());
        let nats = nats.clone();
        let subject = msg.subject.clone();
        let (guard, partition) = (routes.guard.clone(), routes.partition);
        tracker.spawn(async move {
            let sent = match routed {
                Ok(rx) => {
                    let answer = await_reply(rx).await;
                    let lapsed = !guard.holds(partition);
                    count_command(
                        B::KIND.as_str(),
                        match &answer {
                            Answer::Reply(_) => "answered",
                            Answer::Dropped => "failed",
                            Answer::Late => "late",
                        },
                    );
                    match answer {
                        // Refused because the lease lapsed while the command waited or
                        // ran: nothing was written here; the new owner serves the resend
                        // (a cart recognises it by its command id).
                        Answer::Reply(body) if lapsed && is_unavailable(&body) => {
                            moving(&nats, reply_to, body).await
                        }
                        Answer::Reply(body) => nats.publish(reply_to, body).await,
                        // The turn was cut short because the lease lapsed (the partition
                        // was dropped under it): it may have been written. A kind whose
                        // repeats are recognised is resent to the new owner, which
                        // answers a repeat with the first outcome.
                        Answer::Dropped if lapsed && B::RESEND_SAFE => {
                            let body = encode_error(&ApiError::unavailable(format!(
                                "partition {partition} moved while this request ran; retry"
                            )));
                            moving(&nats, reply_to, body).await
                        }
                        Answer::Dropped if lapsed => {
                            let body = encode_error(&ApiError::unavailable(format!(
                                "partition {partition} moved while this request ran; it may or may not have been applied: read before resending"
                            )));
                            nats.publish(reply_to, body).await
                        }
                        Answer::Dropped => {
                            let body = encode_error(&ApiError::internal(format!(
                                "the actor for {subject} failed while handling this request; it restarts from stored state"
                            )));
                            nats.publish(reply_to, body).await
                        }
                        Answer::Late => {
                            let body = encode_error(&ApiError::internal(format!(
                                "the actor for {subject} did not answer in time"
                            )));
                            nats.publish(reply_to, body).await
                        }
                    }
                }
                Err(Refusal::Moving(body)) => {
                    count_command(B::KIND.as_str(), "moving");
                    moving(&nats, reply_to, body).await
                }
                Err(Refusal::Error(body)) => {
                    count_command(B::KIND.as_str(), "refused");
                    nats.publish(reply_to, body).await
                }
            };
            if let Err(e) = sent {
                tracing::warn!(error = %e, %request_id, "reply not sent");
            }
            drop(permit);
        });
    }
}

/// Sleeps until `deadline` (a little past it, so the guard reads lapsed); `None` (not
/// held) ends at once.
async fn sleep_until_lapse(deadline: Option<std::time::Instant>) {
    if let Some(d) = deadline {
        tokio::time::sleep_until((d + Duration::from_millis(1)).into()).await;
    }
}

/// Whether an encoded reply is an `unavailable` error.
fn is_unavailable(body: &Bytes) -> bool {
    matches!(
        codec::decode::<cartwheel_bus::messages::Reply<serde::de::IgnoredAny>>(body),
        Ok(Err(e)) if e.code == cartwheel_domain::ErrorCode::Unavailable
    )
}

/// Counts one command in `cartwheel_commands_total` by kind and what came of it:
/// `answered` (the actor's reply, a success or a typed error), `moving` (not held here:
/// the requester resends), `refused` (malformed, or the node is stopping), `failed` (the
/// actor went away) or `late` (no answer in time).
fn count_command(kind: &'static str, outcome: &'static str) {
    metrics::counter!("cartwheel_commands_total", "kind" => kind, "outcome" => outcome)
        .increment(1);
}

/// What came of a routed command.
enum Answer {
    /// The actor's encoded reply.
    Reply(Bytes),
    /// The actor went away without answering (a panic, or its partition was dropped).
    Dropped,
    /// No answer within [`ACTOR_DEADLINE`].
    Late,
}

async fn await_reply(rx: OneshotReceiver<Bytes>) -> Answer {
    match tokio::time::timeout(ACTOR_DEADLINE, rx).await {
        Ok(Ok(bytes)) => Answer::Reply(bytes),
        Ok(Err(_)) => Answer::Dropped,
        Err(_) => Answer::Late,
    }
}

/// Answers with `body` and `Cw-Retry: moving`: the requester resends to the new owner.
async fn moving(
    nats: &Client,
    reply_to: Subject,
    body: Bytes,
) -> Result<(), async_nats::PublishError> {
    let mut h = async_nats::HeaderMap::new();
    h.insert(headers::RETRY, "moving");
    nats.publish_with_headers(reply_to, h, body).await
}

/// Why a command was not routed; each carries the encoded error reply.
enum Refusal {
    /// The partition is not held here (any more): nothing applied, the requester retries.
    Moving(Bytes),
    /// A malformed command or a stopping node.
    Error(Bytes),
}

/// Decodes and hands the command to the supervisor.
fn route<B: Behavior>(
    routes: &Routes<B>,
    msg: &Message,
    request_id: String,
) -> Result<OneshotReceiver<Bytes>, Refusal> {
    use Refusal::Error as E;
    let Some((partition, id, internal)) =
        routes.names.parse_any_entity(B::KIND, msg.subject.as_str())
    else {
        return Err(E(encode_error(&ApiError::invalid("malformed subject"))));
    };
    if let Err(e) = validate::id("id", id) {
        return Err(E(encode_error(&e.into())));
    }
    if partition != routes.partition {
        return Err(E(encode_error(&ApiError::invalid(format!(
            "partition {partition} is not served here"
        )))));
    }
    if !routes.guard.holds(partition) {
        return Err(Refusal::Moving(encode_error(&ApiError::unavailable(
            format!("partition {partition} is moving; retry"),
        ))));
    }
    let cmd: B::Command = codec::decode(&msg.payload).map_err(|e| {
        E(encode_error(&ApiError::invalid(format!(
            "malformed command: {e}"
        ))))
    })?;
    // A command only nodes send, arriving on the public subject (which edges may publish
    // to), is refused: nothing outside the nodes can reserve stock or place an order.
    if B::internal_only(&cmd) && !internal {
        return Err(E(encode_error(&ApiError::invalid(format!(
            "this {} command is sent by nodes only, on the internal subject",
            B::KIND.as_str()
        )))));
    }
    // The command's span continues the caller's trace (`traceparent`); the actor enters
    // it, so its storage calls and its own requests join the same trace.
    let span = tracing::info_span!(
        "command",
        kind = B::KIND.as_str(),
        %id,
        %request_id,
        trace_id = tracing::field::Empty,
    );
    let _ = span.set_parent(headers::extract_trace_context(msg.headers.as_ref()));
    if let Some(trace_id) = headers::trace_id_of(&span) {
        span.record("trace_id", trace_id.as_str());
    }
    if tracing::enabled!(tracing::Level::DEBUG) {
        span.in_scope(|| tracing::debug!("command"));
    }
    let (tx, rx) = ractor::concurrency::oneshot();
    let reply: RpcReplyPort<Bytes> = tx.into();
    routes
        .supervisor
        .send_message(SupervisorMsg::Route {
            id: id.to_owned(),
            cmd,
            origin: {
                let given = headers::command_id(msg.headers.as_ref());
                Origin {
                    explicit: given.is_some(),
                    command_id: given.unwrap_or_else(|| request_id.clone()),
                    request_id,
                    payload: msg.payload.clone(),
                }
            },
            reply,
            span,
        })
        .map_err(|_| {
            Refusal::Moving(encode_error(&ApiError::unavailable(
                "partition is stopping; retry",
            )))
        })?;
    Ok(rx)
}

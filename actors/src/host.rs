//! The bus side of a kind: subscribe to its command subjects, decode, route to the
//! partition's supervisor, and always answer — with the actor's reply, or with a typed
//! error when the command is malformed or the actor failed while handling it.

use crate::entity::Behavior;
use crate::persist::encode_error;
use crate::supervisor::SupervisorMsg;
use async_nats::{Client, Message};
use bytes::Bytes;
use cartwheel_bus::names::{EntityKind, Names};
use cartwheel_bus::{ApiError, codec, headers};
use cartwheel_domain::validate;
use futures::StreamExt;
use ractor::{ActorRef, RpcReplyPort};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// The longest a node waits for one of its own actors before answering `internal`.
const ACTOR_DEADLINE: Duration = Duration::from_secs(60);

/// Routing table of one kind: the supervisor of every partition.
pub struct Routes<B: Behavior> {
    /// Names (to parse subjects).
    pub names: Names,
    /// Supervisors indexed by partition.
    pub supervisors: Vec<ActorRef<SupervisorMsg<B>>>,
}

/// Subscribes to every command subject of `B::KIND` (queue group per kind) and serves it
/// until `shutdown`; then drains the subscription so buffered commands are still handled.
pub async fn serve<B: Behavior>(
    nats: Client,
    routes: Arc<Routes<B>>,
    limiter: Arc<Semaphore>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    ready: tokio::sync::oneshot::Sender<Result<(), async_nats::SubscribeError>>,
) -> Result<(), async_nats::SubscribeError> {
    let kind = B::KIND;
    let sub = nats
        .queue_subscribe(
            routes.names.entity_all(kind),
            routes.names.entity_queue_group(kind),
        )
        .await;
    let mut sub = match sub {
        Ok(s) => {
            let _ = ready.send(Ok(()));
            s
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return Ok(());
        }
    };
    let mut draining = false;
    loop {
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
        };
        let Some(msg) = msg else { break };
        let Ok(permit) = limiter.clone().acquire_owned().await else {
            break;
        };
        let nats = nats.clone();
        let routes = routes.clone();
        tracker.spawn(async move {
            handle_one::<B>(&nats, &routes, msg).await;
            drop(permit);
        });
    }
    Ok(())
}

async fn handle_one<B: Behavior>(nats: &Client, routes: &Routes<B>, msg: Message) {
    let Some(reply_to) = msg.reply.clone() else {
        return;
    };
    let request_id =
        headers::request_id(msg.headers.as_ref()).unwrap_or_else(headers::new_request_id);
    let span = tracing::info_span!("command", kind = B::KIND.as_str(), subject = %msg.subject, request_id = %request_id);
    let body = route::<B>(routes, &msg, request_id).instrument(span).await;
    if let Err(e) = nats.publish(reply_to, body).await {
        tracing::warn!(error = %e, "reply not sent");
    }
}

async fn route<B: Behavior>(routes: &Routes<B>, msg: &Message, request_id: String) -> Bytes {
    let kind: EntityKind = B::KIND;
    let Some((partition, id)) = routes.names.parse_entity(kind, msg.subject.as_str()) else {
        return encode_error(&ApiError::invalid("malformed subject"));
    };
    if let Err(e) = validate::id("id", id) {
        return encode_error(&e.into());
    }
    let Some(supervisor) = routes.supervisors.get(partition as usize) else {
        return encode_error(&ApiError::invalid(format!(
            "partition {partition} does not exist"
        )));
    };
    let cmd: B::Command = match codec::decode(&msg.payload) {
        Ok(c) => c,
        Err(e) => return encode_error(&ApiError::invalid(format!("malformed command: {e}"))),
    };
    let (tx, rx) = ractor::concurrency::oneshot();
    let reply: RpcReplyPort<Bytes> = tx.into();
    if supervisor
        .send_message(SupervisorMsg::Route {
            id: id.to_owned(),
            cmd,
            request_id,
            reply,
        })
        .is_err()
    {
        return encode_error(&ApiError::unavailable("node is shutting down"));
    }
    match tokio::time::timeout(ACTOR_DEADLINE, rx).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => encode_error(&ApiError::internal(format!(
            "the {} actor for {id} failed while handling this request; it restarts from stored state",
            kind.as_str()
        ))),
        Err(_) => encode_error(&ApiError::internal(format!(
            "the {} actor for {id} did not answer in time",
            kind.as_str()
        ))),
    }
}

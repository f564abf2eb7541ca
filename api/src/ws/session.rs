//! What one socket does with its requests: cart commands (run concurrently, one task
//! each) and subscriptions (run one at a time by [`subscriptions`], so a subscribe and an
//! unsubscribe of the same cart never interleave).

use crate::access;
use crate::auth::Caller;
use crate::error::AppError;
use crate::state::AppState;
use crate::ws::hub::{CartUpdate, Watch};
use crate::ws::protocol::{self, Op, Request};
use crate::ws::writer::Outbound;
use cartwheel_bus::headers::new_request_id;
use cartwheel_bus::messages::CartCommand;
use cartwheel_domain::ErrorCode;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};
use tokio::task::AbortHandle;
use tracing::Instrument;

/// Most carts one socket may watch at once.
pub(crate) const MAX_SUBSCRIPTIONS: usize = 100;

/// What a request asks for.
pub(crate) enum Action {
    /// Start or stop watching a cart.
    Watch(WatchRequest),
    /// Send a command to the cart and reply with the result.
    Command(CommandRequest),
}

/// A subscribe (`on`) or unsubscribe, queued for [`subscriptions`].
pub(crate) struct WatchRequest {
    id: Value,
    cart_id: String,
    on: bool,
}

/// A cart command, run by [`command`].
pub(crate) struct CommandRequest {
    id: Value,
    cart_id: String,
    cmd: CartCommand,
}

impl Action {
    /// Sorts a validated request.
    pub(crate) fn of(req: Request) -> Action {
        let Request { id, op } = req;
        let (cart_id, cmd) = match op {
            Op::Subscribe { cart_id } => {
                return Action::Watch(WatchRequest {
                    id,
                    cart_id,
                    on: true,
                });
            }
            Op::Unsubscribe { cart_id } => {
                return Action::Watch(WatchRequest {
                    id,
                    cart_id,
                    on: false,
                });
            }
            Op::Get { cart_id } => (cart_id, CartCommand::Get),
            Op::AddItem { cart_id, sku, qty } => (cart_id, CartCommand::AddItem { sku, qty }),
            Op::SetQty { cart_id, sku, qty } => (cart_id, CartCommand::SetQty { sku, qty }),
            Op::RemoveItem { cart_id, sku } => (cart_id, CartCommand::RemoveItem { sku }),
        };
        Action::Command(CommandRequest { id, cart_id, cmd })
    }
}

/// The longest frame id (as JSON text) that serves as a command id; longer ids still
/// work, but a resent frame is then a new command.
const MAX_FRAME_ID_LEN: usize = 128;

/// The command id of a frame: its socket's session and its `id`. A frame without an id
/// (or with a very long one) gets none, and its fresh request id is its command id.
fn frame_command_id(session: &str, id: &Value) -> Option<String> {
    if id.is_null() {
        return None;
    }
    // As JSON text, so the string "1" and the number 1 are different ids.
    let id = id.to_string();
    (id.len() <= MAX_FRAME_ID_LEN && !id.contains(['\r', '\n']))
        .then(|| format!("ws:{session}:{id}"))
}

/// Runs one cart command and queues its reply.
pub(crate) async fn command(
    state: AppState,
    caller: Caller,
    out: mpsc::Sender<Outbound>,
    session: &str,
    req: CommandRequest,
) {
    let CommandRequest { id, cart_id, cmd } = req;
    let rid = new_request_id();
    let command_id = frame_command_id(session, &id);
    let span = tracing::debug_span!("ws_command", request_id = %rid, %cart_id);
    let reply = async {
        let result = match access::cart_change(&state, &caller, &cart_id, &rid).await {
            Ok(()) => state
                .bus()
                .cart_command(&cart_id, &cmd, &rid, command_id.as_deref())
                .await
                .map_err(AppError::from),
            Err(e) => Err(e),
        };
        match result {
            Ok(cart) => Outbound::Reply {
                frame: protocol::reply_ok(&id, Some(&cart)),
                cart: Some((cart.id, cart.version)),
            },
            Err(e) => Outbound::Reply {
                frame: protocol::reply_err(&id, &e, &rid),
                cart: None,
            },
        }
    }
    .instrument(span)
    .await;
    let _ = out.send(reply).await;
}

/// Aborts a socket's forwarder of one cart when dropped.
struct Forwarder(AbortHandle);

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves one socket's subscribes and unsubscribes in order, until the queue ends.
/// Dropping this task's future (on abort) stops every forwarder of the socket.
pub(crate) async fn subscriptions(
    state: AppState,
    caller: Caller,
    mut requests: mpsc::Receiver<WatchRequest>,
    out: mpsc::Sender<Outbound>,
) {
    let mut subs: HashMap<String, Forwarder> = HashMap::new();
    while let Some(req) = requests.recv().await {
        if req.on {
            subscribe(&state, &caller, &out, &mut subs, req).await;
        } else {
            subs.remove(&req.cart_id);
            let frame = protocol::reply_ok(&req.id, None);
            let msg = Outbound::Unsubscribed {
                frame,
                cart_id: req.cart_id,
            };
            if out.send(msg).await.is_err() {
                return;
            }
        }
    }
}

/// Watches the cart through the hub first, then reads it: a change can fall in neither
/// gap, and the writer drops pushes not newer than the cart in the reply.
async fn subscribe(
    state: &AppState,
    caller: &Caller,
    out: &mpsc::Sender<Outbound>,
    subs: &mut HashMap<String, Forwarder>,
    req: WatchRequest,
) {
    let rid = new_request_id();
    let fail = |e: AppError| Outbound::Reply {
        frame: protocol::reply_err(&req.id, &e, &rid),
        cart: None,
    };
    let already = subs.contains_key(&req.cart_id);
    if !already && subs.len() >= MAX_SUBSCRIPTIONS {
        let e = AppError::new(
            ErrorCode::RateLimited,
            format!("at most {MAX_SUBSCRIPTIONS} subscriptions per connection"),
        );
        let _ = out.send(fail(e)).await;
        return;
    }
    let watch = if already {
        None
    } else {
        match state.hub().watch(&req.cart_id).await {
            Ok(w) => Some(w),
            Err(e) => {
                let _ = out.send(fail(e.into())).await;
                return;
            }
        }
    };
    let cart = match state
        .bus()
        .cart(&req.cart_id, &CartCommand::Get, &rid)
        .await
        .map_err(AppError::from)
        .and_then(|cart| {
            access::check_cart(state, caller, &req.cart_id, &cart.user_id).map(|()| cart)
        }) {
        Ok(cart) => cart,
        Err(e) => {
            // Dropping `watch` releases the hub entry.
            let _ = out.send(fail(e)).await;
            return;
        }
    };
    let reply = Outbound::Subscribed {
        frame: protocol::reply_ok(&req.id, Some(&cart)),
        cart_id: req.cart_id.clone(),
        version: cart.version,
    };
    // The reply is queued before the forwarder starts, so no push can overtake it.
    if out.send(reply).await.is_err() {
        return;
    }
    if let Some(watch) = watch {
        let task = tokio::spawn(forward(
            watch,
            state.clone(),
            out.clone(),
            req.cart_id.clone(),
        ));
        subs.insert(req.cart_id, Forwarder(task.abort_handle()));
    }
}

/// Queues every update of one watched cart for the socket. A socket that fell behind
/// re-reads the cart: the writer's watermark keeps it from going back in time.
async fn forward(mut watch: Watch, state: AppState, out: mpsc::Sender<Outbound>, cart_id: String) {
    loop {
        let update = match watch.recv().await {
            Ok(update) => update,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                let rid = new_request_id();
                tracing::debug!(%cart_id, missed, request_id = %rid, "socket lagged; re-reading cart");
                match state.bus().cart(&cart_id, &CartCommand::Get, &rid).await {
                    Ok(cart) => Arc::new(CartUpdate::new(&cart)),
                    Err(e) => {
                        tracing::warn!(%cart_id, error = %e, "re-reading a lagged cart failed");
                        continue;
                    }
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if out.send(Outbound::Push(update)).await.is_err() {
            return;
        }
    }
}

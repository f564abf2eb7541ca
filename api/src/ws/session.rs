//! What one socket does with its requests: cart commands (run concurrently, one task
//! each) and subscriptions to carts, orders and stock (run one at a time by
//! [`subscriptions`], so a subscribe and an unsubscribe of the same topic never
//! interleave).

use crate::access;
use crate::auth::Caller;
use crate::error::AppError;
use crate::state::AppState;
use crate::ws::hub::{Topic, Update, Watch};
use crate::ws::protocol::{self, Body, Op, Request};
use crate::ws::writer::Outbound;
use cartwheel_bus::headers::new_request_id;
use cartwheel_bus::messages::{CartCommand, InventoryCommand, OrderCommand};
use cartwheel_domain::{Cart, ErrorCode, InventoryView, Order};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};
use tokio::task::AbortHandle;
use tracing::Instrument;

/// Most topics (carts, orders and skus together) one socket may watch at once.
pub(crate) const MAX_SUBSCRIPTIONS: usize = 100;

/// What a request asks for.
pub(crate) enum Action {
    /// Start or stop watching a cart, an order or a sku's stock.
    Watch(WatchRequest),
    /// Send a command to the cart and reply with the result.
    Command(CommandRequest),
}

/// A subscribe (`on`) or unsubscribe, queued for [`subscriptions`].
pub(crate) struct WatchRequest {
    id: Value,
    topic: Topic,
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
        let watch = |topic: Topic, on: bool| {
            Action::Watch(WatchRequest {
                id: id.clone(),
                topic,
                on,
            })
        };
        let (cart_id, cmd) = match op {
            Op::Subscribe { cart_id } => return watch(Topic::Cart(cart_id), true),
            Op::Unsubscribe { cart_id } => return watch(Topic::Cart(cart_id), false),
            Op::SubscribeOrder { order_id } => return watch(Topic::Order(order_id), true),
            Op::UnsubscribeOrder { order_id } => return watch(Topic::Order(order_id), false),
            Op::SubscribeStock { sku } => return watch(Topic::Stock(sku), true),
            Op::UnsubscribeStock { sku } => return watch(Topic::Stock(sku), false),
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
                seen: Some((Topic::Cart(cart.id), cart.version)),
            },
            Err(e) => Outbound::Reply {
                frame: protocol::reply_err(&id, &e, &rid),
                seen: None,
            },
        }
    }
    .instrument(span)
    .await;
    let _ = out.send(reply).await;
}

/// Aborts a socket's forwarder of one topic when dropped.
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
    let mut subs: HashMap<Topic, Forwarder> = HashMap::new();
    while let Some(req) = requests.recv().await {
        if req.on {
            subscribe(&state, &caller, &out, &mut subs, req).await;
        } else {
            subs.remove(&req.topic);
            let frame = protocol::reply_ok(&req.id, None);
            let msg = Outbound::Unsubscribed {
                frame,
                topic: req.topic,
            };
            if out.send(msg).await.is_err() {
                return;
            }
        }
    }
}

/// A topic's state, as read over the bus.
enum Now {
    Cart(Cart),
    Order(Order),
    Stock(InventoryView),
}

impl Now {
    /// The reply field it fills.
    fn body(&self) -> Body<'_> {
        match self {
            Now::Cart(c) => Body::Cart(c),
            Now::Order(o) => Body::Order(o),
            Now::Stock(s) => Body::Stock(s),
        }
    }

    /// Its version.
    fn version(&self) -> u64 {
        match self {
            Now::Cart(c) => c.version,
            Now::Order(o) => o.version,
            Now::Stock(s) => s.version,
        }
    }

    /// It as a push.
    fn update(&self) -> Update {
        match self {
            Now::Cart(c) => Update::cart(c),
            Now::Order(o) => Update::order(o),
            Now::Stock(s) => Update::stock(s),
        }
    }
}

/// The current state of `topic`, read over the bus; with `caller`, only if the caller
/// may see it (`404` otherwise, as for REST).
async fn current(
    state: &AppState,
    caller: Option<&Caller>,
    topic: &Topic,
    rid: &str,
) -> Result<Now, AppError> {
    Ok(match topic {
        Topic::Cart(id) => {
            let cart = state.bus().cart(id, &CartCommand::Get, rid).await?;
            if let Some(caller) = caller {
                access::check_cart(state, caller, id, &cart.user_id)?;
            }
            Now::Cart(cart)
        }
        Topic::Order(id) => {
            let order = state.bus().order(id, &OrderCommand::Get, rid).await?;
            if let Some(caller) = caller {
                access::check_order(state, caller, id, &order.user_id)?;
            }
            Now::Order(order)
        }
        // Stock is public, as `GET /inventory/{sku}` is.
        Topic::Stock(sku) => Now::Stock(
            state
                .bus()
                .stock(sku, &InventoryCommand::GetStock, rid)
                .await?,
        ),
    })
}

/// Watches the topic through the hub first, then reads it: a change can fall in neither
/// gap, and the writer drops pushes not newer than the state in the reply.
async fn subscribe(
    state: &AppState,
    caller: &Caller,
    out: &mpsc::Sender<Outbound>,
    subs: &mut HashMap<Topic, Forwarder>,
    req: WatchRequest,
) {
    let rid = new_request_id();
    let fail = |e: AppError| Outbound::Reply {
        frame: protocol::reply_err(&req.id, &e, &rid),
        seen: None,
    };
    let already = subs.contains_key(&req.topic);
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
        match state.hub().watch(&req.topic).await {
            Ok(w) => Some(w),
            Err(e) => {
                let _ = out.send(fail(e.into())).await;
                return;
            }
        }
    };
    let now = match current(state, Some(caller), &req.topic, &rid).await {
        Ok(now) => now,
        Err(e) => {
            // Dropping `watch` releases the hub entry.
            let _ = out.send(fail(e)).await;
            return;
        }
    };
    let reply = Outbound::Subscribed {
        frame: protocol::reply_with(&req.id, now.body()),
        topic: req.topic.clone(),
        version: now.version(),
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
            req.topic.clone(),
        ));
        subs.insert(req.topic, Forwarder(task.abort_handle()));
    }
}

/// Queues every update of one watched topic for the socket. A socket that fell behind
/// re-reads it: the writer's watermark keeps it from going back in time.
async fn forward(mut watch: Watch, state: AppState, out: mpsc::Sender<Outbound>, topic: Topic) {
    loop {
        let update = match watch.recv().await {
            Ok(update) => update,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                let rid = new_request_id();
                tracing::debug!(?topic, missed, request_id = %rid, "socket lagged; re-reading");
                match current(&state, None, &topic, &rid).await {
                    Ok(now) => Arc::new(now.update()),
                    Err(e) => {
                        tracing::warn!(?topic, error = %e, "re-reading a lagged topic failed");
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

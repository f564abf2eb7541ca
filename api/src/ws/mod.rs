//! `GET /ws`: one multiplexed WebSocket per client (JSON text frames, see [`protocol`]).
//!
//! Each connection runs a reader loop (this module), a writer task ([`writer`]), a
//! subscription task and one task per in-flight cart command ([`session`]). Live pushes
//! come from the edge-wide [`hub`]. The connection ends — and every task of it with it —
//! when the client closes, a frame is too large (close 1009), pings go unanswered, or the
//! edge shuts down (close 1001). With auth on, a socket belongs to the user of the token
//! it was opened with: it sees and changes only that user's carts and orders (others
//! answer `not_found`; stock is public), and a user has at most `ws_max_per_user` sockets at once. Nothing here
//! touches storage.

pub(crate) mod hub;
pub(crate) mod protocol;
pub(crate) mod session;
pub(crate) mod writer;

use crate::auth::{self, Caller};
use crate::error::AppError;
use crate::limits::SocketSlot;
use crate::openapi::Errors;
use crate::state::AppState;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade, close_code};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use cartwheel_bus::headers::new_request_id;
use futures::StreamExt;
use serde_json::Value;
use session::Action;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::{Instant, interval_at, timeout};
use writer::Outbound;

/// Frames queued for one client before producers wait.
const OUTBOUND_QUEUE: usize = 256;
/// Subscribes/unsubscribes queued before the reader waits.
const WATCH_QUEUE: usize = 32;
/// Cart commands of one socket running at once; more wait (backpressure on the reader).
const MAX_IN_FLIGHT: usize = 32;
/// How often the edge pings.
const PING_INTERVAL: Duration = Duration::from_secs(20);
/// A client silent (not even a pong) for this long is dropped.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for the writer to flush the last frames and the close.
const WRITER_DRAIN: Duration = Duration::from_secs(5);

/// Whether a browser page from this `Origin` may open a socket: any client that sends
/// no `Origin` (not a browser), the edge's own origin (the `Host` the request was sent
/// to), and the configured ones (`*`: any).
pub(crate) fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if allowed
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    match (origin.split_once("://"), host) {
        (Some((_, authority)), Some(host)) => authority.eq_ignore_ascii_case(host),
        _ => false,
    }
}

/// Open the live WebSocket (JSON text frames: `subscribe`, `unsubscribe`, `get`,
/// `add_item`, `set_qty`, `remove_item` for carts; `subscribe_order`, `unsubscribe_order`
/// for the caller's orders; `subscribe_stock`, `unsubscribe_stock` for a sku's stock, at
/// most one push per second; replies and pushes). With auth on, authenticate
/// with the `Authorization` header or, from a browser, the `token` query parameter.
/// Browser pages from other origins are refused unless configured.
#[utoipa::path(get, path = "/ws", tag = "websocket",
    params(("token" = Option<String>, Query, description = "the bearer token, for browsers")),
    responses((status = 101, description = "switching to the WebSocket protocol"), Errors),
    security(("bearer" = [])))]
pub(crate) async fn upgrade(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if let Err(e) = caller.user() {
        return e.into_response();
    }
    if !origin_allowed(&headers, &state.config().allowed_origins) {
        return auth::forbidden("this origin may not open a socket here").into_response();
    }
    let slot = match caller.user_key() {
        Some(user) => {
            let max = state.config().ws_max_per_user;
            match state.socket_counts().acquire(user, max) {
                Some(slot) => Some(slot),
                None => {
                    return AppError::rate_limited(format!("at most {max} live sockets per user"))
                        .into_response();
                }
            }
        }
        None => None,
    };
    let max = state.config().max_ws_frame_bytes;
    let sockets = state.sockets().clone();
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| sockets.track_future(connection(socket, state, caller, slot)))
}

/// Counts a live connection in `cartwheel_ws_connections` while it exists.
struct Live;

impl Live {
    fn new() -> Live {
        metrics::gauge!("cartwheel_ws_connections").increment(1.0);
        Live
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        metrics::gauge!("cartwheel_ws_connections").decrement(1.0);
    }
}

/// Whether a read error is tungstenite's "message too long" (no typed access through
/// axum's error, so the message text is matched; pinned by the oversized-frame test).
fn too_large(e: &axum::Error) -> bool {
    let text = e.to_string();
    text.contains("Space limit exceeded") || text.contains("too long")
}

/// The reader side of one connection: where its requests go.
struct Reader {
    state: AppState,
    caller: Caller,
    out: mpsc::Sender<Outbound>,
    watches: mpsc::Sender<session::WatchRequest>,
    commands: JoinSet<()>,
    permits: Arc<Semaphore>,
    /// This socket's session id: a cart write's command id is the session and the frame
    /// id, so a frame resent on the same socket changes the cart once.
    session: Arc<str>,
}

/// Whether the connection goes on after a frame.
enum Flow {
    Continue,
    /// End, sending this close frame first (`None`: no close frame of ours).
    Close(Option<(u16, &'static str)>),
}

impl Reader {
    /// Handles one frame from the client.
    async fn on_frame(&mut self, msg: Message) -> Flow {
        let text = match msg {
            Message::Text(text) => text,
            Message::Binary(_) => {
                let e = AppError::invalid("binary frames are not supported; send JSON text");
                return self.reject(&Value::Null, &e).await;
            }
            Message::Close(_) => return Flow::Close(None),
            Message::Ping(_) | Message::Pong(_) => return Flow::Continue,
        };
        let req = match protocol::parse(text.as_str()) {
            Ok(req) => req,
            Err((id, e)) => return self.reject(&id, &e).await,
        };
        match Action::of(req) {
            Action::Watch(w) => {
                if self.watches.send(w).await.is_err() {
                    return Flow::Close(None);
                }
            }
            Action::Command(c) => {
                // Waits when too many commands are in flight: backpressure on the client.
                let Ok(permit) = self.permits.clone().acquire_owned().await else {
                    return Flow::Close(None);
                };
                let (state, out) = (self.state.clone(), self.out.clone());
                let caller = self.caller.clone();
                let session = self.session.clone();
                self.commands.spawn(async move {
                    session::command(state, caller, out, &session, c).await;
                    drop(permit);
                });
            }
        }
        Flow::Continue
    }

    /// Queues an error reply for a frame that could not be used.
    async fn reject(&self, id: &Value, e: &AppError) -> Flow {
        let frame = protocol::reply_err(id, e, &new_request_id());
        match self.out.send(Outbound::Reply { frame, seen: None }).await {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Close(None),
        }
    }
}

/// Runs one connection to its end; `_slot` holds its place in the user's socket count.
async fn connection(socket: WebSocket, state: AppState, caller: Caller, _slot: Option<SocketSlot>) {
    let _live = Live::new();
    let (sink, mut stream) = socket.split();
    let (out, out_rx) = mpsc::channel(OUTBOUND_QUEUE);
    let mut writer = tokio::spawn(writer::run(sink, out_rx));
    let (watches, watch_rx) = mpsc::channel(WATCH_QUEUE);
    let subscriptions = tokio::spawn(session::subscriptions(
        state.clone(),
        caller.clone(),
        watch_rx,
        out.clone(),
    ));
    let closing = state.closing().clone();
    let mut reader = Reader {
        state,
        caller,
        out,
        watches,
        commands: JoinSet::new(),
        permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        session: Arc::from(new_request_id()),
    };
    let mut ping = interval_at(Instant::now() + PING_INTERVAL, PING_INTERVAL);
    let mut last_heard = Instant::now();

    let close = loop {
        let flow = tokio::select! {
            () = closing.cancelled() => Flow::Close(Some((close_code::AWAY, "server shutting down"))),
            _ = ping.tick() => {
                if last_heard.elapsed() > IDLE_TIMEOUT {
                    Flow::Close(Some((close_code::POLICY, "no pong")))
                } else {
                    // A full queue already means traffic; skip this ping.
                    let _ = reader.out.try_send(Outbound::Ping);
                    Flow::Continue
                }
            }
            Some(_) = reader.commands.join_next(), if !reader.commands.is_empty() => Flow::Continue,
            msg = stream.next() => match msg {
                Some(Ok(msg)) => {
                    last_heard = Instant::now();
                    reader.on_frame(msg).await
                }
                Some(Err(e)) if too_large(&e) => {
                    tracing::debug!(error = %e, "websocket frame too large");
                    Flow::Close(Some((close_code::SIZE, "frame too large")))
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "websocket read failed");
                    Flow::Close(None)
                }
                None => Flow::Close(None),
            },
        };
        if let Flow::Close(close) = flow {
            break close;
        }
    };

    // Stop everything that could still queue frames, then let the writer finish.
    subscriptions.abort();
    let Reader {
        out,
        watches,
        mut commands,
        ..
    } = reader;
    commands.abort_all();
    drop(watches);
    if timeout(WRITER_DRAIN, out.send(Outbound::Close(close)))
        .await
        .is_err()
    {
        writer.abort();
    }
    drop(out);
    if timeout(WRITER_DRAIN, &mut writer).await.is_err() {
        writer.abort();
    }
}

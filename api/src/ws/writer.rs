//! The writer task of one socket: the only code that writes to it.
//!
//! Everything bound for the client goes through one bounded queue of [`Outbound`]s, so
//! frames leave in queue order, and the writer alone keeps the per-topic watermark (a
//! cart's, an order's, a sku's stock's): the highest version this client has seen (in a
//! subscribe reply, a command reply or a push). A push at or below the watermark is
//! dropped, so pushed versions only grow.

use crate::ws::hub::{Topic, Update};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures::SinkExt;
use futures::stream::SplitSink;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Something to send to the client.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// A reply; `seen` (topic, version) when it carries a cart, raising a subscribed
    /// cart's watermark.
    Reply {
        frame: Utf8Bytes,
        seen: Option<(Topic, u64)>,
    },
    /// The reply to a subscribe: starts (or raises) the topic's watermark.
    Subscribed {
        frame: Utf8Bytes,
        topic: Topic,
        version: u64,
    },
    /// The reply to an unsubscribe: forgets the topic, so late pushes are dropped.
    Unsubscribed { frame: Utf8Bytes, topic: Topic },
    /// A change; sent only if subscribed and newer than the watermark.
    Push(Arc<Update>),
    /// A keep-alive ping.
    Ping,
    /// The last thing: a close frame with this code and reason (`None`: just finish, e.g.
    /// after the client's own close).
    Close(Option<(u16, &'static str)>),
}

/// Sends queued frames until the queue ends or a close is sent.
pub(crate) async fn run(mut sink: SplitSink<WebSocket, Message>, mut rx: mpsc::Receiver<Outbound>) {
    let mut watermarks: HashMap<Topic, u64> = HashMap::new();
    while let Some(out) = rx.recv().await {
        let msg = match out {
            Outbound::Reply { frame, seen } => {
                let seen = seen.and_then(|(t, v)| watermarks.get_mut(&t).map(|w| (w, v)));
                if let Some((w, version)) = seen {
                    *w = (*w).max(version);
                }
                Some(Message::Text(frame))
            }
            Outbound::Subscribed {
                frame,
                topic,
                version,
            } => {
                let w = watermarks.entry(topic).or_insert(0);
                *w = (*w).max(version);
                Some(Message::Text(frame))
            }
            Outbound::Unsubscribed { frame, topic } => {
                watermarks.remove(&topic);
                Some(Message::Text(frame))
            }
            Outbound::Push(update) => match watermarks.get_mut(&update.topic) {
                Some(w) if update.version > *w => {
                    *w = update.version;
                    Some(Message::Text(update.frame.clone()))
                }
                _ => None,
            },
            Outbound::Ping => Some(Message::Ping(Bytes::new())),
            Outbound::Close(frame) => {
                if let Some((code, reason)) = frame {
                    let close = CloseFrame {
                        code,
                        reason: Utf8Bytes::from_static(reason),
                    };
                    let _ = sink.feed(Message::Close(Some(close))).await;
                }
                break;
            }
        };
        let written = match msg {
            Some(msg) => sink.feed(msg).await,
            None => Ok(()),
        };
        // Batch: flush only when nothing else is waiting (also after a dropped push, so
        // an earlier fed frame never stays in the buffer).
        let flushed = match written {
            Ok(()) if rx.is_empty() => sink.flush().await,
            other => other,
        };
        if let Err(e) = flushed {
            tracing::debug!(error = %e, "websocket write failed");
            return;
        }
    }
    // Flushes what is buffered and completes a close handshake the client started.
    let _ = sink.close().await;
}

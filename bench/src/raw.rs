//! The raw baselines, run inside the bench process: what Cartwheel's building blocks can
//! do with no Cartwheel in between.
//!
//! - [`EchoResponder`]: a core NATS subscriber that answers every request with its own
//!   payload — the limit of NATS request-reply here.
//! - [`RawEdge`]: an axum server on a free loopback port whose `POST /echo` and `/ws`
//!   frames each do exactly one NATS request to the echo responder — the limit of an
//!   HTTP/WebSocket edge that talks to NATS.
//!
//! The echo subject is the bench's own (`_bench.echo.{run}`), never one of Cartwheel's.

use anyhow::Context;
use async_nats::Client;
use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use bytes::Bytes;
use futures::StreamExt;
use std::net::SocketAddr;
use tokio::task::JoinHandle;

/// A NATS echo responder; stops when dropped.
pub struct EchoResponder {
    /// The subject it answers on.
    pub subject: String,
    task: JoinHandle<()>,
}

impl EchoResponder {
    /// Subscribes `nats` to a fresh echo subject and answers every request on it.
    pub async fn start(nats: &Client, run_id: &str) -> anyhow::Result<EchoResponder> {
        let subject = format!("_bench.echo.{run_id}");
        let mut sub = nats
            .subscribe(subject.clone())
            .await
            .context("subscribing the echo responder")?;
        nats.flush()
            .await
            .context("flushing the echo subscription")?;
        let nats = nats.clone();
        let task = tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                if let Some(reply) = msg.reply {
                    let _ = nats.publish(reply, msg.payload).await;
                }
            }
        });
        Ok(EchoResponder { subject, task })
    }
}

impl Drop for EchoResponder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct EdgeState {
    nats: Client,
    subject: String,
}

/// The raw axum edge; stops when dropped.
pub struct RawEdge {
    /// Where it listens (127.0.0.1, a free port).
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl RawEdge {
    /// Serves `POST /echo` and `GET /ws` on a free loopback port; each request (frame)
    /// does one NATS request to `subject`.
    pub async fn start(nats: Client, subject: String) -> anyhow::Result<RawEdge> {
        let app = Router::new()
            .route("/echo", post(echo))
            .route("/ws", any(ws))
            .with_state(EdgeState { nats, subject });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the raw edge on 127.0.0.1")?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("raw edge stopped: {e}");
            }
        });
        Ok(RawEdge { addr, task })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for RawEdge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo(State(s): State<EdgeState>, body: Bytes) -> Response {
    match s.nats.request(s.subject.clone(), body).await {
        Ok(msg) => ([(header::CONTENT_TYPE, "application/json")], msg.payload).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

async fn ws(State(s): State<EdgeState>, upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(move |socket| ws_session(s, socket))
}

/// One frame in, one NATS request, one frame out (sequential per socket).
async fn ws_session(s: EdgeState, mut socket: WebSocket) {
    while let Some(Ok(msg)) = socket.next().await {
        let Message::Text(text) = msg else { continue };
        let payload = Bytes::copy_from_slice(text.as_bytes());
        let out = match s.nats.request(s.subject.clone(), payload).await {
            Ok(reply) => String::from_utf8_lossy(&reply.payload).into_owned(),
            Err(e) => format!("{{\"ok\":false,\"error\":\"{e}\"}}"),
        };
        if futures::SinkExt::send(&mut socket, Message::Text(out.into()))
            .await
            .is_err()
        {
            return;
        }
    }
}

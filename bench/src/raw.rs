//! The raw baselines, run inside the bench process: what Cartwheel's building blocks can
//! do with no Cartwheel in between.
//!
//! - [`EchoResponder`]: a core NATS subscriber that answers every request with its own
//!   payload — the limit of NATS request-reply here.
//! - [`DurableEcho`]: a core NATS subscriber that, before answering, does the one durable
//!   write a cart change does — a compare-and-set of a cart record like the workloads'
//!   (10 lines, [`DurableEcho::record_bytes`]) in a KV
//!   bucket set up exactly like Cartwheel's (republishing each value, its event stream
//!   sourcing it), through the same storage code — the limit of this architecture.
//! - [`RawEdge`]: an axum server on a free loopback port whose `POST /echo` and `/ws`
//!   frames each do exactly one NATS request to a responder (either of the above) — the
//!   limit of an HTTP/WebSocket edge that talks to NATS.
//!
//! The echo subjects are the bench's own (`_bench.echo.{run}`), and the durable echo's
//! bucket and streams have a prefix of their own (`bench{run}`), removed afterwards.

use anyhow::Context;
use async_nats::Client;
use async_nats::jetstream;
use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use bytes::Bytes;
use cartwheel_bus::Names;
use cartwheel_bus::events::{self, StreamSettings};
use cartwheel_domain::{Cart, Change, Currency, Product, Timestamp};
use cartwheel_storage::kv::{KvSettings, KvStore};
use cartwheel_storage::{EntityStore, Record};
use futures::StreamExt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
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

/// Records the durable echo keeps (more than any concurrency the bench uses, so no two
/// requests write the same key at once and every write is a successful compare-and-set).
const DURABLE_KEYS: usize = 2048;

/// A responder that does one durable compare-and-set write per request; stops when
/// dropped (call [`DurableEcho::remove`] to delete its bucket and streams).
pub struct DurableEcho {
    /// The subject it answers on.
    pub subject: String,
    /// Size of one encoded record it writes.
    pub record_bytes: usize,
    names: Names,
    js: jetstream::Context,
    task: JoinHandle<()>,
}

/// One key of the durable echo: its id, its revision and its record.
type Slot = (String, u64, Record<Cart>);

impl DurableEcho {
    /// Creates the bucket and streams and [`DURABLE_KEYS`] records, then answers every
    /// request on a fresh subject with its own payload once its write is stored.
    pub async fn start(nats: &Client, run_id: &str) -> anyhow::Result<DurableEcho> {
        let subject = format!("_bench.durable.{run_id}");
        let names = Names::new(&format!("bench{run_id}"));
        let js = jetstream::new(nats.clone());
        let store = KvStore::<Cart>::open(&js, &names, "cart", &KvSettings::default())
            .await
            .context("creating the durable echo's bucket")?;
        events::ensure_streams(&js, &names, &StreamSettings::default(), &["cart"])
            .await
            .context("creating the durable echo's event stream")?;
        let record_bytes = cartwheel_bus::codec::encode(&Record::new(sample_cart("k0")?))?.len();
        let mut slots: Vec<Slot> = Vec::with_capacity(DURABLE_KEYS);
        for i in 0..DURABLE_KEYS {
            let id = format!("k{i}");
            let record = Record::new(sample_cart(&id)?);
            let revision = store.create(&id, &record).await?;
            slots.push((id, revision, record));
        }
        let pool = Arc::new(Mutex::new(slots));
        let mut sub = nats
            .subscribe(subject.clone())
            .await
            .context("subscribing the durable echo")?;
        nats.flush().await.context("flushing the durable echo")?;
        let nats = nats.clone();
        let store = Arc::new(store);
        let task = tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let (nats, store, pool) = (nats.clone(), store.clone(), pool.clone());
                tokio::spawn(async move {
                    let Some(reply) = msg.reply else { return };
                    let taken = pool.lock().unwrap_or_else(PoisonError::into_inner).pop();
                    let Some((id, revision, mut record)) = taken else {
                        // An empty answer is a failure (every request has a payload).
                        let _ = nats.publish(reply, Bytes::new()).await;
                        return;
                    };
                    record.state.version += 1;
                    record.changes = vec![Change::CartUpdated];
                    let slot = match store.update(&id, &record, revision).await {
                        Ok(written) => {
                            let _ = nats.publish(reply, msg.payload).await;
                            (id, written, record)
                        }
                        Err(e) => {
                            eprintln!("durable echo: write failed: {e}");
                            let _ = nats.publish(reply, Bytes::new()).await;
                            (id, revision, record)
                        }
                    };
                    pool.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(slot);
                });
            }
        });
        Ok(DurableEcho {
            subject,
            record_bytes,
            names,
            js,
            task,
        })
    }

    /// Stops answering and deletes the bucket and the event streams.
    pub async fn remove(self) {
        self.task.abort();
        let _ = self.js.delete_key_value(self.names.carts_bucket()).await;
        for kind in cartwheel_bus::names::EVENT_KINDS {
            let _ = self.js.delete_stream(self.names.event_stream(kind)).await;
        }
    }
}

impl Drop for DurableEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Lines of the durable echo's carts: the bench's add-item workloads spread over 10 skus
/// per cart, so their carts hold 10 lines within seconds.
const SAMPLE_LINES: usize = 10;

/// A cart like the add-item workloads' carts: [`SAMPLE_LINES`] lines with skus, names and
/// ids of the bench's shape.
fn sample_cart(id: &str) -> anyhow::Result<Cart> {
    let mut cart = Cart::new(id, "bench-user", Timestamp(1_700_000_000_000))?;
    for i in 0..SAMPLE_LINES {
        let sku = format!("b0123456789-bs{i}");
        let product = Product {
            sku: sku.clone(),
            name: format!("Bench {sku}"),
            description: String::new(),
            price: 100,
            currency: Currency::new("EUR")?,
            category: "bench".to_owned(),
            active: true,
            version: 1,
            created_at: Timestamp(1_700_000_000_000),
            updated_at: Timestamp(1_700_000_000_000),
        };
        cart.add_item(&product, 1, Timestamp(1_700_000_000_000))?;
    }
    Ok(cart)
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
        Ok(msg) if msg.payload.is_empty() => {
            (StatusCode::SERVICE_UNAVAILABLE, "the responder failed").into_response()
        }
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

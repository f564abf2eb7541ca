//! The edge against a real nats-server and a fake node: `/ws` subscribe replies,
//! pushes to other sockets, the version watermark and unsubscribe; checkout status codes
//! and readiness.
//!
//! The fake node answers cart commands on the real subjects and publishes `CartUpdated`
//! events with core NATS, as the actor node does (through JetStream) — enough to exercise
//! the edge against the bus contract without the actors crate.

// Test helpers outside #[test] fns panic on purpose: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use cartwheel_api::{Edge, EdgeConfig};
use cartwheel_bus::messages::{CartCommand, CheckoutReply, Page, Reply};
use cartwheel_bus::names::EntityKind;
use cartwheel_bus::{ApiError, BusClient, BusConfig, Names, codec};
use cartwheel_domain::{Cart, CartLine, Currency, ErrorCode, Event, Order, OrderStatus, Timestamp};
use cartwheel_testkit::NatsServer;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Publishes `cart` as a `CartUpdated` event on its subject.
async fn publish(nats: &async_nats::Client, cart: &Cart) {
    let subject = Names::default().event(EntityKind::Cart.as_str(), &cart.id);
    let event = Event::CartUpdated { cart: cart.clone() };
    let (headers, payload) = cartwheel_bus::events::event_message(&event).unwrap();
    nats.publish_with_headers(subject, headers, payload)
        .await
        .unwrap();
    nats.flush().await.unwrap();
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("cart {id} not found"))
}

/// Answers `Get`, `AddItem` and `Checkout` for the carts it holds, publishing an event
/// per change. A checkout whose key starts with `settle` settles at once (`CONFIRMED`);
/// any other stays `PENDING`. The same key again answers the same order, not created.
async fn fake_node(nats: async_nats::Client, mut carts: HashMap<String, Cart>) {
    let names = Names::default();
    let mut sub = nats
        .subscribe(names.entity_all(EntityKind::Cart))
        .await
        .unwrap();
    nats.flush().await.unwrap();
    let mut orders: HashMap<String, Order> = HashMap::new();
    while let Some(msg) = sub.next().await {
        let Some((_, id)) = names.parse_entity(EntityKind::Cart, &msg.subject) else {
            continue;
        };
        let cmd: CartCommand = codec::decode(&msg.payload).unwrap();
        let payload = match (carts.get_mut(id), cmd) {
            (Some(cart), CartCommand::Get) => codec::encode(&Reply::Ok(cart.clone())),
            (Some(cart), CartCommand::AddItem { sku, qty }) => {
                cart.items.push(CartLine {
                    sku,
                    qty,
                    unit_price: 100,
                    currency: Currency::new("EUR").unwrap(),
                });
                cart.currency = Some(Currency::new("EUR").unwrap());
                cart.total += 100 * i64::from(qty);
                cart.version += 1;
                publish(&nats, cart).await;
                codec::encode(&Reply::Ok(cart.clone()))
            }
            (
                Some(cart),
                CartCommand::Checkout {
                    idempotency_key, ..
                },
            ) => {
                let created = !orders.contains_key(&idempotency_key);
                let order = orders.entry(idempotency_key.clone()).or_insert_with(|| {
                    let order_id = format!("o-{idempotency_key}");
                    let mut order =
                        Order::place(&order_id, cart, &idempotency_key, Timestamp(0)).unwrap();
                    if idempotency_key.starts_with("settle") {
                        order.status = OrderStatus::Confirmed;
                    }
                    order
                });
                let reply = CheckoutReply {
                    order: order.clone(),
                    created,
                };
                codec::encode(&Reply::Ok(reply))
            }
            (Some(_), other) => codec::encode(&Reply::<Cart>::Err(ApiError::invalid(format!(
                "fake node: {other:?}"
            )))),
            (None, _) => codec::encode(&Reply::<Cart>::Err(not_found(id))),
        };
        if let Some(to) = msg.reply {
            nats.publish(to, payload.unwrap()).await.unwrap();
        }
    }
}

/// Answers every catalog query with an empty page.
async fn fake_catalog(nats: async_nats::Client) {
    let mut sub = nats
        .subscribe(Names::default().query_catalog())
        .await
        .unwrap();
    nats.flush().await.unwrap();
    while let Some(msg) = sub.next().await {
        let page: Reply<Page<Value>> = Ok(Page {
            items: vec![],
            next_cursor: None,
        });
        if let Some(to) = msg.reply {
            nats.publish(to, codec::encode(&page).unwrap())
                .await
                .unwrap();
        }
    }
}

/// A socket and the highest cart version it has been pushed, to check pushes only grow.
struct Socket {
    ws: Client,
    pushed: u64,
}

impl Socket {
    async fn connect(addr: SocketAddr) -> Socket {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
            .await
            .unwrap();
        Socket { ws, pushed: 0 }
    }

    async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::text(frame.to_string()))
            .await
            .unwrap();
    }

    /// The next text frame; asserts every push is newer than anything seen before.
    async fn next(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(5), self.ws.next())
                .await
                .expect("a frame within 5 s")
                .unwrap()
                .unwrap();
            let Message::Text(text) = msg else { continue };
            let frame: Value = serde_json::from_str(text.as_str()).unwrap();
            let version = frame["cart"]["version"].as_u64().unwrap_or(0);
            if frame["type"] == "cart" {
                assert!(version > self.pushed, "push went back in time: {frame}");
            }
            self.pushed = self.pushed.max(version);
            return frame;
        }
    }

    /// Frames until the reply with `id`, which is returned.
    async fn reply(&mut self, id: i64) -> Value {
        loop {
            let frame = self.next().await;
            if frame["id"] == id {
                return frame;
            }
        }
    }

    /// The next push (replies in between are skipped).
    async fn push(&mut self) -> Value {
        loop {
            let frame = self.next().await;
            if frame["type"] == "cart" {
                return frame;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_see_every_newer_change_once_and_in_order() {
    let server = NatsServer::start().await.unwrap();
    let nats = cartwheel_testkit::connect(&server.url()).await.unwrap();
    let cart = Cart::new("c1", "u1", Timestamp(0)).unwrap();
    let seeded = HashMap::from([(cart.id.clone(), cart.clone())]);
    tokio::spawn(fake_node(nats.clone(), seeded));

    let config = EdgeConfig {
        http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..EdgeConfig::default()
    };
    let edge = Edge::new(BusClient::new(nats.clone(), BusConfig::default()), config);
    let shutdown = CancellationToken::new();
    let (addr, run) = edge.bind(shutdown.clone()).await.unwrap();
    let server_task = tokio::spawn(run);

    let mut a = Socket::connect(addr).await;
    let mut b = Socket::connect(addr).await;
    for s in [&mut a, &mut b] {
        s.send(json!({"id": 1, "op": "subscribe", "cart_id": "c1"}))
            .await;
        let reply = s.reply(1).await;
        assert_eq!(reply["ok"], true, "{reply}");
        assert_eq!(reply["cart"]["version"], 1, "{reply}");
    }

    // A changes the cart: A gets the reply, B gets a push; neither sees version 2 twice.
    a.send(json!({"id": 2, "op": "add_item", "cart_id": "c1", "sku": "S1", "qty": 2}))
        .await;
    let reply = a.reply(2).await;
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["cart"]["version"], 2);
    let push = b.push().await;
    assert_eq!(push["cart"]["version"], 2);
    assert_eq!(push["cart"]["items"][0]["sku"], "S1");

    // A stale event is never pushed; the next newer one is, to both.
    publish(&nats, &cart).await;
    let mut v3 = cart.clone();
    v3.version = 3;
    publish(&nats, &v3).await;
    assert_eq!(a.push().await["cart"]["version"], 3);
    assert_eq!(b.push().await["cart"]["version"], 3);

    // After unsubscribing, A gets no more pushes; B still does.
    a.send(json!({"id": 3, "op": "unsubscribe", "cart_id": "c1"}))
        .await;
    assert_eq!(a.reply(3).await, json!({"id": 3, "ok": true}));
    let mut v4 = cart.clone();
    v4.version = 4;
    publish(&nats, &v4).await;
    assert_eq!(b.push().await["cart"]["version"], 4);
    a.send(json!({"id": 4, "op": "get", "cart_id": "c1"})).await;
    let next = a.next().await;
    assert_eq!(next["id"], 4, "no push after unsubscribe: {next}");

    // Errors from the node come back as error replies.
    b.send(json!({"id": 5, "op": "subscribe", "cart_id": "nope"}))
        .await;
    let reply = b.reply(5).await;
    assert_eq!(reply["ok"], false);
    assert_eq!(reply["error"]["code"], "not_found");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), server_task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// Sends a request to the router; returns the status and the JSON body.
async fn call(app: &axum::Router, req: Request<Body>) -> (StatusCode, Value) {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn checkout(cart_id: &str, key: &str) -> Request<Body> {
    Request::builder()
        .method(Method::POST)
        .uri(format!("/carts/{cart_id}/checkout"))
        .header("Idempotency-Key", key)
        .body(Body::empty())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_and_readiness_follow_the_node() {
    let server = NatsServer::start().await.unwrap();
    let nats = cartwheel_testkit::connect(&server.url()).await.unwrap();
    let mut cart = Cart::new("c1", "u1", Timestamp(0)).unwrap();
    cart.currency = Some(Currency::new("EUR").unwrap());
    let seeded = HashMap::from([(cart.id.clone(), cart)]);
    tokio::spawn(fake_node(nats.clone(), seeded));
    let bus = BusClient::new(
        nats.clone(),
        BusConfig {
            retry_window: Duration::from_millis(100),
            ..BusConfig::default()
        },
    );
    let app = Edge::new(bus, EdgeConfig::default()).router();
    let ready = || Request::get("/readyz").body(Body::empty()).unwrap();

    // Connected, but nothing answers catalog queries yet.
    let (status, body) = call(&app, ready()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");
    tokio::spawn(fake_catalog(nats.clone()));
    let mut ready_now = false;
    for _ in 0..50 {
        if call(&app, ready()).await.0 == StatusCode::OK {
            ready_now = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ready_now, "ready once a node answers");

    let (status, body) = call(&app, checkout("c1", "settle-1")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"], "CONFIRMED");
    let (status, again) = call(&app, checkout("c1", "settle-1")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a replayed key answers the same order"
    );
    assert_eq!(again["id"], body["id"]);
    let (status, body) = call(&app, checkout("c1", "slow-1")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "PENDING");
    let (status, body) = call(&app, checkout("missing", "settle-2")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
}

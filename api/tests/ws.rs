//! `/ws` over a real socket, without a node: malformed frames, size limit, shutdown.

// Test helpers outside #[test] fns panic on purpose: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use cartwheel_api::{Edge, EdgeConfig};
use cartwheel_bus::{BusClient, BusConfig};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

const MAX_FRAME: usize = 4096;

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Running {
    addr: SocketAddr,
    shutdown: CancellationToken,
    server: JoinHandle<Result<(), cartwheel_api::EdgeError>>,
}

async fn start() -> Running {
    let nats = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect("nats://127.0.0.1:1")
        .await
        .unwrap();
    let config = EdgeConfig {
        http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        max_ws_frame_bytes: MAX_FRAME,
        ..EdgeConfig::default()
    };
    let edge = Edge::new(BusClient::new(nats, BusConfig::default()), config);
    let shutdown = CancellationToken::new();
    let (addr, run) = edge.bind(shutdown.clone()).await.unwrap();
    Running {
        addr,
        shutdown,
        server: tokio::spawn(run),
    }
}

async fn connect(addr: SocketAddr) -> Client {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    ws
}

/// The next text frame as JSON (pings are answered by the client library).
async fn next_json(ws: &mut Client) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5 s")
            .expect("the socket is open")
            .unwrap();
        match msg {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// The close code the server sends next (skipping anything before it).
async fn close_code(ws: &mut Client) -> CloseCode {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a close within 5 s");
        match msg {
            Some(Ok(Message::Close(Some(frame)))) => return frame.code,
            Some(Ok(Message::Close(None))) => panic!("close without a code"),
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

fn assert_invalid(reply: &Value, id: Value) {
    assert_eq!(reply["id"], id, "{reply}");
    assert_eq!(reply["ok"], false, "{reply}");
    assert_eq!(reply["error"]["code"], "invalid_input", "{reply}");
    assert!(reply["error"]["request_id"].is_string(), "{reply}");
}

#[tokio::test]
async fn malformed_frames_are_answered_and_the_socket_stays_open() {
    let edge = start().await;
    let mut ws = connect(edge.addr).await;
    ws.send(Message::text("{not json")).await.unwrap();
    assert_invalid(&next_json(&mut ws).await, Value::Null);
    ws.send(Message::text(r#"{"id":5,"op":"fly","cart_id":"c1"}"#))
        .await
        .unwrap();
    assert_invalid(&next_json(&mut ws).await, json!(5));
    ws.send(Message::text(r#"{"id":"x","op":"subscribe"}"#))
        .await
        .unwrap();
    assert_invalid(&next_json(&mut ws).await, json!("x"));
    ws.send(Message::text(
        r#"{"id":6,"op":"subscribe","cart_id":"a.b"}"#,
    ))
    .await
    .unwrap();
    assert_invalid(&next_json(&mut ws).await, json!(6));
    ws.send(Message::text(
        r#"{"id":7,"op":"add_item","cart_id":"c1","sku":"s","qty":-1}"#,
    ))
    .await
    .unwrap();
    assert_invalid(&next_json(&mut ws).await, json!(7));
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_invalid(&next_json(&mut ws).await, Value::Null);
    // Still open: one more round trip.
    ws.send(Message::text(r#"{"id":8}"#)).await.unwrap();
    assert_invalid(&next_json(&mut ws).await, json!(8));
    edge.shutdown.cancel();
}

#[tokio::test]
async fn an_oversized_frame_closes_with_1009() {
    let edge = start().await;
    // Just over the limit, and far over it (the client is still sending when we close).
    for size in [MAX_FRAME + 1, MAX_FRAME * 256] {
        let mut ws = connect(edge.addr).await;
        let big = format!(r#"{{"id":1,"op":"get","cart_id":"{}"}}"#, "c".repeat(size));
        ws.send(Message::text(big)).await.unwrap();
        assert_eq!(close_code(&mut ws).await, CloseCode::Size, "size {size}");
    }
    edge.shutdown.cancel();
}

#[tokio::test]
async fn shutdown_closes_sockets_with_1001_and_the_server_ends() {
    let edge = start().await;
    let mut a = connect(edge.addr).await;
    let mut b = connect(edge.addr).await;
    // Make sure both connections are up before shutting down.
    for ws in [&mut a, &mut b] {
        ws.send(Message::text("{")).await.unwrap();
        assert_invalid(&next_json(ws).await, Value::Null);
    }
    edge.shutdown.cancel();
    assert_eq!(close_code(&mut a).await, CloseCode::Away);
    assert_eq!(close_code(&mut b).await, CloseCode::Away);
    let ended = tokio::time::timeout(Duration::from_secs(10), edge.server)
        .await
        .expect("the server stops after shutdown");
    ended.unwrap().unwrap();
}

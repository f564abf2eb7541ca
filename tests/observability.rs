//! Metrics, traces and discovery, black-box: `/metrics` on the edge and on a node has the
//! named series and they move; a checkout's trace id (from the client's `traceparent`)
//! is in the node's log lines for the cart, the order and the stock; spans are exported
//! over OTLP when an endpoint is set; nodes answer the NATS services API.

mod common;

use anyhow::Context;
use cartwheel_testkit::{NatsServer, free_port, wait_for};
use common::{Proc, WAIT, Ws, scrape};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The sum of the samples of `name` whose labels include every one of `labels`
/// (`key="value"`), or `None` when there is no such sample.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        if labels.iter().all(|l| rest.contains(l)) {
            let value: f64 = rest.rsplit(' ').next()?.parse().ok()?;
            found = Some(found.unwrap_or(0.0) + value);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_have_the_named_series_and_they_move() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let edge = Proc::up(&dir.path().join("data"), &[], &[]).await?;
    let api = edge.api();
    let metrics = format!("{}/metrics", api.base);
    api.product("TEA", 450, 10).await?;
    let cart = api.cart("dana").await?;
    api.post(
        &format!("/carts/{cart}/items"),
        json!({"sku": "TEA", "qty": 1}),
    )
    .await?;
    let (s, _) = api.checkout(&cart, "k1").await?;
    assert_eq!(s, 201);
    let mut ws = Ws::connect(&api.base).await?;
    ws.request(json!({"id": 1, "op": "get", "cart_id": cart}))
        .await?;

    let before = scrape(&metrics).await?;
    for name in [
        "cartwheel_http_requests_total",
        "cartwheel_http_request_duration_seconds_bucket",
        "cartwheel_ws_connections",
        "cartwheel_nats_request_duration_seconds_bucket",
        "cartwheel_actors_live",
        "cartwheel_actor_activations_total",
        "cartwheel_actor_passivations_total",
        "cartwheel_actor_restarts_total",
        "cartwheel_saga_outcomes_total",
        "cartwheel_storage_duration_seconds_bucket",
    ] {
        assert!(
            sample(&before, name, &[]).is_some(),
            "{name} missing:\n{before}"
        );
    }
    assert_eq!(sample(&before, "cartwheel_ws_connections", &[]), Some(1.0));
    let carts_live =
        sample(&before, "cartwheel_actors_live", &[r#"kind="cart""#]).context("live")?;
    assert!(carts_live >= 1.0);
    let route = [r#"route="/carts""#, r#"status="201""#];
    let created = sample(&before, "cartwheel_http_requests_total", &route).context("created")?;
    let activations = |t: &str| sample(t, "cartwheel_actor_activations_total", &[r#"kind="cart""#]);
    let confirmed = |t: &str| {
        sample(
            t,
            "cartwheel_saga_outcomes_total",
            &[r#"outcome="confirmed""#],
        )
    };
    let nats_cart = |t: &str| {
        sample(
            t,
            "cartwheel_nats_request_duration_seconds_count",
            &[r#"target="cart""#, r#"outcome="ok""#],
        )
    };
    let writes = |t: &str| {
        sample(
            t,
            "cartwheel_storage_duration_seconds_count",
            &[r#"kind="cart""#, r#"op="update""#],
        )
    };
    assert_eq!(confirmed(&before), Some(1.0));

    // Another cart, another line, another checkout; the socket closes.
    let cart2 = api.cart("erin").await?;
    api.post(
        &format!("/carts/{cart2}/items"),
        json!({"sku": "TEA", "qty": 2}),
    )
    .await?;
    assert_eq!(api.checkout(&cart2, "k2").await?.0, 201);
    drop(ws);
    let after = scrape(&metrics).await?;
    assert_eq!(
        sample(&after, "cartwheel_http_requests_total", &route),
        Some(created + 1.0)
    );
    assert!(
        activations(&after) > activations(&before),
        "activations did not move"
    );
    assert_eq!(confirmed(&after), Some(2.0));
    assert!(
        nats_cart(&after) > nats_cart(&before),
        "NATS request latency did not move"
    );
    assert!(
        writes(&after) > writes(&before),
        "storage latency did not move"
    );
    wait_for("the socket gauge to drop", WAIT, || async {
        let text = scrape(&metrics).await.unwrap_or_default();
        sample(&text, "cartwheel_ws_connections", &[]) == Some(0.0)
    })
    .await?;
    // Route labels are templates, never raw ids.
    assert!(!after.contains(&cart), "a raw id leaked into a label");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_is_one_trace_from_the_edge_into_the_nodes_log() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let dir = tempfile::tempdir()?;
    let metrics_port = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let node = Proc::node(
        &nats.url(),
        dir.path().join("node.log"),
        &[
            ("RUST_LOG", "info,async_nats=warn,cartwheel_actors=debug"),
            ("CARTWHEEL_METRICS_ADDR", metrics_addr.as_str()),
        ],
    )
    .await?;
    let edge = Proc::edge_with(
        &nats.url(),
        dir.path().join("edge.log"),
        &[("RUST_LOG", "info,tower_http=debug")],
    )
    .await?;
    edge.wait_ready().await?;
    let api = edge.api();
    api.product("MUG", 1200, 5).await?;
    let cart = api.cart("fay").await?;
    api.post(
        &format!("/carts/{cart}/items"),
        json!({"sku": "MUG", "qty": 1}),
    )
    .await?;

    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let res = api
        .http
        .post(format!("{}/carts/{cart}/checkout", api.base))
        .header("Idempotency-Key", "t1")
        .header("traceparent", &traceparent)
        .send()
        .await?;
    assert_eq!(res.status().as_u16(), 201);

    // Every hop of the checkout, in the node's process, carries the client's trace id.
    let log_path = dir.path().join("node.log");
    wait_for("the node's log lines of the checkout", WAIT, || async {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        ["kind=\"cart\"", "kind=\"order\"", "kind=\"inventory\""]
            .iter()
            .all(|k| log.lines().any(|l| l.contains(&trace_id) && l.contains(k)))
    })
    .await
    .with_context(|| {
        format!(
            "trace {trace_id}\n{}\n---- edge ----\n{}",
            node.child.log_contents(),
            edge.child.log_contents()
        )
    })?;
    let log = std::fs::read_to_string(&log_path)?;
    assert!(
        log.lines()
            .any(|l| l.contains(&trace_id) && l.contains("saga")),
        "the saga's steps are not in the trace"
    );
    // A request without a traceparent starts a trace of its own.
    let (s, _) = api.get(&format!("/carts/{cart}")).await?;
    assert_eq!(s, 200);

    // A separate edge process counts from its first request.
    let text = scrape(&format!("{}/metrics", api.base)).await?;
    let checkout = [r#"route="/carts/{id}/checkout""#, r#"status="201""#];
    assert_eq!(
        sample(&text, "cartwheel_http_requests_total", &checkout),
        Some(1.0),
        "{text}"
    );

    // The node's own metrics listener.
    let text = scrape(&format!("http://{metrics_addr}/metrics")).await?;
    assert!(
        sample(&text, "cartwheel_actors_live", &[r#"kind="order""#]).is_some(),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "cartwheel_saga_outcomes_total",
            &[r#"outcome="confirmed""#]
        ) == Some(1.0)
    );

    // The node answers the NATS services API with its counters.
    let client = cartwheel_testkit::connect(&nats.url()).await?;
    let ping = client
        .request("$SRV.PING.cartwheel-node", "".into())
        .await?;
    let ping: Value = serde_json::from_slice(&ping.payload)?;
    assert_eq!(ping["name"], "cartwheel-node");
    let info = client
        .request("$SRV.INFO.cartwheel-node", "".into())
        .await?;
    let info: Value = serde_json::from_slice(&info.payload)?;
    assert_eq!(info["endpoints"][0]["name"], "stats");
    assert!(info["metadata"]["node_id"].is_string(), "{info}");
    let stats = client
        .request("$SRV.STATS.cartwheel-node", "".into())
        .await?;
    let stats: Value = serde_json::from_slice(&stats.payload)?;
    let actors = &stats["endpoints"][0]["data"]["actors"];
    assert!(actors["cart"]["activations"].as_u64() >= Some(1), "{stats}");
    assert!(
        actors["order"]["activations"].as_u64() >= Some(1),
        "{stats}"
    );

    // The node's probes (what Kubernetes asks): alive and ready while it serves; not
    // ready, but still alive, once it lost NATS.
    let http = reqwest::Client::new();
    let probe = |path: &'static str| {
        let (http, url) = (http.clone(), format!("http://{metrics_addr}{path}"));
        async move {
            let res = http.get(url).send().await?;
            let status = res.status().as_u16();
            Ok::<_, anyhow::Error>((status, res.json::<Value>().await?))
        }
    };
    assert_eq!(probe("/healthz").await?, (200, json!({"status": "ok"})));
    assert_eq!(probe("/readyz").await?, (200, json!({"status": "ready"})));
    let mut nats = nats;
    nats.kill()?;
    let last = Arc::new(Mutex::new(Value::Null));
    wait_for("the node's /readyz to turn 503 without NATS", WAIT, || {
        let last = last.clone();
        async move {
            match probe("/readyz").await {
                Ok((503, body)) => {
                    *last.lock().unwrap() = body;
                    true
                }
                _ => false,
            }
        }
    })
    .await?;
    let body = last.lock().unwrap().clone();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("NATS")),
        "{body}"
    );
    assert_eq!(probe("/healthz").await?.0, 200);
    drop(node);
    Ok(())
}

/// A stand-in OTLP/HTTP collector: answers 200 to every request, keeps the bodies of
/// `POST /v1/traces`.
async fn collector() -> anyhow::Result<(u16, Arc<Mutex<Vec<Vec<u8>>>>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let keep = bodies.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let keep = keep.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                // Read the head, then the body by Content-Length.
                let (head_end, len) = loop {
                    let Ok(n) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..pos]).to_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (pos + 4, len);
                    }
                };
                while buf.len() < head_end + len {
                    let Ok(n) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                if buf.starts_with(b"POST /v1/traces")
                    && let Ok(mut b) = keep.lock()
                {
                    b.push(buf[head_end..].to_vec());
                }
                let _ = sock
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    Ok((port, bodies))
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_when_an_endpoint_is_set() -> anyhow::Result<()> {
    let (port, bodies) = collector().await?;
    let dir = tempfile::tempdir()?;
    let endpoint = format!("http://127.0.0.1:{port}");
    let edge = Proc::up(
        &dir.path().join("data"),
        &[],
        &[
            ("CARTWHEEL_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await?;
    let api = edge.api();
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let res = api
        .http
        .get(format!("{}/products", api.base))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .send()
        .await?;
    assert_eq!(res.status().as_u16(), 200);
    // The exported spans (protobuf) carry the client's trace id as 16 raw bytes.
    let wanted = hex_bytes(&trace_id);
    wait_for(
        "a span of the request at the collector",
        Duration::from_secs(15),
        || async {
            bodies
                .lock()
                .map(|b| {
                    b.iter()
                        .any(|body| body.windows(16).any(|w| w == wanted.as_slice()))
                })
                .unwrap_or(false)
        },
    )
    .await
    .with_context(|| edge.child.log_contents())?;
    Ok(())
}

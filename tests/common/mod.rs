//! Black-box harness: the real `cartwheel` binary, a real `nats-server`, real HTTP and
//! WebSocket clients. Tests poll for conditions; they never sleep for a fixed time.

#![allow(dead_code)] // each test file uses a different part of the harness
#![allow(clippy::unwrap_used)] // test harness: a failed setup should stop the test loudly

use anyhow::{Context, bail};
use cartwheel_testkit::{ChildProcess, free_port, nats_server_bin, wait_for};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// The binary under test.
pub fn bin() -> String {
    if let Ok(b) = std::env::var("CARTWHEEL_BIN") {
        return b;
    }
    // Set by cargo for integration tests; examples (scripts/chaos) use the release build.
    option_env!("CARGO_BIN_EXE_cartwheel")
        .unwrap_or("target/release/cartwheel")
        .to_string()
}

/// How long any single wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(20);

/// A running `cartwheel` process (up, node or edge).
pub struct Proc {
    pub child: ChildProcess,
    pub base: Option<String>,
}

impl Proc {
    fn spawn(
        args: Vec<String>,
        envs: Vec<(String, String)>,
        log: PathBuf,
    ) -> anyhow::Result<ChildProcess> {
        let mut all_envs = vec![
            (
                "CARTWHEEL_NATS_SERVER".to_string(),
                nats_server_bin().display().to_string(),
            ),
            (
                "RUST_LOG".to_string(),
                std::env::var("CW_TEST_LOG").unwrap_or_else(|_| "info,async_nats=warn".to_string()),
            ),
        ];
        all_envs.extend(envs);
        ChildProcess::spawn(bin(), args, all_envs, log)
    }

    /// `cartwheel up` on `data_dir` with an HTTP port of its own; waits until ready.
    pub async fn up(
        data_dir: &Path,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> anyhow::Result<Proc> {
        let port = free_port();
        let mut args = vec![
            "up".to_string(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--http-addr".into(),
            format!("127.0.0.1:{port}"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let envs = envs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let child = Self::spawn(args, envs, data_dir.with_extension("up.log"))?;
        let p = Proc {
            child,
            base: Some(format!("http://127.0.0.1:{port}")),
        };
        p.wait_ready().await?;
        Ok(p)
    }

    /// `cartwheel node` against `nats_url`.
    pub async fn node(nats_url: &str, log: PathBuf, envs: &[(&str, &str)]) -> anyhow::Result<Proc> {
        let mut e: Vec<(String, String)> = vec![("CARTWHEEL_NATS_URL".into(), nats_url.into())];
        e.extend(envs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let child = Self::spawn(vec!["node".into()], e, log)?;
        Ok(Proc { child, base: None })
    }

    /// `cartwheel edge` against `nats_url`; waits until it answers `/healthz`.
    pub async fn edge(nats_url: &str, log: PathBuf) -> anyhow::Result<Proc> {
        Self::edge_with(nats_url, log, &[]).await
    }

    /// `cartwheel edge` with extra environment (later entries win over the defaults).
    pub async fn edge_with(
        nats_url: &str,
        log: PathBuf,
        envs: &[(&str, &str)],
    ) -> anyhow::Result<Proc> {
        let port = free_port();
        let e = vec![
            ("CARTWHEEL_NATS_URL".to_string(), nats_url.to_string()),
            (
                "CARTWHEEL_HTTP_ADDR".to_string(),
                format!("127.0.0.1:{port}"),
            ),
            // `edge` refuses to start without an explicit auth choice; these tests
            // exercise the contract, not identity or limits (tests/edge_security.rs does).
            ("CARTWHEEL_AUTH".to_string(), "off".to_string()),
            ("CARTWHEEL_RATE_LIMIT_RPS".to_string(), "0".to_string()),
        ];
        let mut e = e;
        e.extend(envs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let child = Self::spawn(vec!["edge".into()], e, log)?;
        let p = Proc {
            child,
            base: Some(format!("http://127.0.0.1:{port}")),
        };
        let api = p.api();
        wait_for("edge /healthz", WAIT, || async {
            api.get("/healthz")
                .await
                .map(|(s, _)| s == 200)
                .unwrap_or(false)
        })
        .await
        .with_context(|| p.child.log_contents())?;
        Ok(p)
    }

    /// Waits until `/readyz` answers 200 (NATS connected and a node answering).
    pub async fn wait_ready(&self) -> anyhow::Result<()> {
        let api = self.api();
        wait_for("/readyz", WAIT, || async {
            api.get("/readyz")
                .await
                .map(|(s, _)| s == 200)
                .unwrap_or(false)
        })
        .await
        .with_context(|| format!("not ready; log:\n{}", self.child.log_contents()))
    }

    /// An HTTP client for this process's edge.
    pub fn api(&self) -> Api {
        Api::new(self.base.clone().unwrap_or_default())
    }

    /// SIGTERM, then waits for a clean exit.
    pub async fn terminate(mut self) -> anyhow::Result<std::process::ExitStatus> {
        self.child.terminate()?;
        match self.child.wait_exit(WAIT).await? {
            Some(s) => Ok(s),
            None => bail!(
                "did not exit after SIGTERM; log:\n{}",
                self.child.log_contents()
            ),
        }
    }
}

/// A JSON HTTP client.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(base: String) -> Api {
        Api {
            base,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> anyhow::Result<(u16, Value)> {
        let resp = rb.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).with_context(|| format!("not JSON ({status}): {text}"))?
        };
        Ok((status, body))
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }
    pub async fn post(&self, path: &str, body: Value) -> anyhow::Result<(u16, Value)> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(&body))
            .await
    }
    pub async fn post_raw(&self, path: &str, body: &'static str) -> anyhow::Result<(u16, Value)> {
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }
    pub async fn put(&self, path: &str, body: Value) -> anyhow::Result<(u16, Value)> {
        self.send(self.http.put(format!("{}{path}", self.base)).json(&body))
            .await
    }
    pub async fn patch(&self, path: &str, body: Value) -> anyhow::Result<(u16, Value)> {
        self.send(self.http.patch(format!("{}{path}", self.base)).json(&body))
            .await
    }
    pub async fn delete(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        self.send(self.http.delete(format!("{}{path}", self.base)))
            .await
    }
    /// A request with an `Idempotency-Key` (and a JSON body, unless `Null`).
    pub async fn keyed(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
        key: &str,
    ) -> anyhow::Result<(u16, Value)> {
        let mut rb = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("Idempotency-Key", key);
        if !body.is_null() {
            rb = rb.json(&body);
        }
        self.send(rb).await
    }
    pub async fn checkout(&self, cart: &str, key: &str) -> anyhow::Result<(u16, Value)> {
        self.send(
            self.http
                .post(format!("{}/carts/{cart}/checkout", self.base))
                .header("Idempotency-Key", key),
        )
        .await
    }

    /// Creates a product and stocks it.
    pub async fn product(&self, sku: &str, price: i64, stock: u64) -> anyhow::Result<()> {
        let (s, b) = self
            .post("/products", json!({"sku": sku, "name": format!("Product {sku}"), "description": "", "price": price, "currency": "EUR", "category": "test", "active": true}))
            .await?;
        if s != 201 {
            bail!("create product {sku}: {s} {b}");
        }
        let (s, b) = self
            .put(&format!("/inventory/{sku}"), json!({"on_hand": stock}))
            .await?;
        if s != 200 {
            bail!("stock {sku}: {s} {b}");
        }
        Ok(())
    }

    /// Creates a cart for `user` and returns its id.
    pub async fn cart(&self, user: &str) -> anyhow::Result<String> {
        let (s, b) = self.post("/carts", json!({"user_id": user})).await?;
        if s != 201 {
            bail!("create cart: {s} {b}");
        }
        Ok(b["id"].as_str().context("cart id")?.to_string())
    }
}

/// A WebSocket client speaking the `/ws` protocol.
pub struct Ws {
    stream: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    /// Pushes seen while waiting for replies.
    pub pushes: Vec<Value>,
    replies: Vec<Value>,
}

impl Ws {
    pub async fn connect(base: &str) -> anyhow::Result<Ws> {
        let url = format!("{}/ws", base.replace("http://", "ws://"));
        let (stream, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(Ws {
            stream,
            pushes: Vec::new(),
            replies: Vec::new(),
        })
    }

    pub async fn send(&mut self, frame: Value) -> anyhow::Result<()> {
        self.stream
            .send(Message::Text(frame.to_string().into()))
            .await?;
        Ok(())
    }

    pub async fn send_text(&mut self, text: &str) -> anyhow::Result<()> {
        self.stream
            .send(Message::Text(text.to_string().into()))
            .await?;
        Ok(())
    }

    async fn next_frame(&mut self) -> anyhow::Result<Value> {
        loop {
            let msg = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .context("no frame in time")?;
            match msg {
                Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t)?),
                Some(Ok(Message::Close(c))) => bail!("closed: {c:?}"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => bail!("websocket error: {e}"),
                None => bail!("websocket ended"),
            }
        }
    }

    /// Sends a request and waits for the reply with the same id (collecting pushes).
    pub async fn request(&mut self, frame: Value) -> anyhow::Result<Value> {
        let id = frame["id"].clone();
        self.send(frame).await?;
        self.reply(id).await
    }

    /// Waits for the reply with `id`.
    pub async fn reply(&mut self, id: Value) -> anyhow::Result<Value> {
        if let Some(pos) = self.replies.iter().position(|r| r["id"] == id) {
            return Ok(self.replies.remove(pos));
        }
        loop {
            let f = self.next_frame().await?;
            if f.get("type").is_some() {
                self.pushes.push(f);
            } else if f["id"] == id {
                return Ok(f);
            } else {
                self.replies.push(f);
            }
        }
    }

    /// Waits until a cart push with at least `version` for `cart_id` arrived; returns it.
    pub async fn push_at_least(&mut self, cart_id: &str, version: u64) -> anyhow::Result<Value> {
        self.push_where(|p| {
            p["cart"]["id"] == cart_id && p["cart"]["version"].as_u64().unwrap_or(0) >= version
        })
        .await
    }

    /// Waits until a push for which `found` holds arrived; returns it.
    pub async fn push_where(&mut self, found: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
        loop {
            if let Some(p) = self.pushes.iter().find(|p| found(p)) {
                return Ok(p.clone());
            }
            let f = self.next_frame().await?;
            if f.get("type").is_some() {
                self.pushes.push(f);
            } else {
                self.replies.push(f);
            }
        }
    }

    /// Waits for the connection to close and returns the close code.
    pub async fn close_code(&mut self) -> anyhow::Result<Option<u16>> {
        loop {
            let msg = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .context("no close in time")?;
            match msg {
                Some(Ok(Message::Close(c))) => return Ok(c.map(|c| u16::from(c.code))),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Ok(None),
            }
        }
    }
}

/// Partitions held per node, from a `GET /cluster` answer.
pub fn partitions_by_node(c: &Value) -> std::collections::BTreeMap<String, u64> {
    c["nodes"]
        .as_array()
        .map(|ns| {
            ns.iter()
                .map(|n| {
                    (
                        n["node_id"].as_str().unwrap_or("").to_string(),
                        n["partition_count"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A Prometheus scrape of `url`: 200 and the text format, or an error saying which.
pub async fn scrape(url: &str) -> anyhow::Result<String> {
    let res = reqwest::get(url).await?;
    anyhow::ensure!(res.status() == 200, "{url}: {}", res.status());
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    anyhow::ensure!(ct.starts_with("text/plain"), "content type {ct}");
    Ok(res.text().await?)
}

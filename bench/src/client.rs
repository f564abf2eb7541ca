//! The clients scenarios drive Cartwheel with: JSON over HTTP, the `/ws` protocol, and
//! the error kinds every failure is counted under (`http_503`, `insufficient_stock`,
//! `timeout`, …).

use anyhow::{Context, bail};
use cartwheel_bus::BusError;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// Deadline of one HTTP request or WebSocket round trip.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A JSON HTTP client for one base URL.
#[derive(Clone)]
pub struct Http {
    base: String,
    client: reqwest::Client,
}

impl Http {
    /// A client for `base` (`http://127.0.0.1:8080`), with a connection pool; `token`
    /// goes out as `Authorization: Bearer` on every request.
    pub fn new(base: &str, token: Option<&str>) -> anyhow::Result<Http> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .context("the token is not a valid header value")?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(REQUEST_TIMEOUT)
            .tcp_nodelay(true)
            .pool_max_idle_per_host(4096)
            .build()
            .context("building the HTTP client")?;
        Ok(Http {
            base: base.trim_end_matches('/').to_owned(),
            client,
        })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request and returns the status and the body as text; a transport error is
    /// its error kind.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
        headers: &[(&str, &str)],
    ) -> Result<(u16, String), String> {
        let mut rb = self.client.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            rb = rb.header("content-type", "application/json").body(b);
        }
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        let resp = rb.send().await.map_err(|e| transport_kind(&e))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| transport_kind(&e))?;
        Ok((status, text))
    }

    /// `Ok` for `expect`, else the error kind of the response.
    pub async fn expect(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
        headers: &[(&str, &str)],
        expect: u16,
    ) -> Result<String, String> {
        let (status, text) = self.send(method, path, body, headers).await?;
        if status == expect {
            Ok(text)
        } else {
            Err(status_kind(status, &text))
        }
    }

    /// Setup helper: a request that must answer `expect`, parsed as JSON.
    pub async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
        expect: u16,
    ) -> anyhow::Result<Value> {
        let (status, text) = self
            .send(method.clone(), path, Some(body.to_string()), &[])
            .await
            .map_err(|k| anyhow::anyhow!("{method} {path}: {k}"))?;
        if status != expect {
            bail!("{method} {path}: {status} {text}");
        }
        serde_json::from_str(&text).with_context(|| format!("{method} {path}: not JSON: {text}"))
    }
}

/// `http_{status}` plus the error code of the body when there is one
/// (`http_409_insufficient_stock`).
pub fn status_kind(status: u16, body: &str) -> String {
    let code = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
    match code {
        Some(c) => format!("http_{status}_{c}"),
        None => format!("http_{status}"),
    }
}

fn transport_kind(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else {
        "transport".into()
    }
}

/// The error kind of a bus failure.
pub fn bus_kind(e: &BusError) -> String {
    match e {
        BusError::Remote(api) => format!("bus_{}", api.code.as_str()),
        BusError::Unavailable { .. } => "bus_unavailable".into(),
        BusError::Timeout { .. } => "bus_timeout".into(),
        _ => "bus_error".into(),
    }
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A `/ws` client with at most one request in flight.
pub struct Ws {
    stream: WsStream,
}

impl Ws {
    /// Connects to `{base}/ws` (`base` is the HTTP base URL), with `token` as the `token`
    /// query parameter (browsers cannot set headers on a WebSocket; the edge reads it
    /// there).
    pub async fn connect(base: &str, token: Option<&str>) -> anyhow::Result<Ws> {
        let url = format!(
            "{}/ws",
            base.replacen("http://", "ws://", 1)
                .replacen("https://", "wss://", 1)
        );
        // The token goes in the query (JWTs are URL-safe); messages show `url` without it.
        let with_token = match token {
            Some(token) => format!("{url}?token={token}"),
            None => url.clone(),
        };
        let (stream, _) = tokio::time::timeout(
            REQUEST_TIMEOUT,
            tokio_tungstenite::connect_async(with_token.as_str()),
        )
        .await
        .with_context(|| format!("connecting {url}: timed out"))?
        .with_context(|| format!("connecting {url}"))?;
        Ok(Ws { stream })
    }

    /// Sends a text frame.
    pub async fn send(&mut self, text: String) -> Result<(), String> {
        self.stream
            .send(Message::Text(text.into()))
            .await
            .map_err(|_| "ws_send".to_owned())
    }

    /// The next text frame.
    pub async fn next_text(&mut self) -> Result<String, String> {
        loop {
            match self.stream.next().await {
                Some(Ok(Message::Text(t))) => return Ok(t.to_string()),
                Some(Ok(Message::Close(_))) | None => return Err("ws_closed".into()),
                Some(Ok(_)) => continue,
                Some(Err(_)) => return Err("ws_error".into()),
            }
        }
    }

    /// Sends `frame` (which carries `"id": id`) and waits for the reply with that id,
    /// skipping pushes; `Ok` when the reply says `"ok": true`.
    pub async fn request(&mut self, id: u64, frame: String) -> Result<Value, String> {
        let round_trip = async {
            self.send(frame).await?;
            loop {
                let text = self.next_text().await?;
                let v: Value = serde_json::from_str(&text).map_err(|_| "ws_bad_frame")?;
                if v["id"].as_u64() != Some(id) {
                    continue;
                }
                if v["ok"] == Value::Bool(true) {
                    return Ok(v);
                }
                let code = v["error"]["code"].as_str().unwrap_or("unknown");
                return Err(format!("ws_{code}"));
            }
        };
        tokio::time::timeout(REQUEST_TIMEOUT, round_trip)
            .await
            .unwrap_or_else(|_| Err("timeout".into()))
    }

    /// Sends `text` and waits for the next frame (the raw echo).
    pub async fn echo(&mut self, text: String) -> Result<(), String> {
        let round_trip = async {
            self.send(text).await?;
            self.next_text().await.map(|_| ())
        };
        tokio::time::timeout(REQUEST_TIMEOUT, round_trip)
            .await
            .unwrap_or_else(|_| Err("timeout".into()))
    }

    /// Closes politely (errors ignored: the bench is done with it).
    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds_carry_the_status_and_the_code() {
        assert_eq!(
            status_kind(
                409,
                r#"{"error":{"code":"insufficient_stock","message":"x"}}"#
            ),
            "http_409_insufficient_stock"
        );
        assert_eq!(status_kind(502, "bad gateway"), "http_502");
    }
}

//! One HTTP attempt of a delivery: sign, POST, read the answer's first KiB, classify.

use crate::error::WebhookError;
use crate::ssrf;
use crate::{Settings, sign};
use cartwheel_domain::Timestamp;
use cartwheel_domain::webhook::{Attempt, Endpoint};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How much of a response is kept in the attempt log.
const RESPONSE_KEPT: usize = 1024;

/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// What an attempt's answer means for the delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// 2xx.
    Delivered,
    /// `410 Gone`: the endpoint asks to be disabled.
    Gone,
    /// Anything else; with the `Retry-After` of a 429/502/503/504.
    Failed { retry_after: Option<Duration> },
}

/// The delivery client: one HTTP/1.1 connection per attempt (no pool: deliveries of
/// one endpoint are spread over time, and a fresh connection re-resolves the name, so
/// the SSRF check sees where it points now), no redirects (a 3xx is a failure), TLS
/// with the web PKI roots and the *ring* provider the tree already builds.
#[derive(Clone)]
pub(crate) struct Client {
    tls: tokio_rustls::TlsConnector,
    allow: Arc<Vec<ipnet::IpNet>>,
    timeout: Duration,
}

/// Builds the delivery client.
pub(crate) fn client(settings: &Settings) -> Result<Client, WebhookError> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| WebhookError::Client(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Client {
        tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
        allow: Arc::new(settings.allow_networks.clone()),
        timeout: settings.request_timeout,
    })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The current time.
pub(crate) fn now() -> Timestamp {
    Timestamp(now_ms())
}

/// POSTs `payload` to the endpoint under `webhook_id`, signed by its current secrets.
pub(crate) async fn send(
    http: &Client,
    endpoint: &Endpoint,
    webhook_id: &str,
    payload: &str,
    trigger: &str,
) -> (Attempt, Outcome) {
    let at = now();
    let started = Instant::now();
    let timestamp = at.millis() / 1000;
    let signature = sign::header(
        &endpoint.signing_secrets(at),
        webhook_id,
        timestamp,
        payload.as_bytes(),
    );
    let headers = [
        ("webhook-id", webhook_id.to_owned()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signature),
    ];
    let exchange = post(http, &endpoint.url, &headers, payload);
    let result = match tokio::time::timeout(http.timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err("timed out".to_owned()),
    };
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let (status, error, response, outcome) = match result {
        Ok((status, retry_after, body)) => {
            let outcome = match status {
                200..=299 => Outcome::Delivered,
                410 => Outcome::Gone,
                429 | 502 | 503 | 504 => Outcome::Failed { retry_after },
                _ => Outcome::Failed { retry_after: None },
            };
            let error = (!(200..=299).contains(&status)).then(|| format!("HTTP {status}"));
            (Some(status), error, body, outcome)
        }
        Err(e) => (
            None,
            Some(e),
            String::new(),
            Outcome::Failed { retry_after: None },
        ),
    };
    let kind = match outcome {
        Outcome::Delivered => "delivered",
        Outcome::Gone => "gone",
        Outcome::Failed { .. } => "failed",
    };
    metrics::counter!("cartwheel_webhook_attempts_total", "outcome" => kind).increment(1);
    metrics::histogram!("cartwheel_webhook_attempt_seconds")
        .record(started.elapsed().as_secs_f64());
    let attempt = Attempt {
        at,
        status,
        latency_ms,
        error,
        response,
        trigger: trigger.to_owned(),
    };
    (attempt, outcome)
}

/// The request itself: (status, Retry-After, the first KiB of the body) or why none came.
async fn post(
    http: &Client,
    url: &str,
    headers: &[(&str, String)],
    payload: &str,
) -> Result<(u16, Option<Duration>, String), String> {
    let parsed = ssrf::parse_url(url).map_err(|e| e.to_string())?;
    let host = parsed.host_str().unwrap_or_default().to_owned();
    let bare = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let https = parsed.scheme() == "https";
    let allowed: Vec<_> = ssrf::addresses(&parsed)
        .await?
        .into_iter()
        .filter(|a| ssrf::allowed(a.ip(), &http.allow))
        .collect();
    if allowed.is_empty() {
        return Err(format!("{host} resolves to no public address"));
    }
    let mut last = String::new();
    let mut tcp = None;
    for addr in &allowed {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = format!("could not connect to {addr}: {e}"),
        }
    }
    let tcp = tcp.ok_or(last)?;
    let _ = tcp.set_nodelay(true);
    let path = match parsed.query() {
        Some(q) => format!("{}?{q}", parsed.path()),
        None => parsed.path().to_owned(),
    };
    let authority = match parsed.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    let mut request = hyper::Request::post(path)
        .header("host", authority)
        .header("content-type", "application/json")
        .header(
            "user-agent",
            concat!("Cartwheel-Webhooks/", env!("CARGO_PKG_VERSION")),
        );
    for (name, value) in headers {
        request = request.header(*name, value.as_str());
    }
    let request = request
        .body(http_body_util::Full::new(bytes::Bytes::from(
            payload.to_owned(),
        )))
        .map_err(|e| e.to_string())?;
    let response = if https {
        let name = rustls::pki_types::ServerName::try_from(bare.clone())
            .map_err(|e| format!("server name {host}: {e}"))?;
        let tls = http
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        exchange(hyper_util::rt::TokioIo::new(tls), request).await?
    } else {
        exchange(hyper_util::rt::TokioIo::new(tcp), request).await?
    };
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|secs| Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    let mut body = response.into_body();
    let mut kept = Vec::new();
    // Only the first KiB is kept; the rest is not read (the connection is dropped).
    while kept.len() < RESPONSE_KEPT {
        match http_body_util::BodyExt::frame(&mut body).await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    kept.extend_from_slice(data);
                }
            }
            Some(Err(_)) | None => break,
        }
    }
    kept.truncate(RESPONSE_KEPT);
    Ok((
        status,
        retry_after,
        String::from_utf8_lossy(&kept).into_owned(),
    ))
}

/// Sends `request` on a fresh HTTP/1.1 connection over `io`.
async fn exchange<IO>(
    io: IO,
    request: hyper::Request<http_body_util::Full<bytes::Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP: {e}"))
}

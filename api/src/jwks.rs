//! Users' keys from a JWKS endpoint (the `jwks_uri` of an OpenID Connect provider:
//! Keycloak, Auth0, Entra ID, …), for [`crate::JwtVerifier`].
//!
//! Fetched when the edge starts and cached by `kid`. A token naming a `kid` the cache does
//! not know triggers a refresh, at most once per [`JwksTiming::min_refresh`] (~10 s: a
//! flood of made-up `kid`s cannot turn the edge into a load generator against the
//! provider); the set is also refreshed every [`JwksTiming::every`] (~15 min) so revoked
//! keys go away. A fetch that fails keeps the last good set. Each key's algorithm comes
//! from its `alg`, or from its type (RSA → RS256, EC P-256 → ES256, EC P-384 → ES384,
//! OKP Ed25519 → EdDSA); keys for encryption (`"use": "enc"`) and keys of other types
//! are skipped.

use axum::http::Uri;
use http_body_util::BodyExt;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

/// The largest key set accepted (a provider's JWKS is a few KiB).
const MAX_JWKS_BYTES: usize = 1 << 20;

/// How often keys are fetched.
#[derive(Debug, Clone, Copy)]
pub struct JwksTiming {
    /// The least time between two fetches prompted by unknown `kid`s.
    pub min_refresh: Duration,
    /// How often the set is fetched anyway.
    pub every: Duration,
    /// How long one fetch may take.
    pub timeout: Duration,
}

impl Default for JwksTiming {
    fn default() -> Self {
        JwksTiming {
            min_refresh: Duration::from_secs(10),
            every: Duration::from_secs(15 * 60),
            timeout: Duration::from_secs(5),
        }
    }
}

/// Why a JWKS could not be used.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The URL is not http(s).
    #[error("CARTWHEEL_JWT_JWKS_URL must be an http:// or https:// URL, got {0:?}")]
    Url(String),
    /// The HTTP client could not be built.
    #[error("JWKS client: {0}")]
    Client(String),
    /// The endpoint did not answer with a key set.
    #[error("fetching the JWKS from {url}: {why}")]
    Fetch {
        /// The endpoint.
        url: String,
        /// What went wrong.
        why: String,
    },
}

/// One usable key.
#[derive(Clone)]
pub struct JwksKey {
    /// The algorithm tokens signed with it must name.
    pub alg: Algorithm,
    /// The key.
    pub key: DecodingKey,
}

/// The cached key set of one JWKS endpoint.
pub struct Jwks {
    url: String,
    uri: Uri,
    tls: tokio_rustls::TlsConnector,
    timing: JwksTiming,
    keys: RwLock<Arc<HashMap<String, JwksKey>>>,
    /// When the last fetch started (one fetch at a time).
    fetched: tokio::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("url", &self.url)
            .field("keys", &self.kids())
            .finish_non_exhaustive()
    }
}

impl Jwks {
    /// Fetches the set from `url` once (a failure is logged: the edge starts, and the
    /// first token with a `kid` fetches again) and keeps it fresh in the background for
    /// as long as the returned `Jwks` lives.
    pub async fn start(url: &str, timing: JwksTiming) -> Result<Arc<Jwks>, JwksError> {
        Jwks::start_with_ca(url, timing, None).await
    }

    /// [`Jwks::start`] for a provider whose certificate is signed by a private CA:
    /// `ca_pem` holds that CA's PEM certificate(s), trusted besides the web PKI roots
    /// (`CARTWHEEL_JWT_JWKS_CA`).
    pub async fn start_with_ca(
        url: &str,
        timing: JwksTiming,
        ca_pem: Option<&[u8]>,
    ) -> Result<Arc<Jwks>, JwksError> {
        let uri: Uri = url.parse().map_err(|_| JwksError::Url(url.to_owned()))?;
        if !matches!(uri.scheme_str(), Some("https" | "http")) || uri.host().is_none() {
            return Err(JwksError::Url(url.to_owned()));
        }
        let jwks = Arc::new(Jwks {
            url: url.to_owned(),
            uri,
            tls: tls_connector(ca_pem)?,
            timing,
            keys: RwLock::default(),
            fetched: tokio::sync::Mutex::new(None),
        });
        if let Err(e) = jwks.refresh().await {
            tracing::warn!(error = %e, "no users' keys yet; tokens are refused until a fetch succeeds");
        }
        tokio::spawn(keep_fresh(Arc::downgrade(&jwks), timing.every));
        Ok(jwks)
    }

    /// The key ids known now.
    pub fn kids(&self) -> Vec<String> {
        let mut kids: Vec<String> = self.current().keys().cloned().collect();
        kids.sort();
        kids
    }

    fn current(&self) -> Arc<HashMap<String, JwksKey>> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The key `kid`, fetching the set again first if it is unknown and the last fetch
    /// is older than `min_refresh`.
    pub async fn key(&self, kid: &str) -> Option<JwksKey> {
        if let Some(k) = self.current().get(kid) {
            return Some(k.clone());
        }
        if let Err(e) = self.refresh_if_due(self.timing.min_refresh).await {
            tracing::warn!(error = %e, "users' keys not refreshed; keeping the last good set");
        }
        self.current().get(kid).cloned()
    }

    async fn refresh(&self) -> Result<usize, JwksError> {
        self.refresh_if_due(Duration::ZERO).await
    }

    /// Fetches the set unless another fetch started less than `gap` ago (callers that
    /// raced here share one fetch).
    async fn refresh_if_due(&self, gap: Duration) -> Result<usize, JwksError> {
        let mut fetched = self.fetched.lock().await;
        if fetched.is_some_and(|at| at.elapsed() < gap) {
            return Ok(self.current().len());
        }
        *fetched = Some(Instant::now());
        let keys = self.fetch().await?;
        let n = keys.len();
        tracing::info!(url = %self.url, keys = n, kids = ?{
            let mut k: Vec<&String> = keys.keys().collect();
            k.sort();
            k
        }, "users' keys fetched");
        *self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(keys);
        Ok(n)
    }

    async fn fetch(&self) -> Result<HashMap<String, JwksKey>, JwksError> {
        let fail = |why: String| JwksError::Fetch {
            url: self.url.clone(),
            why,
        };
        let body = tokio::time::timeout(self.timing.timeout, self.get())
            .await
            .map_err(|_| fail(format!("no answer within {:?}", self.timing.timeout)))?
            .map_err(fail)?;
        let body: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| fail(format!("not JSON: {e}")))?;
        let Some(keys) = body.get("keys").and_then(|k| k.as_array()) else {
            return Err(fail("no \"keys\" array".to_owned()));
        };
        let usable: HashMap<String, JwksKey> = keys.iter().filter_map(usable_key).collect();
        if usable.is_empty() {
            return Err(fail("no usable signing key (with a kid)".to_owned()));
        }
        Ok(usable)
    }

    /// One HTTP/1.1 GET of the key set, over TLS for `https://`.
    async fn get(&self) -> Result<bytes::Bytes, String> {
        let host = self.uri.host().unwrap_or_default().to_owned();
        let https = self.uri.scheme_str() == Some("https");
        let port = self.uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let path = self
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let request = axum::http::Request::get(path)
            .header(
                "host",
                self.uri.authority().map_or(host.as_str(), |a| a.as_str()),
            )
            .header("accept", "application/json")
            .header("user-agent", "cartwheel-edge")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = if https {
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| format!("server name {host}: {e}"))?;
            let tls = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            send(hyper_util::rt::TokioIo::new(tls), request).await?
        } else {
            send(hyper_util::rt::TokioIo::new(tcp), request).await?
        };
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        let body = http_body_util::Limited::new(response.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the body: {e}"))?;
        Ok(body.to_bytes())
    }
}

/// Sends `request` on a fresh HTTP/1.1 connection over `io`.
async fn send<IO>(
    io: IO,
    request: axum::http::Request<http_body_util::Empty<bytes::Bytes>>,
) -> Result<axum::http::Response<hyper::body::Incoming>, String>
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

/// TLS with the web PKI roots (and the certificates of `ca_pem`, when given) and the
/// *ring* provider the tree already builds.
fn tls_connector(ca_pem: Option<&[u8]>) -> Result<tokio_rustls::TlsConnector, JwksError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(pem) = ca_pem {
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert =
                cert.map_err(|e| JwksError::Client(format!("CARTWHEEL_JWT_JWKS_CA: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| JwksError::Client(format!("CARTWHEEL_JWT_JWKS_CA: {e}")))?;
            added += 1;
        }
        if added == 0 {
            return Err(JwksError::Client(
                "CARTWHEEL_JWT_JWKS_CA holds no PEM certificate".to_owned(),
            ));
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| JwksError::Client(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Refreshes the set every `every` until the `Jwks` is dropped.
async fn keep_fresh(jwks: Weak<Jwks>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(jwks) = jwks.upgrade() else { return };
        if let Err(e) = jwks.refresh().await {
            tracing::warn!(error = %e, "users' keys not refreshed; keeping the last good set");
        }
    }
}

/// A signing key with a `kid`, its algorithm and decoding key; `None` for anything else.
fn usable_key(value: &serde_json::Value) -> Option<(String, JwksKey)> {
    let jwk: Jwk = serde_json::from_value(value.clone()).ok()?;
    let kid = jwk.common.key_id.clone()?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Some(Algorithm::ES256),
            EllipticCurve::P384 => Some(Algorithm::ES384),
            _ => None,
        },
        AlgorithmParameters::OctetKeyPair(okp) => {
            (okp.curve == EllipticCurve::Ed25519).then_some(Algorithm::EdDSA)
        }
        // Shared secrets never come from a public endpoint; other types are unknown here.
        _ => None,
    }?;
    let alg = match jwk.common.key_algorithm {
        None => by_type,
        Some(a) => signing_alg(a).filter(|a| family(*a) == family(by_type))?,
    };
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some((kid, JwksKey { alg, key }))
}

fn signing_alg(a: KeyAlgorithm) -> Option<Algorithm> {
    Some(match a {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// The key family an algorithm needs (a key's `alg` must fit its type).
fn family(a: Algorithm) -> u8 {
    match a {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => 1,
        Algorithm::ES256 | Algorithm::ES384 => 2,
        Algorithm::EdDSA => 3,
        _ => 0,
    }
}

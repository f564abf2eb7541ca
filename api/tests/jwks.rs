//! Users' keys from a real JWKS endpoint (an axum server on loopback standing in for an
//! identity provider): tokens verify by `kid` with the key's own algorithm (RS256, ES256,
//! EdDSA); a rotated-in key is fetched on its first token; unknown `kid`s fetch at most
//! once per interval; a failing endpoint keeps the last good set; an HTTPS endpoint
//! behind a private CA is trusted with that CA (`CARTWHEEL_JWT_JWKS_CA`) and not without.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use cartwheel_api::auth::Refusal;
use cartwheel_api::jwks::{Jwks, JwksTiming};
use cartwheel_api::{JwtSettings, JwtVerifier};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const RSA: &[u8] = include_bytes!("../../tests/fixtures/jwt/rsa_private.pem");
const EC: &[u8] = include_bytes!("../../tests/fixtures/jwt/ec_private.pem");
const ED: &[u8] = include_bytes!("../../tests/fixtures/jwt/ed25519_private.pem");

fn key(alg: Algorithm) -> EncodingKey {
    match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(RSA).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(EC).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(ED).unwrap(),
        other => panic!("no key for {other:?}"),
    }
}

/// The public JWK of the fixture key for `alg`, with `kid`.
fn jwk(alg: Algorithm, kid: &str) -> Value {
    let mut jwk = Jwk::from_encoding_key(&key(alg), alg).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    // Providers often leave `alg` out: the key's type chooses it.
    jwk.common.key_algorithm = None;
    serde_json::to_value(jwk).unwrap()
}

fn token(alg: Algorithm, kid: Option<&str>, sub: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 60;
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(
        &header,
        &json!({"sub": sub, "exp": exp, "iss": "https://id.test", "aud": "shop"}),
        &key(alg),
    )
    .unwrap()
}

/// A JWKS endpoint serving `keys` (or 500 while `failing`), counting its requests.
struct Provider {
    url: String,
    keys: Arc<Mutex<Vec<Value>>>,
    failing: Arc<std::sync::atomic::AtomicBool>,
    hits: Arc<AtomicU32>,
}

async fn provider(keys: Vec<Value>) -> Provider {
    let keys = Arc::new(Mutex::new(keys));
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hits = Arc::new(AtomicU32::new(0));
    let app = Router::new().route(
        "/certs",
        get({
            let (keys, failing, hits) = (keys.clone(), failing.clone(), hits.clone());
            move || {
                let (keys, failing, hits) = (keys.clone(), failing.clone(), hits.clone());
                async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    if failing.load(Ordering::SeqCst) {
                        return Err(StatusCode::INTERNAL_SERVER_ERROR);
                    }
                    let keys = keys.lock().unwrap().clone();
                    Ok(axum::Json(json!({ "keys": keys })))
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/certs", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Provider {
        url,
        keys,
        failing,
        hits,
    }
}

fn timing(min_refresh: Duration) -> JwksTiming {
    JwksTiming {
        min_refresh,
        every: Duration::from_secs(3600),
        timeout: Duration::from_secs(2),
    }
}

async fn verifier(p: &Provider, min_refresh: Duration) -> JwtVerifier {
    let jwks = Jwks::start(&p.url, timing(min_refresh)).await.unwrap();
    JwtVerifier::new(&JwtSettings {
        issuer: Some("https://id.test".into()),
        audience: Some("shop".into()),
        leeway: Duration::from_secs(5),
        jwks: Some(jwks),
        ..JwtSettings::default()
    })
    .unwrap()
}

#[tokio::test]
async fn tokens_verify_by_kid_with_the_keys_own_algorithm() {
    let p = provider(vec![
        jwk(Algorithm::RS256, "rsa-1"),
        jwk(Algorithm::ES256, "ec-1"),
        jwk(Algorithm::EdDSA, "ed-1"),
        // Not for signatures, and a shared secret: both skipped.
        json!({"kty": "RSA", "use": "enc", "kid": "enc-1", "n": "AQAB", "e": "AQAB"}),
        json!({"kty": "oct", "kid": "oct-1", "k": "c2VjcmV0"}),
    ])
    .await;
    let v = verifier(&p, Duration::from_secs(60)).await;
    for (alg, kid) in [
        (Algorithm::RS256, "rsa-1"),
        (Algorithm::ES256, "ec-1"),
        (Algorithm::EdDSA, "ed-1"),
    ] {
        let user = v.verify_token(&token(alg, Some(kid), "alice")).await;
        assert_eq!(user.map(|u| u.id), Ok("alice".to_owned()), "{alg:?}");
    }
    // A token must name its key's algorithm (no confusion between keys).
    assert_eq!(
        v.verify_token(&token(Algorithm::ES256, Some("rsa-1"), "mallory"))
            .await,
        Err(Refusal::Algorithm)
    );
    // Issuer and audience as for any key.
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 60;
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa-1".into());
    let wrong_aud = encode(
        &header,
        &json!({"sub": "alice", "exp": exp, "iss": "https://id.test", "aud": "other"}),
        &key(Algorithm::RS256),
    )
    .unwrap();
    assert_eq!(v.verify_token(&wrong_aud).await, Err(Refusal::Invalid));
    // Without a kid there is no configured key to try.
    assert_eq!(
        v.verify_token(&token(Algorithm::RS256, None, "alice"))
            .await,
        Err(Refusal::Algorithm)
    );
}

#[tokio::test]
async fn unknown_kids_fetch_at_most_once_per_interval() {
    let p = provider(vec![jwk(Algorithm::RS256, "old")]).await;
    let v = verifier(&p, Duration::from_secs(60)).await;
    assert_eq!(p.hits.load(Ordering::SeqCst), 1, "fetched at start");
    // A flood of made-up kids within the interval: no fetch at all.
    for i in 0..20 {
        let t = token(Algorithm::RS256, Some(&format!("made-up-{i}")), "x");
        assert_eq!(v.verify_token(&t).await, Err(Refusal::UnknownKey));
    }
    assert_eq!(
        p.hits.load(Ordering::SeqCst),
        1,
        "no fetch for unknown kids within 60 s"
    );
}

#[tokio::test]
async fn a_rotated_in_key_is_fetched_on_its_first_token() {
    let p = provider(vec![jwk(Algorithm::RS256, "old")]).await;
    let v = verifier(&p, Duration::ZERO).await;
    // The provider rotates in a new key: its first token fetches it.
    p.keys.lock().unwrap().push(jwk(Algorithm::ES256, "new"));
    let user = v
        .verify_token(&token(Algorithm::ES256, Some("new"), "bob"))
        .await;
    assert_eq!(user.map(|u| u.id), Ok("bob".to_owned()));
    assert_eq!(p.hits.load(Ordering::SeqCst), 2);
    // Known keys need no fetch.
    let user = v
        .verify_token(&token(Algorithm::RS256, Some("old"), "bob"))
        .await;
    assert_eq!(user.map(|u| u.id), Ok("bob".to_owned()));
    assert_eq!(p.hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_failing_endpoint_keeps_the_last_good_set() {
    let p = provider(vec![jwk(Algorithm::RS256, "k1")]).await;
    let v = verifier(&p, Duration::ZERO).await;
    p.failing.store(true, Ordering::SeqCst);
    // An unknown kid tries a fetch, which fails...
    assert_eq!(
        v.verify_token(&token(Algorithm::RS256, Some("k2"), "x"))
            .await,
        Err(Refusal::UnknownKey)
    );
    assert_eq!(p.hits.load(Ordering::SeqCst), 2);
    // ...and the known key still verifies.
    let user = v
        .verify_token(&token(Algorithm::RS256, Some("k1"), "carol"))
        .await;
    assert_eq!(user.map(|u| u.id), Ok("carol".to_owned()));
}

#[tokio::test]
async fn a_bad_url_is_refused_and_a_dead_endpoint_does_not_stop_the_start() {
    assert!(
        Jwks::start("ftp://id.test/certs", JwksTiming::default())
            .await
            .is_err()
    );
    let dead = Jwks::start("http://127.0.0.1:9/certs", timing(Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(dead.kids().is_empty());
}

/// The test CA and the server certificate it signed (for 127.0.0.1), shared with the
/// NATS TLS tests.
const TLS_CA: &[u8] = include_bytes!("../../tests/fixtures/tls/ca.pem");
const TLS_CERT: &[u8] = include_bytes!("../../tests/fixtures/tls/server.pem");
const TLS_KEY: &[u8] = include_bytes!("../../tests/fixtures/tls/server-key.pem");

/// A listener that speaks TLS with the fixture certificate (a handshake that fails is
/// dropped, as a client that does not trust the CA makes it fail).
struct TlsListener {
    tcp: tokio::net::TcpListener,
    tls: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.tls.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

#[tokio::test]
async fn an_https_provider_behind_a_private_ca_is_trusted_with_that_ca_only() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(TLS_CERT)
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(TLS_KEY).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let listener = TlsListener {
        tcp: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        tls: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    };
    let url = format!(
        "https://{}/certs",
        axum::serve::Listener::local_addr(&listener).unwrap()
    );
    let keys = json!({ "keys": [jwk(Algorithm::ES256, "ec-tls")] });
    let app = Router::new().route(
        "/certs",
        get(move || {
            let keys = keys.clone();
            async move { axum::Json(keys) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });

    let settings = |jwks| JwtSettings {
        issuer: Some("https://id.test".into()),
        audience: Some("shop".into()),
        leeway: Duration::from_secs(5),
        jwks: Some(jwks),
        ..JwtSettings::default()
    };
    let t = token(Algorithm::ES256, Some("ec-tls"), "alice");

    let trusted = Jwks::start_with_ca(&url, timing(Duration::from_secs(60)), Some(TLS_CA))
        .await
        .unwrap();
    assert_eq!(trusted.kids(), vec!["ec-tls".to_owned()]);
    let v = JwtVerifier::new(&settings(trusted)).unwrap();
    assert_eq!(
        v.verify_token(&t).await.map(|u| u.id),
        Ok("alice".to_owned())
    );

    // Without the CA the certificate is not trusted: no keys, and the token is refused.
    let untrusted = Jwks::start(&url, timing(Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(untrusted.kids().is_empty());
    let v = JwtVerifier::new(&settings(untrusted)).unwrap();
    assert_eq!(v.verify_token(&t).await, Err(Refusal::UnknownKey));

    // A CA file without a certificate is a clear error at start.
    let bad = Jwks::start_with_ca(&url, JwksTiming::default(), Some(b"not a pem")).await;
    assert!(bad.is_err());
}

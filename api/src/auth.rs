//! Identity: who is calling, from a JWT bearer token, and what they may do.
//!
//! [`Auth::Off`] is the development mode (`cartwheel up` by default): every request is
//! [`Caller::Open`] and may do anything. With [`Auth::Jwt`], the [`authenticate`]
//! middleware verifies the token of every request that carries one (the `Authorization:
//! Bearer` header, or — for `/ws` only, because browsers cannot set headers on a
//! WebSocket — a `token` query parameter) and answers `401 unauthorized` when it is not
//! valid; requests without a token are [`Caller::Anonymous`]. Handlers then ask the
//! caller: [`Caller::user`] (carts, orders, the socket), [`Caller::admin`] (catalog and
//! stock writes, order status), [`Caller::may_access`] (ownership, see `access`).
//!
//! What a token must be: signed with HS256 under the configured secret, or RS256 / ES256
//! (P-256) under the configured public key — the algorithm is chosen by the *key*, never
//! by the token, so `alg: none` and algorithm confusion (an HS256 token "signed" with the
//! public key) are refused; `exp` present and in the future (with a small leeway); `iss`
//! and `aud` equal to the configured ones when configured; `sub` a valid user id. The
//! admin role is `"admin"` in the `roles` array claim. Nothing here does I/O.

use crate::error::AppError;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cartwheel_domain::validate;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

/// The role that may change the catalog, stock and order statuses.
pub const ADMIN_ROLE: &str = "admin";

/// Default clock skew allowed on `exp` and `nbf`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// How the edge authenticates callers.
#[derive(Clone, Debug, Default)]
pub enum Auth {
    /// Development mode: no identity, everything allowed. Never on the public internet.
    #[default]
    Off,
    /// JWT bearer tokens.
    Jwt(Arc<JwtVerifier>),
}

impl Auth {
    /// Whether callers are authenticated.
    pub fn is_on(&self) -> bool {
        matches!(self, Auth::Jwt(_))
    }
}

/// Settings of [`JwtVerifier`]. Its `Debug` never shows the secret.
#[derive(Clone, Default)]
pub struct JwtSettings {
    /// HS256 shared secret.
    pub hs256_secret: Option<String>,
    /// PEM public key (RSA → RS256, EC P-256 → ES256).
    pub public_key_pem: Option<Vec<u8>>,
    /// Required `iss`.
    pub issuer: Option<String>,
    /// Required `aud`.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// Keys of an OpenID Connect provider, by `kid` (`CARTWHEEL_JWT_JWKS_URL`).
    pub jwks: Option<Arc<crate::jwks::Jwks>>,
    /// Accept the demo sign-in's tokens (`CARTWHEEL_DEMO_SIGN_IN`). They are signed with a
    /// key derived from the HS256 secret and name [`DEMO_KID`], so an edge without the
    /// flag refuses them even when it shares the secret.
    pub demo: bool,
}

/// The `kid` of the demo sign-in's tokens.
pub const DEMO_KID: &str = "cartwheel-demo";

/// The least length of the HS256 secret, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// The demo sign-in's signing key: derived from the secret, never the secret itself.
fn demo_key(secret: &str) -> Vec<u8> {
    format!("{secret}\0{DEMO_KID}").into_bytes()
}

impl std::fmt::Debug for JwtSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSettings")
            .field("hs256_secret", &self.hs256_secret.as_ref().map(|_| "***"))
            .field("public_key_pem", &self.public_key_pem.is_some())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .field("jwks", &self.jwks)
            .field("demo", &self.demo)
            .finish()
    }
}

/// Why the JWT settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// Neither a secret, a public key nor a JWKS.
    #[error(
        "JWT auth needs CARTWHEEL_JWT_JWKS_URL, CARTWHEEL_JWT_PUBLIC_KEY_FILE or CARTWHEEL_JWT_HS256_SECRET"
    )]
    NoKey,
    /// The secret is too short to be a secret.
    #[error("CARTWHEEL_JWT_HS256_SECRET must be at least 32 bytes")]
    WeakSecret,
    /// The PEM is neither an RSA nor an EC public key.
    #[error("the public key is neither an RSA nor an EC (P-256) PEM public key")]
    BadPublicKey,
}

/// Verifies bearer tokens; built once at start-up.
pub struct JwtVerifier {
    /// One (algorithm, key, rules) per accepted algorithm.
    keys: Vec<(Algorithm, DecodingKey, Validation)>,
    /// A provider's keys: a token with a `kid` is checked against that key alone.
    jwks: Option<Arc<crate::jwks::Jwks>>,
    /// The demo sign-in's key and rules, when demo tokens are accepted.
    demo: Option<(DecodingKey, Validation)>,
    /// Issuer, audience and leeway, for the rules of JWKS keys.
    settings: JwtSettings,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let algs: Vec<_> = self.keys.iter().map(|(a, _, _)| *a).collect();
        f.debug_struct("JwtVerifier")
            .field("algorithms", &algs)
            .field("jwks", &self.jwks)
            .finish_non_exhaustive()
    }
}

/// The claims the edge reads.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    roles: Vec<String>,
}

/// A verified identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The token's `sub`: the user id carts and orders belong to.
    pub id: String,
    /// Whether the token has the admin role.
    pub admin: bool,
}

/// Why a token was refused. The reason goes to the log and the metrics; the client gets
/// one sentence for all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a JWT, or a header naming an algorithm we do not know (`none`).
    Malformed,
    /// A known algorithm, but not one of those the configured keys accept.
    Algorithm,
    /// Signature, expiry, issuer, audience or a required claim.
    Invalid,
    /// `sub` is not a valid user id.
    Subject,
    /// A `kid` the provider's key set does not have (also after a refresh).
    UnknownKey,
}

impl Refusal {
    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::Algorithm => "algorithm",
            Refusal::Invalid => "invalid",
            Refusal::Subject => "subject",
            Refusal::UnknownKey => "unknown_key",
        }
    }
}

impl JwtVerifier {
    /// Builds the verifier: one accepted algorithm per configured key.
    pub fn new(s: &JwtSettings) -> Result<JwtVerifier, AuthSetupError> {
        let mut keys = Vec::new();
        if let Some(secret) = &s.hs256_secret {
            if secret.len() < MIN_SECRET_LEN {
                return Err(AuthSetupError::WeakSecret);
            }
            keys.push((
                Algorithm::HS256,
                DecodingKey::from_secret(secret.as_bytes()),
            ));
        }
        if let Some(pem) = &s.public_key_pem {
            if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
                keys.push((Algorithm::RS256, k));
            } else if let Ok(k) = DecodingKey::from_ec_pem(pem) {
                keys.push((Algorithm::ES256, k));
            } else {
                return Err(AuthSetupError::BadPublicKey);
            }
        }
        if keys.is_empty() && s.jwks.is_none() {
            return Err(AuthSetupError::NoKey);
        }
        let keys = keys
            .into_iter()
            .map(|(alg, key)| (alg, key, validation(alg, s)))
            .collect();
        let demo = match (&s.hs256_secret, s.demo) {
            (Some(secret), true) => Some((
                DecodingKey::from_secret(&demo_key(secret)),
                validation(Algorithm::HS256, s),
            )),
            _ => None,
        };
        let settings = JwtSettings {
            hs256_secret: None,
            public_key_pem: None,
            ..s.clone()
        };
        Ok(JwtVerifier {
            keys,
            jwks: s.jwks.clone(),
            demo,
            settings,
        })
    }

    /// Verifies a token and returns who it names, with the provider's keys too: a token
    /// whose header names a `kid` is checked against that key of the JWKS alone (fetched
    /// again if it is unknown), and must name the key's algorithm; others against the
    /// configured secret or public key.
    pub async fn verify_token(&self, token: &str) -> Result<User, Refusal> {
        if let Some(jwks) = &self.jwks {
            let header = jsonwebtoken::decode_header(token).map_err(|_| Refusal::Malformed)?;
            if let Some(kid) = header.kid.as_deref()
                && kid != DEMO_KID
            {
                let k = jwks.key(kid).await.ok_or(Refusal::UnknownKey)?;
                if header.alg != k.alg {
                    return Err(Refusal::Algorithm);
                }
                return claims(token, &k.key, &validation(k.alg, &self.settings));
            }
        }
        self.verify(token)
    }

    /// Verifies a token against the configured secret or public key (not the JWKS) and
    /// returns who it names.
    pub fn verify(&self, token: &str) -> Result<User, Refusal> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Refusal::Malformed)?;
        if header.kid.as_deref() == Some(DEMO_KID) {
            // Only an edge with the demo sign-in on accepts its tokens.
            let (key, rules) = self.demo.as_ref().ok_or(Refusal::UnknownKey)?;
            if header.alg != Algorithm::HS256 {
                return Err(Refusal::Algorithm);
            }
            return claims(token, key, rules);
        }
        let (_, key, rules) = self
            .keys
            .iter()
            .find(|(alg, _, _)| *alg == header.alg)
            .ok_or(Refusal::Algorithm)?;
        claims(token, key, rules)
    }
}

/// Signs HS256 tokens: `cartwheel token` under the edge's secret ([`TokenIssuer::new`]),
/// the demo sign-in (`POST /auth/demo`) under a key derived from it
/// ([`TokenIssuer::demo`]). Its `Debug` never shows a key.
pub struct TokenIssuer {
    key: jsonwebtoken::EncodingKey,
    /// `Some(DEMO_KID)` for demo tokens.
    kid: Option<&'static str>,
    issuer: Option<String>,
    audience: Option<String>,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// Why a token could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// `sub` is not a valid user id.
    #[error("sub: {0}")]
    Subject(String),
    /// The signature could not be made.
    #[error("signing the token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// A token just issued.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The compact JWT.
    pub token: String,
    /// When it expires (seconds since the epoch).
    pub expires_at: u64,
}

impl TokenIssuer {
    /// An issuer for `secret` (at least 32 bytes, as the verifier requires) that puts
    /// `issuer` and `audience` in its tokens when given.
    pub fn new(
        secret: &str,
        issuer: Option<String>,
        audience: Option<String>,
    ) -> Result<TokenIssuer, AuthSetupError> {
        TokenIssuer::with_key(secret, secret.as_bytes(), None, issuer, audience)
    }

    /// An issuer of demo tokens: signed with a key derived from `secret` and naming
    /// [`DEMO_KID`], so only edges with [`JwtSettings::demo`] accept them.
    pub fn demo(
        secret: &str,
        issuer: Option<String>,
        audience: Option<String>,
    ) -> Result<TokenIssuer, AuthSetupError> {
        TokenIssuer::with_key(secret, &demo_key(secret), Some(DEMO_KID), issuer, audience)
    }

    /// Checks `secret`'s length, then signs with `key` (the secret, or derived from it).
    fn with_key(
        secret: &str,
        key: &[u8],
        kid: Option<&'static str>,
        issuer: Option<String>,
        audience: Option<String>,
    ) -> Result<TokenIssuer, AuthSetupError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(AuthSetupError::WeakSecret);
        }
        Ok(TokenIssuer {
            key: jsonwebtoken::EncodingKey::from_secret(key),
            kid,
            issuer,
            audience,
        })
    }

    /// A token for `sub` with `roles`, valid for `ttl` from now.
    pub fn issue(&self, sub: &str, roles: &[String], ttl: Duration) -> Result<Issued, IssueError> {
        validate::id("sub", sub).map_err(|e| IssueError::Subject(e.to_string()))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let expires_at = now.saturating_add(ttl.as_secs());
        let mut claims = serde_json::json!({
            "sub": sub,
            "roles": roles,
            "iat": now,
            "exp": expires_at,
        });
        if let Some(iss) = &self.issuer {
            claims["iss"] = iss.clone().into();
        }
        if let Some(aud) = &self.audience {
            claims["aud"] = aud.clone().into();
        }
        let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
        header.kid = self.kid.map(str::to_owned);
        let token = jsonwebtoken::encode(&header, &claims, &self.key)?;
        Ok(Issued { token, expires_at })
    }
}

/// Decodes and checks a token with one key and its rules.
fn claims(token: &str, key: &DecodingKey, rules: &Validation) -> Result<User, Refusal> {
    let data = jsonwebtoken::decode::<Claims>(token, key, rules).map_err(|e| {
        tracing::debug!(error = %e, "token refused");
        Refusal::Invalid
    })?;
    let claims = data.claims;
    validate::id("sub", &claims.sub).map_err(|_| Refusal::Subject)?;
    Ok(User {
        admin: claims.roles.iter().any(|r| r == ADMIN_ROLE),
        id: claims.sub,
    })
}

/// The rules for tokens of one algorithm.
fn validation(alg: Algorithm, s: &JwtSettings) -> Validation {
    let mut v = Validation::new(alg);
    v.algorithms = vec![alg];
    v.leeway = s.leeway.as_secs();
    v.validate_exp = true;
    v.validate_nbf = true;
    let mut required = vec!["exp", "sub"];
    match &s.issuer {
        Some(iss) => {
            v.set_issuer(&[iss]);
            required.push("iss");
        }
        None => v.iss = None,
    }
    match &s.audience {
        Some(aud) => {
            v.set_audience(&[aud]);
            required.push("aud");
        }
        None => v.validate_aud = false,
    }
    v.set_required_spec_claims(&required);
    v
}

/// Who is calling, as the handlers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Auth is off (development): no identity, everything allowed.
    Open,
    /// Auth is on and the request carries no token.
    Anonymous,
    /// A verified token.
    User(User),
}

impl Caller {
    /// The user id to act as: `None` in development mode (no identity, no ownership),
    /// the token's `sub` otherwise. `401` without a token.
    pub fn user(&self) -> Result<Option<&User>, AppError> {
        match self {
            Caller::Open => Ok(None),
            Caller::Anonymous => Err(unauthorized("a bearer token is required")),
            Caller::User(u) => Ok(Some(u)),
        }
    }

    /// Passes for admins (and in development mode); `401` without a token, `403` for
    /// other users.
    pub fn admin(&self) -> Result<(), AppError> {
        match self.user()? {
            None => Ok(()),
            Some(u) if u.admin => Ok(()),
            Some(_) => Err(forbidden("this needs the admin role")),
        }
    }

    /// Whether the caller may see and change what belongs to `owner`.
    pub fn may_access(&self, owner: &str) -> bool {
        match self {
            Caller::Open => true,
            Caller::Anonymous => false,
            Caller::User(u) => u.admin || u.id == owner,
        }
    }

    /// The rate-limit and connection-cap key of an authenticated caller.
    pub fn user_key(&self) -> Option<&str> {
        match self {
            Caller::User(u) => Some(&u.id),
            _ => None,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // The middleware always sets it; without it, nobody is anybody (fail closed).
        Ok(parts
            .extensions
            .get::<Caller>()
            .cloned()
            .unwrap_or(Caller::Anonymous))
    }
}

/// The code of a `401`.
pub const UNAUTHORIZED: &str = "unauthorized";
/// The code of a `403`.
pub const FORBIDDEN: &str = "forbidden";

/// `401 unauthorized`.
pub fn unauthorized(message: &str) -> AppError {
    AppError::custom(axum::http::StatusCode::UNAUTHORIZED, UNAUTHORIZED, message)
}

/// `403 forbidden`.
pub fn forbidden(message: &str) -> AppError {
    AppError::custom(axum::http::StatusCode::FORBIDDEN, FORBIDDEN, message)
}

/// The bearer token of a request: the `Authorization` header, or on `/ws` the `token`
/// query parameter. `Err` for an `Authorization` header that is not a bearer token.
fn bearer(req: &Request) -> Result<Option<String>, ()> {
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| ())?;
        let (scheme, token) = value.split_once(' ').ok_or(())?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(());
        }
        return Ok(Some(token.trim().to_owned()));
    }
    if req.uri().path() == "/ws" {
        let token = req.uri().query().and_then(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == "token")
                .map(|(_, v)| v.to_owned())
        });
        return Ok(token.filter(|t| !t.is_empty()));
    }
    Ok(None)
}

/// Sets the request's [`Caller`], answering `401` (with `WWW-Authenticate`) for a token
/// that does not verify.
pub(crate) async fn authenticate(auth: Auth, mut req: Request, next: Next) -> Response {
    let caller = match &auth {
        Auth::Off => Caller::Open,
        Auth::Jwt(verifier) => match bearer(&req) {
            Ok(None) => Caller::Anonymous,
            Ok(Some(token)) => match verifier.verify_token(&token).await {
                Ok(user) => Caller::User(user),
                Err(reason) => return refuse(reason),
            },
            Err(()) => return refuse(Refusal::Malformed),
        },
    };
    req.extensions_mut().insert(caller);
    next.run(req).await
}

fn refuse(reason: Refusal) -> Response {
    metrics::counter!("cartwheel_auth_refused_total", "reason" => reason.as_str()).increment(1);
    let mut res = unauthorized("the bearer token is not valid")
        .with_detail(format!("token refused: {}", reason.as_str()))
        .into_response();
    res.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(r#"Bearer error="invalid_token""#),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn verifier() -> JwtVerifier {
        JwtVerifier::new(&JwtSettings {
            hs256_secret: Some(SECRET.into()),
            issuer: Some("iss-1".into()),
            audience: Some("aud-1".into()),
            leeway: Duration::from_secs(5),
            ..JwtSettings::default()
        })
        .unwrap()
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn hs(claims: serde_json::Value, secret: &str) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn a_good_token_names_its_user_and_roles() {
        let t = hs(
            json!({"sub":"alice","exp":now()+60,"iss":"iss-1","aud":"aud-1","roles":["admin"]}),
            SECRET,
        );
        assert_eq!(
            verifier().verify(&t),
            Ok(User {
                id: "alice".into(),
                admin: true
            })
        );
    }

    #[test]
    fn bad_tokens_are_refused() {
        let v = verifier();
        let ok = json!({"sub":"alice","exp":now()+60,"iss":"iss-1","aud":"aud-1"});
        let mut no_exp = ok.clone();
        no_exp.as_object_mut().unwrap().remove("exp");
        let mut expired = ok.clone();
        expired["exp"] = json!(now() - 120);
        let mut bad_sub = ok.clone();
        bad_sub["sub"] = json!("a.b");
        let mut wrong_aud = ok.clone();
        wrong_aud["aud"] = json!("other");
        for (name, token, want) in [
            ("no exp", hs(no_exp, SECRET), Refusal::Invalid),
            ("expired", hs(expired, SECRET), Refusal::Invalid),
            ("wrong aud", hs(wrong_aud, SECRET), Refusal::Invalid),
            (
                "wrong key",
                hs(ok.clone(), "another-secret-another-secret-xx"),
                Refusal::Invalid,
            ),
            ("bad sub", hs(bad_sub, SECRET), Refusal::Subject),
            ("garbage", "not.a.jwt".to_owned(), Refusal::Malformed),
        ] {
            assert_eq!(v.verify(&token), Err(want), "{name}");
        }
    }

    const EC_PRIVATE: &[u8] = include_bytes!("../../tests/fixtures/jwt/ec_private.pem");
    const EC_PUBLIC: &[u8] = include_bytes!("../../tests/fixtures/jwt/ec_public.pem");
    const RSA_PRIVATE: &[u8] = include_bytes!("../../tests/fixtures/jwt/rsa_private.pem");
    const RSA_PUBLIC: &[u8] = include_bytes!("../../tests/fixtures/jwt/rsa_public.pem");

    fn with_key(pem: &[u8]) -> JwtVerifier {
        JwtVerifier::new(&JwtSettings {
            public_key_pem: Some(pem.to_vec()),
            leeway: Duration::from_secs(5),
            ..JwtSettings::default()
        })
        .unwrap()
    }

    #[test]
    fn public_keys_choose_the_algorithm() {
        let claims = json!({"sub":"carol","exp":now()+60});
        let es = encode(
            &Header::new(Algorithm::ES256),
            &claims,
            &EncodingKey::from_ec_pem(EC_PRIVATE).unwrap(),
        )
        .unwrap();
        let rs = encode(
            &Header::new(Algorithm::RS256),
            &claims,
            &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
        )
        .unwrap();
        let ec = with_key(EC_PUBLIC);
        let rsa = with_key(RSA_PUBLIC);
        assert_eq!(ec.verify(&es).unwrap().id, "carol");
        assert_eq!(rsa.verify(&rs).unwrap().id, "carol");
        assert_eq!(ec.verify(&rs), Err(Refusal::Algorithm));
        assert_eq!(rsa.verify(&es), Err(Refusal::Algorithm));
        // Algorithm confusion: an HS256 token "signed" with the public key as the secret.
        let confused = hs(claims, std::str::from_utf8(RSA_PUBLIC).unwrap());
        assert_eq!(rsa.verify(&confused), Err(Refusal::Algorithm));
    }

    #[test]
    fn settings_never_show_the_secret() {
        let s = JwtSettings {
            hs256_secret: Some(SECRET.into()),
            ..JwtSettings::default()
        };
        let shown = format!("{s:?} {:?}", JwtVerifier::new(&s).unwrap());
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(shown.contains("***"), "{shown}");
    }

    #[test]
    fn settings_are_checked() {
        assert!(matches!(
            JwtVerifier::new(&JwtSettings::default()),
            Err(AuthSetupError::NoKey)
        ));
        let weak = JwtSettings {
            hs256_secret: Some("short".into()),
            ..JwtSettings::default()
        };
        assert!(matches!(
            JwtVerifier::new(&weak),
            Err(AuthSetupError::WeakSecret)
        ));
        let bad_pem = JwtSettings {
            public_key_pem: Some(
                b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".to_vec(),
            ),
            ..JwtSettings::default()
        };
        assert!(matches!(
            JwtVerifier::new(&bad_pem),
            Err(AuthSetupError::BadPublicKey)
        ));
    }

    #[test]
    fn callers_get_what_their_role_allows() {
        let alice = Caller::User(User {
            id: "alice".into(),
            admin: false,
        });
        assert!(alice.may_access("alice"));
        assert!(!alice.may_access("bob"));
        assert_eq!(alice.admin().unwrap_err().code(), FORBIDDEN);
        assert_eq!(Caller::Anonymous.admin().unwrap_err().code(), UNAUTHORIZED);
        assert!(Caller::Open.admin().is_ok());
        assert!(Caller::Open.may_access("anyone"));
        assert!(!Caller::Anonymous.may_access("anyone"));
    }
}

//! The edge on the public internet, black-box: JWT identity (the attack list), ownership
//! of carts and orders, the admin role, body and frame limits, WebSocket authentication,
//! origins and the per-user socket cap, and rate limits — in memory and shared by two
//! edges through Redis.

mod common;

use anyhow::Context;
use cartwheel_testkit::{NatsServer, RedisServer};
use common::{Proc, WAIT};
use futures::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use reqwest::Method;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SECRET: &str = "cartwheel-test-secret-0123456789abcdef";
const ISSUER: &str = "https://id.test";
const AUDIENCE: &str = "cartwheel";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jwt")
        .join(name)
}

fn now() -> i64 {
    i64::try_from(jsonwebtoken::get_current_timestamp()).unwrap_or(i64::MAX)
}

/// Claims that pass every rule.
fn claims(sub: &str, roles: &[&str]) -> Value {
    json!({"sub": sub, "roles": roles, "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600})
}

fn hs256(claims: &Value, secret: &str) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap_or_default()
}

fn rs256(claims: &Value, private_key: &str) -> String {
    rs256_kid(claims, private_key, None)
}

/// An RS256 token signed with the fixture `private_key`, naming `kid` in its header.
fn rs256_kid(claims: &Value, private_key: &str, kid: Option<&str>) -> String {
    let pem = std::fs::read(fixture(private_key)).unwrap_or_default();
    let key = EncodingKey::from_rsa_pem(&pem).unwrap_or_else(|_| EncodingKey::from_secret(b"x"));
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, &key).unwrap_or_default()
}

fn b64(bytes: &[u8]) -> String {
    // base64url without padding, enough for hand-made tokens.
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// One HTTP call: status, `Retry-After`, `WWW-Authenticate`, JSON body.
struct Reply {
    status: u16,
    retry_after: Option<String>,
    www_authenticate: Option<String>,
    body: Value,
}

async fn call(
    base: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> anyhow::Result<Reply> {
    let http = reqwest::Client::new();
    let mut rb = http.request(method, format!("{base}{path}"));
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let res = rb.send().await?;
    let header = |n: &str| {
        res.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (retry_after, www_authenticate) = (header("retry-after"), header("www-authenticate"));
    let status = res.status().as_u16();
    let text = res.text().await?;
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).with_context(|| format!("not JSON ({status}): {text}"))?
    };
    Ok(Reply {
        status,
        retry_after,
        www_authenticate,
        body,
    })
}

/// `cartwheel up` with JWT auth (HS256 secret and an RSA public key), small limits.
async fn secured(dir: &tempfile::TempDir, extra: &[(&str, &str)]) -> anyhow::Result<Proc> {
    let key = fixture("rsa_public.pem").display().to_string();
    let mut envs = vec![
        ("CARTWHEEL_AUTH", "jwt"),
        ("CARTWHEEL_JWT_HS256_SECRET", SECRET),
        ("CARTWHEEL_JWT_PUBLIC_KEY_FILE", key.as_str()),
        ("CARTWHEEL_JWT_ISSUER", ISSUER),
        ("CARTWHEEL_JWT_AUDIENCE", AUDIENCE),
        ("CARTWHEEL_JWT_LEEWAY_SECS", "5"),
    ];
    envs.extend_from_slice(extra);
    Proc::up(&dir.path().join("data"), &[], &envs).await
}

/// Creates and stocks a product as `admin`.
async fn stock(base: &str, admin: &str, sku: &str, qty: u64) -> anyhow::Result<()> {
    let product = json!({"sku": sku, "name": sku, "description": "", "price": 500, "currency": "EUR", "category": "test", "active": true});
    let r = call(base, Method::POST, "/products", Some(admin), Some(product)).await?;
    anyhow::ensure!(r.status == 201, "create product: {} {}", r.status, r.body);
    let r = call(
        base,
        Method::PUT,
        &format!("/inventory/{sku}"),
        Some(admin),
        Some(json!({"on_hand": qty})),
    )
    .await?;
    anyhow::ensure!(r.status == 200, "stock: {} {}", r.status, r.body);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jwt_attack_list_is_refused_with_401() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let edge = secured(&dir, &[]).await?;
    let base = edge.api().base;

    // Good tokens: HS256 under the secret, RS256 under the configured key.
    let good = claims("alice", &[]);
    for token in [hs256(&good, SECRET), rs256(&good, "rsa_private.pem")] {
        let r = call(&base, Method::GET, "/orders", Some(&token), None).await?;
        assert_eq!(r.status, 200, "{}", r.body);
    }

    let mut expired = good.clone();
    expired["exp"] = json!(now() - 3600);
    let mut no_exp = good.clone();
    no_exp.as_object_mut().context("object")?.remove("exp");
    let mut wrong_aud = good.clone();
    wrong_aud["aud"] = json!("someone-else");
    let mut wrong_iss = good.clone();
    wrong_iss["iss"] = json!("https://evil.test");
    let valid = hs256(&good, SECRET);
    let mut parts: Vec<String> = valid.split('.').map(str::to_owned).collect();
    parts[1] = b64(serde_json::to_string(&claims("mallory", &["admin"]))?.as_bytes());
    let tampered = parts.join(".");
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(serde_json::to_string(&good)?.as_bytes())
    );
    let hs384 = encode(
        &Header::new(Algorithm::HS384),
        &good,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )?;
    let public_pem = std::fs::read_to_string(fixture("rsa_public.pem"))?;
    let attacks = [
        ("alg none", none),
        ("wrong alg (HS384)", hs384),
        (
            "alg confusion (HS256 keyed with the RSA public key)",
            hs256(&good, &public_pem),
        ),
        (
            "wrong key (HS256)",
            hs256(&good, "another-secret-another-secret-0000"),
        ),
        ("wrong key (RS256)", rs256(&good, "rsa_other_private.pem")),
        ("expired", hs256(&expired, SECRET)),
        ("wrong audience", hs256(&wrong_aud, SECRET)),
        ("wrong issuer", hs256(&wrong_iss, SECRET)),
        ("missing exp", hs256(&no_exp, SECRET)),
        ("tampered payload", tampered),
        ("not a JWT", "hello".to_owned()),
    ];
    for (name, token) in &attacks {
        // On a public route too: a bad token is never silently treated as anonymous.
        for path in ["/orders", "/products"] {
            let r = call(&base, Method::GET, path, Some(token), None).await?;
            assert_eq!(r.status, 401, "{name} on {path}: {}", r.body);
            assert_eq!(r.body["error"]["code"], "unauthorized", "{name}");
            assert!(r.body["error"]["request_id"].is_string(), "{name}");
            assert_eq!(
                r.www_authenticate.as_deref(),
                Some(r#"Bearer error="invalid_token""#)
            );
        }
    }
    // A malformed Authorization header.
    let r = reqwest::Client::new()
        .get(format!("{base}/orders"))
        .header("authorization", "Basic YWxpY2U6cHc=")
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 401);

    // No token: public reads work, the rest needs one; the admin role guards writes.
    assert_eq!(
        call(&base, Method::GET, "/products", None, None)
            .await?
            .status,
        200
    );
    let r = call(&base, Method::POST, "/carts", None, Some(json!({}))).await?;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"]["code"], "unauthorized");
    let product =
        json!({"sku": "P-1", "name": "p", "price": 1, "currency": "EUR", "category": "c"});
    let r = call(
        &base,
        Method::POST,
        "/products",
        Some(&valid),
        Some(product.clone()),
    )
    .await?;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "forbidden");
    let r = call(
        &base,
        Method::PUT,
        "/inventory/P-1",
        Some(&valid),
        Some(json!({"on_hand": 5})),
    )
    .await?;
    assert_eq!(r.status, 403);
    let admin = hs256(&claims("root", &["admin"]), SECRET);
    let r = call(
        &base,
        Method::POST,
        "/products",
        Some(&admin),
        Some(product),
    )
    .await?;
    assert_eq!(r.status, 201, "{}", r.body);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_cannot_see_or_change_each_others_carts_and_orders() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let edge = secured(&dir, &[]).await?;
    let base = edge.api().base;
    let alice = hs256(&claims("alice", &[]), SECRET);
    let bob = hs256(&claims("bob", &[]), SECRET);
    let admin = hs256(&claims("root", &["admin"]), SECRET);
    stock(&base, &admin, "MUG", 10).await?;

    // The cart belongs to the token's subject; naming someone else is 403.
    let r = call(
        &base,
        Method::POST,
        "/carts",
        Some(&alice),
        Some(json!({"user_id": "bob"})),
    )
    .await?;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = call(&base, Method::POST, "/carts", Some(&alice), Some(json!({}))).await?;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["user_id"], "alice");
    let cart = r.body["id"].as_str().context("cart id")?.to_owned();
    let items = format!("/carts/{cart}/items");
    let r = call(
        &base,
        Method::POST,
        &items,
        Some(&alice),
        Some(json!({"sku": "MUG", "qty": 1})),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.body);

    // Bob gets exactly what a missing cart gets.
    let missing = call(&base, Method::GET, "/carts/nosuchcart", Some(&bob), None).await?;
    assert_eq!(missing.status, 404);
    for (method, path, body) in [
        (Method::GET, format!("/carts/{cart}"), None),
        (
            Method::POST,
            items.clone(),
            Some(json!({"sku": "MUG", "qty": 5})),
        ),
        (
            Method::PATCH,
            format!("{items}/MUG"),
            Some(json!({"qty": 9})),
        ),
        (Method::DELETE, format!("{items}/MUG"), None),
    ] {
        let r = call(&base, method.clone(), &path, Some(&bob), body).await?;
        assert_eq!(r.status, 404, "bob {method} {path}: {}", r.body);
        assert_eq!(r.body["error"]["code"], "not_found");
        assert_eq!(
            r.body["error"]["message"]
                .as_str()
                .map(|m| m.replace(&cart, "nosuchcart")),
            missing.body["error"]["message"].as_str().map(str::to_owned),
            "the answer must not tell a foreign cart from a missing one"
        );
    }
    let r = reqwest::Client::new()
        .post(format!("{base}/carts/{cart}/checkout"))
        .bearer_auth(&bob)
        .header("Idempotency-Key", "k1")
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 404);

    // Alice's cart is untouched and hers to check out.
    let r = call(
        &base,
        Method::GET,
        &format!("/carts/{cart}"),
        Some(&alice),
        None,
    )
    .await?;
    assert_eq!(r.body["items"][0]["qty"], 1);
    let r = reqwest::Client::new()
        .post(format!("{base}/carts/{cart}/checkout"))
        .bearer_auth(&alice)
        .header("Idempotency-Key", "k1")
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 201);
    let order: Value = r.json().await?;
    let order_id = order["id"].as_str().context("order id")?.to_owned();

    // Orders: Bob can neither read nor cancel Alice's, nor list them.
    for (method, path) in [
        (Method::GET, format!("/orders/{order_id}")),
        (Method::POST, format!("/orders/{order_id}/cancel")),
    ] {
        let r = call(&base, method.clone(), &path, Some(&bob), None).await?;
        assert_eq!(r.status, 404, "bob {method} {path}: {}", r.body);
    }
    let r = call(
        &base,
        Method::GET,
        "/orders?user_id=alice",
        Some(&bob),
        None,
    )
    .await?;
    assert_eq!(r.status, 403);
    let r = call(&base, Method::GET, "/orders", Some(&bob), None).await?;
    assert_eq!(r.body["items"].as_array().map(Vec::len), Some(0));
    let r = call(&base, Method::GET, "/orders", Some(&alice), None).await?;
    assert_eq!(r.body["items"][0]["id"], order_id.as_str());
    // Only admins move order statuses; admins see everyone's.
    let r = call(
        &base,
        Method::PUT,
        &format!("/orders/{order_id}/status"),
        Some(&alice),
        Some(json!({"status": "COMPLETED"})),
    )
    .await?;
    assert_eq!(r.status, 403);
    let r = call(
        &base,
        Method::GET,
        &format!("/orders/{order_id}"),
        Some(&admin),
        None,
    )
    .await?;
    assert_eq!(r.status, 200);
    let r = call(
        &base,
        Method::POST,
        &format!("/orders/{order_id}/cancel"),
        Some(&alice),
        None,
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "CANCELLED");

    // The socket: authenticated with the token query parameter; Bob's socket gets
    // not_found for Alice's cart, for a subscribe and for a command.
    let ws_url = format!("{}/ws", base.replace("http://", "ws://"));
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{ws_url}?token={bob}")).await?;
    for (id, frame) in [
        (1, json!({"id": 1, "op": "subscribe", "cart_id": cart})),
        (
            2,
            json!({"id": 2, "op": "add_item", "cart_id": cart, "sku": "MUG", "qty": 1}),
        ),
        (3, json!({"id": 3, "op": "get", "cart_id": cart})),
    ] {
        ws.send(Message::Text(frame.to_string().into())).await?;
        let reply = next_text(&mut ws).await?;
        assert_eq!(reply["id"], id);
        assert_eq!(reply["ok"], false, "{reply}");
        assert_eq!(reply["error"]["code"], "not_found", "{reply}");
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{ws_url}?token={alice}")).await?;
    ws.send(Message::Text(
        json!({"id": 1, "op": "get", "cart_id": cart})
            .to_string()
            .into(),
    ))
    .await?;
    assert_eq!(next_text(&mut ws).await?["ok"], true);
    Ok(())
}

async fn next_text<S>(ws: &mut S) -> anyhow::Result<Value>
where
    S: StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .context("no frame in time")?
        {
            Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t)?),
            Some(Ok(Message::Close(c))) => anyhow::bail!("closed: {c:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => anyhow::bail!("websocket error: {e}"),
            None => anyhow::bail!("websocket ended"),
        }
    }
}

/// The HTTP status of a refused upgrade, or 101.
async fn upgrade_status(url: &str, headers: &[(&str, &str)]) -> anyhow::Result<u16> {
    let mut req = url.into_client_request()?;
    for (k, v) in headers {
        req.headers_mut().insert(
            reqwest::header::HeaderName::from_bytes(k.as_bytes())?,
            v.parse()?,
        );
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((mut ws, res)) => {
            let _ = ws.close(None).await;
            Ok(res.status().as_u16())
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => Ok(res.status().as_u16()),
        Err(e) => Err(e.into()),
    }
}

/// A socket to `url`, asking again while the edge answers 429 (a place held by a socket
/// it has not seen close yet), up to [`WAIT`].
async fn connect_when_free(
    url: &str,
) -> anyhow::Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match tokio_tungstenite::connect_async(url).await {
            Ok((ws, _)) => return Ok(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(res))
                if res.status() == 429 && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_frames_origins_and_sockets_are_capped() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let edge = secured(
        &dir,
        &[
            ("CARTWHEEL_MAX_BODY_BYTES", "2048"),
            ("CARTWHEEL_MAX_WS_FRAME_BYTES", "2048"),
            ("CARTWHEEL_WS_MAX_PER_USER", "2"),
            ("CARTWHEEL_ALLOWED_ORIGINS", "https://shop.example"),
        ],
    )
    .await?;
    let base = edge.api().base;
    let alice = hs256(&claims("alice", &[]), SECRET);

    // 413 with the JSON error shape, before the body is read.
    let big = json!({"user_id": "x".repeat(4096)});
    let r = call(&base, Method::POST, "/carts", Some(&alice), Some(big)).await?;
    assert_eq!(r.status, 413);
    assert_eq!(r.body["error"]["code"], "payload_too_large");

    let ws_url = format!("{}/ws", base.replace("http://", "ws://"));
    let with_token = format!("{ws_url}?token={alice}");
    // No token: refused before the upgrade. A bearer header works like the query.
    assert_eq!(upgrade_status(&ws_url, &[]).await?, 401);
    let bearer = format!("Bearer {alice}");
    assert_eq!(
        upgrade_status(&ws_url, &[("authorization", &bearer)]).await?,
        101
    );
    // Origins: foreign refused, the configured one and the edge's own accepted.
    assert_eq!(
        upgrade_status(&with_token, &[("origin", "https://evil.example")]).await?,
        403
    );
    assert_eq!(
        upgrade_status(&with_token, &[("origin", "https://shop.example")]).await?,
        101
    );
    let own = base.clone();
    assert_eq!(upgrade_status(&with_token, &[("origin", &own)]).await?, 101);

    // At most two live sockets per user; a closed one frees its place. The sockets above
    // were closed, and the edge frees their places once it has seen the close.
    let mut first = connect_when_free(&with_token).await?;
    let second = connect_when_free(&with_token).await?;
    assert_eq!(upgrade_status(&with_token, &[]).await?, 429);
    let bob = hs256(&claims("bob", &[]), SECRET);
    assert_eq!(
        upgrade_status(&format!("{ws_url}?token={bob}"), &[]).await?,
        101
    );
    drop(second);
    cartwheel_testkit::wait_for("a socket place to free up", WAIT, || async {
        upgrade_status(&with_token, &[]).await.ok() == Some(101)
    })
    .await?;

    // A frame over the cap closes the socket with 1009.
    let huge = json!({"id": 1, "op": "get", "cart_id": "x".repeat(4096)}).to_string();
    first.send(Message::Text(huge.into())).await?;
    let code = loop {
        match tokio::time::timeout(WAIT, first.next())
            .await
            .context("no close")?
        {
            Some(Ok(Message::Close(c))) => break c.map(|c| u16::from(c.code)),
            Some(Ok(_)) => continue,
            _ => break None,
        }
    };
    assert_eq!(code, Some(1009));
    Ok(())
}

/// Sends GETs until one is refused; returns how many passed and the refusal.
async fn until_limited(bases: &[&str], tries: usize) -> anyhow::Result<(usize, Reply)> {
    for i in 0..tries {
        let base = bases[i % bases.len()];
        let r = call(base, Method::GET, "/products", None, None).await?;
        if r.status == 429 {
            return Ok((i, r));
        }
        anyhow::ensure!(r.status == 200, "{} {}", r.status, r.body);
    }
    anyhow::bail!("no 429 after {tries} requests")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_over_the_rate_gets_429_with_retry_after() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let edge = Proc::up(
        &dir.path().join("data"),
        &[],
        &[
            ("CARTWHEEL_RATE_LIMIT_RPS", "1"),
            ("CARTWHEEL_RATE_LIMIT_BURST", "5"),
        ],
    )
    .await?;
    let base = edge.api().base;
    let (passed, refused) = until_limited(&[&base], 20).await?;
    assert!((5..=6).contains(&passed), "burst of 5, {passed} passed");
    assert_eq!(refused.body["error"]["code"], "rate_limited");
    let retry: u64 = refused.retry_after.context("Retry-After")?.parse()?;
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    // Probes are never limited.
    assert_eq!(
        call(&base, Method::GET, "/healthz", None, None)
            .await?
            .status,
        200
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_edges_share_one_budget_through_redis() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let redis = RedisServer::start().await?;
    let dir = tempfile::tempdir()?;
    let _node = Proc::node(&nats.url(), dir.path().join("node.log"), &[]).await?;
    let url = redis.url();
    let limits = [
        ("CARTWHEEL_RATE_LIMIT_RPS", "1"),
        ("CARTWHEEL_RATE_LIMIT_BURST", "6"),
        ("CARTWHEEL_RATE_LIMIT_REDIS", url.as_str()),
    ];
    let a = Proc::edge_with(&nats.url(), dir.path().join("a.log"), &limits).await?;
    let b = Proc::edge_with(&nats.url(), dir.path().join("b.log"), &limits).await?;
    a.wait_ready().await?;
    b.wait_ready().await?;
    // /readyz is exempt, so the budget is whole. Alternate edges: the sixth request
    // overall spends it, wherever it went (per-edge limits would allow twelve).
    let (passed, refused) = until_limited(&[&a.api().base, &b.api().base], 20).await?;
    assert!(
        (6..=7).contains(&passed),
        "one shared burst of 6, {passed} passed"
    );
    assert!(refused.retry_after.is_some());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_needs_an_explicit_auth_choice_and_up_says_it_is_open() -> anyhow::Result<()> {
    refused_start(&[], "CARTWHEEL_AUTH is not set").await?;

    let dir = tempfile::tempdir()?;
    let up = Proc::up(&dir.path().join("data"), &[], &[]).await?;
    let log = up.child.log_contents();
    assert!(
        log.contains("CARTWHEEL_AUTH=off: DEVELOPMENT MODE"),
        "{log}"
    );
    Ok(())
}

/// A stand-in identity provider: its JWKS (`/certs`) with the RSA fixture key as `kid`
/// "idp-1", and the number of times it was fetched.
async fn identity_provider() -> anyhow::Result<(String, Arc<std::sync::atomic::AtomicU32>)> {
    let pem = std::fs::read(fixture("rsa_private.pem"))?;
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(
        &EncodingKey::from_rsa_pem(&pem)?,
        Algorithm::RS256,
    )?;
    jwk.common.key_id = Some("idp-1".into());
    let body = json!({"keys": [jwk]});
    let hits = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let app = axum::Router::new().route(
        "/certs",
        axum::routing::get({
            let hits = hits.clone();
            move || {
                hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = body.clone();
                async move { axum::Json(body) }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/certs", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, hits))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_tokens_verify_against_the_identity_providers_jwks() -> anyhow::Result<()> {
    let (jwks_url, hits) = identity_provider().await?;
    let dir = tempfile::tempdir()?;
    let edge = Proc::up(
        &dir.path().join("data"),
        &[],
        &[
            ("CARTWHEEL_AUTH", "jwt"),
            ("CARTWHEEL_JWT_JWKS_URL", jwks_url.as_str()),
            ("CARTWHEEL_JWT_ISSUER", ISSUER),
            ("CARTWHEEL_JWT_AUDIENCE", AUDIENCE),
        ],
    )
    .await?;
    let base = edge.api().base;
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "fetched at start"
    );
    // The provider's key verifies a user's token: the user gets a cart of their own.
    let alice = rs256_kid(&claims("alice", &[]), "rsa_private.pem", Some("idp-1"));
    let r = call(&base, Method::POST, "/carts", Some(&alice), Some(json!({}))).await?;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["user_id"], "alice");
    // A kid the provider does not have, or a key it did not sign with: 401.
    let unknown = rs256_kid(&claims("alice", &[]), "rsa_private.pem", Some("idp-9"));
    let r = call(
        &base,
        Method::POST,
        "/carts",
        Some(&unknown),
        Some(json!({})),
    )
    .await?;
    assert_eq!(r.status, 401, "{}", r.body);
    let forged = rs256_kid(
        &claims("alice", &[]),
        "rsa_other_private.pem",
        Some("idp-1"),
    );
    let r = call(
        &base,
        Method::POST,
        "/carts",
        Some(&forged),
        Some(json!({})),
    )
    .await?;
    assert_eq!(r.status, 401, "{}", r.body);
    // The unknown kid was looked up at most once more (a refresh is rate-limited).
    assert!(hits.load(std::sync::atomic::Ordering::SeqCst) <= 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cartwheel_token_prints_tokens_the_edge_accepts() -> anyhow::Result<()> {
    let token = |args: &[&str], secret: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cartwheel"));
        cmd.arg("token")
            .args(args)
            .env_remove("CARTWHEEL_JWT_HS256_SECRET");
        if let Some(s) = secret {
            cmd.env("CARTWHEEL_JWT_HS256_SECRET", s);
        }
        cmd.args(["--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE]);
        let out = cmd.output().expect("cartwheel token runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let dir = tempfile::tempdir()?;
    let edge = secured(&dir, &[]).await?;
    let base = edge.api().base;
    let (ok, alice, err) = token(&["--sub", "alice", "--ttl", "10m"], Some(SECRET));
    assert!(ok, "{err}");
    let r = call(&base, Method::POST, "/carts", Some(&alice), Some(json!({}))).await?;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["user_id"], "alice");
    // Not an admin: no product writes; with --role admin, yes.
    let product = json!({"sku": "TOK", "name": "t", "description": "", "price": 100, "currency": "EUR", "category": "c", "active": true});
    let r = call(
        &base,
        Method::POST,
        "/products",
        Some(&alice),
        Some(product.clone()),
    )
    .await?;
    assert_eq!(r.status, 403, "{}", r.body);
    let (ok, admin, err) = token(&["--sub", "ops", "--role", "admin"], Some(SECRET));
    assert!(ok, "{err}");
    let r = call(
        &base,
        Method::POST,
        "/products",
        Some(&admin),
        Some(product),
    )
    .await?;
    assert_eq!(r.status, 201, "{}", r.body);
    // Clear errors: no secret, a weak one, a bad user id, a bad lifetime.
    for (args, secret, says) in [
        (vec!["--sub", "alice"], None, "CARTWHEEL_JWT_HS256_SECRET"),
        (vec!["--sub", "alice"], Some("short"), "at least 32 bytes"),
        (vec!["--sub", "al ice"], Some(SECRET), "--sub"),
        (vec!["--sub", "alice", "--ttl", "5y"], Some(SECRET), "unit"),
    ] {
        let (ok, out, err) = token(&args, secret);
        assert!(!ok, "{args:?} printed {out}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains(SECRET), "the secret in an error: {err}");
    }
    Ok(())
}

/// The exit of `cartwheel edge` with `envs` (NATS unreachable: settings fail first).
async fn refused_start(envs: &[(&str, &str)], says: &str) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("edge.log");
    let mut all = vec![
        ("RUST_BACKTRACE", "0"),
        ("CARTWHEEL_NATS_URL", "nats://127.0.0.1:1"),
    ];
    all.extend_from_slice(envs);
    let mut edge = cartwheel_testkit::ChildProcess::spawn(common::bin(), ["edge"], all, &log)?;
    let status = edge.wait_exit(WAIT).await?.context("edge did not exit")?;
    assert!(!status.success(), "{envs:?} started");
    assert!(
        edge.log_contents().contains(says),
        "{}",
        edge.log_contents()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_sign_in_is_for_development_and_issues_working_tokens() -> anyhow::Result<()> {
    // Refused with an identity provider, without a secret to sign with, and with auth off.
    let key = fixture("rsa_public.pem").display().to_string();
    refused_start(
        &[
            ("CARTWHEEL_AUTH", "jwt"),
            ("CARTWHEEL_JWT_HS256_SECRET", SECRET),
            ("CARTWHEEL_JWT_JWKS_URL", "http://127.0.0.1:9/certs"),
            ("CARTWHEEL_DEMO_SIGN_IN", "true"),
        ],
        "refused together with CARTWHEEL_JWT_JWKS_URL",
    )
    .await?;
    refused_start(
        &[
            ("CARTWHEEL_AUTH", "jwt"),
            ("CARTWHEEL_JWT_PUBLIC_KEY_FILE", key.as_str()),
            ("CARTWHEEL_DEMO_SIGN_IN", "true"),
        ],
        "needs CARTWHEEL_JWT_HS256_SECRET",
    )
    .await?;
    refused_start(
        &[
            ("CARTWHEEL_AUTH", "off"),
            ("CARTWHEEL_DEMO_SIGN_IN", "true"),
        ],
        "need CARTWHEEL_AUTH=jwt",
    )
    .await?;

    // Off by default: the page is told so, and the route does nothing.
    let dir = tempfile::tempdir()?;
    let plain = secured(&dir, &[]).await?;
    let base = plain.api().base.clone();
    let r = call(&base, Method::GET, "/auth/config", None, None).await?;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        json!({"auth": "jwt", "demo": false, "login_url": null})
    );
    let r = call(
        &base,
        Method::POST,
        "/auth/demo",
        None,
        Some(json!({"role": "admin"})),
    )
    .await?;
    assert_eq!(r.status, 404, "{}", r.body);
    plain.terminate().await?;

    // On: each sign-in is a new user; the admin's token may write the catalog, the
    // shopper's may not; a bad role changes nothing.
    let dir = tempfile::tempdir()?;
    let demo = secured(
        &dir,
        &[
            ("CARTWHEEL_DEMO_SIGN_IN", "true"),
            (
                "CARTWHEEL_LOGIN_URL",
                "https://id.example/auth?client_id=shop",
            ),
        ],
    )
    .await?;
    let base = demo.api().base.clone();
    let r = call(&base, Method::GET, "/auth/config", None, None).await?;
    assert_eq!(
        r.body,
        json!({"auth": "jwt", "demo": true, "login_url": "https://id.example/auth?client_id=shop"})
    );
    let admin = call(
        &base,
        Method::POST,
        "/auth/demo",
        None,
        Some(json!({"role": "admin"})),
    )
    .await?;
    assert_eq!(admin.status, 200, "{}", admin.body);
    assert_eq!(admin.body["roles"], json!(["admin"]));
    let admin_token = admin.body["token"].as_str().context("token")?.to_owned();
    stock(&base, &admin_token, "DEMO-1", 3).await?;
    let shopper = call(
        &base,
        Method::POST,
        "/auth/demo",
        None,
        Some(json!({"role": "shopper"})),
    )
    .await?;
    let shopper_id = shopper.body["user_id"]
        .as_str()
        .context("user_id")?
        .to_owned();
    assert!(shopper_id.starts_with("demo-shopper-"), "{shopper_id}");
    let shopper_token = shopper.body["token"].as_str().context("token")?.to_owned();
    let again = call(
        &base,
        Method::POST,
        "/auth/demo",
        None,
        Some(json!({"role": "shopper"})),
    )
    .await?;
    assert_ne!(again.body["user_id"], shopper.body["user_id"]);
    let cart = call(
        &base,
        Method::POST,
        "/carts",
        Some(&shopper_token),
        Some(json!({})),
    )
    .await?;
    assert_eq!(cart.status, 201, "{}", cart.body);
    assert_eq!(cart.body["user_id"], shopper_id.as_str());
    let write = call(
        &base,
        Method::PUT,
        "/inventory/DEMO-1",
        Some(&shopper_token),
        Some(json!({"on_hand": 99})),
    )
    .await?;
    assert_eq!(write.status, 403, "{}", write.body);
    let bad = call(
        &base,
        Method::POST,
        "/auth/demo",
        None,
        Some(json!({"role": "root"})),
    )
    .await?;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert_eq!(bad.body["error"]["code"], "invalid_input");
    // Tokens under the secret itself still work beside the demo ones.
    let real = hs256(&claims("rita", &["admin"]), SECRET);
    let r = call(&base, Method::GET, "/cluster", Some(&real), None).await?;
    assert_eq!(r.status, 200, "{}", r.body);
    demo.terminate().await?;

    // A demo token is no good on an edge without the demo sign-in, even one with the
    // same secret: demo tokens are signed with a key derived from it.
    let dir = tempfile::tempdir()?;
    let plain = secured(&dir, &[]).await?;
    let base = plain.api().base.clone();
    let r = call(&base, Method::GET, "/cluster", Some(&admin_token), None).await?;
    assert_eq!(r.status, 401, "{}", r.body);
    let r = call(&base, Method::GET, "/cluster", Some(&real), None).await?;
    assert_eq!(r.status, 200, "{}", r.body);
    plain.terminate().await?;
    Ok(())
}

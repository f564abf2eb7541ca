//! Rate limits per caller and the cap on WebSocket connections per user.
//!
//! A caller is its user (`user:{sub}`) when the request carries a valid token, else its
//! IP address (`ip:{addr}`; with `trust_forwarded_for`, the last address of
//! `X-Forwarded-For`, i.e. the one our own load balancer saw). Each caller gets
//! `burst` requests at once, refilled at `rps` per second (GCRA, the "generic cell rate
//! algorithm"); a request over the limit is answered `429 rate_limited` with
//! `Retry-After` (whole seconds, rounded up) and never reaches a node.
//!
//! [`RateLimiter::memory`] keeps the cells in this edge ([`governor`]): each edge limits on
//! its own. [`RateLimiter::redis`] keeps them in Redis with one atomic script, so every
//! edge shares one budget per caller. If Redis fails or is slow, the request is let
//! through (and counted in `cartwheel_rate_limit_errors_total`): a limiter outage must
//! not become a shop outage.
//!
//! Health probes and `/metrics` are never limited.

use crate::auth::Caller;
use crate::error::AppError;
use crate::state::AppState;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter as Governor};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Longest wait for Redis before the request is let through.
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);
/// Every this many checks, the in-memory limiter forgets callers that are full again.
const CLEANUP_EVERY: u64 = 4096;

/// GCRA in one atomic step. KEYS[1]: the caller's cell; ARGV[1]: the emission interval
/// (µs per request); ARGV[2]: the burst. Returns 0 when allowed, else the µs to wait.
/// The server's clock is the only clock, so edges with skewed clocks agree.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = interval * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - tolerance
if now < allow_at then
  return math.ceil(allow_at - now)
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return 0
";

type Keyed = Governor<String, DefaultKeyedStateStore<String>, DefaultClock>;

/// Settings of a limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests per second, sustained.
    pub rps: NonZeroU32,
    /// Requests at once.
    pub burst: NonZeroU32,
}

/// The per-caller request limiter of an edge (cheap to clone).
#[derive(Clone, Default)]
pub struct RateLimiter {
    inner: Option<Arc<Backend>>,
}

enum Backend {
    Memory {
        limiter: Keyed,
        checks: AtomicU64,
    },
    Redis {
        conn: redis::aio::ConnectionManager,
        script: redis::Script,
        prefix: String,
        interval_us: u64,
        burst: u32,
    },
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.inner.as_deref() {
            None => "off",
            Some(Backend::Memory { .. }) => "memory",
            Some(Backend::Redis { .. }) => "redis",
        };
        f.debug_struct("RateLimiter").field("kind", &kind).finish()
    }
}

impl RateLimiter {
    /// No limit.
    pub fn off() -> RateLimiter {
        RateLimiter { inner: None }
    }

    /// Limits kept in this process.
    pub fn memory(rate: Rate) -> RateLimiter {
        let quota = Quota::per_second(rate.rps).allow_burst(rate.burst);
        RateLimiter {
            inner: Some(Arc::new(Backend::Memory {
                limiter: Governor::keyed(quota),
                checks: AtomicU64::new(0),
            })),
        }
    }

    /// Limits shared by every edge through Redis at `url`; keys are `{prefix}:rl:{caller}`.
    /// Connects now, so a wrong URL fails at start-up.
    pub async fn redis(
        url: &str,
        prefix: &str,
        rate: Rate,
    ) -> Result<RateLimiter, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let conn = tokio::time::timeout(
            Duration::from_secs(5),
            redis::aio::ConnectionManager::new(client),
        )
        .await
        .map_err(|_| {
            redis::RedisError::from((redis::ErrorKind::Io, "timed out connecting to Redis"))
        })??;
        Ok(RateLimiter {
            inner: Some(Arc::new(Backend::Redis {
                conn,
                script: redis::Script::new(GCRA),
                prefix: format!("{prefix}:rl"),
                interval_us: (1_000_000 / u64::from(rate.rps.get())).max(1),
                burst: rate.burst.get(),
            })),
        })
    }

    /// Whether limits apply.
    pub fn is_on(&self) -> bool {
        self.inner.is_some()
    }

    /// Takes one request from `key`'s budget: `Err(wait)` when it is spent.
    pub async fn check(&self, key: &str) -> Result<(), Duration> {
        match self.inner.as_deref() {
            None => Ok(()),
            Some(Backend::Memory { limiter, checks }) => {
                if checks.fetch_add(1, Ordering::Relaxed) % CLEANUP_EVERY == CLEANUP_EVERY - 1 {
                    limiter.retain_recent();
                    limiter.shrink_to_fit();
                }
                limiter
                    .check_key(&key.to_owned())
                    .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
            }
            Some(Backend::Redis {
                conn,
                script,
                prefix,
                interval_us,
                burst,
            }) => {
                let mut conn = conn.clone();
                let mut invocation = script.key(format!("{prefix}:{key}"));
                invocation.arg(*interval_us).arg(*burst);
                let call = invocation.invoke_async::<u64>(&mut conn);
                match tokio::time::timeout(REDIS_TIMEOUT, call).await {
                    Ok(Ok(0)) => Ok(()),
                    Ok(Ok(wait_us)) => Err(Duration::from_micros(wait_us)),
                    Ok(Err(e)) => {
                        metrics::counter!("cartwheel_rate_limit_errors_total").increment(1);
                        tracing::warn!(error = %e, "rate limiter: Redis failed; letting the request through");
                        Ok(())
                    }
                    Err(_) => {
                        metrics::counter!("cartwheel_rate_limit_errors_total").increment(1);
                        tracing::warn!("rate limiter: Redis too slow; letting the request through");
                        Ok(())
                    }
                }
            }
        }
    }
}

/// The address a request came from: the last `X-Forwarded-For` entry when the edge sits
/// behind a trusted proxy, else the TCP peer.
pub(crate) fn client_ip(
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
    trust_forwarded_for: bool,
) -> Option<IpAddr> {
    if trust_forwarded_for {
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| s.trim().parse::<IpAddr>().ok())
            .next_back();
        if forwarded.is_some() {
            return forwarded;
        }
    }
    peer.map(|p| p.ip())
}

/// The limiter key of a request.
pub(crate) fn caller_key(caller: &Caller, ip: Option<IpAddr>) -> String {
    match (caller.user_key(), ip) {
        (Some(user), _) => format!("user:{user}"),
        (None, Some(ip)) => format!("ip:{ip}"),
        (None, None) => "ip:unknown".to_owned(),
    }
}

/// Paths that are never limited.
fn exempt(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// `429` with `Retry-After` when the caller's budget is spent.
pub(crate) async fn rate_limit(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let limiter = &state.config().rate_limit;
    if !limiter.is_on() || exempt(req.uri().path()) {
        return next.run(req).await;
    }
    let caller = req
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or(Caller::Anonymous);
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let ip = client_ip(req.headers(), peer, state.config().trust_forwarded_for);
    let key = caller_key(&caller, ip);
    match limiter.check(&key).await {
        Ok(()) => next.run(req).await,
        Err(wait) => {
            let kind = if caller.user_key().is_some() {
                "user"
            } else {
                "ip"
            };
            metrics::counter!("cartwheel_rate_limited_total", "caller" => kind).increment(1);
            too_many(wait)
        }
    }
}

/// `429 rate_limited` with `Retry-After`.
pub(crate) fn too_many(wait: Duration) -> Response {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let secs = secs.max(1);
    let mut res =
        AppError::rate_limited(format!("too many requests; retry in {secs} s")).into_response();
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        res.headers_mut().insert(header::RETRY_AFTER, v);
    }
    res
}

/// Live WebSocket connections per user, capped.
#[derive(Debug, Default)]
pub(crate) struct SocketCounts {
    counts: Mutex<HashMap<String, usize>>,
}

/// One counted connection; uncounted when dropped.
pub(crate) struct SocketSlot {
    counts: Arc<SocketCounts>,
    user: String,
}

impl SocketCounts {
    /// Counts a new connection of `user`, or `None` when the user already has `max`.
    pub(crate) fn acquire(self: &Arc<Self>, user: &str, max: usize) -> Option<SocketSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let n = counts.entry(user.to_owned()).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(SocketSlot {
            counts: self.clone(),
            user: user.to_owned(),
        })
    }
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let mut counts = self
            .counts
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = counts.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(rps: u32, burst: u32) -> Rate {
        Rate {
            rps: NonZeroU32::new(rps).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
        }
    }

    #[tokio::test]
    async fn memory_limits_each_key_on_its_own() {
        let l = RateLimiter::memory(rate(1, 3));
        for _ in 0..3 {
            assert!(l.check("ip:1").await.is_ok());
        }
        let wait = l.check("ip:1").await.unwrap_err();
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert!(l.check("ip:2").await.is_ok());
        assert!(RateLimiter::off().check("x").await.is_ok());
    }

    #[test]
    fn forwarded_for_is_used_only_when_trusted() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("1.1.1.1, 2.2.2.2"),
        );
        let peer = Some(SocketAddr::from(([10, 0, 0, 1], 5000)));
        assert_eq!(client_ip(&h, peer, false), Some([10, 0, 0, 1].into()));
        assert_eq!(client_ip(&h, peer, true), Some([2, 2, 2, 2].into()));
        assert_eq!(
            client_ip(&HeaderMap::new(), peer, true),
            Some([10, 0, 0, 1].into())
        );
    }

    #[test]
    fn retry_after_rounds_up() {
        let res = too_many(Duration::from_millis(1500));
        assert_eq!(res.headers()[header::RETRY_AFTER], "2");
        let res = too_many(Duration::from_millis(1));
        assert_eq!(res.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn socket_slots_are_capped_and_released() {
        let counts = Arc::new(SocketCounts::default());
        let a = counts.acquire("u", 2).unwrap();
        let _b = counts.acquire("u", 2).unwrap();
        assert!(counts.acquire("u", 2).is_none());
        drop(a);
        assert!(counts.acquire("u", 2).is_some());
    }
}

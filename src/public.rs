//! What makes a process fit for the public internet, built from configuration: the
//! edge's identity, limits and origins ([`edge_config`]), and a node's observability —
//! its Prometheus series, its optional `/metrics` listener and its registration with the
//! NATS services API ([`NodeExtras`]).

use crate::config::{AuthMode, EdgeOpts};
use anyhow::{Context, bail};
use cartwheel_actors::Node;
use cartwheel_actors::discovery::{self, Registration};
use cartwheel_api::auth::TokenIssuer;
use cartwheel_api::{
    Auth, EdgeConfig, JwtSettings, JwtVerifier, Metrics, Rate, RateLimiter, SignIn,
};
use cartwheel_bus::BusClient;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Which process the edge runs in: defaults differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    /// `cartwheel up`: development defaults (auth off, no rate limit).
    Up,
    /// `cartwheel edge`: production defaults (an explicit auth choice, rate limits on).
    Edge,
}

/// Requests per second per caller of `cartwheel edge` when not configured.
const EDGE_DEFAULT_RPS: u32 = 20;

/// The banner `up` prints when it runs without authentication.
const AUTH_OFF_BANNER: &str = "\
================================================================================
 CARTWHEEL_AUTH=off: DEVELOPMENT MODE. No authentication: anyone who can reach
 this port can read and change every cart, order, product and stock level.
 Never expose it. For real traffic set CARTWHEEL_AUTH=jwt (see README).
================================================================================";

/// The edge settings of `opts` for `process`. `prefix` namespaces the Redis rate-limit
/// keys; `cart_store` (CARTWHEEL_CART_STORE) is reused for rate limits when it is a
/// Redis URL and no CARTWHEEL_RATE_LIMIT_REDIS is given.
pub async fn edge_config(
    opts: &EdgeOpts,
    process: Process,
    prefix: &str,
    cart_store: Option<&str>,
) -> anyhow::Result<EdgeConfig> {
    let auth = match (opts.auth, process) {
        (Some(mode), _) => mode,
        (None, Process::Up) => AuthMode::Off,
        (None, Process::Edge) => bail!(
            "CARTWHEEL_AUTH is not set: choose `jwt` (with CARTWHEEL_JWT_JWKS_URL, \
             CARTWHEEL_JWT_PUBLIC_KEY_FILE or CARTWHEEL_JWT_HS256_SECRET) for real traffic, \
             or `off` for development only"
        ),
    };
    // Settings first: a sign-in that contradicts them fails before anything is fetched.
    let sign_in = sign_in(opts, auth == AuthMode::Jwt)?;
    let auth = match auth {
        AuthMode::Off => {
            eprintln!("{AUTH_OFF_BANNER}");
            tracing::warn!(
                "authentication is OFF (CARTWHEEL_AUTH=off): every cart and order is open to anyone"
            );
            Auth::Off
        }
        AuthMode::Jwt => {
            let public_key_pem = match &opts.jwt_public_key_file {
                Some(path) => Some(
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
                ),
                None => None,
            };
            let jwks_ca = match &opts.jwt_jwks_ca {
                Some(path) => Some(
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
                ),
                None => None,
            };
            if jwks_ca.is_some()
                && opts
                    .jwt_jwks_url
                    .as_deref()
                    .is_some_and(|u| u.starts_with("http://"))
            {
                bail!("CARTWHEEL_JWT_JWKS_CA is set but CARTWHEEL_JWT_JWKS_URL is plain http://");
            }
            let jwks = match &opts.jwt_jwks_url {
                Some(url) => Some(
                    cartwheel_api::jwks::Jwks::start_with_ca(
                        url,
                        cartwheel_api::jwks::JwksTiming::default(),
                        jwks_ca.as_deref(),
                    )
                    .await?,
                ),
                None if jwks_ca.is_some() => {
                    bail!("CARTWHEEL_JWT_JWKS_CA is set without CARTWHEEL_JWT_JWKS_URL")
                }
                None => None,
            };
            let verifier = JwtVerifier::new(&JwtSettings {
                hs256_secret: opts.jwt_hs256_secret.clone(),
                public_key_pem,
                jwks,
                issuer: opts.jwt_issuer.clone(),
                audience: opts.jwt_audience.clone(),
                leeway: Duration::from_secs(opts.jwt_leeway_secs),
                demo: sign_in.demo.is_some(),
            })?;
            tracing::info!(?verifier, issuer = ?opts.jwt_issuer, audience = ?opts.jwt_audience, "JWT authentication on");
            Auth::Jwt(Arc::new(verifier))
        }
    };
    let rps = opts.rate_limit_rps.unwrap_or(match process {
        Process::Up => 0,
        Process::Edge => EDGE_DEFAULT_RPS,
    });
    let rate_limit = match NonZeroU32::new(rps) {
        None => {
            tracing::info!("rate limits off");
            RateLimiter::off()
        }
        Some(rps) => {
            let burst = opts
                .rate_limit_burst
                .and_then(NonZeroU32::new)
                .unwrap_or(rps.saturating_mul(NonZeroU32::MIN.saturating_add(1)));
            let rate = Rate { rps, burst };
            let redis = opts.rate_limit_redis.clone().or_else(|| {
                cart_store
                    .filter(|s| s.starts_with("redis://") || s.starts_with("rediss://"))
                    .map(str::to_owned)
            });
            match redis {
                Some(url) => {
                    let limiter = RateLimiter::redis(&url, prefix, rate)
                        .await
                        .context("connecting to the rate-limit Redis")?;
                    tracing::info!(
                        rps = rps.get(),
                        burst = burst.get(),
                        "rate limits shared through Redis"
                    );
                    limiter
                }
                None => {
                    tracing::info!(
                        rps = rps.get(),
                        burst = burst.get(),
                        "rate limits kept in this edge"
                    );
                    RateLimiter::memory(rate)
                }
            }
        }
    };
    Ok(EdgeConfig {
        http_addr: opts.http_addr,
        checkout_wait: Duration::from_millis(opts.checkout_wait_ms),
        request_timeout: Duration::from_millis(opts.request_timeout_ms.max(1)),
        max_body_bytes: opts.max_body_bytes,
        max_ws_frame_bytes: opts.max_ws_frame_bytes,
        auth,
        rate_limit,
        trust_forwarded_for: opts.trust_forwarded_for,
        allowed_origins: opts
            .allowed_origins
            .iter()
            .map(|o| o.trim().to_owned())
            .filter(|o| !o.is_empty())
            .collect(),
        ws_max_per_user: opts.ws_max_per_user.max(1),
        sign_in,
    })
}

/// How browsers sign in: the demo sign-in (development only, under the HS256 secret)
/// and the identity provider's login URL, each checked against the auth settings.
fn sign_in(opts: &EdgeOpts, auth_on: bool) -> anyhow::Result<SignIn> {
    if (opts.demo_sign_in || opts.login_url.is_some()) && !auth_on {
        bail!(
            "CARTWHEEL_DEMO_SIGN_IN and CARTWHEEL_LOGIN_URL need CARTWHEEL_AUTH=jwt: with auth \
             off there is nothing to sign in to"
        );
    }
    let demo = if opts.demo_sign_in {
        if opts.jwt_jwks_url.is_some() {
            bail!(
                "CARTWHEEL_DEMO_SIGN_IN is for development and is refused together with \
                 CARTWHEEL_JWT_JWKS_URL: with an identity provider, people sign in there \
                 (CARTWHEEL_LOGIN_URL)"
            );
        }
        let Some(secret) = &opts.jwt_hs256_secret else {
            bail!("CARTWHEEL_DEMO_SIGN_IN needs CARTWHEEL_JWT_HS256_SECRET to sign its tokens");
        };
        tracing::warn!(
            "demo sign-in is ON (CARTWHEEL_DEMO_SIGN_IN): anyone can sign in as a demo admin; \
             never on the public internet"
        );
        Some(Arc::new(TokenIssuer::demo(
            secret,
            opts.jwt_issuer.clone(),
            opts.jwt_audience.clone(),
        )?))
    } else {
        None
    };
    if let Some(url) = &opts.login_url
        && !(url.starts_with("https://") || url.starts_with("http://"))
    {
        bail!("CARTWHEEL_LOGIN_URL must be an http(s) URL, got {url:?}");
    }
    Ok(SignIn {
        demo,
        login_url: opts.login_url.clone(),
    })
}

/// A node's observability: actor series in the process's metrics, an optional metrics
/// listener, the services-API registration.
pub struct NodeExtras {
    registration: Option<Registration>,
    listener: Option<tokio::task::JoinHandle<()>>,
    shutdown: CancellationToken,
    serving: Arc<AtomicBool>,
}

impl NodeExtras {
    /// Sets it all up for a started node.
    pub async fn start(
        node: &Node,
        bus: &BusClient,
        node_id: &str,
        metrics_addr: Option<std::net::SocketAddr>,
    ) -> anyhow::Result<NodeExtras> {
        let s = node.stats();
        let stats = HashMap::from([
            ("cart", s.cart.clone()),
            ("inventory", s.inventory.clone()),
            ("order", s.order.clone()),
        ]);
        let for_metrics = stats.clone();
        let placement = node.placement().clone();
        let outboxes = node.ctx().outboxes.clone();
        let partitions = f64::from(bus.config().partitions);
        cartwheel_api::metrics::watch_nats(bus.nats().clone());
        // Series the dashboard and the alerts read exist from the start, at zero.
        for change in ["acquired", "handed_over", "lost"] {
            metrics::counter!("cartwheel_partition_moves_total", "change" => change).increment(0);
        }
        for outcome in ["confirmed", "failed"] {
            metrics::counter!("cartwheel_saga_outcomes_total", "outcome" => outcome).increment(0);
        }
        metrics::counter!("cartwheel_saga_step_retries_total").increment(0);
        metrics::counter!("cartwheel_commands_repeated_total", "kind" => "cart").increment(0);
        Metrics::global().add_collector(move || {
            metrics::gauge!("cartwheel_partitions").set(partitions);
            metrics::gauge!("cartwheel_partitions_held").set(placement.held() as f64);
            metrics::gauge!("cartwheel_events_pending").set(outboxes.events() as f64);
            for (kind, s) in &for_metrics {
                let kind = *kind;
                metrics::gauge!("cartwheel_actors_live", "kind" => kind)
                    .set(s.live.load(Ordering::Relaxed) as f64);
                metrics::counter!("cartwheel_actor_activations_total", "kind" => kind)
                    .absolute(s.activations.load(Ordering::Relaxed));
                metrics::counter!("cartwheel_actor_passivations_total", "kind" => kind)
                    .absolute(s.passivations.load(Ordering::Relaxed));
                metrics::counter!("cartwheel_actor_restarts_total", "kind" => kind)
                    .absolute(s.failures.load(Ordering::Relaxed));
            }
        });
        let shutdown = CancellationToken::new();
        // Ready while NATS is connected and the node holds exactly its share of a
        // settled cluster; not ready from the moment it starts handing over. A drain
        // (PodDisruptionBudget) waits for readiness before it evicts the next node.
        let serving = Arc::new(AtomicBool::new(true));
        let ready: cartwheel_api::metrics::Readiness = {
            let (serving, nats) = (serving.clone(), bus.nats().clone());
            let placement = node.placement().clone();
            Arc::new(move || {
                if !serving.load(Ordering::Acquire) {
                    return Err("handing its partitions over; stopping".to_owned());
                }
                match nats.connection_state() {
                    async_nats::connection::State::Connected => {}
                    other => return Err(format!("not connected to NATS ({other:?})")),
                }
                if !placement.settled() {
                    return Err(format!(
                        "partitions still moving (holds {})",
                        placement.held()
                    ));
                }
                Ok(())
            })
        };
        let listener = match metrics_addr {
            None => None,
            Some(addr) => {
                let (local, run) = cartwheel_api::metrics::listener(addr, ready, shutdown.clone())
                    .await
                    .with_context(|| format!("metrics listener on {addr}"))?;
                tracing::info!(url = %format!("http://{local}/metrics"), "node metrics, /healthz and /readyz");
                Some(tokio::spawn(async move {
                    if let Err(e) = run.await {
                        tracing::warn!(error = %e, "metrics listener failed");
                    }
                }))
            }
        };
        let metadata = HashMap::from([
            ("node_id".to_owned(), node_id.to_owned()),
            ("prefix".to_owned(), bus.names().prefix().to_owned()),
            ("partitions".to_owned(), bus.config().partitions.to_string()),
        ]);
        let registration = match discovery::register(bus.nats(), bus.names(), stats, metadata).await
        {
            Ok(r) => Some(r),
            Err(e) => {
                // Discovery is for operators; a node without it still serves.
                tracing::warn!(error = %e, "could not register with the NATS services API");
                None
            }
        };
        Ok(NodeExtras {
            registration,
            listener,
            shutdown,
            serving,
        })
    }

    /// Turns `/readyz` false: the node is about to hand its partitions over. `/healthz`
    /// and `/metrics` keep answering until [`NodeExtras::stop`].
    pub fn stop_serving(&self) {
        self.serving.store(false, Ordering::Release);
    }

    /// Unregisters and stops the listener (after the hand-over).
    pub async fn stop(self) {
        if let Some(r) = self.registration {
            r.stop().await;
        }
        self.shutdown.cancel();
        if let Some(l) = self.listener {
            let _ = tokio::time::timeout(Duration::from_secs(5), l).await;
        }
    }
}

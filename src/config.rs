//! Command-line and environment configuration: one clap struct per process kind, with
//! `env = "CARTWHEEL_…"` on every field and loopback defaults.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Cartwheel: a commerce backend as an actor system on NATS.
#[derive(Debug, Parser)]
#[command(name = "cartwheel", version, about)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The processes Cartwheel can run.
// Parsed once at start; boxing the settings would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Everything in one process for a laptop: a private nats-server (unless --nats-url
    /// is given), a node and an edge.
    Up(UpArgs),
    /// An actor node: joins through NATS and runs entity actors.
    Node(NodeArgs),
    /// The HTTP/WebSocket edge: stateless, run as many as you like.
    Edge(EdgeArgs),
    /// Inspect the cluster.
    Cluster(ClusterArgs),
    /// Load generator: each scenario against its raw baseline (`scripts/bench` runs the
    /// standard set).
    Bench(cartwheel_bench::BenchArgs),
    /// Print a user's token for the configured HS256 secret (development and tests).
    Token(TokenArgs),
}

/// `cartwheel token`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The user id (`sub`): `[A-Za-z0-9_-]{1,64}`.
    #[arg(long)]
    pub sub: String,
    /// A role to grant (`admin`); repeat for several.
    #[arg(long = "role")]
    pub roles: Vec<String>,
    /// Lifetime: `90s`, `30m`, `1h`, `7d`.
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    pub ttl: std::time::Duration,
    /// The HS256 secret the edge verifies with.
    #[arg(long, env = "CARTWHEEL_JWT_HS256_SECRET", hide_env_values = true)]
    pub jwt_hs256_secret: Option<String>,
    /// `iss` to put in the token (the edge's CARTWHEEL_JWT_ISSUER).
    #[arg(long, env = "CARTWHEEL_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// `aud` to put in the token (the edge's CARTWHEEL_JWT_AUDIENCE).
    #[arg(long, env = "CARTWHEEL_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
}

/// `90s`, `30m`, `1h`, `7d` → a duration (at least a second, at most 30 days).
fn parse_ttl(s: &str) -> Result<std::time::Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?}: expected e.g. 90s, 30m, 1h, 7d"))?;
    let secs = match unit {
        "s" | "" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(format!("{s:?}: the unit is s, m, h or d")),
    };
    if !(1..=30 * 86_400).contains(&secs) {
        return Err(format!("{s:?}: between 1 s and 30 days"));
    }
    Ok(std::time::Duration::from_secs(secs))
}

/// `cartwheel cluster …`.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Shared settings.
    #[command(flatten)]
    pub common: CommonArgs,
    /// What to show.
    #[command(subcommand)]
    pub what: ClusterCommand,
}

/// Cluster inspection commands.
#[derive(Debug, Clone, Subcommand)]
pub enum ClusterCommand {
    /// Live nodes, partitions per node, lease ages, live actors.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Settings every process shares.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// NATS server URL(s), comma-separated.
    #[arg(
        long,
        env = "CARTWHEEL_NATS_URL",
        hide_env_values = true,
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// Prefix of every subject, stream and bucket.
    #[arg(long, env = "CARTWHEEL_PREFIX", default_value = "cw")]
    pub prefix: String,
    /// Partition count; fixed when a cluster is created.
    #[arg(long, env = "CARTWHEEL_PARTITIONS", default_value_t = 64)]
    pub partitions: u32,
    /// Log format.
    #[arg(long, env = "CARTWHEEL_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// OTLP/HTTP collector to export traces to (e.g. `http://127.0.0.1:4318`); unset:
    /// no export (trace ids still travel and appear in the logs).
    #[arg(long, env = "CARTWHEEL_OTLP_ENDPOINT", hide_env_values = true)]
    pub otlp_endpoint: Option<String>,
    /// NATS credentials and TLS.
    #[command(flatten)]
    pub nats_auth: cartwheel_bus::connect::NatsAuth,
}

/// How the edge authenticates callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// No authentication (development only): everything is open.
    Off,
    /// JWT bearer tokens.
    Jwt,
}

/// Settings of an actor node.
#[derive(Debug, Clone, Args)]
pub struct NodeOpts {
    /// Store of orders, products and inventory: `nats` (NATS KV, the default) or a
    /// MongoDB URI (`mongodb://host:27017/cartwheel?replicaSet=rs0`).
    #[arg(
        long,
        env = "CARTWHEEL_STORE",
        hide_env_values = true,
        default_value = "nats"
    )]
    pub store: String,
    /// Store of carts: `nats` (NATS KV, the default), a Redis URL
    /// (`redis://host:6379/0`) or a MongoDB URI.
    #[arg(
        long,
        env = "CARTWHEEL_CART_STORE",
        hide_env_values = true,
        default_value = "nats"
    )]
    pub cart_store: String,
    /// Seconds an untouched cart is kept in Redis (every write and load restarts the
    /// clock); 0 keeps carts forever. Redis only.
    #[arg(long, env = "CARTWHEEL_CART_TTL_SECS", default_value_t = 2_592_000)]
    pub cart_ttl_secs: u64,
    /// Replicas of KV buckets and event streams (3 on a NATS cluster).
    #[arg(long, env = "CARTWHEEL_REPLICAS", default_value_t = 1)]
    pub replicas: usize,
    /// Seconds an idle actor stays in memory.
    #[arg(long, env = "CARTWHEEL_PASSIVATE_AFTER_SECS", default_value_t = 120)]
    pub passivate_after_secs: u64,
    /// Seconds after which the reservation of an abandoned saga expires.
    #[arg(long, env = "CARTWHEEL_RESERVATION_TTL_SECS", default_value_t = 900)]
    pub reservation_ttl_secs: u64,
    /// The default payment port declines orders whose total (minor units) is above this.
    #[arg(long, env = "CARTWHEEL_PAYMENT_DECLINE_ABOVE")]
    pub payment_decline_above: Option<i64>,
    /// The default payment port declines every order of these users (comma-separated).
    #[arg(long, env = "CARTWHEEL_PAYMENT_DECLINE_USERS", value_delimiter = ',')]
    pub payment_decline_users: Vec<String>,
    /// This node's id in the cluster (generated when unset; `up` keeps it in the data dir).
    #[arg(long, env = "CARTWHEEL_NODE_ID")]
    pub node_id: Option<String>,
    /// Lifetime of a partition lease without renewal, in ms: how long the partitions of a
    /// crashed node wait before the survivors take them.
    #[arg(long, env = "CARTWHEEL_LEASE_TTL_MS", default_value_t = 6000)]
    pub lease_ttl_ms: u64,
    /// Serve the node's Prometheus metrics on `http://ADDR/metrics` (off when unset).
    #[arg(long, env = "CARTWHEEL_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Fault injection for tests: adding this sku to a cart panics in the cart actor.
    #[arg(long, env = "CARTWHEEL_FAULT_PANIC_SKU", hide = true)]
    pub fault_panic_sku: Option<String>,
    /// Webhook retry schedule: the delay before each attempt, comma-separated (`0` at
    /// once, `250ms`, `5s`, `5m`, `2h`, `1d`); its length is the number of attempts
    /// before a delivery is dead-lettered. The default is the Standard Webhooks one.
    #[arg(
        long,
        env = "CARTWHEEL_WEBHOOK_SCHEDULE",
        default_value = "0,5s,5m,30m,2h,5h,10h,10h"
    )]
    pub webhook_schedule: String,
    /// The longest a webhook endpoint may take to answer, in ms.
    #[arg(long, env = "CARTWHEEL_WEBHOOK_TIMEOUT_MS", default_value_t = 15_000)]
    pub webhook_timeout_ms: u64,
    /// Networks webhook URLs may reach although private (comma-separated, e.g.
    /// `127.0.0.0/8` for a receiver on this machine): loopback, private and link-local
    /// targets are refused by default (server-side request forgery).
    #[arg(long, env = "CARTWHEEL_WEBHOOK_ALLOW_NETWORKS", default_value = "")]
    pub webhook_allow_networks: String,
    /// How long an endpoint's open circuit breaker holds deliveries, in ms.
    #[arg(
        long,
        env = "CARTWHEEL_WEBHOOK_BREAKER_COOLDOWN_MS",
        default_value_t = 30_000
    )]
    pub webhook_breaker_cooldown_ms: u64,
    /// An endpoint whose every attempt failed for this long is disabled (`5d`, `12h`).
    #[arg(long, env = "CARTWHEEL_WEBHOOK_DISABLE_AFTER", default_value = "5d")]
    pub webhook_disable_after: String,
}

/// Settings of an edge.
#[derive(Debug, Clone, Args)]
pub struct EdgeOpts {
    /// Address the HTTP server listens on.
    #[arg(long, env = "CARTWHEEL_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// How long a checkout request waits for the saga before answering 202.
    #[arg(long, env = "CARTWHEEL_CHECKOUT_WAIT_MS", default_value_t = 5000)]
    pub checkout_wait_ms: u64,
    /// Largest request body, in bytes.
    #[arg(long, env = "CARTWHEEL_MAX_BODY_BYTES", default_value_t = 65536)]
    pub max_body_bytes: usize,
    /// Largest WebSocket message, in bytes (the socket is closed with 1009 above it).
    #[arg(long, env = "CARTWHEEL_MAX_WS_FRAME_BYTES", default_value_t = 65536)]
    pub max_ws_frame_bytes: usize,
    /// Deadline of a whole HTTP request, in ms (504 after it).
    #[arg(long, env = "CARTWHEEL_REQUEST_TIMEOUT_MS", default_value_t = 10000)]
    pub request_timeout_ms: u64,
    /// Authentication: `off` or `jwt`. `edge` requires an explicit choice; `up` defaults
    /// to `off`.
    #[arg(long, env = "CARTWHEEL_AUTH", value_enum)]
    pub auth: Option<AuthMode>,
    /// HS256 shared secret (at least 32 bytes).
    #[arg(long, env = "CARTWHEEL_JWT_HS256_SECRET", hide_env_values = true)]
    pub jwt_hs256_secret: Option<String>,
    /// PEM public key file: RSA (RS256) or EC P-256 (ES256).
    #[arg(long, env = "CARTWHEEL_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,
    /// JWKS URL of an OpenID Connect provider (its `jwks_uri`): users' keys by `kid`,
    /// RS256, ES256 or EdDSA by key type; fetched at start, refreshed on an unknown `kid`
    /// (at most every 10 s) and every 15 min, the last good set kept when a fetch fails.
    #[arg(long, env = "CARTWHEEL_JWT_JWKS_URL")]
    pub jwt_jwks_url: Option<String>,
    /// PEM CA certificate(s) to trust for the JWKS endpoint besides the web PKI roots (a
    /// provider behind a private CA).
    #[arg(long, env = "CARTWHEEL_JWT_JWKS_CA")]
    pub jwt_jwks_ca: Option<PathBuf>,
    /// Required `iss` claim.
    #[arg(long, env = "CARTWHEEL_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim.
    #[arg(long, env = "CARTWHEEL_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Development only: the shop page offers "demo shopper" and "demo admin" sign-in,
    /// and `POST /auth/demo` issues their tokens under the HS256 secret. Needs
    /// CARTWHEEL_AUTH=jwt with CARTWHEEL_JWT_HS256_SECRET; refused with a JWKS URL.
    #[arg(long, env = "CARTWHEEL_DEMO_SIGN_IN", default_value_t = false)]
    pub demo_sign_in: bool,
    /// The identity provider's login URL for the shop page (an OpenID Connect
    /// authorization request that returns the token in the URL fragment; see the README,
    /// "Signing in").
    #[arg(long, env = "CARTWHEEL_LOGIN_URL")]
    pub login_url: Option<String>,
    /// Clock skew allowed on `exp`/`nbf`, in seconds.
    #[arg(long, env = "CARTWHEEL_JWT_LEEWAY_SECS", default_value_t = 30)]
    pub jwt_leeway_secs: u64,
    /// Requests per second per user (per IP when anonymous); 0 turns limits off.
    /// Default: 20 for `edge`, off for `up`.
    #[arg(long, env = "CARTWHEEL_RATE_LIMIT_RPS")]
    pub rate_limit_rps: Option<u32>,
    /// Requests at once per user or IP. Default: twice the rate.
    #[arg(long, env = "CARTWHEEL_RATE_LIMIT_BURST")]
    pub rate_limit_burst: Option<u32>,
    /// Redis URL shared by all edges for rate limits (`redis://host:6379`). Unset: a
    /// `redis://` CARTWHEEL_CART_STORE is used; otherwise limits are kept per edge.
    #[arg(long, env = "CARTWHEEL_RATE_LIMIT_REDIS", hide_env_values = true)]
    pub rate_limit_redis: Option<String>,
    /// Take the client IP from the last `X-Forwarded-For` entry (set when behind a proxy).
    #[arg(long, env = "CARTWHEEL_TRUST_FORWARDED_FOR", default_value_t = false)]
    pub trust_forwarded_for: bool,
    /// Browser origins allowed to open `/ws` besides the edge's own (comma-separated,
    /// e.g. `https://shop.example.com`; `*` allows any).
    #[arg(long, env = "CARTWHEEL_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Most live WebSockets per authenticated user.
    #[arg(long, env = "CARTWHEEL_WS_MAX_PER_USER", default_value_t = 16)]
    pub ws_max_per_user: usize,
}

/// `cartwheel up`.
#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// Use this NATS server instead of starting a private one.
    #[arg(long, env = "CARTWHEEL_NATS_URL", hide_env_values = true)]
    pub nats_url: Option<String>,
    /// Where the private nats-server keeps its data.
    #[arg(long, env = "CARTWHEEL_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// The nats-server binary (2.10 or newer).
    #[arg(long, env = "CARTWHEEL_NATS_SERVER", default_value = "nats-server")]
    pub nats_server: PathBuf,
    /// Fsync every JetStream write (`always`), or let the server batch fsyncs (`default`,
    /// every 2 minutes; survives a process crash but not a power loss).
    #[arg(
        long,
        env = "CARTWHEEL_NATS_SYNC",
        value_enum,
        default_value = "default"
    )]
    pub nats_sync: NatsSync,
    /// Prefix of every subject, stream and bucket.
    #[arg(long, env = "CARTWHEEL_PREFIX", default_value = "cw")]
    pub prefix: String,
    /// Partition count.
    #[arg(long, env = "CARTWHEEL_PARTITIONS", default_value_t = 64)]
    pub partitions: u32,
    /// Log format.
    #[arg(long, env = "CARTWHEEL_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// OTLP/HTTP collector to export traces to; unset: no export.
    #[arg(long, env = "CARTWHEEL_OTLP_ENDPOINT", hide_env_values = true)]
    pub otlp_endpoint: Option<String>,
    /// NATS credentials and TLS (for `--nats-url`; the private server needs none).
    #[command(flatten)]
    pub nats_auth: cartwheel_bus::connect::NatsAuth,
    /// Node settings.
    #[command(flatten)]
    pub node: NodeOpts,
    /// Edge settings.
    #[command(flatten)]
    pub edge: EdgeOpts,
}

/// JetStream fsync policy of the private server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NatsSync {
    /// The server's default (fsync every 2 minutes).
    Default,
    /// Fsync on every write.
    Always,
}

/// `cartwheel node`.
#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    /// Shared settings.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Node settings.
    #[command(flatten)]
    pub node: NodeOpts,
}

/// `cartwheel edge`.
#[derive(Debug, Clone, Args)]
pub struct EdgeArgs {
    /// Shared settings.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Edge settings.
    #[command(flatten)]
    pub edge: EdgeOpts,
}

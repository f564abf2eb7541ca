//! Wiring: connect to NATS, open storage, start a node and/or an edge, wait for Ctrl-C or
//! SIGTERM, then stop in order — edge (stop accepting, finish requests), node (drain
//! subscriptions, finish commands), NATS client (flush, drain), private nats-server.

use crate::config::{CommonArgs, EdgeArgs, NodeArgs, NodeOpts, TokenArgs, UpArgs};
use crate::nats_child::NatsChild;
use crate::public::{NodeExtras, Process, edge_config};
use anyhow::{Context, bail};
use cartwheel_actors::{Ctx, Faults, Node, NodeSettings, RulesPayment};
use cartwheel_api::Edge;
use cartwheel_bus::connect::{NatsAuth, redacted};
use cartwheel_bus::events::StreamSettings;
use cartwheel_bus::{BusClient, BusConfig, Names};
use cartwheel_storage::kv::KvSettings;
use cartwheel_storage::mongo::MongoSettings;
use cartwheel_storage::redis::RedisSettings;
use cartwheel_storage::select::{self, Backend, Selection};
use cartwheel_webhooks::{Settings as WebhookSettings, Webhooks};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);

/// Connects to NATS as `name` (see [`cartwheel_bus::connect::connect`]).
async fn connect(url: &str, name: &str, auth: &NatsAuth) -> anyhow::Result<async_nats::Client> {
    Ok(cartwheel_bus::connect::connect(url, name, auth).await?)
}

fn bus(nats: async_nats::Client, prefix: &str, partitions: u32) -> anyhow::Result<BusClient> {
    if partitions == 0 {
        bail!("--partitions must be at least 1");
    }
    if prefix.is_empty()
        || !prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        bail!("--prefix may contain only letters, digits, '-' and '_'");
    }
    Ok(BusClient::new(
        nats,
        BusConfig {
            names: Names::new(prefix),
            partitions,
            ..BusConfig::default()
        },
    ))
}

/// A node and its webhook service.
struct RunningNode {
    node: Node,
    webhooks: Webhooks,
}

impl RunningNode {
    /// Stops the webhook deliveries first (they follow the node's leases), then hands the
    /// partitions over.
    async fn shutdown(self) {
        self.webhooks.stop(Duration::from_secs(10)).await;
        self.node.shutdown(SHUTDOWN_TIMEOUT).await;
    }
}

/// The webhook settings of the node options.
fn webhook_settings(opts: &NodeOpts) -> anyhow::Result<WebhookSettings> {
    Ok(WebhookSettings {
        schedule: cartwheel_webhooks::parse_schedule(&opts.webhook_schedule)
            .map_err(|e| anyhow::anyhow!("CARTWHEEL_WEBHOOK_SCHEDULE: {e}"))?,
        request_timeout: Duration::from_millis(opts.webhook_timeout_ms.max(1)),
        allow_networks: cartwheel_webhooks::ssrf::parse_networks(&opts.webhook_allow_networks)
            .map_err(|e| anyhow::anyhow!("CARTWHEEL_WEBHOOK_ALLOW_NETWORKS: {e}"))?,
        breaker_cooldown: Duration::from_millis(opts.webhook_breaker_cooldown_ms),
        disable_after: cartwheel_webhooks::parse_duration(&opts.webhook_disable_after)
            .map_err(|e| anyhow::anyhow!("CARTWHEEL_WEBHOOK_DISABLE_AFTER: {e}"))?,
        replicas: opts.replicas,
        ..WebhookSettings::default()
    })
}

/// Starts a node, then its webhook service (deliveries follow the node's leases).
async fn start_running(
    bus: BusClient,
    opts: &NodeOpts,
    node_id: &str,
) -> anyhow::Result<RunningNode> {
    let settings = webhook_settings(opts)?;
    let node = start_node(bus.clone(), opts, node_id).await?;
    let guard = node.ctx().guard.clone();
    let partitions = bus.config().partitions;
    let owns: cartwheel_webhooks::Owns =
        Arc::new(move |id: &str| guard.holds(cartwheel_bus::names::partition(id, partitions)));
    let webhooks = Webhooks::start(
        bus.nats().clone(),
        node.ctx().js.clone(),
        bus.names().clone(),
        owns,
        settings,
    )
    .await
    .context("starting webhooks")?;
    Ok(RunningNode { node, webhooks })
}

async fn start_node(bus: BusClient, opts: &NodeOpts, node_id: &str) -> anyhow::Result<Node> {
    let js = async_nats::jetstream::new(bus.nats().clone());
    let stores = select::open(&js, bus.names(), &store_selection(opts)?)
        .await
        .context("opening storage")?;
    let ctx = Ctx {
        stores,
        bus,
        js,
        payment: Arc::new(RulesPayment {
            decline_above: opts.payment_decline_above,
            decline_users: opts.payment_decline_users.clone(),
        }),
        settings: NodeSettings {
            passivate_after: Duration::from_secs(opts.passivate_after_secs.max(1)),
            reservation_ttl: Duration::from_secs(opts.reservation_ttl_secs.max(1)),
            node_id: node_id.to_owned(),
            lease_ttl: Duration::from_millis(opts.lease_ttl_ms.max(300)),
            ..NodeSettings::default()
        },
        faults: Faults {
            panic_on_sku: opts.fault_panic_sku.clone(),
        },
        guard: Default::default(),
        catalog: Default::default(),
        outboxes: Default::default(),
    };
    let streams = StreamSettings {
        replicas: opts.replicas,
        ..StreamSettings::default()
    };
    Node::start(ctx, &streams)
        .await
        .context("starting the node")
}

/// Which backend keeps what (`CARTWHEEL_STORE`, `CARTWHEEL_CART_STORE`) and how.
fn store_selection(opts: &NodeOpts) -> anyhow::Result<Selection> {
    let main = Backend::parse(&opts.store, false)
        .map_err(|e| anyhow::anyhow!("CARTWHEEL_STORE / --store: {e}"))?;
    let carts = Backend::parse(&opts.cart_store, true)
        .map_err(|e| anyhow::anyhow!("CARTWHEEL_CART_STORE / --cart-store: {e}"))?;
    Ok(Selection {
        main,
        carts,
        kv: KvSettings {
            replicas: opts.replicas,
            ..KvSettings::default()
        },
        mongo: MongoSettings::default(),
        redis: RedisSettings {
            idle_ttl: (opts.cart_ttl_secs > 0).then(|| Duration::from_secs(opts.cart_ttl_secs)),
            ..RedisSettings::default()
        },
    })
}

/// Resolves on Ctrl-C or SIGTERM.
async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

async fn close_nats(nats: &async_nats::Client) {
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = nats.flush().await;
        let _ = nats.drain().await;
    })
    .await;
}

/// The node id of `up`: configured, or kept in the data dir so a restart after a crash
/// takes its own partitions back at once instead of waiting for the leases to lapse.
fn up_node_id(args: &UpArgs) -> anyhow::Result<String> {
    if let Some(id) = &args.node.node_id {
        return Ok(id.clone());
    }
    let path = args.data_dir.join("node-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim().to_owned();
        if !id.is_empty() {
            return Ok(id);
        }
    }
    let id = format!("node-{}", uuid::Uuid::new_v4().simple());
    std::fs::create_dir_all(&args.data_dir)?;
    std::fs::write(&path, &id).with_context(|| format!("writing {}", path.display()))?;
    Ok(id)
}

/// `cartwheel up`.
pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    let child = match &args.nats_url {
        Some(_) => None,
        None => Some(NatsChild::start(&args.nats_server, &args.data_dir, args.nats_sync).await?),
    };
    let url = match (&child, &args.nats_url) {
        (Some(c), _) => c.url.clone(),
        (None, Some(u)) => u.clone(),
        (None, None) => bail!("no NATS URL"),
    };
    // The private server requires its generated user and password.
    let auth = match &child {
        Some(c) => {
            tracing::info!(nats = %url, user = %c.user,
                credentials = %args.data_dir.join("nats-credentials").display(),
                "private NATS ready (authentication on)");
            NatsAuth {
                nats_user: Some(c.user.clone()),
                nats_password: Some(c.password.clone()),
                ..NatsAuth::default()
            }
        }
        None => {
            tracing::info!(nats = %redacted(&url), data_dir = %args.data_dir.display(), "NATS ready");
            args.nats_auth.clone()
        }
    };
    let nats = connect(&url, "cartwheel-up", &auth).await?;
    let bus = bus(nats.clone(), &args.prefix, args.partitions)?;
    let node_id = up_node_id(&args)?;
    let running = start_running(bus.clone(), &args.node, &node_id).await?;
    let extras = NodeExtras::start(&running.node, &bus, &node_id, args.node.metrics_addr).await?;
    let shutdown = CancellationToken::new();
    let config = edge_config(
        &args.edge,
        Process::Up,
        &args.prefix,
        Some(&args.node.cart_store),
    )
    .await?;
    let (addr, serving) = Edge::new(bus, config)
        .bind(shutdown.clone())
        .await
        .context("starting the edge")?;
    let serving = tokio::spawn(serving);
    tracing::info!(url = %format!("http://{addr}"), "Cartwheel is up: http://{addr}");
    println!("Cartwheel is up: http://{addr}  (Ctrl-C to stop)");

    signal().await;
    tracing::info!("shutting down");
    shutdown.cancel();
    extras.stop_serving();
    match tokio::time::timeout(SHUTDOWN_TIMEOUT, serving).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "edge ended with an error"),
        Err(_) => tracing::warn!("edge did not stop in time"),
        _ => {}
    }
    running.shutdown().await;
    extras.stop().await;
    close_nats(&nats).await;
    if let Some(child) = child {
        child.stop(Duration::from_secs(10)).await;
    }
    tracing::info!("stopped");
    Ok(())
}

fn common_bus(common: &CommonArgs, nats: async_nats::Client) -> anyhow::Result<BusClient> {
    bus(nats, &common.prefix, common.partitions)
}

/// `cartwheel node`.
pub async fn node(args: NodeArgs) -> anyhow::Result<()> {
    let nats = connect(
        &args.common.nats_url,
        "cartwheel-node",
        &args.common.nats_auth,
    )
    .await?;
    let bus = common_bus(&args.common, nats.clone())?;
    let node_id = args
        .node
        .node_id
        .clone()
        .unwrap_or_else(|| format!("node-{}", uuid::Uuid::new_v4().simple()));
    let running = start_running(bus.clone(), &args.node, &node_id).await?;
    let extras = NodeExtras::start(&running.node, &bus, &node_id, args.node.metrics_addr).await?;
    tracing::info!(nats = %redacted(&args.common.nats_url), "node started");
    signal().await;
    tracing::info!("shutting down");
    extras.stop_serving();
    running.shutdown().await;
    extras.stop().await;
    close_nats(&nats).await;
    tracing::info!("stopped");
    Ok(())
}

/// `cartwheel edge`.
pub async fn edge(args: EdgeArgs) -> anyhow::Result<()> {
    // Settings first: a missing CARTWHEEL_AUTH must fail before anything connects.
    let cart_store = std::env::var("CARTWHEEL_CART_STORE").ok();
    let config = edge_config(
        &args.edge,
        Process::Edge,
        &args.common.prefix,
        cart_store.as_deref(),
    )
    .await?;
    let nats = connect(
        &args.common.nats_url,
        "cartwheel-edge",
        &args.common.nats_auth,
    )
    .await?;
    cartwheel_api::metrics::watch_nats(nats.clone());
    let bus = common_bus(&args.common, nats.clone())?;
    let shutdown = CancellationToken::new();
    let (addr, serving) = Edge::new(bus, config)
        .bind(shutdown.clone())
        .await
        .context("starting the edge")?;
    let serving = tokio::spawn(serving);
    tracing::info!(url = %format!("http://{addr}"), "edge listening on http://{addr}");
    signal().await;
    shutdown.cancel();
    match tokio::time::timeout(SHUTDOWN_TIMEOUT, serving).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "edge ended with an error"),
        Err(_) => tracing::warn!("edge did not stop in time"),
        _ => {}
    }
    close_nats(&nats).await;
    tracing::info!("stopped");
    Ok(())
}

/// `cartwheel cluster status`.
pub async fn cluster(args: crate::config::ClusterArgs) -> anyhow::Result<()> {
    let nats = connect(
        &args.common.nats_url,
        "cartwheel-cli",
        &args.common.nats_auth,
    )
    .await?;
    let js = async_nats::jetstream::new(nats.clone());
    let names = Names::new(&args.common.prefix);
    let crate::config::ClusterCommand::Status { json } = args.what;
    let status = cartwheel_bus::cluster::status(&js, &names, args.common.partitions).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        println!(
            "{} nodes, {} partitions, {} unowned",
            status.nodes.len(),
            status.partitions,
            status.unowned.len()
        );
        println!(
            "{:<40} {:>10} {:>12} {:>8} {:>10} {:>8}",
            "NODE", "PARTITIONS", "HEARTBEAT_MS", "CARTS", "INVENTORY", "ORDERS"
        );
        for n in &status.nodes {
            let a = |k: &str| n.live_actors.get(k).copied().unwrap_or(0);
            println!(
                "{:<40} {:>10} {:>12} {:>8} {:>10} {:>8}",
                n.node_id,
                n.partition_count,
                n.heartbeat_age_ms,
                a("cart"),
                a("inventory"),
                a("order")
            );
        }
        let oldest = status.leases.iter().map(|l| l.age_ms).max().unwrap_or(0);
        println!("oldest lease renewal: {oldest} ms ago");
        if !status.unowned.is_empty() {
            println!("unowned partitions: {:?}", status.unowned);
        }
    }
    nats.drain().await.ok();
    Ok(())
}

/// `cartwheel token`: a signed HS256 token for `sub` with `roles`, valid for `ttl`.
pub fn token(args: &TokenArgs) -> anyhow::Result<String> {
    let Some(secret) = &args.jwt_hs256_secret else {
        bail!(
            "set CARTWHEEL_JWT_HS256_SECRET (or --jwt-hs256-secret): the secret the edge verifies with"
        );
    };
    let issuer = cartwheel_api::auth::TokenIssuer::new(
        secret,
        args.jwt_issuer.clone(),
        args.jwt_audience.clone(),
    )?;
    let issued = issuer
        .issue(&args.sub, &args.roles, args.ttl)
        .map_err(|e| match e {
            cartwheel_api::auth::IssueError::Subject(why) => anyhow::anyhow!("--sub: {why}"),
            other => anyhow::anyhow!(other),
        })?;
    Ok(issued.token)
}

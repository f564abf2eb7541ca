//! Wiring: connect to NATS, open storage, start a node and/or an edge, wait for Ctrl-C or
//! SIGTERM, then stop in order — edge (stop accepting, finish requests), node (drain
//! subscriptions, finish commands), NATS client (flush, drain), private nats-server.

use crate::config::{CommonArgs, EdgeArgs, EdgeOpts, NodeArgs, NodeOpts, UpArgs};
use crate::nats_child::NatsChild;
use anyhow::{Context, bail};
use cartwheel_actors::{Ctx, Faults, Node, NodeSettings, RulesPayment};
use cartwheel_api::{Edge, EdgeConfig};
use cartwheel_bus::events::StreamSettings;
use cartwheel_bus::{BusClient, BusConfig, Names};
use cartwheel_storage::kv::{self, KvSettings};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);

async fn connect(url: &str, name: &str) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .with_context(|| format!("connecting to NATS at {url}"))
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

async fn start_node(bus: BusClient, opts: &NodeOpts) -> anyhow::Result<Node> {
    for (flag, value) in [
        ("CARTWHEEL_STORE", &opts.store),
        ("CARTWHEEL_CART_STORE", &opts.cart_store),
    ] {
        if value != "nats" {
            bail!("{flag}={value} is not supported by this build: only `nats` (NATS KV) is");
        }
    }
    let js = async_nats::jetstream::new(bus.nats().clone());
    let stores = kv::open(
        &js,
        bus.names(),
        &KvSettings {
            replicas: opts.replicas,
            ..KvSettings::default()
        },
    )
    .await
    .context("opening the NATS KV store")?;
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
            ..NodeSettings::default()
        },
        faults: Faults {
            panic_on_sku: opts.fault_panic_sku.clone(),
        },
    };
    let streams = StreamSettings {
        replicas: opts.replicas,
        ..StreamSettings::default()
    };
    Node::start(ctx, &streams)
        .await
        .context("starting the node")
}

fn edge_config(opts: &EdgeOpts) -> EdgeConfig {
    EdgeConfig {
        http_addr: opts.http_addr,
        checkout_wait: Duration::from_millis(opts.checkout_wait_ms),
        max_body_bytes: opts.max_body_bytes,
        ..EdgeConfig::default()
    }
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
    tracing::info!(nats = %url, data_dir = %args.data_dir.display(), "NATS ready");
    let nats = connect(&url, "cartwheel-up").await?;
    let bus = bus(nats.clone(), &args.prefix, args.partitions)?;
    let node = start_node(bus.clone(), &args.node).await?;
    let shutdown = CancellationToken::new();
    let (addr, serving) = Edge::new(bus, edge_config(&args.edge))
        .bind(shutdown.clone())
        .await
        .context("starting the edge")?;
    let serving = tokio::spawn(serving);
    tracing::info!(url = %format!("http://{addr}"), "Cartwheel is up: http://{addr}");
    println!("Cartwheel is up: http://{addr}  (Ctrl-C to stop)");

    signal().await;
    tracing::info!("shutting down");
    shutdown.cancel();
    match tokio::time::timeout(SHUTDOWN_TIMEOUT, serving).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "edge ended with an error"),
        Err(_) => tracing::warn!("edge did not stop in time"),
        _ => {}
    }
    node.shutdown(SHUTDOWN_TIMEOUT).await;
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
    let nats = connect(&args.common.nats_url, "cartwheel-node").await?;
    let bus = common_bus(&args.common, nats.clone())?;
    let node = start_node(bus, &args.node).await?;
    tracing::info!(nats = %args.common.nats_url, "node started");
    signal().await;
    tracing::info!("shutting down");
    node.shutdown(SHUTDOWN_TIMEOUT).await;
    close_nats(&nats).await;
    tracing::info!("stopped");
    Ok(())
}

/// `cartwheel edge`.
pub async fn edge(args: EdgeArgs) -> anyhow::Result<()> {
    let nats = connect(&args.common.nats_url, "cartwheel-edge").await?;
    let bus = common_bus(&args.common, nats.clone())?;
    let shutdown = CancellationToken::new();
    let (addr, serving) = Edge::new(bus, edge_config(&args.edge))
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

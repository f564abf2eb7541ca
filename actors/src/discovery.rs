//! Discovery through the NATS services API ("micro"): every node registers as service
//! `cartwheel-node`, so `$SRV.PING.cartwheel-node`, `$SRV.INFO.cartwheel-node` and
//! `$SRV.STATS.cartwheel-node` (or `nats micro ls` / `nats micro stats`) list the live
//! nodes, each with its actor counters.
//!
//! The service has one endpoint, `stats`, on the node's own subject
//! ([`cartwheel_bus::Names::node_stats`]): it answers the node's actor counters as JSON,
//! and the same counters are the endpoint's `data` in `$SRV.STATS`. Commands do not go
//! through the services API (they have their own subjects, see `host`); this is only
//! how operators and tools find the nodes.

use crate::supervisor::ActorStats;
use async_nats::Client;
use async_nats::service::ServiceExt;
use futures::StreamExt;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::task::JoinHandle;

/// The service name every node registers under.
pub const SERVICE_NAME: &str = "cartwheel-node";

/// Actor counters by kind, as JSON.
fn counters(stats: &HashMap<&'static str, Arc<ActorStats>>) -> Value {
    let kinds: serde_json::Map<String, Value> = stats
        .iter()
        .map(|(kind, s)| {
            (
                (*kind).to_owned(),
                json!({
                    "live": s.live.load(Ordering::Relaxed),
                    "activations": s.activations.load(Ordering::Relaxed),
                    "passivations": s.passivations.load(Ordering::Relaxed),
                    "failures": s.failures.load(Ordering::Relaxed),
                }),
            )
        })
        .collect();
    json!({ "actors": kinds })
}

/// A node's registration; [`Registration::stop`] removes it.
pub struct Registration {
    service: async_nats::service::Service,
    serving: JoinHandle<()>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration").finish_non_exhaustive()
    }
}

/// Registers the node with the services API; `metadata` is shown in `$SRV.INFO`.
pub async fn register(
    nats: &Client,
    names: &cartwheel_bus::Names,
    stats: HashMap<&'static str, Arc<ActorStats>>,
    metadata: HashMap<String, String>,
) -> Result<Registration, async_nats::Error> {
    let for_stats = stats.clone();
    let service = nats
        .service_builder()
        .description("Cartwheel actor node: cart, order and inventory actors")
        .metadata(metadata)
        .stats_handler(move |_endpoint, _stats| counters(&for_stats))
        .start(SERVICE_NAME, env!("CARGO_PKG_VERSION"))
        .await?;
    let id = service.info().await.id;
    let mut endpoint = service
        .endpoint_builder()
        .name("stats")
        .add(names.node_stats(&id))
        .await?;
    let serving = tokio::spawn(async move {
        while let Some(request) = endpoint.next().await {
            let body = counters(&stats).to_string();
            if let Err(e) = request.respond(Ok(body.into())).await {
                tracing::debug!(error = %e, "stats reply not sent");
            }
        }
    });
    tracing::info!(service = SERVICE_NAME, id = %id, "registered with the NATS services API");
    Ok(Registration { service, serving })
}

impl Registration {
    /// Unregisters (the node no longer answers `$SRV` requests).
    pub async fn stop(self) {
        self.serving.abort();
        if let Err(e) = self.service.stop().await {
            tracing::debug!(error = %e, "service stop");
        }
    }
}

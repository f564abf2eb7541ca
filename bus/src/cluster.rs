//! The cluster's shared picture, as kept in NATS KV by the nodes' placement loops:
//! node heartbeats in `{prefix}_nodes` and partition leases in `{prefix}_leases`.
//!
//! Nodes write it (see `actors::placement`); edges and `cartwheel cluster status` only
//! read it. One lease per partition covers every kind of entity in that partition.

use crate::error::BusError;
use crate::names::{EntityKind, Names, partition};
use async_nats::jetstream::{self, kv};
use cartwheel_domain::Timestamp;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a node says about itself in its heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's id (`CARTWHEEL_NODE_ID`, or generated).
    pub node_id: String,
    /// When the node started.
    pub started_at: Timestamp,
    /// When this heartbeat was written.
    pub heartbeat_at: Timestamp,
    /// Partitions it holds leases for.
    #[serde(default)]
    pub partitions: Vec<u32>,
    /// Live actors by kind.
    #[serde(default)]
    pub live_actors: BTreeMap<String, u64>,
}

/// A node's question to a peer about partition leases, on the peer's
/// [`Names::node_leases`] subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseAsk {
    /// "My renewals of these partitions get no answer (the leases bucket is electing a
    /// leader): promise not to take them for `for_ms`." The peer promises every asked
    /// partition it neither serves nor is taking, and answers the others.
    Promise {
        /// The node asking, which serves the partitions.
        holder: String,
        /// The partitions it serves and cannot renew.
        partitions: Vec<u32>,
        /// How long the promise lasts, from when the peer receives it.
        for_ms: u64,
    },
    /// "I am about to take these partitions: do you serve any of them?"
    Holds {
        /// The partitions.
        partitions: Vec<u32>,
    },
}

/// A peer's answer to a [`LeaseAsk`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseAnswer {
    /// Of the partitions asked about, those the peer serves or is taking right now (not
    /// promised).
    pub busy: Vec<u32>,
}

/// One node as the status shows it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Node id.
    pub node_id: String,
    /// When it started.
    pub started_at: Timestamp,
    /// Milliseconds since its last heartbeat.
    pub heartbeat_age_ms: i64,
    /// Partitions it holds leases for (from the leases bucket).
    pub partitions: Vec<u32>,
    /// How many.
    pub partition_count: usize,
    /// Live actors by kind (from its heartbeat).
    pub live_actors: BTreeMap<String, u64>,
}

/// One partition lease.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseStatus {
    /// The partition.
    pub partition: u32,
    /// The node holding it.
    pub node_id: String,
    /// Milliseconds since it was taken or last renewed.
    pub age_ms: i64,
}

/// The whole picture: `GET /cluster`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// Partition count of the cluster.
    pub partitions: u32,
    /// Live nodes, by id.
    pub nodes: Vec<NodeStatus>,
    /// Every held lease, by partition.
    pub leases: Vec<LeaseStatus>,
    /// Partitions nobody holds right now (moving, or no node).
    pub unowned: Vec<u32>,
}

/// Where an entity lives now: `GET /cluster/locate/{kind}/{id}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Location {
    /// `cart`, `order` or `inventory`.
    pub kind: String,
    /// Entity id.
    pub id: String,
    /// Its partition.
    pub partition: u32,
    /// The node holding that partition's lease, if any.
    pub node: Option<String>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn age_ms(created: time::OffsetDateTime) -> i64 {
    let created = i64::try_from(created.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    (now_ms() - created).max(0)
}

/// The placement bucket `name`; `None` when it does not exist yet (no node ever ran).
/// Any other failure (no permission to read it, no answer) is an error, not "empty".
async fn bucket(js: &jetstream::Context, name: String) -> Result<Option<kv::Store>, BusError> {
    match js.get_key_value(name.clone()).await {
        Ok(store) => Ok(Some(store)),
        Err(e) if crate::error::is_missing_bucket(&e) => Ok(None),
        Err(e) => {
            let why = std::error::Error::source(&e)
                .map_or_else(|| e.to_string(), |s| format!("{e}: {s}"));
            Err(BusError::Nats(format!("reading bucket {name}: {why}")))
        }
    }
}

/// How long one read of the cluster's state may take: an operator's view (and a probe's)
/// answers "unavailable" rather than hanging while a server or a bucket's leader is away.
const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// `read`, or a `nats` error naming `what` after [`READ_TIMEOUT`].
async fn bounded<T>(
    what: &str,
    read: impl Future<Output = Result<T, BusError>>,
) -> Result<T, BusError> {
    tokio::time::timeout(READ_TIMEOUT, read)
        .await
        .unwrap_or_else(|_| {
            Err(BusError::Nats(format!(
                "{what}: no answer within {} s",
                READ_TIMEOUT.as_secs()
            )))
        })
}

async fn entries(store: &kv::Store) -> Result<Vec<kv::Entry>, BusError> {
    let mut keys = store
        .keys()
        .await
        .map_err(|e| BusError::Nats(format!("list keys: {e}")))?;
    let mut names = Vec::new();
    while let Some(k) = keys.next().await {
        if let Ok(k) = k {
            names.push(k);
        }
    }
    // The entries at once (a lease bucket has one per partition), not one round trip
    // after the other.
    let got = futures::future::join_all(names.into_iter().map(|k| store.entry(k))).await;
    Ok(got
        .into_iter()
        .filter_map(|e| e.ok().flatten())
        .filter(|e| e.operation == kv::Operation::Put)
        .collect())
}

/// Reads every lease: partition → (node id, age in ms).
pub async fn leases(
    js: &jetstream::Context,
    names: &Names,
) -> Result<BTreeMap<u32, (String, i64)>, BusError> {
    let Some(store) = bucket(js, names.leases_bucket()).await? else {
        return Ok(BTreeMap::new());
    };
    let mut out = BTreeMap::new();
    for e in entries(&store).await? {
        if let Some(p) = names.parse_lease_key(&e.key) {
            out.insert(
                p,
                (
                    String::from_utf8_lossy(&e.value).into_owned(),
                    age_ms(e.created),
                ),
            );
        }
    }
    Ok(out)
}

/// Reads the heartbeats of live nodes.
pub async fn nodes(js: &jetstream::Context, names: &Names) -> Result<Vec<NodeInfo>, BusError> {
    let Some(store) = bucket(js, names.nodes_bucket()).await? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for e in entries(&store).await? {
        if let Ok(info) = crate::codec::decode::<NodeInfo>(&e.value) {
            out.push(info);
        }
    }
    out.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    Ok(out)
}

/// The cluster's status.
pub async fn status(
    js: &jetstream::Context,
    names: &Names,
    partitions: u32,
) -> Result<ClusterStatus, BusError> {
    let (leases, nodes) = bounded("reading the cluster's leases and nodes", async {
        tokio::try_join!(leases(js, names), nodes(js, names))
    })
    .await?;
    let now = now_ms();
    let nodes = nodes
        .into_iter()
        .map(|n| {
            let held: Vec<u32> = leases
                .iter()
                .filter(|(_, (node, _))| *node == n.node_id)
                .map(|(p, _)| *p)
                .collect();
            NodeStatus {
                heartbeat_age_ms: (now - n.heartbeat_at.millis()).max(0),
                partition_count: held.len(),
                partitions: held,
                node_id: n.node_id,
                started_at: n.started_at,
                live_actors: n.live_actors,
            }
        })
        .collect();
    let unowned = (0..partitions)
        .filter(|p| !leases.contains_key(p))
        .collect();
    Ok(ClusterStatus {
        partitions,
        nodes,
        leases: leases
            .into_iter()
            .map(|(partition, (node_id, age_ms))| LeaseStatus {
                partition,
                node_id,
                age_ms,
            })
            .collect(),
        unowned,
    })
}

/// Where the entity `kind`/`id` lives now.
pub async fn locate(
    js: &jetstream::Context,
    names: &Names,
    partitions: u32,
    kind: EntityKind,
    id: &str,
) -> Result<Location, BusError> {
    let p = partition(id, partitions);
    let node = bounded("reading a lease", async {
        Ok(match bucket(js, names.leases_bucket()).await? {
            Some(store) => match store.entry(names.lease_key(p)).await {
                Ok(Some(e)) if e.operation == kv::Operation::Put => {
                    Some(String::from_utf8_lossy(&e.value).into_owned())
                }
                Ok(_) => None,
                Err(e) => return Err(BusError::Nats(format!("read lease: {e}"))),
            },
            None => None,
        })
    })
    .await?;
    Ok(Location {
        kind: kind.as_str().to_owned(),
        id: id.to_owned(),
        partition: p,
        node,
    })
}

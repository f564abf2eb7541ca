//! Placement: which node serves which partition, on NATS KV alone.
//!
//! * **Membership**: every node puts a heartbeat ([`NodeInfo`]) into `{prefix}_nodes`,
//!   a bucket whose `max_age` drops the key of a node that stops heartbeating.
//! * **Assignment**: rendezvous (highest-random-weight) hashing over the live nodes,
//!   with a repair for the rare sets it leaves unbalanced ([`assign`]). Every node
//!   computes the same answer; there is no coordinator.
//! * **Ownership**: a node serves partition `p` only while it holds the lease key
//!   `partition.{p}` in `{prefix}_leases` — taken with `create`, renewed with
//!   update-by-revision at a third of the TTL, deleted on hand-over. The bucket's
//!   `max_age` is the TTL, so a dead node's leases lapse by themselves.
//! * **Fencing**: the [`LeaseGuard`] refuses commands and writes for partitions whose
//!   lease is not known to be held *now* (a node paused past its lease wakes up with an
//!   expired guard), and every storage write is compare-and-set on the revision it read.
//! * **Promises**: while the leases bucket has no answer (its stream electing a leader
//!   after a NATS server died), a holder asks every peer, over core NATS, to promise not
//!   to take its partitions for a TTL; with every peer's promise it serves on until just
//!   before the earliest promise ends. Before taking a partition it did not hold, a node
//!   asks its peers whether one of them serves it.

use crate::ctx::Ctx;
use crate::partition::{KindStats, PartitionRuntime};
use async_nats::jetstream::kv;
use cartwheel_bus::cluster::{LeaseAnswer, LeaseAsk, NodeInfo};
use cartwheel_bus::codec;
use cartwheel_domain::SagaStep;
use futures::StreamExt;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Which partitions this node may serve right now, and until when.
///
/// A deadline per partition, in milliseconds since the guard was made (0: not held). It
/// is set to "renewal started + TTL − margin" after every successful renewal, so it
/// expires on its own when renewals stop — including while the process is paused.
#[derive(Debug)]
pub struct LeaseGuard {
    base: Instant,
    deadlines: Vec<AtomicU64>,
}

impl Default for LeaseGuard {
    fn default() -> Self {
        LeaseGuard::new(0)
    }
}

impl LeaseGuard {
    /// A guard for `partitions` partitions, none held.
    pub fn new(partitions: u32) -> LeaseGuard {
        LeaseGuard {
            base: Instant::now(),
            deadlines: (0..partitions).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether partition `p` is held now.
    pub fn holds(&self, p: u32) -> bool {
        self.deadlines
            .get(p as usize)
            .is_some_and(|d| self.ms(Instant::now()).saturating_add(1) < d.load(Ordering::Acquire))
    }

    /// Until when `p` is held, if it is held now.
    pub fn deadline(&self, p: u32) -> Option<Instant> {
        let d = self.deadlines.get(p as usize)?.load(Ordering::Acquire);
        let until = self.base + Duration::from_millis(d.checked_sub(1)?);
        (until > Instant::now()).then_some(until)
    }

    /// Marks `p` held until `until`.
    pub fn grant(&self, p: u32, until: Instant) {
        if let Some(d) = self.deadlines.get(p as usize) {
            // Stored plus one so that 0 always means "not held".
            d.store(self.ms(until).saturating_add(1), Ordering::Release);
        }
    }

    /// Marks `p` not held.
    pub fn revoke(&self, p: u32) {
        if let Some(d) = self.deadlines.get(p as usize) {
            d.store(0, Ordering::Release);
        }
    }
}

/// Which live node serves each partition (index = partition): rendezvous hashing with a
/// balance repair. Each partition goes to its highest-weight live node; then, while the
/// largest share is more than half as large again as the smallest (and by more than
/// two), the partition of the largest node with the highest weight for the smallest
/// node moves to it. Every node computes the same answer from the same live set.
///
/// Plain rendezvous moves the fewest partitions — a join moves partitions only to the
/// newcomer, a node's loss moves only its own — but over 64 partitions some sets of node
/// ids split 25 to 12, beyond the 2:1 a join must reach (the chaos checker saw joins
/// that never reached a fair share). The repair touches only such sets, and moves few
/// partitions. (Rendezvous with bounded loads for every set balanced perfectly, but a
/// node's loss then also moved partitions between the surviving nodes, and drained
/// them mid-failover: 1,000 contended checkouts with the sku's owner killed failed over
/// in 13 s instead of 3 on a loaded machine.)
pub fn assign(partitions: u32, nodes: &BTreeSet<String>) -> Vec<Option<&str>> {
    let ids: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let mut owner: Vec<Option<usize>> = (0..partitions)
        .map(|p| (0..ids.len()).max_by_key(|i| weight(p, ids[*i])))
        .collect();
    if ids.len() > 1 {
        let mut load = vec![0usize; ids.len()];
        for i in owner.iter().flatten() {
            load[*i] += 1;
        }
        // Bounded: every move shrinks the gap between the largest and smallest share.
        for _ in 0..partitions {
            let (max_i, max) = (0..ids.len())
                .map(|i| (i, load[i]))
                .max_by_key(|(i, l)| (*l, std::cmp::Reverse(*i)))
                .unwrap_or((0, 0));
            let (min_i, min) = (0..ids.len())
                .map(|i| (i, load[i]))
                .min_by_key(|(i, l)| (*l, *i))
                .unwrap_or((0, 0));
            if max <= min + 2 || 2 * max <= 3 * min {
                break;
            }
            let Some(p) = (0..partitions)
                .filter(|p| owner[*p as usize] == Some(max_i))
                .max_by_key(|p| weight(*p, ids[min_i]))
            else {
                break;
            };
            owner[p as usize] = Some(min_i);
            load[max_i] -= 1;
            load[min_i] += 1;
        }
    }
    owner.into_iter().map(|o| o.map(|i| ids[i])).collect()
}

fn weight(partition: u32, node: &str) -> u64 {
    // FNV-1a over the node id, then a splitmix64 finalizer mixed with the partition.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut z = h ^ u64::from(partition).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

struct Held {
    revision: u64,
    runtime: PartitionRuntime,
}

/// What one lease renewal found.
enum Renewal {
    /// Renewed at this revision.
    Renewed(u64),
    /// The key holds another node's lease: the partition is not ours.
    Lost(String),
    /// No answer in time: unknown, try again.
    Unknown,
}

/// What this node promised its peers, and the leases it is taking right now. Shared by
/// the placement loop and the task that answers peers, so a promise and a take of the
/// same partition exclude each other.
#[derive(Debug, Default)]
struct Book {
    /// Partition → until when this node promised not to take it.
    promised: BTreeMap<u32, Instant>,
    /// Partitions whose lease this node is trying to take (not promised meanwhile).
    taking: BTreeSet<u32>,
    /// Partitions being handed over (drained in the background; not taken again until
    /// their lease is deleted).
    handing: BTreeSet<u32>,
}

fn lock(book: &Mutex<Book>) -> MutexGuard<'_, Book> {
    // Nothing panics while holding the lock; a poisoned one still holds a usable book.
    book.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the placement loop tells the rest of the process (probes, metrics).
#[derive(Debug, Default)]
pub struct PlacementState {
    /// The node serves what the assignment gives it, no more and no less, on a settled
    /// live set (readiness: a drain waits until this is true again).
    settled: std::sync::atomic::AtomicBool,
    /// Partitions held now.
    held: AtomicU64,
}

impl PlacementState {
    /// Whether the node holds exactly its share of a settled live set.
    pub fn settled(&self) -> bool {
        self.settled.load(Ordering::Acquire)
    }

    /// Partitions held now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }
}

/// Counts partitions that changed hands here in `cartwheel_partition_moves_total`:
/// `acquired`, `handed_over` (graceful), `lost` (a lease that lapsed or was taken).
fn count_moves(change: &'static str, n: usize) {
    metrics::counter!("cartwheel_partition_moves_total", "change" => change).increment(n as u64);
}

/// The placement loop of one node.
pub struct Placement {
    ctx: Ctx,
    nodes: kv::Store,
    leases: kv::Store,
    stats: KindStats,
    limiter: Arc<Semaphore>,
    held: BTreeMap<u32, Held>,
    started_at: cartwheel_domain::Timestamp,
    last_renewal: Instant,
    /// Heartbeats are failing (membership has no answer, e.g. its stream is electing a
    /// leader).
    heartbeat_failing: bool,
    /// When heartbeats answered again after failing. For one tick after that the live set
    /// may still miss nodes whose keys aged out during the outage and who have not
    /// heartbeated since; taking their partitions then would only move them back.
    membership_back_at: Option<Instant>,
    /// Partitions dropped because their guard lapsed (not handed over), until taken again
    /// or the membership settles.
    lapsed: BTreeSet<u32>,
    /// Promises given and leases being taken.
    book: Arc<Mutex<Book>>,
    /// The live set as last read: the peers asked before taking partitions.
    last_live: Option<BTreeSet<String>>,
    /// Hand-overs still draining.
    handovers: Vec<tokio::task::JoinHandle<()>>,
    /// Every node seen in a live set, with when it was last seen: the peers asked for
    /// promises are those seen within two TTLs, so a live set read during an outage
    /// (keys aged out, a set of one) does not shrink the promise round to nobody.
    seen: BTreeMap<String, Instant>,
    /// What the loop reports.
    state: Arc<PlacementState>,
}

/// What can go wrong setting placement up.
pub type PlacementError = crate::node::NodeError;

async fn bucket(
    js: &async_nats::jetstream::Context,
    name: String,
    max_age: Duration,
    replicas: usize,
) -> Result<kv::Store, PlacementError> {
    // Nodes starting together race to create the buckets, and a replicated bucket just
    // created answers "no responders" until its stream has a leader: opened like the
    // entity buckets (bounded retries until it answers a read), so a node never starts
    // half-placed.
    let config = kv::Config {
        bucket: name.clone(),
        history: 1,
        max_age,
        num_replicas: replicas,
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    };
    cartwheel_storage::kv::open_or_create(js, config)
        .await
        .map_err(|e| PlacementError::Placement(format!("bucket {name}: {e}")))
}

impl Placement {
    /// Opens (or creates) the membership and lease buckets.
    pub async fn new(
        ctx: Ctx,
        stats: KindStats,
        limiter: Arc<Semaphore>,
        replicas: usize,
        state: Arc<PlacementState>,
    ) -> Result<Placement, PlacementError> {
        let ttl = ctx.settings.lease_ttl;
        let nodes = bucket(&ctx.js, ctx.names().nodes_bucket(), ttl, replicas).await?;
        let leases = bucket(&ctx.js, ctx.names().leases_bucket(), ttl, replicas).await?;
        let started_at = ctx.now();
        Ok(Placement {
            ctx,
            nodes,
            leases,
            stats,
            limiter,
            held: BTreeMap::new(),
            started_at,
            last_renewal: Instant::now(),
            heartbeat_failing: false,
            membership_back_at: None,
            lapsed: BTreeSet::new(),
            book: Arc::default(),
            last_live: None,
            handovers: Vec::new(),
            seen: BTreeMap::new(),
            state,
        })
    }

    fn node_id(&self) -> &str {
        &self.ctx.settings.node_id
    }

    fn margin(&self) -> Duration {
        self.ctx.settings.lease_ttl / 6
    }

    /// How often the loop runs: a third of the TTL at most, and at least every second.
    pub fn tick(&self) -> Duration {
        (self.ctx.settings.lease_ttl / 3).min(Duration::from_secs(1))
    }

    /// Partitions held now.
    pub fn held(&self) -> Vec<u32> {
        self.held.keys().copied().collect()
    }

    async fn heartbeat(&mut self) {
        let ok = self.put_heartbeat().await;
        if !ok {
            self.heartbeat_failing = true;
        } else if self.heartbeat_failing {
            self.heartbeat_failing = false;
            self.membership_back_at = Some(Instant::now());
        }
    }

    /// Whether `p` was this node's until its guard lapsed (not handed over since).
    fn was_held(&self, p: u32) -> bool {
        self.lapsed.contains(&p)
    }

    /// Whether the live set can be trusted to take partitions on: heartbeats answer, and
    /// did so for a tick already if they had failed.
    fn membership_settled(&self) -> bool {
        !self.heartbeat_failing
            && self
                .membership_back_at
                .is_none_or(|at| at.elapsed() >= self.tick())
    }

    /// Puts this node's heartbeat; `false` when it got no answer or failed.
    async fn put_heartbeat(&self) -> bool {
        let info = NodeInfo {
            node_id: self.node_id().to_owned(),
            started_at: self.started_at,
            heartbeat_at: self.ctx.now(),
            partitions: self.held(),
            live_actors: [
                (
                    "cart".to_string(),
                    self.stats.cart.live.load(Ordering::Relaxed),
                ),
                (
                    "inventory".to_string(),
                    self.stats.inventory.live.load(Ordering::Relaxed),
                ),
                (
                    "order".to_string(),
                    self.stats.order.live.load(Ordering::Relaxed),
                ),
            ]
            .into_iter()
            .collect(),
        };
        match codec::encode(&info) {
            Ok(bytes) => {
                let put = self.nodes.put(self.node_id(), bytes);
                match tokio::time::timeout(self.renewal_timeout(), put).await {
                    Ok(Ok(_)) => true,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "heartbeat failed");
                        false
                    }
                    Err(_) => {
                        tracing::warn!("heartbeat got no answer in time");
                        false
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat not encodable");
                false
            }
        }
    }

    async fn live_nodes(&self) -> Option<BTreeSet<String>> {
        let list = async {
            let mut keys = self.nodes.keys().await.ok()?;
            let mut out = BTreeSet::new();
            while let Some(k) = keys.next().await {
                out.insert(k.ok()?);
            }
            out.insert(self.node_id().to_owned());
            Some(out)
        };
        tokio::time::timeout(self.renewal_timeout(), list)
            .await
            .ok()
            .flatten()
    }

    /// Drops the partitions whose guard lapsed: their lease may be someone else's now,
    /// and the host has already stopped serving them. One that is still ours is taken
    /// again as new (a fresh runtime, loaded from storage).
    fn drop_lapsed(&mut self) {
        let lapsed: Vec<u32> = self
            .held
            .keys()
            .copied()
            .filter(|p| !self.ctx.guard.holds(*p))
            .collect();
        if !lapsed.is_empty() {
            tracing::warn!(partitions = ?lapsed, "leases not renewed in time; dropping those partitions");
            for p in lapsed {
                self.lose(p);
                self.lapsed.insert(p);
            }
        }
    }

    /// Renews every held lease. A renewal that fails for want of an answer (JetStream
    /// electing a leader, the connection moving to another server) keeps the partition:
    /// the guard counts down on its own, and the next tick tries again. Only a lease
    /// that is provably someone else's, or a guard that lapsed, drops a partition.
    async fn renew(&mut self) {
        self.drop_lapsed();
        let started = Instant::now();
        let me = self.node_id().to_owned();
        let bound = self.renewal_timeout();
        let renewals = self.held.iter().map(|(p, h)| {
            let key = self.ctx.names().lease_key(*p);
            let leases = self.leases.clone();
            let me = me.clone();
            let (p, rev) = (*p, h.revision);
            async move {
                let renewed = tokio::time::timeout(
                    bound,
                    leases.update(&key, me.clone().into_bytes().into(), rev),
                )
                .await;
                let outcome = match renewed {
                    Ok(Ok(rev)) => Renewal::Renewed(rev),
                    Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                        // Ours at another revision (an earlier renewal applied, its answer
                        // lost), or someone else's.
                        reclaim(&leases, &key, me, bound).await
                    }
                    Ok(Err(_)) | Err(_) => Renewal::Unknown,
                };
                (p, outcome)
            }
        });
        let results = futures::future::join_all(renewals).await;
        let until = started + self.ctx.settings.lease_ttl - self.margin();
        let mut unknown = Vec::new();
        for (p, r) in results {
            match r {
                Renewal::Renewed(rev) => {
                    // A guard that lapsed while the renewal ran stays lapsed: the host
                    // stopped serving, and the partition is taken again as new.
                    if !self.ctx.guard.holds(p) {
                        continue;
                    }
                    if let Some(h) = self.held.get_mut(&p) {
                        h.revision = rev;
                    }
                    self.ctx.guard.grant(p, until);
                }
                Renewal::Lost(why) => {
                    tracing::warn!(partition = p, error = %why, "lease taken by another node; dropping the partition");
                    self.lose(p);
                }
                Renewal::Unknown => unknown.push(p),
            }
        }
        if !unknown.is_empty() {
            self.serve_on_promises(unknown).await;
        }
        self.drop_lapsed();
        self.last_renewal = started;
    }

    /// The leases of `partitions` got no answer: asks every peer to promise not to take
    /// them for a TTL, and with every peer's promise extends their guards to just before
    /// the earliest promise can end (asked + TTL − margin; a peer's promise runs from
    /// when it received the question, which is later). Only a node that could take a
    /// partition can break a lease, and every such node promised; nodes not yet in the
    /// live set ask before they take ([`LeaseAsk::Holds`]). Without every promise (a
    /// peer does not answer: it is down, or this node is cut off) the guards count down
    /// as before.
    async fn serve_on_promises(&mut self, partitions: Vec<u32>) {
        let partitions: Vec<u32> = partitions
            .into_iter()
            .filter(|p| self.ctx.guard.holds(*p))
            .collect();
        if partitions.is_empty() {
            return;
        }
        let ttl = self.ctx.settings.lease_ttl;
        let ask = LeaseAsk::Promise {
            holder: self.node_id().to_owned(),
            partitions: partitions.clone(),
            for_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
        };
        // A peer may be reconnecting right now (it was on the server that died): a few
        // quick tries, while the guards still hold.
        let mut tries = 0;
        let (asked, all_answered, busy) = loop {
            tries += 1;
            let asked = Instant::now();
            let Some(peers) = self.promise_peers() else {
                tracing::warn!(
                    count = partitions.len(),
                    "lease renewals got no answer and the live set is unknown; serving on until their guards lapse"
                );
                return;
            };
            let (all, busy) = self.ask_peers(&peers, &ask).await;
            if all || tries >= 3 || !partitions.iter().any(|p| self.ctx.guard.holds(*p)) {
                break (asked, all, busy);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        if !all_answered {
            tracing::warn!(
                count = partitions.len(),
                "lease renewals got no answer and not every peer promised; serving on until their guards lapse, retrying"
            );
            return;
        }
        let until = asked + ttl - self.margin();
        let mut extended = 0u64;
        for p in partitions {
            // A guard that lapsed meanwhile stays lapsed; a partition a peer serves is
            // not ours to keep.
            if busy.contains(&p) || !self.ctx.guard.holds(p) {
                continue;
            }
            if self.ctx.guard.deadline(p).is_some_and(|d| d < until) {
                self.ctx.guard.grant(p, until);
            }
            extended += 1;
        }
        metrics::counter!("cartwheel_lease_promised_extensions_total").increment(extended);
        tracing::info!(
            partitions = extended,
            refused = busy.len(),
            "lease renewals got no answer; serving on under every peer's promise"
        );
    }

    /// The peers to ask for promises: every other node seen in a live set within two
    /// TTLs. `None` when no live set was read yet.
    fn promise_peers(&self) -> Option<Vec<String>> {
        self.last_live.as_ref()?;
        Some(
            self.seen
                .keys()
                .filter(|n| n.as_str() != self.node_id())
                .cloned()
                .collect(),
        )
    }

    /// The peers to ask before a take: every other node of the current live set.
    fn live_peers(&self) -> Option<Vec<String>> {
        Some(
            self.last_live
                .as_ref()?
                .iter()
                .filter(|n| n.as_str() != self.node_id())
                .cloned()
                .collect(),
        )
    }

    /// Asks `peers` `ask` at once; answers whether every peer answered, and the
    /// partitions any of them called busy.
    async fn ask_peers(&self, peers: &[String], ask: &LeaseAsk) -> (bool, BTreeSet<u32>) {
        let Ok(payload) = codec::encode(ask) else {
            return (false, BTreeSet::new());
        };
        let bound = self.renewal_timeout();
        let nats = self.ctx.bus.nats();
        let asks = peers.iter().map(|peer| {
            let subject = self.ctx.names().node_leases(peer);
            let payload = payload.clone();
            async move {
                let answer = tokio::time::timeout(bound, nats.request(subject, payload)).await;
                match answer {
                    Ok(Ok(msg)) => codec::decode::<LeaseAnswer>(&msg.payload).ok(),
                    // The cluster knows no subscriber for the peer: its process is gone
                    // (killed, or stopped after handing over). It serves nothing, and
                    // when it comes back it asks before it takes.
                    Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                        Some(LeaseAnswer::default())
                    }
                    _ => None,
                }
            }
        });
        let answers = futures::future::join_all(asks).await;
        let all = answers.iter().all(Option::is_some);
        let busy = answers.into_iter().flatten().flat_map(|a| a.busy).collect();
        (all, busy)
    }

    /// How long one lease call may take before the loop moves on (it retries at the
    /// next tick, well within the guard).
    fn renewal_timeout(&self) -> Duration {
        (self.ctx.settings.lease_ttl / 6).clamp(Duration::from_millis(100), Duration::from_secs(1))
    }

    fn lose(&mut self, p: u32) {
        self.ctx.guard.revoke(p);
        if let Some(h) = self.held.remove(&p) {
            h.runtime.abort();
            count_moves("lost", 1);
        }
    }

    /// Hands partitions over, all at once: stop serving each gracefully, then delete its
    /// lease so the successor can take it at once.
    ///
    /// The draining runs in the background: a partition's in-flight work (a checkout
    /// waiting for its saga, a write riding out a storage election) may take seconds, and
    /// the loop must go on renewing every other lease meanwhile (the chaos checker saw a
    /// hand-over during a NATS server loss block the loop for 6 s and cost the node its
    /// remaining partitions). The partitions stay out of `acquire_all` until their lease
    /// is deleted.
    fn release_all(&mut self, partitions: Vec<u32>) -> tokio::task::JoinHandle<()> {
        let mut leaving = Vec::new();
        for p in partitions {
            if let Some(h) = self.held.remove(&p) {
                leaving.push((p, h));
            }
        }
        lock(&self.book)
            .handing
            .extend(leaving.iter().map(|(p, _)| *p));
        let stops: Vec<_> = leaving
            .into_iter()
            .map(|(p, h)| {
                let leases = self.leases.clone();
                let key = self.ctx.names().lease_key(p);
                let guard = self.ctx.guard.clone();
                let book = self.book.clone();
                async move {
                    h.runtime.stop(Duration::from_secs(10), &guard).await;
                    guard.revoke(p);
                    if let Err(e) = leases.delete_expect_revision(key, Some(h.revision)).await
                    {
                        tracing::warn!(partition = p, error = %e, "lease delete failed; it will lapse");
                    }
                    lock(&book).handing.remove(&p);
                }
            })
            .collect();
        tokio::spawn(async move {
            futures::future::join_all(stops).await;
        })
    }

    /// Tries to take the lease of `p` (bounded in time): its revision, or `None` when it
    /// is another node's or the call got no answer.
    async fn take_lease(
        leases: kv::Store,
        key: String,
        me: String,
        bound: Duration,
    ) -> Option<u64> {
        let created =
            tokio::time::timeout(bound, leases.create(&key, me.clone().into_bytes().into()))
                .await
                .ok()?;
        match created {
            Ok(rev) => Some(rev),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                // Ours from an earlier life of this node id (restart after a crash), or
                // from before our guard lapsed?
                match reclaim(&leases, &key, me, bound).await {
                    Renewal::Renewed(rev) => Some(rev),
                    Renewal::Lost(_) | Renewal::Unknown => None,
                }
            }
            Err(e) => {
                tracing::debug!(%key, error = %e, "lease create failed");
                None
            }
        }
    }

    /// Takes the leases of `partitions` (all at once) and starts serving each one won.
    /// Returns the partitions acquired.
    async fn acquire_all(&mut self, partitions: Vec<u32>) -> Vec<u32> {
        let me = self.node_id().to_owned();
        let bound = self.renewal_timeout();
        // Not what this node promised a peer it would leave alone (until that peer hands
        // it over or the promise ends); marked as being taken, so no promise is given for
        // it meanwhile.
        let partitions: Vec<u32> = {
            let mut book = lock(&self.book);
            let now = Instant::now();
            book.promised.retain(|_, until| *until > now);
            let free: Vec<u32> = partitions
                .into_iter()
                .filter(|p| !book.promised.contains_key(p) && !book.handing.contains(p))
                .collect();
            book.taking.extend(free.iter().copied());
            free
        };
        // A partition this node did not hold may be served by a peer on promises (its
        // lease aged out while the bucket had no answer): ask every live peer first, and
        // take those partitions only when every one of them answered.
        let strangers: Vec<u32> = partitions
            .iter()
            .copied()
            .filter(|p| !self.was_held(*p))
            .collect();
        let busy: BTreeSet<u32> = match self.live_peers() {
            _ if strangers.is_empty() => BTreeSet::new(),
            Some(peers) if !peers.is_empty() => {
                let ask = LeaseAsk::Holds {
                    partitions: strangers.clone(),
                };
                match self.ask_peers(&peers, &ask).await {
                    (true, busy) => busy,
                    // One that is reconnecting may be serving them: next round.
                    (false, _) => {
                        tracing::info!(
                            count = strangers.len(),
                            "not every peer answered; taking those partitions later"
                        );
                        strangers.into_iter().collect()
                    }
                }
            }
            _ => BTreeSet::new(),
        };
        let acquired = self.take_and_serve(partitions, &busy, &me, bound).await;
        lock(&self.book).taking.clear();
        acquired
    }

    async fn take_and_serve(
        &mut self,
        partitions: Vec<u32>,
        busy: &BTreeSet<u32>,
        me: &str,
        bound: Duration,
    ) -> Vec<u32> {
        let partitions: Vec<u32> = partitions
            .into_iter()
            .filter(|p| !busy.contains(p))
            .collect();
        let me = me.to_owned();
        let started = Instant::now();
        let takes = partitions.into_iter().map(|p| {
            let fut = Placement::take_lease(
                self.leases.clone(),
                self.ctx.names().lease_key(p),
                me.clone(),
                bound,
            );
            async move { (p, fut.await) }
        });
        let won: Vec<(u32, u64)> = futures::future::join_all(takes)
            .await
            .into_iter()
            .filter_map(|(p, rev)| rev.map(|r| (p, r)))
            .collect();
        let until = started + self.ctx.settings.lease_ttl - self.margin();
        // Start serving every partition won at once: until its subscriptions exist, the
        // lease names this node while nothing here answers.
        let starts = won.into_iter().map(|(p, revision)| {
            self.ctx.guard.grant(p, until);
            let (ctx, stats, limiter) = (&self.ctx, &self.stats, self.limiter.clone());
            async move {
                (
                    p,
                    revision,
                    PartitionRuntime::start(ctx, p, stats, limiter).await,
                )
            }
        });
        let started_all = futures::future::join_all(starts).await;
        let mut acquired = Vec::new();
        for (p, revision, runtime) in started_all {
            match runtime {
                Ok(runtime) => {
                    self.held.insert(p, Held { revision, runtime });
                    acquired.push(p);
                }
                Err(e) => {
                    tracing::error!(partition = p, error = %e, "cannot serve partition; releasing");
                    self.ctx.guard.revoke(p);
                    let _ = self
                        .leases
                        .delete_expect_revision(self.ctx.names().lease_key(p), Some(revision))
                        .await;
                }
            }
        }
        acquired
    }

    /// One round: heartbeat, renew, hand over what another node should own, take what
    /// this node should own. Returns the partitions acquired in this round.
    pub async fn step(&mut self) -> Vec<u32> {
        if self.last_renewal.elapsed() >= self.tick() || self.held.is_empty() {
            self.renew().await;
            self.heartbeat().await;
        }
        let Some(live) = self.live_nodes().await else {
            return Vec::new();
        };
        let now = Instant::now();
        for n in &live {
            self.seen.insert(n.clone(), now);
        }
        let recent = self.ctx.settings.lease_ttl * 2;
        self.seen.retain(|_, at| now.duration_since(*at) <= recent);
        self.last_live = Some(live.clone());
        let partitions = self.ctx.bus.config().partitions;
        let me = self.node_id().to_owned();
        let desired: BTreeSet<u32> = assign(partitions, &live)
            .into_iter()
            .zip(0u32..)
            .filter(|(owner, _)| *owner == Some(me.as_str()))
            .map(|(_, p)| p)
            .collect();
        let to_release: Vec<u32> = self
            .held
            .keys()
            .filter(|p| !desired.contains(p))
            .copied()
            .collect();
        let settled = self.membership_settled();
        // Nothing is handed over on a live set that may still miss nodes (right after
        // heartbeats failed): a missing node can move partitions between the others too
        // (the balance repair), and they would move back a tick later.
        if !to_release.is_empty() && settled {
            tracing::info!(partitions = ?to_release, "handing partitions over");
            count_moves("handed_over", to_release.len());
            let handover = self.release_all(to_release);
            self.handovers.retain(|h| !h.is_finished());
            self.handovers.push(handover);
        }
        let wanted: Vec<u32> = desired
            .iter()
            .copied()
            .filter(|p| !self.held.contains_key(p))
            // Retaking what this node held before an outage is always right; taking
            // others' partitions waits until the live set is complete again.
            .filter(|p| settled || self.was_held(*p))
            .collect();
        let acquired = if wanted.is_empty() {
            Vec::new()
        } else {
            self.acquire_all(wanted).await
        };
        if settled {
            self.lapsed.clear();
        } else {
            for p in &acquired {
                self.lapsed.remove(p);
            }
        }
        if !acquired.is_empty() {
            count_moves("acquired", acquired.len());
            tracing::info!(
                count = acquired.len(),
                held = self.held.len(),
                "partitions acquired"
            );
            self.heartbeat().await;
        }
        let exactly_its_share =
            desired.len() == self.held.len() && desired.iter().all(|p| self.held.contains_key(p));
        self.state
            .settled
            .store(settled && exactly_its_share, Ordering::Release);
        self.state
            .held
            .store(self.held.len() as u64, Ordering::Relaxed);
        acquired
    }

    /// Hands every partition over and leaves the cluster (graceful stop).
    pub async fn leave(mut self) {
        // Leave membership first so the others compute us out and wait for our leases.
        self.state.settled.store(false, Ordering::Release);
        let _ = self.nodes.delete(self.node_id()).await;
        let all = self.held();
        count_moves("handed_over", all.len());
        let _ = self.release_all(all).await;
        for h in std::mem::take(&mut self.handovers) {
            let _ = h.await;
        }
        self.state.held.store(0, Ordering::Relaxed);
    }

    /// Runs until `shutdown`, then leaves. `first_round` is signalled after the first
    /// round (so a starting node serves its share before `Node::start` returns).
    pub async fn run(
        mut self,
        shutdown: CancellationToken,
        first_round: tokio::sync::oneshot::Sender<()>,
    ) {
        let answering = CancellationToken::new();
        tokio::spawn(answer_peers(
            self.ctx.clone(),
            self.book.clone(),
            answering.clone(),
        ));
        let acquired = self.step().await;
        self.resume_sagas(acquired);
        let _ = first_round.send(());
        let mut wake = self.watch().await;
        let mut tick = tokio::time::interval(self.tick());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
                Some(()) = wake.recv() => {}
            }
            let acquired = self.step().await;
            self.resume_sagas(acquired);
        }
        // Peers are answered until every partition is handed over: what this node still
        // serves while it leaves is busy, not free.
        self.leave().await;
        answering.cancel();
    }

    /// Wakes the loop when a lease is deleted (a hand-over) or a node joins or leaves, so
    /// successors take over at once instead of at the next tick.
    async fn watch(&self) -> tokio::sync::mpsc::Receiver<()> {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        match self.leases.watch_all().await {
            Ok(mut w) => {
                let tx = tx.clone();
                let (book, names) = (self.book.clone(), self.ctx.names().clone());
                tokio::spawn(async move {
                    while let Some(Ok(e)) = w.next().await {
                        if e.operation == kv::Operation::Put {
                            continue;
                        }
                        // Handed over: whatever was promised for it is void.
                        if let Some(p) = names.parse_lease_key(&e.key) {
                            lock(&book).promised.remove(&p);
                        }
                        if tx.try_send(()).is_err() && tx.is_closed() {
                            break;
                        }
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "lease watch failed; polling only"),
        }
        match self.nodes.watch_all().await {
            Ok(mut w) => {
                tokio::spawn(async move {
                    let mut known = BTreeSet::new();
                    while let Some(Ok(e)) = w.next().await {
                        let changed = match e.operation {
                            kv::Operation::Put => known.insert(e.key),
                            _ => known.remove(&e.key),
                        };
                        if changed && tx.try_send(()).is_err() && tx.is_closed() {
                            break;
                        }
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "membership watch failed; polling only"),
        }
        rx
    }

    /// Activates the unfinished orders of newly acquired partitions so their sagas resume
    /// on this node (their old owner may have died mid-saga). Partitions are often taken
    /// while JetStream is still electing leaders (after losing a server), when listing or
    /// loading orders fails: what could not be resumed is tried again with backoff for as
    /// long as this node holds the partition, so no saga is left waiting for a restart.
    fn resume_sagas(&self, acquired: Vec<u32>) {
        if acquired.is_empty() {
            return;
        }
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            let mut pending: BTreeSet<u32> = acquired.into_iter().collect();
            let mut backoff = Duration::from_millis(250);
            loop {
                // A partition given up since is resumed by its next owner.
                pending.retain(|p| ctx.guard.holds(*p));
                if pending.is_empty() {
                    return;
                }
                pending = resume_pass(&ctx, &pending).await;
                if pending.is_empty() {
                    return;
                }
                tracing::warn!(partitions = ?pending, retry_in_ms = backoff.as_millis(),
                    "sagas of these partitions not resumed yet; trying again");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        });
    }
}

/// Answers peers' [`LeaseAsk`]s on this node's `node_leases` subject until `stop`.
async fn answer_peers(ctx: Ctx, book: Arc<Mutex<Book>>, stop: CancellationToken) {
    let nats = ctx.bus.nats().clone();
    let subject = ctx.names().node_leases(&ctx.settings.node_id);
    let mut sub = match nats.subscribe(subject).await {
        Ok(sub) => sub,
        Err(e) => {
            tracing::error!(error = %e, "cannot answer peers about leases; they will not extend leases while the bucket has no answer");
            return;
        }
    };
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => break,
            msg = sub.next() => msg,
        };
        let Some(msg) = msg else { break };
        let Some(reply) = msg.reply else { continue };
        let answer = match codec::decode::<LeaseAsk>(&msg.payload) {
            Ok(ask) => answer(&ctx.guard, &book, ask),
            Err(e) => {
                tracing::warn!(error = %e, "undecodable lease question ignored");
                continue;
            }
        };
        if let Ok(bytes) = codec::encode(&answer) {
            let _ = nats.publish(reply, bytes).await;
        }
    }
    let _ = sub.unsubscribe().await;
}

/// This node's answer to `ask`: the asked partitions it serves or is taking are busy;
/// for a promise, every other one is promised.
fn answer(guard: &LeaseGuard, book: &Mutex<Book>, ask: LeaseAsk) -> LeaseAnswer {
    let mut book = lock(book);
    let busy = |partitions: &[u32], book: &Book| -> Vec<u32> {
        partitions
            .iter()
            .copied()
            .filter(|p| guard.holds(*p) || book.taking.contains(p))
            .collect()
    };
    match ask {
        LeaseAsk::Holds { partitions } => LeaseAnswer {
            busy: busy(&partitions, &book),
        },
        LeaseAsk::Promise {
            holder,
            partitions,
            for_ms,
        } => {
            let busy = busy(&partitions, &book);
            // Bounded: a promise never outlives a minute, whatever was asked.
            let until = Instant::now() + Duration::from_millis(for_ms.min(60_000));
            for p in partitions.iter().filter(|p| !busy.contains(p)) {
                let at = book.promised.entry(*p).or_insert(until);
                *at = (*at).max(until);
            }
            tracing::debug!(%holder, promised = partitions.len() - busy.len(), busy = busy.len(), "lease promise given");
            LeaseAnswer { busy }
        }
    }
}

/// Takes over the lease at `key` if it holds this node's id (`me`) at whatever revision:
/// an earlier renewal that applied but lost its answer, or a lease from an earlier life
/// of this node id. No lease at all is taken back with `create`. Another node's lease is
/// [`Renewal::Lost`]; no answer within `bound` is [`Renewal::Unknown`].
async fn reclaim(leases: &kv::Store, key: &str, me: String, bound: Duration) -> Renewal {
    match tokio::time::timeout(bound, leases.entry(key)).await {
        Ok(Ok(Some(entry)))
            if entry.operation == kv::Operation::Put && entry.value == me.as_bytes() =>
        {
            match tokio::time::timeout(
                bound,
                leases.update(key, me.into_bytes().into(), entry.revision),
            )
            .await
            {
                Ok(Ok(rev)) => Renewal::Renewed(rev),
                _ => Renewal::Unknown,
            }
        }
        Ok(Ok(Some(entry))) if entry.operation == kv::Operation::Put => {
            Renewal::Lost(format!("lease {key} is not this node's"))
        }
        // No lease at all: it aged out while the bucket had no answer (this node served
        // on under its peers' promises) — nobody holds it, so it is taken back.
        Ok(Ok(_)) => {
            match tokio::time::timeout(bound, leases.create(key, me.into_bytes().into())).await {
                Ok(Ok(rev)) => Renewal::Renewed(rev),
                Ok(Err(e)) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    Renewal::Lost(format!("lease {key} was taken meanwhile"))
                }
                _ => Renewal::Unknown,
            }
        }
        _ => Renewal::Unknown,
    }
}

/// Resumes the unfinished sagas of `partitions`; answers the partitions where listing,
/// loading or activating an order failed.
async fn resume_pass(ctx: &Ctx, partitions: &BTreeSet<u32>) -> BTreeSet<u32> {
    let count = ctx.bus.config().partitions;
    let ids = match ctx.stores.orders.ids().await {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!(error = %e, "listing orders to resume their sagas failed");
            return partitions.clone();
        }
    };
    let mut failed = BTreeSet::new();
    for id in ids {
        let p = cartwheel_bus::names::partition(&id, count);
        if !partitions.contains(&p) || failed.contains(&p) {
            continue;
        }
        match ctx.stores.orders.load(&id).await {
            Ok(Some(v)) if v.record.state.saga_step != SagaStep::Done => {
                tracing::info!(order = %id, step = ?v.record.state.saga_step, "resuming saga");
                let get = cartwheel_bus::messages::OrderCommand::Get;
                if let Err(e) = ctx.bus.order(&id, &get, "resume").await {
                    tracing::warn!(order = %id, error = %e, "activating an order to resume its saga failed");
                    failed.insert(p);
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(order = %id, error = %e, "loading an order to resume its saga failed");
                failed.insert(p);
            }
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    fn loads(assignment: &[Option<&str>]) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for owner in assignment {
            *counts.entry(owner.unwrap().to_string()).or_insert(0) += 1;
        }
        counts
    }

    #[test]
    fn shares_stay_within_three_to_two_and_a_join_moves_little() {
        // Node id sets like the chaos checker's and the tests' (c0, c1, …; r1, r2; a, b).
        for prefix in ["c", "r", "node-", "n"] {
            for size in 1..=9 {
                let ids: Vec<String> = (0..size).map(|i| format!("{prefix}{i}")).collect();
                let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
                let before_set = set(&refs);
                let before = assign(64, &before_set);
                let counts = loads(&before);
                let (min, max) = (
                    *counts.values().min().unwrap(),
                    *counts.values().max().unwrap(),
                );
                assert!(
                    max <= min + 2 || 2 * max <= 3 * min,
                    "{prefix}×{size}: {counts:?}"
                );
                assert_eq!(counts.len(), size, "every node gets partitions");
                // One more node: it gets its share, and not many others move.
                let newcomer = format!("{prefix}{size}");
                let mut after_set = before_set.clone();
                after_set.insert(newcomer.clone());
                let after = assign(64, &after_set);
                let moved_elsewhere = before
                    .iter()
                    .zip(&after)
                    .filter(|(b, a)| b != a && **a != Some(newcomer.as_str()))
                    .count();
                let share = 64 / (size + 1);
                assert!(
                    moved_elsewhere <= 2 * share,
                    "{prefix}×{size}+1: {moved_elsewhere} partitions moved between old nodes"
                );
                // One node fewer: its partitions move, few others do.
                if size >= 2 {
                    let gone = ids[0].as_str();
                    let mut fewer = before_set.clone();
                    fewer.remove(gone);
                    let after = assign(64, &fewer);
                    let moved_between_survivors = before
                        .iter()
                        .zip(&after)
                        .filter(|(b, a)| b != a && **b != Some(gone))
                        .count();
                    assert!(
                        moved_between_survivors <= 64 / (size - 1),
                        "{prefix}×{size}−1: {moved_between_survivors} partitions moved between survivors"
                    );
                }
            }
        }
        assert!(assign(8, &BTreeSet::new()).iter().all(Option::is_none));
        // The same set, the same answer, whatever order it was built in.
        assert_eq!(
            assign(64, &set(&["b", "a", "c"])),
            assign(64, &set(&["c", "b", "a"]))
        );
    }

    #[test]
    fn the_guard_expires_by_itself() {
        let g = LeaseGuard::new(4);
        assert!(!g.holds(1));
        g.grant(1, Instant::now() + Duration::from_secs(60));
        assert!(g.holds(1));
        g.grant(2, Instant::now());
        assert!(!g.holds(2));
        g.revoke(1);
        assert!(!g.holds(1));
        assert!(!g.holds(99));
    }
}

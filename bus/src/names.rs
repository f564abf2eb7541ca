//! Every subject, stream, bucket and queue-group name, built in one place.
//!
//! Publishers and subscribers both call these functions; unit tests pin each against a
//! literal string so a rename is a deliberate, visible change.
//!
//! | name | shape |
//! |---|---|
//! | cart commands | `{prefix}.cart.{p}.{cart_id}` |
//! | inventory / product commands | `{prefix}.inventory.{p}.{sku}` |
//! | order commands | `{prefix}.order.{p}.{order_id}` |
//! | read-side queries | `{prefix}.query.catalog`, `{prefix}.query.orders` |
//! | events | `{prefix}.evt.{kind}.{id}` in stream `{PREFIX}_EVT_{KIND}` |
//! | live changes | `{prefix}.live.{kind}.{id}`: each stored KV value, republished by the bucket |
//! | KV buckets | `{prefix}_carts`, `{prefix}_orders`, `{prefix}_products`, `{prefix}_inventory` |
//! | webhook admin | `{prefix}.webhook.admin` (queue group `{prefix}-webhook`) |
//! | webhook buckets | `{prefix}_webhooks` (endpoints), `{prefix}_webhook_deliveries` (`{endpoint}.{delivery}`) |
//! | webhook dead letters | `{prefix}.webhook.dead.{endpoint}` in stream `{PREFIX}_WEBHOOK_DEAD` |
//! | webhook system events | `{prefix}.webhook.evt.{endpoint}` in stream `{PREFIX}_WEBHOOK_EVT` |
//! | webhook consumers | `wh_{endpoint}_{source}`; a replay's `whr_{endpoint}_{replay}_{source}` |

/// The kinds of entity that live in actors, each with its own subject space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntityKind {
    /// Shopping carts.
    Cart,
    /// Orders (and their checkout sagas).
    Order,
    /// One actor per sku: its product record and its stock.
    Inventory,
}

impl EntityKind {
    /// Parses the subject token of a kind.
    pub fn parse(s: &str) -> Option<EntityKind> {
        EntityKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Every kind.
    pub const ALL: [EntityKind; 3] = [EntityKind::Cart, EntityKind::Order, EntityKind::Inventory];

    /// The subject token of the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Cart => "cart",
            EntityKind::Order => "order",
            EntityKind::Inventory => "inventory",
        }
    }
}

/// Event stream kinds (`cw.evt.{kind}.{id}`).
pub const EVENT_KINDS: [&str; 4] = ["cart", "order", "inventory", "product"];

/// Stable partition of an entity id: FNV-1a 64 of the id's bytes, modulo `partitions`.
///
/// The hash is fixed and documented because every node and edge must agree on it, and the
/// partition count is fixed when a cluster is created.
pub fn partition(id: &str, partitions: u32) -> u32 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for b in id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(PRIME);
    }
    let n = u64::from(partitions.max(1));
    // The remainder is < partitions, which fits u32.
    u32::try_from(h % n).unwrap_or(0)
}

/// Builds names under one prefix (default `cw`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    prefix: String,
}

impl Default for Names {
    fn default() -> Self {
        Names::new("cw")
    }
}

impl Names {
    /// Names under `prefix` (letters, digits, `_` and `-` only: it is a subject token and a
    /// bucket-name prefix).
    pub fn new(prefix: &str) -> Names {
        Names {
            prefix: prefix.to_owned(),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The command subject of one entity: `{prefix}.{kind}.{p}.{id}`.
    pub fn entity(&self, kind: EntityKind, partition: u32, id: &str) -> String {
        format!("{}.{}.{}.{}", self.prefix, kind.as_str(), partition, id)
    }

    /// A subscription to every entity of a kind: `{prefix}.{kind}.*.*`.
    pub fn entity_all(&self, kind: EntityKind) -> String {
        format!("{}.{}.*.*", self.prefix, kind.as_str())
    }

    /// The internal command subject of one entity: `{prefix}.{kind}.{p}.{id}.int`, for
    /// the commands only nodes send (a saga's reservations, an order's placement). NATS
    /// permissions can give edges the public subjects (`{prefix}.{kind}.*.*`, exactly four
    /// tokens) without these, and nodes refuse an internal command on a public subject.
    pub fn entity_internal(&self, kind: EntityKind, partition: u32, id: &str) -> String {
        format!("{}.int", self.entity(kind, partition, id))
    }

    /// A subscription to one partition of a kind, public and internal subjects alike:
    /// `{prefix}.{kind}.{p}.>`.
    pub fn entity_partition(&self, kind: EntityKind, partition: u32) -> String {
        format!("{}.{}.{}.>", self.prefix, kind.as_str(), partition)
    }

    /// Splits a public or internal entity command subject into its partition, its id and
    /// whether it is internal.
    pub fn parse_any_entity<'a>(
        &self,
        kind: EntityKind,
        subject: &'a str,
    ) -> Option<(u32, &'a str, bool)> {
        if let Some((p, id)) = self.parse_entity(kind, subject) {
            return Some((p, id, false));
        }
        let (p, id) = self.parse_entity(kind, subject.strip_suffix(".int")?)?;
        Some((p, id, true))
    }

    /// Splits an entity command subject into its partition and id.
    pub fn parse_entity<'a>(&self, kind: EntityKind, subject: &'a str) -> Option<(u32, &'a str)> {
        let rest = subject
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('.')?
            .strip_prefix(kind.as_str())?
            .strip_prefix('.')?;
        let (p, id) = rest.split_once('.')?;
        if id.is_empty() || id.contains('.') {
            return None;
        }
        Some((p.parse().ok()?, id))
    }

    /// The services-API endpoint of one node (its actor counters): `{prefix}.node.{id}.stats`.
    pub fn node_stats(&self, node_id: &str) -> String {
        format!("{}.node.{}.stats", self.prefix, node_id)
    }

    /// Where a node answers its peers about partition leases (promises not to take a
    /// holder's partitions while the leases bucket has no answer; which partitions it
    /// serves): `{prefix}.node.{id}.leases`. Core request-reply: it works while
    /// JetStream elects a leader.
    pub fn node_leases(&self, node_id: &str) -> String {
        format!("{}.node.{}.leases", self.prefix, node_id)
    }

    /// The catalog query subject.
    pub fn query_catalog(&self) -> String {
        format!("{}.query.catalog", self.prefix)
    }

    /// The orders query subject.
    pub fn query_orders(&self) -> String {
        format!("{}.query.orders", self.prefix)
    }

    /// The cluster status query subject (answered from the placement buckets).
    pub fn query_cluster_status(&self) -> String {
        format!("{}.query.cluster.status", self.prefix)
    }

    /// The locate query subject: which partition and node an entity lives on.
    pub fn query_locate(&self) -> String {
        format!("{}.query.cluster.locate", self.prefix)
    }

    /// The queue group every node joins for read-side queries.
    pub fn query_queue_group(&self) -> String {
        format!("{}-query", self.prefix)
    }

    /// The queue group nodes join for entity commands (until placement assigns partitions).
    pub fn entity_queue_group(&self, kind: EntityKind) -> String {
        format!("{}-{}", self.prefix, kind.as_str())
    }

    /// The event subject of one entity: `{prefix}.evt.{kind}.{id}`.
    pub fn event(&self, kind: &str, id: &str) -> String {
        format!("{}.evt.{}.{}", self.prefix, kind, id)
    }

    /// The subjects a kind's event stream captures: `{prefix}.evt.{kind}.>`.
    pub fn event_stream_subjects(&self, kind: &str) -> String {
        format!("{}.evt.{}.>", self.prefix, kind)
    }

    /// The JetStream stream of a kind's events: `{PREFIX}_EVT_{KIND}`.
    pub fn event_stream(&self, kind: &str) -> String {
        format!(
            "{}_EVT_{}",
            self.prefix.to_ascii_uppercase().replace('-', "_"),
            kind.to_ascii_uppercase()
        )
    }

    /// The live subject of one entity: `{prefix}.live.{kind}.{id}`, where its KV bucket
    /// republishes each value it stored (never a refused write).
    pub fn live(&self, kind: &str, id: &str) -> String {
        format!("{}.live.{}.{}", self.prefix, kind, id)
    }

    /// Every live subject of a kind: `{prefix}.live.{kind}.>` (a bucket's republish
    /// destination).
    pub fn live_subjects(&self, kind: &str) -> String {
        format!("{}.live.{}.>", self.prefix, kind)
    }

    /// The KV bucket of an event kind (`cart`, `order`, `inventory`, `product`).
    pub fn entity_bucket(&self, kind: &str) -> String {
        match kind {
            "cart" => self.carts_bucket(),
            "order" => self.orders_bucket(),
            "product" => self.products_bucket(),
            _ => self.inventory_bucket(),
        }
    }

    /// The stream behind a KV bucket: `KV_{bucket}`.
    pub fn kv_stream(bucket: &str) -> String {
        format!("KV_{bucket}")
    }

    /// The subjects of a KV bucket's stream: `$KV.{bucket}.>`.
    pub fn kv_subjects(bucket: &str) -> String {
        format!("$KV.{bucket}.>")
    }

    fn bucket(&self, what: &str) -> String {
        format!("{}_{}", self.prefix.replace('-', "_"), what)
    }

    /// KV bucket of carts.
    pub fn carts_bucket(&self) -> String {
        self.bucket("carts")
    }

    /// KV bucket of orders.
    pub fn orders_bucket(&self) -> String {
        self.bucket("orders")
    }

    /// KV bucket of products.
    pub fn products_bucket(&self) -> String {
        self.bucket("products")
    }

    /// KV bucket of inventory records.
    pub fn inventory_bucket(&self) -> String {
        self.bucket("inventory")
    }

    /// KV bucket of node heartbeats (placement).
    pub fn nodes_bucket(&self) -> String {
        self.bucket("nodes")
    }

    /// KV bucket of partition leases (placement).
    pub fn leases_bucket(&self) -> String {
        self.bucket("leases")
    }

    /// The lease key of a partition in the leases bucket: `partition.{p}`. One lease
    /// covers every kind of entity in the partition.
    pub fn lease_key(&self, partition: u32) -> String {
        format!("partition.{partition}")
    }

    /// The partition of a lease key.
    pub fn parse_lease_key(&self, key: &str) -> Option<u32> {
        key.strip_prefix("partition.")?.parse().ok()
    }
}

impl Names {
    fn upper_prefix(&self) -> String {
        self.prefix.to_ascii_uppercase().replace('-', "_")
    }

    /// The webhook admin subject: `{prefix}.webhook.admin`.
    pub fn webhook_admin(&self) -> String {
        format!("{}.webhook.admin", self.prefix)
    }

    /// The queue group nodes join on the webhook admin subject.
    pub fn webhook_queue_group(&self) -> String {
        format!("{}-webhook", self.prefix)
    }

    /// The bucket of webhook endpoints: `{prefix}_webhooks`.
    pub fn webhooks_bucket(&self) -> String {
        format!("{}_webhooks", self.prefix)
    }

    /// The bucket of webhook deliveries (keys `{endpoint}.{delivery}`):
    /// `{prefix}_webhook_deliveries`.
    pub fn webhook_deliveries_bucket(&self) -> String {
        format!("{}_webhook_deliveries", self.prefix)
    }

    /// The dead-letter stream of webhook deliveries: `{PREFIX}_WEBHOOK_DEAD`.
    pub fn webhook_dead_stream(&self) -> String {
        format!("{}_WEBHOOK_DEAD", self.upper_prefix())
    }

    /// The dead-letter subject of one endpoint: `{prefix}.webhook.dead.{endpoint}`.
    pub fn webhook_dead(&self, endpoint: &str) -> String {
        format!("{}.webhook.dead.{endpoint}", self.prefix)
    }

    /// Every dead-letter subject: `{prefix}.webhook.dead.>`.
    pub fn webhook_dead_subjects(&self) -> String {
        format!("{}.webhook.dead.>", self.prefix)
    }

    /// The stream of webhook system events (`endpoint.disabled`): `{PREFIX}_WEBHOOK_EVT`.
    pub fn webhook_events_stream(&self) -> String {
        format!("{}_WEBHOOK_EVT", self.upper_prefix())
    }

    /// The system-event subject of one endpoint: `{prefix}.webhook.evt.{endpoint}`.
    pub fn webhook_event(&self, endpoint: &str) -> String {
        format!("{}.webhook.evt.{endpoint}", self.prefix)
    }

    /// Every webhook system-event subject: `{prefix}.webhook.evt.>`.
    pub fn webhook_event_subjects(&self) -> String {
        format!("{}.webhook.evt.>", self.prefix)
    }

    /// The durable consumer delivering `source` (an event kind, or `webhook`) to an
    /// endpoint: `wh_{endpoint}_{source}`.
    pub fn webhook_consumer(endpoint: &str, source: &str) -> String {
        format!("wh_{endpoint}_{source}")
    }

    /// The durable consumer of one replay: `whr_{endpoint}_{replay}_{source}`.
    pub fn webhook_replay_consumer(endpoint: &str, replay: &str, source: &str) -> String {
        format!("whr_{endpoint}_{replay}_{source}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_pinned() {
        let n = Names::default();
        assert_eq!(n.entity(EntityKind::Cart, 7, "c1"), "cw.cart.7.c1");
        assert_eq!(
            n.entity(EntityKind::Inventory, 0, "SKU-1"),
            "cw.inventory.0.SKU-1"
        );
        assert_eq!(n.entity(EntityKind::Order, 3, "o"), "cw.order.3.o");
        assert_eq!(n.entity_all(EntityKind::Order), "cw.order.*.*");
        assert_eq!(n.entity_partition(EntityKind::Cart, 5), "cw.cart.5.>");
        assert_eq!(
            n.entity_internal(EntityKind::Order, 5, "o1"),
            "cw.order.5.o1.int"
        );
        assert_eq!(n.query_catalog(), "cw.query.catalog");
        assert_eq!(n.query_orders(), "cw.query.orders");
        assert_eq!(n.query_cluster_status(), "cw.query.cluster.status");
        assert_eq!(n.query_locate(), "cw.query.cluster.locate");
        assert_eq!(n.query_queue_group(), "cw-query");
        assert_eq!(n.entity_queue_group(EntityKind::Cart), "cw-cart");
        assert_eq!(n.event("cart", "c1"), "cw.evt.cart.c1");
        assert_eq!(n.event_stream_subjects("order"), "cw.evt.order.>");
        assert_eq!(n.live("cart", "c1"), "cw.live.cart.c1");
        assert_eq!(n.live_subjects("inventory"), "cw.live.inventory.>");
        assert_eq!(n.entity_bucket("product"), "cw_products");
        assert_eq!(Names::kv_stream("cw_carts"), "KV_cw_carts");
        assert_eq!(Names::kv_subjects("cw_carts"), "$KV.cw_carts.>");
        assert_eq!(n.event_stream("inventory"), "CW_EVT_INVENTORY");
        assert_eq!(n.carts_bucket(), "cw_carts");
        assert_eq!(n.orders_bucket(), "cw_orders");
        assert_eq!(n.products_bucket(), "cw_products");
        assert_eq!(n.inventory_bucket(), "cw_inventory");
        assert_eq!(n.nodes_bucket(), "cw_nodes");
        assert_eq!(n.node_leases("n1"), "cw.node.n1.leases");
        assert_eq!(n.leases_bucket(), "cw_leases");
        assert_eq!(n.lease_key(7), "partition.7");
        assert_eq!(n.parse_lease_key("partition.7"), Some(7));
        let t = Names::new("t-1");
        assert_eq!(t.carts_bucket(), "t_1_carts");
        assert_eq!(t.event_stream("cart"), "T_1_EVT_CART");
    }

    #[test]
    fn parses_entity_subjects() {
        let n = Names::default();
        assert_eq!(
            n.parse_entity(EntityKind::Cart, "cw.cart.7.c1"),
            Some((7, "c1"))
        );
        assert_eq!(n.parse_entity(EntityKind::Cart, "cw.order.7.c1"), None);
        assert_eq!(n.parse_entity(EntityKind::Order, "cw.order.7.o1.int"), None);
        assert_eq!(
            n.parse_any_entity(EntityKind::Order, "cw.order.7.o1.int"),
            Some((7, "o1", true))
        );
        assert_eq!(
            n.parse_any_entity(EntityKind::Order, "cw.order.7.o1"),
            Some((7, "o1", false))
        );
        assert_eq!(
            n.parse_any_entity(EntityKind::Order, "cw.order.7.o1.x"),
            None
        );
        assert_eq!(n.parse_entity(EntityKind::Cart, "cw.cart.x.c1"), None);
    }

    #[test]
    fn partition_is_fnv1a_and_stable() {
        // FNV-1a 64 of "" is the offset basis; of "a" is 0xaf63dc4c8601ec8c.
        assert_eq!(
            partition("a", u32::MAX),
            (0xaf63_dc4c_8601_ec8c_u64 % u64::from(u32::MAX)) as u32
        );
        assert_eq!(partition("cart-1", 64), partition("cart-1", 64));
        assert!(partition("anything", 16) < 16);
        assert_eq!(partition("x", 0), 0);
    }

    #[test]
    fn webhook_names() {
        let n = Names::new("shop-a");
        assert_eq!(n.webhook_admin(), "shop-a.webhook.admin");
        assert_eq!(n.webhooks_bucket(), "shop-a_webhooks");
        assert_eq!(n.webhook_deliveries_bucket(), "shop-a_webhook_deliveries");
        assert_eq!(n.webhook_dead_stream(), "SHOP_A_WEBHOOK_DEAD");
        assert_eq!(n.webhook_dead("ep_1"), "shop-a.webhook.dead.ep_1");
        assert_eq!(n.webhook_events_stream(), "SHOP_A_WEBHOOK_EVT");
        assert_eq!(n.webhook_event("ep_1"), "shop-a.webhook.evt.ep_1");
        assert_eq!(Names::webhook_consumer("ep_1", "order"), "wh_ep_1_order");
        assert_eq!(
            Names::webhook_replay_consumer("ep_1", "r2", "order"),
            "whr_ep_1_r2_order"
        );
    }
}

//! Request and reply types per entity kind.
//!
//! A reply is always `Result<T, ApiError>` encoded with [`crate::codec`]; the `T` of each
//! command is named in its doc. Business failures (out of stock, unknown item) are
//! `Err(ApiError)` values; transport failures are [`crate::BusError`]s at the requester.

use cartwheel_domain::{Order, OrderStatus, ProductDraft};
use serde::{Deserialize, Serialize};

/// The reply of every request.
pub type Reply<T> = Result<T, crate::ApiError>;

/// Commands to one cart actor (`{prefix}.cart.{p}.{cart_id}`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum CartCommand {
    /// Create the cart for `user_id` → `Cart`. A cart that exists is a `conflict`.
    Create {
        /// The owner.
        user_id: String,
    },
    /// Read → `Cart`.
    Get,
    /// Add `qty` of `sku` (adds to an existing line) → `Cart`.
    AddItem {
        /// The product.
        sku: String,
        /// Units to add, > 0.
        qty: u32,
    },
    /// Set the quantity of a line; 0 removes it → `Cart`.
    SetQty {
        /// The product.
        sku: String,
        /// New quantity.
        qty: u32,
    },
    /// Remove a line → `Cart`.
    RemoveItem {
        /// The product.
        sku: String,
    },
    /// Check out under an idempotency key → [`CheckoutReply`]. The same key again
    /// answers the same order.
    Checkout {
        /// The client's `Idempotency-Key`.
        idempotency_key: String,
        /// How long the requester will wait for the saga to settle, in ms.
        wait_ms: u64,
    },
}

/// The reply to [`CartCommand::Checkout`].
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutReply {
    /// The order, in its final saga state if it settled in time, else `PENDING` (or
    /// `PRODUCT_RESERVED`).
    pub order: Order,
    /// Whether this request placed the order (false for a replayed key).
    pub created: bool,
}

/// Commands to one sku actor (`{prefix}.inventory.{p}.{sku}`): its product and its stock.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum InventoryCommand {
    /// Add the product to the catalog → `Product`; an existing sku is a `conflict`.
    CreateProduct {
        /// The product.
        draft: ProductDraft,
    },
    /// Replace the product → `Product`.
    ReplaceProduct {
        /// The product.
        draft: ProductDraft,
    },
    /// Mark it not for sale → `Product`.
    DeactivateProduct,
    /// Read the product → `Product`.
    GetProduct,
    /// Set stock on hand → `InventoryView`.
    SetStock {
        /// Units on hand (never below what is reserved).
        on_hand: u64,
    },
    /// Add to (or subtract from) stock on hand → `InventoryView`.
    AdjustStock {
        /// Change, non-zero.
        delta: i64,
    },
    /// Read stock → `InventoryView`.
    GetStock,
    /// Hold `qty` units for an order (idempotent per order) → `InventoryView`.
    Reserve {
        /// The order.
        order_id: String,
        /// Units.
        qty: u64,
    },
    /// Drop an order's hold (idempotent) → `InventoryView`.
    Release {
        /// The order.
        order_id: String,
    },
    /// Take an order's held units out of stock (idempotent) → `InventoryView`.
    Commit {
        /// The order.
        order_id: String,
    },
    /// Return a cancelled order's units (idempotent) → `InventoryView`.
    Restock {
        /// The order.
        order_id: String,
    },
}

impl InventoryCommand {
    /// Whether only nodes send this command (a saga's steps): it travels on the sku's
    /// internal subject (`Names::entity_internal`), which edges may not publish to.
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            InventoryCommand::Reserve { .. }
                | InventoryCommand::Release { .. }
                | InventoryCommand::Commit { .. }
                | InventoryCommand::Restock { .. }
        )
    }
}

/// Commands to one order actor (`{prefix}.order.{p}.{order_id}`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum OrderCommand {
    /// Store the order if it does not exist yet and run its saga → `Order`, answered when
    /// the saga settles or after `wait_ms`, whichever comes first.
    Place {
        /// The `PENDING` order built from the cart.
        order: Box<Order>,
        /// How long the requester waits for the saga, in ms.
        wait_ms: u64,
    },
    /// Read → `Order`.
    Get,
    /// Cancel a confirmed order and return its stock → `Order`.
    Cancel,
    /// Move to a status through a legal transition (e.g. `COMPLETED`) → `Order`.
    SetStatus {
        /// The target status.
        status: OrderStatus,
    },
}

impl OrderCommand {
    /// Whether only nodes send this command (a cart's checkout places the order): it
    /// travels on the order's internal subject, which edges may not publish to.
    pub fn is_internal(&self) -> bool {
        matches!(self, OrderCommand::Place { .. })
    }
}

/// A page of results: `{"items":[…],"next_cursor"}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page<T> {
    /// This page.
    pub items: Vec<T>,
    /// Pass back as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Largest page a query returns.
pub const MAX_PAGE: u32 = 200;
/// Page size when none is asked for.
pub const DEFAULT_PAGE: u32 = 50;

/// A product list (`{prefix}.query.catalog`) → `Page<Product>`, ordered by sku.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogQuery {
    /// Only this category.
    #[serde(default)]
    pub category: Option<String>,
    /// Only active (or only inactive) products.
    #[serde(default)]
    pub active: Option<bool>,
    /// Page size, 1..=200.
    pub limit: u32,
    /// Resume after this cursor (from a previous page).
    #[serde(default)]
    pub cursor: Option<String>,
}

/// An order list (`{prefix}.query.orders`) → `Page<Order>`, newest first.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrdersQuery {
    /// Only this user's orders.
    #[serde(default)]
    pub user_id: Option<String>,
    /// Only orders in this status.
    #[serde(default)]
    pub status: Option<OrderStatus>,
    /// Page size, 1..=200.
    pub limit: u32,
    /// Resume after this cursor (from a previous page).
    #[serde(default)]
    pub cursor: Option<String>,
}

/// The cluster's status (`{prefix}.query.cluster.status`) → `cluster::ClusterStatus`,
/// answered by any node from the placement buckets, so that an edge needs no JetStream
/// rights of its own.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatusQuery {}

/// Where one entity lives (`{prefix}.query.cluster.locate`) → `cluster::Location`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocateQuery {
    /// `cart`, `order` or `inventory`.
    pub kind: String,
    /// The entity's id.
    pub id: String,
}

/// Webhook administration (`{prefix}.webhook.admin`, answered by any node).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum WebhookCommand {
    /// Register an endpoint → `Endpoint`.
    Create {
        /// Where deliveries go.
        url: String,
        /// What it is for.
        #[serde(default)]
        description: String,
        /// The types it receives (empty: all).
        #[serde(default)]
        event_types: Vec<String>,
        /// Whether deliveries start at once.
        enabled: bool,
        /// Its secret (`whsec_…`); made up when absent.
        #[serde(default)]
        secret: Option<String>,
    },
    /// Every endpoint → `Vec<Endpoint>`.
    List,
    /// One endpoint → `Endpoint`.
    Get {
        /// The endpoint.
        id: String,
    },
    /// Change an endpoint's fields (absent: unchanged) → `Endpoint`.
    Update {
        /// The endpoint.
        id: String,
        /// A new URL.
        url: Option<String>,
        /// A new description.
        description: Option<String>,
        /// A new filter.
        event_types: Option<Vec<String>>,
        /// Enable or disable (enabling clears the reason it was disabled).
        enabled: Option<bool>,
    },
    /// Remove an endpoint and its consumers → `()`.
    Delete {
        /// The endpoint.
        id: String,
    },
    /// A new secret; the old one keeps signing for `grace_ms` → `Endpoint`.
    RotateSecret {
        /// The endpoint.
        id: String,
        /// How long the old secret still signs.
        grace_ms: u64,
    },
    /// The endpoint's deliveries, newest first → `Vec<Delivery>`.
    Deliveries {
        /// The endpoint.
        id: String,
        /// Only those in this status.
        status: Option<cartwheel_domain::webhook::DeliveryStatus>,
        /// At most this many.
        limit: usize,
    },
    /// Attempt a delivery again now, whatever its status → `Delivery`.
    Retry {
        /// The endpoint.
        id: String,
        /// The delivery.
        delivery: String,
    },
    /// Deliver the log's events of `[since, until]` again → `Replay`.
    Replay {
        /// The endpoint.
        id: String,
        /// From (ms since the epoch).
        since: i64,
        /// To (ms since the epoch).
        until: i64,
    },
    /// Send a `webhook.test` event now → `Delivery`.
    Test {
        /// The endpoint.
        id: String,
    },
}

//! Domain events: what happened, published to JetStream after the state is stored.
//!
//! Every event carries the entity's full state after the change and its version, so a
//! consumer never needs to read storage and can drop anything older than what it saw.

use crate::cart::Cart;
use crate::inventory::{Inventory, InventoryView};
use crate::order::{Order, OrderStatus};
use crate::product::Product;
use serde::{Deserialize, Serialize};

/// Something that happened to one entity.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Event {
    /// A cart was created or its lines changed.
    CartUpdated {
        /// The cart after the change.
        cart: Cart,
    },
    /// A cart was frozen for checkout.
    CartCheckedOut {
        /// The cart after the change.
        cart: Cart,
        /// The order placed from it.
        order_id: String,
    },
    /// An order was placed.
    OrderCreated {
        /// The order.
        order: Order,
    },
    /// An order changed status.
    OrderStatusUpdated {
        /// The order after the change.
        order: Order,
        /// The status before.
        from: OrderStatus,
    },
    /// Stock of a sku changed (set, adjusted, reserved, released, committed, restocked).
    StockUpdated {
        /// The inventory after the change.
        inventory: InventoryView,
    },
    /// A product was added to the catalog.
    ProductCreated {
        /// The product.
        product: Product,
    },
    /// A product was replaced or deactivated.
    ProductUpdated {
        /// The product after the change.
        product: Product,
    },
    /// A product's price changed.
    PriceChanged {
        /// The product after the change.
        product: Product,
        /// The old price in minor units.
        old_price: i64,
    },
}

impl Event {
    /// The event's name, e.g. `CartUpdated`.
    pub fn name(&self) -> &'static str {
        match self {
            Event::CartUpdated { .. } => "CartUpdated",
            Event::CartCheckedOut { .. } => "CartCheckedOut",
            Event::OrderCreated { .. } => "OrderCreated",
            Event::OrderStatusUpdated { .. } => "OrderStatusUpdated",
            Event::StockUpdated { .. } => "StockUpdated",
            Event::ProductCreated { .. } => "ProductCreated",
            Event::ProductUpdated { .. } => "ProductUpdated",
            Event::PriceChanged { .. } => "PriceChanged",
        }
    }

    /// The entity kind the event belongs to: `cart`, `order`, `inventory` or `product`.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::CartUpdated { .. } | Event::CartCheckedOut { .. } => "cart",
            Event::OrderCreated { .. } | Event::OrderStatusUpdated { .. } => "order",
            Event::StockUpdated { .. } => "inventory",
            Event::ProductCreated { .. }
            | Event::ProductUpdated { .. }
            | Event::PriceChanged { .. } => "product",
        }
    }

    /// The id of the entity.
    pub fn entity_id(&self) -> &str {
        match self {
            Event::CartUpdated { cart } | Event::CartCheckedOut { cart, .. } => &cart.id,
            Event::OrderCreated { order } | Event::OrderStatusUpdated { order, .. } => &order.id,
            Event::StockUpdated { inventory } => &inventory.sku,
            Event::ProductCreated { product }
            | Event::ProductUpdated { product }
            | Event::PriceChanged { product, .. } => &product.sku,
        }
    }

    /// The entity's version after the change.
    pub fn version(&self) -> u64 {
        match self {
            Event::CartUpdated { cart } | Event::CartCheckedOut { cart, .. } => cart.version,
            Event::OrderCreated { order } | Event::OrderStatusUpdated { order, .. } => {
                order.version
            }
            Event::StockUpdated { inventory } => inventory.version,
            Event::ProductCreated { product }
            | Event::ProductUpdated { product }
            | Event::PriceChanged { product, .. } => product.version,
        }
    }

    /// The JetStream de-duplication id: `{kind}:{id}:{version}:{name}`. The name is part
    /// of it because one change may emit two events (e.g. `ProductUpdated` and
    /// `PriceChanged` at the same version).
    pub fn msg_id(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.kind(),
            self.entity_id(),
            self.version(),
            self.name()
        )
    }
}

/// An event without the entity it carries: what a stored record keeps of each event of
/// the change that produced it. The entity is the record's state, so a record holds it
/// once; [`Evented::event`] puts the two back together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Change {
    /// [`Event::CartUpdated`].
    CartUpdated,
    /// [`Event::CartCheckedOut`].
    CartCheckedOut {
        /// The order placed from the cart.
        order_id: String,
    },
    /// [`Event::OrderCreated`].
    OrderCreated,
    /// [`Event::OrderStatusUpdated`].
    OrderStatusUpdated {
        /// The status before.
        from: OrderStatus,
    },
    /// [`Event::StockUpdated`].
    StockUpdated,
    /// [`Event::ProductCreated`].
    ProductCreated,
    /// [`Event::ProductUpdated`].
    ProductUpdated,
    /// [`Event::PriceChanged`].
    PriceChanged {
        /// The old price in minor units.
        old_price: i64,
    },
}

impl Event {
    /// What a record keeps of this event (everything but the entity).
    pub fn change(&self) -> Change {
        match self {
            Event::CartUpdated { .. } => Change::CartUpdated,
            Event::CartCheckedOut { order_id, .. } => Change::CartCheckedOut {
                order_id: order_id.clone(),
            },
            Event::OrderCreated { .. } => Change::OrderCreated,
            Event::OrderStatusUpdated { from, .. } => Change::OrderStatusUpdated { from: *from },
            Event::StockUpdated { .. } => Change::StockUpdated,
            Event::ProductCreated { .. } => Change::ProductCreated,
            Event::ProductUpdated { .. } => Change::ProductUpdated,
            Event::PriceChanged { old_price, .. } => Change::PriceChanged {
                old_price: *old_price,
            },
        }
    }
}

/// An entity whose events can be rebuilt from its state and a [`Change`].
pub trait Evented {
    /// The event `change` describes, carrying `self`; `None` when `change` belongs to
    /// another kind of entity.
    fn event(&self, change: &Change) -> Option<Event>;
}

impl Evented for Cart {
    fn event(&self, change: &Change) -> Option<Event> {
        match change {
            Change::CartUpdated => Some(Event::CartUpdated { cart: self.clone() }),
            Change::CartCheckedOut { order_id } => Some(Event::CartCheckedOut {
                cart: self.clone(),
                order_id: order_id.clone(),
            }),
            _ => None,
        }
    }
}

impl Evented for Order {
    fn event(&self, change: &Change) -> Option<Event> {
        match change {
            Change::OrderCreated => Some(Event::OrderCreated {
                order: self.clone(),
            }),
            Change::OrderStatusUpdated { from } => Some(Event::OrderStatusUpdated {
                order: self.clone(),
                from: *from,
            }),
            _ => None,
        }
    }
}

impl Evented for Inventory {
    fn event(&self, change: &Change) -> Option<Event> {
        match change {
            Change::StockUpdated => Some(Event::StockUpdated {
                inventory: self.view(),
            }),
            _ => None,
        }
    }
}

impl Evented for Product {
    fn event(&self, change: &Change) -> Option<Event> {
        let product = self.clone();
        match change {
            Change::ProductCreated => Some(Event::ProductCreated { product }),
            Change::ProductUpdated => Some(Event::ProductUpdated { product }),
            Change::PriceChanged { old_price } => Some(Event::PriceChanged {
                product,
                old_price: *old_price,
            }),
            _ => None,
        }
    }
}

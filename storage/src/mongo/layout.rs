//! What each entity kind looks like in MongoDB: where its instants are, which indexes its
//! collection has, and how durable its writes are.
//!
//! Every collection is written with `w: "majority", j: true` (see `write_concern`).
//!
//! Indexes serve exactly the queries of [`crate::query`] (filters, then the sort key as the
//! last index field, so a page is an index range scan with no in-memory sort) plus the
//! uniqueness the domain has. They are created at start-up by
//! [`MongoStore::open`](super::MongoStore::open); creating an index that exists with the
//! same keys and options is a no-op on the server, so every node may do it on every start.

use bson::{Document, doc};
use cartwheel_domain::{Cart, Inventory, Order, Product};
use mongodb::IndexModel;
use mongodb::options::{Acknowledgment, IndexOptions, WriteConcern};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// Instants of a cart.
pub(super) const CART_DATES: &[&str] = &["created_at", "updated_at", "checkout.at"];
/// Instants of an order.
pub(super) const ORDER_DATES: &[&str] = &["created_at", "updated_at"];
/// Instants of a product.
pub(super) const PRODUCT_DATES: &[&str] = &["created_at", "updated_at"];
/// Instants of an inventory record: when each open reservation was taken.
pub(super) const INVENTORY_DATES: &[&str] = &["reservations.*.at"];

/// An entity kind that can live in a MongoDB collection.
pub trait MongoEntity: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Paths of the fields that are instants, stored as BSON dates (see
    /// [`document`](super::document)).
    const DATES: &'static [&'static str];

    /// The secondary indexes of the collection, by name.
    fn indexes() -> Vec<IndexModel>;
}

/// An index on `keys` named `name`, unique or not.
fn index(name: &str, keys: Document, unique: bool) -> IndexModel {
    IndexModel::builder()
        .keys(keys)
        .options(
            IndexOptions::builder()
                .name(name.to_owned())
                .unique(unique.then_some(true))
                .build(),
        )
        .build()
}

impl MongoEntity for Product {
    const DATES: &'static [&'static str] = PRODUCT_DATES;

    /// Lists are ordered by sku and filtered by category and/or active flag; the sku is
    /// unique (it is also the `_id`, but the lists sort on the field).
    fn indexes() -> Vec<IndexModel> {
        vec![
            index("sku_unique", doc! { "sku": 1 }, true),
            index("category_sku", doc! { "category": 1, "sku": 1 }, false),
            index("active_sku", doc! { "active": 1, "sku": 1 }, false),
            index(
                "category_active_sku",
                doc! { "category": 1, "active": 1, "sku": 1 },
                false,
            ),
        ]
    }
}

impl MongoEntity for Order {
    const DATES: &'static [&'static str] = ORDER_DATES;

    /// Lists are newest first by `(created_at, id)` and filtered by user and/or status. A
    /// checkout (cart and idempotency key) places at most one order.
    fn indexes() -> Vec<IndexModel> {
        vec![
            index("created_id", doc! { "created_at": -1, "id": -1 }, false),
            index(
                "user_created_id",
                doc! { "user_id": 1, "created_at": -1, "id": -1 },
                false,
            ),
            index(
                "status_created_id",
                doc! { "status": 1, "created_at": -1, "id": -1 },
                false,
            ),
            index(
                "user_status_created_id",
                doc! { "user_id": 1, "status": 1, "created_at": -1, "id": -1 },
                false,
            ),
            index(
                "checkout_unique",
                doc! { "cart_id": 1, "idempotency_key": 1 },
                true,
            ),
        ]
    }
}

impl MongoEntity for Inventory {
    const DATES: &'static [&'static str] = INVENTORY_DATES;

    /// Read by sku (the `_id`) only.
    fn indexes() -> Vec<IndexModel> {
        Vec::new()
    }
}

impl MongoEntity for Cart {
    const DATES: &'static [&'static str] = CART_DATES;

    /// Read by id (the `_id`) only.
    fn indexes() -> Vec<IndexModel> {
        Vec::new()
    }
}

/// The write concern of every collection: acknowledged once a majority of the replica set
/// has the write in its on-disk journal (`w: "majority", j: true`), with a `wtimeout` so a
/// replica set without a reachable majority fails the write instead of holding it.
///
/// Without `j: true` a write waits in the server's journal buffer for up to the commit
/// interval (100 ms by default), and a crash of the server process loses it although it
/// was acknowledged; the conformance suite's crash rules catch exactly that. So carts
/// (normally in Redis) get the same concern as orders and inventory.
pub(super) fn write_concern(timeout: Duration) -> WriteConcern {
    WriteConcern::builder()
        .w(Acknowledgment::Majority)
        .journal(true)
        .w_timeout(timeout)
        .build()
}

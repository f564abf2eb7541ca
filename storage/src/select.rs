//! Which backend keeps which entity, from two settings: the main store (orders, products,
//! inventory) and the cart store. Each is `nats` (NATS JetStream KV, the default), a
//! MongoDB URI (`mongodb://…`, `mongodb+srv://…`), or for carts also a Redis URL
//! (`redis://…`). [`open`] connects what is selected (once per distinct URI), checks it at
//! start-up, creates buckets, indexes and the like, and returns the mixed [`Stores`].

use crate::error::StoreError;
use crate::kv::{KvSettings, KvStore};
use crate::mongo::{self, Mongo, MongoSettings};
use crate::redact::redact;
use crate::redis::{Redis, RedisSettings};
use crate::{CatalogIndex, EntityStore, OrderIndex, Stores};
use async_nats::jetstream;
use cartwheel_bus::names::Names;
use cartwheel_domain::{Cart, Inventory, Order, Product};
use std::sync::Arc;

/// A backend named by a setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// NATS JetStream KV on the node's NATS connection.
    Nats,
    /// MongoDB at this URI.
    Mongo(String),
    /// Redis at this URL (carts only).
    Redis(String),
}

impl Backend {
    /// Reads a setting: `nats`, a `mongodb://` or `mongodb+srv://` URI, or (if
    /// `redis_allowed`) a `redis://` URL. The error says what is accepted, with any
    /// password in `value` hidden.
    pub fn parse(value: &str, redis_allowed: bool) -> Result<Backend, String> {
        let scheme = value.split_once("://").map(|(scheme, _)| scheme);
        match (value, scheme) {
            ("nats", _) => Ok(Backend::Nats),
            (_, Some("mongodb" | "mongodb+srv")) => Ok(Backend::Mongo(value.to_owned())),
            (_, Some("redis")) if redis_allowed => Ok(Backend::Redis(value.to_owned())),
            _ => Err(format!(
                "{} is not a store: expected `nats`, a `mongodb://…` URI{}",
                redact(value),
                if redis_allowed {
                    " or a `redis://…` URL"
                } else {
                    ""
                }
            )),
        }
    }
}

/// What to open, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Orders, products and inventory.
    pub main: Backend,
    /// Carts.
    pub carts: Backend,
    /// How KV buckets are created.
    pub kv: KvSettings,
    /// How MongoDB is reached.
    pub mongo: MongoSettings,
    /// How Redis is reached, and the carts' idle TTL.
    pub redis: RedisSettings,
}

/// Why the stores could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    /// A setting names no backend this build has, or one that cannot keep that entity.
    #[error("{0}")]
    Setting(String),
    /// A selected backend could not be opened (`source` says why).
    #[error("opening {what}")]
    Open {
        /// Which backend, for which entities.
        what: String,
        /// What went wrong.
        source: StoreError,
    },
}

/// Opens the stores `selection` names, on `js` for what stays in NATS KV.
pub async fn open(
    js: &jetstream::Context,
    names: &Names,
    selection: &Selection,
) -> Result<Stores, SelectError> {
    if matches!(selection.main, Backend::Redis(_)) {
        return Err(SelectError::Setting(
            "Redis keeps carts only: orders, products and inventory need `nats` or MongoDB"
                .to_owned(),
        ));
    }
    let opened = |what: &str| {
        let what = what.to_owned();
        move |source| SelectError::Open { what, source }
    };
    let main_mongo = match &selection.main {
        Backend::Mongo(uri) => Some(
            Mongo::connect(uri, &selection.mongo)
                .await
                .map_err(opened("MongoDB for orders, products and inventory"))?,
        ),
        _ => None,
    };

    let main = match &main_mongo {
        Some(client) => main_in_mongo(client, names)
            .await
            .map_err(opened("MongoDB collections"))?,
        None => main_in_kv(js, names, &selection.kv)
            .await
            .map_err(opened("NATS KV buckets"))?,
    };

    let carts: Arc<dyn EntityStore<Cart>> = match &selection.carts {
        Backend::Nats => Arc::new(
            KvStore::<Cart>::open(js, names, "cart", &selection.kv)
                .await
                .map_err(opened("the NATS KV bucket of carts"))?,
        ),
        Backend::Redis(url) => {
            let redis = Redis::open(url, &selection.redis)
                .await
                .map_err(opened("Redis for carts"))?;
            Arc::new(redis.store::<Cart>(&names.carts_bucket()))
        }
        Backend::Mongo(uri) => {
            let client = match (&selection.main, &main_mongo) {
                (Backend::Mongo(main_uri), Some(client)) if main_uri == uri => client.clone(),
                _ => Mongo::connect(uri, &selection.mongo)
                    .await
                    .map_err(opened("MongoDB for carts"))?,
            };
            Arc::new(
                mongo::MongoStore::<Cart>::open(&client, &names.carts_bucket())
                    .await
                    .map_err(opened("the MongoDB collection of carts"))?,
            )
        }
    };

    Ok(Stores {
        carts,
        orders: main.orders,
        products: main.products,
        inventory: main.inventory,
        catalog: main.catalog,
        order_index: main.order_index,
    })
}

/// Orders, products and inventory, with their lists, from one backend.
struct Main {
    orders: Arc<dyn EntityStore<Order>>,
    order_index: Arc<dyn OrderIndex>,
    products: Arc<dyn EntityStore<Product>>,
    catalog: Arc<dyn CatalogIndex>,
    inventory: Arc<dyn EntityStore<Inventory>>,
}

async fn main_in_mongo(client: &Mongo, names: &Names) -> Result<Main, StoreError> {
    let orders = Arc::new(client.open::<Order>(&names.orders_bucket()).await?);
    let products = Arc::new(client.open::<Product>(&names.products_bucket()).await?);
    let inventory = Arc::new(client.open::<Inventory>(&names.inventory_bucket()).await?);
    Ok(Main {
        orders: orders.clone(),
        order_index: orders,
        products: products.clone(),
        catalog: products,
        inventory,
    })
}

async fn main_in_kv(
    js: &jetstream::Context,
    names: &Names,
    settings: &KvSettings,
) -> Result<Main, StoreError> {
    let orders = Arc::new(KvStore::<Order>::open(js, names, "order", settings).await?);
    let products = Arc::new(KvStore::<Product>::open(js, names, "product", settings).await?);
    let inventory = Arc::new(KvStore::<Inventory>::open(js, names, "inventory", settings).await?);
    Ok(Main {
        orders: orders.clone(),
        order_index: orders,
        products: products.clone(),
        catalog: products,
        inventory,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_name_backends() {
        assert_eq!(Backend::parse("nats", false), Ok(Backend::Nats));
        let uri = "mongodb://db:27017/shop?replicaSet=rs0";
        assert_eq!(
            Backend::parse(uri, false),
            Ok(Backend::Mongo(uri.to_owned()))
        );
        let srv = "mongodb+srv://cluster0.example.net/shop";
        assert_eq!(
            Backend::parse(srv, true),
            Ok(Backend::Mongo(srv.to_owned()))
        );
        let redis = "redis://cache:6379/0";
        assert_eq!(
            Backend::parse(redis, true),
            Ok(Backend::Redis(redis.to_owned()))
        );

        let refused = Backend::parse(redis, false).unwrap_err();
        assert!(!refused.contains("redis://…"), "{refused}");
        for bad in ["", "NATS", "kv", "postgres://db/x", "redis:/x"] {
            assert!(Backend::parse(bad, true).is_err(), "{bad:?}");
        }
        let hidden = Backend::parse("postgres://app:s3cret@db/x", true).unwrap_err();
        assert!(!hidden.contains("s3cret"), "{hidden}");
    }
}

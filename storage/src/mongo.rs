//! The MongoDB backend: orders, products and inventory (and carts, if asked) for
//! production deployments.
//!
//! * **Layout.** One collection per entity kind, named like the NATS KV buckets by
//!   [`Names`] (`{prefix}_orders`, `{prefix}_products`, `{prefix}_inventory`,
//!   `{prefix}_carts`), so deployments with different prefixes can share a database. The
//!   database is the one the URI names (`mongodb://host/shop`), else
//!   [`MongoSettings::default_database`]. A document is the entity's fields, readable in a
//!   MongoDB shell, plus `_id`, `_rev` and `_outbox` ([`document`] describes the mapping);
//!   [`layout`] lists each collection's indexes and write concern.
//! * **Revisions.** `_rev` is the document's own write counter: 1 at create, one more on
//!   every update. `update` is a `replaceOne` filtered on `{_id, _rev: expected}`; when it
//!   matches nothing, someone else wrote first and the answer is
//!   [`StoreError::Conflict`]. `create` is an `insertOne`; the unique `_id` makes the
//!   second of two racing creates fail with a duplicate key error, also `Conflict`.
//! * **Outbox.** The events of a change are stored in `_outbox` by the same single-
//!   document write as the state, which MongoDB applies atomically: they cannot be lost
//!   between the write and the JetStream publish.
//! * **Durability.** Every collection is written with `w: "majority", j: true`:
//!   acknowledged only once a majority of the replica set has the write in its on-disk
//!   journal, so neither a crash of the server process nor a failover loses it. Every
//!   write concern carries a `wtimeout`.
//! * **Errors and timeouts.** Every call is bounded by [`MongoSettings::timeout`] (also the
//!   driver's server selection and connect timeouts), so a dead server means a fast
//!   [`StoreError::Unavailable`], never a hang; the driver reconnects by itself when the
//!   server is back. As with every backend, an `Unavailable` write has an unknown outcome,
//!   which compare-and-set makes safe: a retry answers `Conflict` and the caller reloads.
//!   [`Mongo::connect`] pings the server, so a wrong URI or an unreachable server is a
//!   clear error at start-up.
//!
//! This module knows collections and documents only: it never publishes events.

pub mod document;
mod index;
pub mod layout;

pub use layout::MongoEntity;

use crate::error::StoreError;
use crate::redact::redact;
use crate::{EntityStore, Record, Revision, Stores, Versioned};
use async_trait::async_trait;
use bson::{Bson, Document, doc};
use cartwheel_bus::names::Names;
use cartwheel_domain::{Cart, Inventory, Order, Product};
use futures::TryStreamExt;
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, CollectionOptions};
use mongodb::{Client, Collection, Database};
use std::future::IntoFuture;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

/// MongoDB's error code for a unique index violation.
const DUPLICATE_KEY: i32 = 11000;

/// How the backend connects and how long it waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MongoSettings {
    /// The database used when the URI names none.
    pub default_database: String,
    /// The longest any one call may take, server selection included; also the driver's
    /// `serverSelectionTimeoutMS` and `connectTimeoutMS` unless the URI sets them.
    pub timeout: Duration,
    /// The longest [`Mongo::connect`] and the index creation may take.
    pub open_timeout: Duration,
}

impl Default for MongoSettings {
    fn default() -> Self {
        MongoSettings {
            default_database: "cartwheel".to_owned(),
            timeout: Duration::from_secs(2),
            open_timeout: Duration::from_secs(5),
        }
    }
}

/// A connected client and the database Cartwheel uses. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Mongo {
    client: Client,
    db: Database,
    settings: MongoSettings,
}

impl Mongo {
    /// Parses `uri`, connects and pings the server.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] naming the problem when the URI is malformed or the
    /// server does not answer the ping within [`MongoSettings::open_timeout`].
    pub async fn connect(uri: &str, settings: &MongoSettings) -> Result<Mongo, StoreError> {
        let shown = redact(uri);
        let mut options = tokio::time::timeout(settings.open_timeout, ClientOptions::parse(uri))
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!(
                    "resolving the MongoDB URI {shown} took longer than {:?}",
                    settings.open_timeout
                ))
            })?
            .map_err(|e| StoreError::Unavailable(format!("invalid MongoDB URI {shown}: {e}")))?;
        options
            .server_selection_timeout
            .get_or_insert(settings.timeout);
        options.connect_timeout.get_or_insert(settings.timeout);
        options
            .app_name
            .get_or_insert_with(|| "cartwheel".to_owned());
        let client = Client::with_options(options)
            .map_err(|e| StoreError::Unavailable(format!("MongoDB URI {shown}: {e}")))?;
        let db = client
            .default_database()
            .unwrap_or_else(|| client.database(&settings.default_database));
        let ping =
            tokio::time::timeout(settings.open_timeout, db.run_command(doc! { "ping": 1 })).await;
        match ping {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(StoreError::Unavailable(format!(
                    "cannot reach MongoDB at {shown}: {e}"
                )));
            }
            Err(_) => {
                return Err(StoreError::Unavailable(format!(
                    "cannot reach MongoDB at {shown}: no answer within {:?}",
                    settings.open_timeout
                )));
            }
        }
        Ok(Mongo {
            client,
            db,
            settings: settings.clone(),
        })
    }

    /// The driver's client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The database Cartwheel's collections live in.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Closes every connection. Stores opened from this client fail afterwards.
    pub async fn shutdown(self) {
        self.client.shutdown().await;
    }

    /// The store of `T` in collection `collection`, after creating its indexes.
    pub async fn open<T: MongoEntity>(
        &self,
        collection: &str,
    ) -> Result<MongoStore<T>, StoreError> {
        MongoStore::open(self, collection).await
    }
}

/// The four entity stores in MongoDB; see [`open`].
#[derive(Debug, Clone)]
pub struct MongoStores {
    /// Carts (normally kept in Redis instead).
    pub carts: Arc<MongoStore<Cart>>,
    /// Orders, and the order lists.
    pub orders: Arc<MongoStore<Order>>,
    /// Products, and the product lists.
    pub products: Arc<MongoStore<Product>>,
    /// Inventory records.
    pub inventory: Arc<MongoStore<Inventory>>,
}

impl MongoStores {
    /// Every store in MongoDB, carts included.
    pub fn stores(&self) -> Stores {
        Stores {
            carts: self.carts.clone(),
            orders: self.orders.clone(),
            products: self.products.clone(),
            inventory: self.inventory.clone(),
            catalog: self.products.clone(),
            order_index: self.orders.clone(),
        }
    }
}

/// Opens the carts, orders, products and inventory collections named by `names`, creating
/// their indexes (idempotent; several nodes may do it at once).
pub async fn open(mongo: &Mongo, names: &Names) -> Result<MongoStores, StoreError> {
    let collections = [
        names.carts_bucket(),
        names.orders_bucket(),
        names.products_bucket(),
        names.inventory_bucket(),
    ];
    let (carts, orders, products, inventory) = futures::try_join!(
        mongo.open::<Cart>(&collections[0]),
        mongo.open::<Order>(&collections[1]),
        mongo.open::<Product>(&collections[2]),
        mongo.open::<Inventory>(&collections[3]),
    )?;
    Ok(MongoStores {
        carts: Arc::new(carts),
        orders: Arc::new(orders),
        products: Arc::new(products),
        inventory: Arc::new(inventory),
    })
}

/// One kind of entity in one collection. Cheap to clone.
pub struct MongoStore<T> {
    coll: Collection<Document>,
    timeout: Duration,
    _entity: PhantomData<fn() -> T>,
}

impl<T> Clone for MongoStore<T> {
    fn clone(&self) -> Self {
        MongoStore {
            coll: self.coll.clone(),
            timeout: self.timeout,
            _entity: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for MongoStore<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoStore")
            .field("collection", &self.coll.name())
            .finish_non_exhaustive()
    }
}

impl<T: MongoEntity> MongoStore<T> {
    /// The store of `T` in `collection` of `mongo`'s database, with `T`'s write concern,
    /// after creating `T`'s indexes.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the indexes cannot be created, e.g. because an
    /// index of the same name exists with other keys or options.
    pub async fn open(mongo: &Mongo, collection: &str) -> Result<MongoStore<T>, StoreError> {
        let options = CollectionOptions::builder()
            .write_concern(layout::write_concern(mongo.settings.timeout))
            .build();
        let coll = mongo
            .db
            .collection_with_options::<Document>(collection, options);
        let indexes = T::indexes();
        if !indexes.is_empty() {
            let created =
                tokio::time::timeout(mongo.settings.open_timeout, coll.create_indexes(indexes))
                    .await;
            match created {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    return Err(StoreError::Unavailable(format!(
                        "creating the indexes of collection {collection}: {e}"
                    )));
                }
                Err(_) => {
                    return Err(StoreError::Unavailable(format!(
                        "creating the indexes of collection {collection}: no answer within {:?}",
                        mongo.settings.open_timeout
                    )));
                }
            }
        }
        Ok(MongoStore {
            coll,
            timeout: mongo.settings.timeout,
            _entity: PhantomData,
        })
    }
}

impl<T> MongoStore<T> {
    /// The underlying collection, for tools and tests that need raw access.
    pub fn collection(&self) -> &Collection<Document> {
        &self.coll
    }

    /// Runs one driver call within the timeout and maps its errors.
    async fn call<R>(
        &self,
        doing: &str,
        id: &str,
        op: impl IntoFuture<Output = mongodb::error::Result<R>>,
    ) -> Result<R, StoreError> {
        match tokio::time::timeout(self.timeout, op.into_future()).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) if is_duplicate_key(&e) => Err(StoreError::Conflict { key: id.to_owned() }),
            Ok(Err(e)) => Err(StoreError::Unavailable(format!(
                "{doing} {}/{id}: {e}",
                self.coll.name()
            ))),
            Err(_) => Err(StoreError::Unavailable(format!(
                "{doing} {}/{id}: no answer within {:?}",
                self.coll.name(),
                self.timeout
            ))),
        }
    }
}

impl<T: MongoEntity> MongoStore<T> {
    /// The states of the documents matching `filter`, in `sort` order, at most `limit`.
    pub(crate) async fn find(
        &self,
        filter: Document,
        sort: Document,
        limit: usize,
    ) -> Result<Vec<T>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let docs: Vec<Document> = self
            .call("querying", "*", async {
                self.coll
                    .find(filter)
                    .sort(sort)
                    .limit(limit)
                    .await?
                    .try_collect()
                    .await
            })
            .await?;
        docs.into_iter()
            .map(|d| document::from_document::<T>(d).map(|(r, _)| r.state))
            .collect()
    }
}

#[async_trait]
impl<T: MongoEntity> EntityStore<T> for MongoStore<T> {
    async fn load(&self, id: &str) -> Result<Option<Versioned<T>>, StoreError> {
        let found = self
            .call("reading", id, self.coll.find_one(doc! { document::ID: id }))
            .await?;
        found
            .map(|d| {
                let (record, revision) = document::from_document(d)?;
                Ok(Versioned { record, revision })
            })
            .transpose()
    }

    async fn create(&self, id: &str, record: &Record<T>) -> Result<Revision, StoreError> {
        let doc = document::to_document(id, record, 1, T::DATES)?;
        self.call("creating", id, self.coll.insert_one(doc)).await?;
        Ok(1)
    }

    async fn update(
        &self,
        id: &str,
        record: &Record<T>,
        expected: Revision,
    ) -> Result<Revision, StoreError> {
        // Stored revisions start at 1 and fit in an Int64; any other value cannot match.
        let Ok(stored) = i64::try_from(expected) else {
            return Err(StoreError::Conflict { key: id.to_owned() });
        };
        if stored < 1 {
            return Err(StoreError::Conflict { key: id.to_owned() });
        }
        let next = expected + 1;
        let doc = document::to_document(id, record, next, T::DATES)?;
        let filter = doc! { document::ID: id, document::REV: stored };
        let result = self
            .call("writing", id, self.coll.replace_one(filter, doc))
            .await?;
        if result.matched_count == 0 {
            return Err(StoreError::Conflict { key: id.to_owned() });
        }
        Ok(next)
    }

    fn backend(&self) -> &'static str {
        "mongodb"
    }

    async fn ids(&self) -> Result<Vec<String>, StoreError> {
        let docs: Vec<Document> = self
            .call("listing", "*", async {
                self.coll
                    .find(doc! {})
                    .projection(doc! { document::ID: 1 })
                    .sort(doc! { document::ID: 1 })
                    .await?
                    .try_collect()
                    .await
            })
            .await?;
        docs.into_iter()
            .map(|d| match d.get(document::ID) {
                Some(Bson::String(id)) => Ok(id.clone()),
                other => Err(StoreError::Codec(format!(
                    "{}: an _id that is not a string: {other:?}",
                    self.coll.name()
                ))),
            })
            .collect()
    }
}

/// Whether `e` is a unique index violation.
fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    match &*e.kind {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        ErrorKind::Command(c) => c.code == DUPLICATE_KEY,
        _ => false,
    }
}

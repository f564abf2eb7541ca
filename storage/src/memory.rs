//! The in-memory backend, for fast unit tests of actor logic. Not durable.

use crate::error::StoreError;
use crate::query;
use crate::{CatalogIndex, EntityStore, OrderIndex, Record, Revision, Stores, Versioned};
use async_trait::async_trait;
use cartwheel_bus::messages::{CatalogQuery, OrdersQuery, Page};
use cartwheel_domain::{Order, Product};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Records by id, each with its revision.
type Entries<T> = BTreeMap<String, (Record<T>, Revision)>;

/// One kind of entity in a map, with a revision per key that grows on every write.
#[derive(Debug)]
pub struct MemoryStore<T> {
    map: Mutex<Entries<T>>,
}

impl<T> Default for MemoryStore<T> {
    fn default() -> Self {
        MemoryStore {
            map: Mutex::new(BTreeMap::new()),
        }
    }
}

impl<T: Clone> MemoryStore<T> {
    fn lock(&self) -> Result<MutexGuard<'_, Entries<T>>, StoreError> {
        self.map
            .lock()
            .map_err(|_| StoreError::Unavailable("memory store poisoned".into()))
    }

    /// Every stored state (for the query implementations).
    pub fn all(&self) -> Result<Vec<T>, StoreError> {
        Ok(self
            .lock()?
            .values()
            .map(|(r, _)| r.state.clone())
            .collect())
    }
}

#[async_trait]
impl<T: Clone + Send + Sync + 'static> EntityStore<T> for MemoryStore<T> {
    async fn load(&self, id: &str) -> Result<Option<Versioned<T>>, StoreError> {
        Ok(self.lock()?.get(id).map(|(r, rev)| Versioned {
            record: r.clone(),
            revision: *rev,
        }))
    }

    async fn create(&self, id: &str, record: &Record<T>) -> Result<Revision, StoreError> {
        let mut m = self.lock()?;
        if m.contains_key(id) {
            return Err(StoreError::Conflict { key: id.to_owned() });
        }
        m.insert(id.to_owned(), (record.clone(), 1));
        Ok(1)
    }

    async fn update(
        &self,
        id: &str,
        record: &Record<T>,
        expected: Revision,
    ) -> Result<Revision, StoreError> {
        let mut m = self.lock()?;
        match m.get_mut(id) {
            Some((r, rev)) if *rev == expected => {
                *r = record.clone();
                *rev += 1;
                Ok(*rev)
            }
            _ => Err(StoreError::Conflict { key: id.to_owned() }),
        }
    }

    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn ids(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.lock()?.keys().cloned().collect())
    }
}

#[async_trait]
impl CatalogIndex for MemoryStore<Product> {
    async fn list_products(&self, q: &CatalogQuery) -> Result<Page<Product>, StoreError> {
        let items = self
            .all()?
            .into_iter()
            .filter(|p| query::product_matches(q, p))
            .collect();
        query::page_products(q, items)
    }
}

#[async_trait]
impl OrderIndex for MemoryStore<Order> {
    async fn list_orders(&self, q: &OrdersQuery) -> Result<Page<Order>, StoreError> {
        let items = self
            .all()?
            .into_iter()
            .filter(|o| query::order_matches(q, o))
            .collect();
        query::page_orders(q, items)
    }
}

/// A full set of in-memory stores.
pub fn stores() -> Stores {
    let products = Arc::new(MemoryStore::<Product>::default());
    let orders = Arc::new(MemoryStore::<Order>::default());
    Stores {
        carts: Arc::new(MemoryStore::default()),
        orders: orders.clone(),
        products: products.clone(),
        inventory: Arc::new(MemoryStore::default()),
        catalog: products,
        order_index: orders,
    }
}

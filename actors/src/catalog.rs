//! The node-local catalog: every product, kept current from the product events, so a
//! cart prices a line without a storage read.
//!
//! Filled before the node takes partitions: an ordered JetStream consumer on the
//! product event stream starts first (new events only), then the stored catalog is
//! listed, and both feed one map where the higher product version wins — so an event
//! that lands while the list is read is neither lost nor rolled back. The consumer
//! resumes by itself after a lost connection or a stream leader election (async-nats'
//! ordered consumer recreates itself from the last stream sequence it delivered).
//!
//! What a cart sees: a product changed on its sku's node reaches every node's cache in
//! the time its event takes (the sku actor publishes right after its write: a
//! millisecond or two on a quiet cluster). In that window a cart prices a line at the
//! old price, exactly as if it had been added a moment earlier. A sku the cache does
//! not know (created a moment ago, or a cache that could not be filled) is read from
//! storage and remembered.

use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull};
use cartwheel_bus::messages::{CatalogQuery, MAX_PAGE};
use cartwheel_bus::{Names, events};
use cartwheel_domain::{Event, Product};
use cartwheel_storage::{StoreError, Stores};
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long filling the cache from storage may take at start before the node goes on
/// with what it has (unknown skus are then read from storage).
const FILL_WAIT: Duration = Duration::from_secs(15);

/// Every product this node knows, by sku.
#[derive(Debug, Default)]
pub struct Catalog {
    products: RwLock<HashMap<String, Product>>,
    /// Whether the cache follows the product events (else it is not used).
    live: AtomicBool,
}

impl Catalog {
    /// The cached product `sku`, if known and the cache follows the product events.
    pub fn get(&self, sku: &str) -> Option<Product> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        self.products.read().ok().and_then(|m| m.get(sku).cloned())
    }

    /// How many products are cached.
    pub fn len(&self) -> usize {
        self.products.read().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps `product` unless a newer version of it is cached already.
    pub fn remember(&self, product: Product) {
        if let Ok(mut m) = self.products.write() {
            match m.get(&product.sku) {
                Some(known) if known.version >= product.version => {}
                _ => {
                    m.insert(product.sku.clone(), product);
                }
            }
        }
    }

    /// The product `sku`: from the cache, else from storage (and then cached).
    pub async fn product(&self, stores: &Stores, sku: &str) -> Result<Option<Product>, StoreError> {
        if let Some(p) = self.get(sku) {
            return Ok(Some(p));
        }
        let stored = stores.products.load(sku).await?.map(|v| v.record.state);
        if let Some(p) = &stored {
            self.remember(p.clone());
        }
        Ok(stored)
    }

    /// A catalog kept current from the product events, filled from storage; returns once
    /// it is filled (or [`FILL_WAIT`] passed). The feed runs until `shutdown`.
    pub async fn start(
        js: &jetstream::Context,
        names: &Names,
        stores: &Stores,
        shutdown: CancellationToken,
    ) -> Arc<Catalog> {
        let catalog = Arc::new(Catalog::default());
        let started = std::time::Instant::now();
        // The feed first: whatever changes while the list is read arrives through it.
        let feed = loop {
            match subscribe(js, names).await {
                Ok(feed) => break Some(feed),
                Err(e) if started.elapsed() >= FILL_WAIT => {
                    tracing::warn!(error = %e, "product events not readable; carts read products from storage until they are");
                    break None;
                }
                Err(e) => {
                    tracing::info!(error = %e, "product events not readable yet; trying again");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        };
        if feed.is_some() {
            let left = FILL_WAIT.saturating_sub(started.elapsed());
            if let Err(e) = fill_within(&catalog, stores, left).await {
                tracing::warn!(error = %e, "catalog not listed; unknown skus are read from storage");
            }
            catalog.live.store(true, Ordering::Release);
        }
        tokio::spawn(follow(
            catalog.clone(),
            feed,
            js.clone(),
            names.clone(),
            stores.clone(),
            shutdown,
        ));
        tracing::info!(products = catalog.len(), "catalog cache ready");
        catalog
    }
}

/// Fills `catalog` from storage, retrying for up to `left`.
async fn fill_within(catalog: &Catalog, stores: &Stores, left: Duration) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    loop {
        match fill(catalog, stores).await {
            Ok(()) => return Ok(()),
            Err(e) if started.elapsed() >= left => return Err(e),
            Err(e) => {
                tracing::info!(error = %e, "catalog not listable yet; trying again");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

async fn subscribe(js: &jetstream::Context, names: &Names) -> Result<pull::Ordered, String> {
    let stream = js
        .get_stream(names.event_stream("product"))
        .await
        .map_err(|e| e.to_string())?;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: names.event_stream_subjects("product"),
            deliver_policy: DeliverPolicy::New,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    consumer.messages().await.map_err(|e| e.to_string())
}

/// Lists every stored product into `catalog`.
async fn fill(catalog: &Catalog, stores: &Stores) -> Result<(), StoreError> {
    let mut cursor = None;
    loop {
        let page = stores
            .catalog
            .list_products(&CatalogQuery {
                limit: MAX_PAGE,
                cursor,
                ..Default::default()
            })
            .await?;
        for p in page.items {
            catalog.remember(p);
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(()),
        }
    }
}

/// Applies product events to `catalog` until `shutdown`. A feed that ends (or never
/// started) is subscribed again and the catalog listed again; until then the cache is
/// not used (`live` false), so a cart never prices from a cache that stopped following.
async fn follow(
    catalog: Arc<Catalog>,
    mut feed: Option<pull::Ordered>,
    js: jetstream::Context,
    names: Names,
    stores: Stores,
    shutdown: CancellationToken,
) {
    loop {
        let Some(current) = feed.as_mut() else {
            catalog.live.store(false, Ordering::Release);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            if let Ok(f) = subscribe(&js, &names).await
                && fill(&catalog, &stores).await.is_ok()
            {
                catalog.live.store(true, Ordering::Release);
                tracing::info!(
                    products = catalog.len(),
                    "catalog cache following product events again"
                );
                feed = Some(f);
            }
            continue;
        };
        let next = tokio::select! {
            _ = shutdown.cancelled() => return,
            next = current.next() => next,
        };
        match next {
            Some(Ok(msg)) => {
                match events::decode_events::<Product>(msg.headers.as_ref(), &msg.payload) {
                    Ok(events) => {
                        for event in events {
                            if let Event::ProductCreated { product }
                            | Event::ProductUpdated { product }
                            | Event::PriceChanged { product, .. } = event
                            {
                                catalog.remember(product);
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "undecodable product event skipped"),
                }
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "product event feed interrupted; it resumes by itself");
            }
            None => {
                tracing::warn!("product event feed ended; following it again");
                feed = None;
            }
        }
    }
}

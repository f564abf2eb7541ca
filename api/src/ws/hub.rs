//! The per-edge cart hub: one core NATS subscription per watched cart, fanned out to every
//! socket that watches it.
//!
//! The first [`Hub::watch`] of a cart subscribes to its live subject
//! (`names.live("cart", id)`, where the KV bucket republishes each stored cart) and to its
//! event subject (`names.event("cart", id)`, where nodes publish the events of carts kept
//! in Redis, and nodes of older releases all of them), flushes so the server has
//! registered the interest, and starts a forwarder task that decodes each message's
//! events and broadcasts `CartUpdated` / `CartCheckedOut` carts. Each update is serialized
//! to its push frame once, here, so a thousand sockets on one cart cost one JSON encoding
//! and a thousand cheap clones. The
//! last [`Watch`] dropped removes the entry, which stops the forwarder and unsubscribes.
//!
//! The hub only reads events; it never answers requests and never touches storage.

use crate::ws::protocol;
use axum::extract::ws::Utf8Bytes;
use cartwheel_bus::names::EntityKind;
use cartwheel_bus::{BusClient, BusError, events};
use cartwheel_domain::{Cart, Event};
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{OnceCell, broadcast};
use tokio_util::sync::{CancellationToken, DropGuard};

/// Updates kept per cart for sockets that fall behind; a socket further behind re-reads
/// the cart instead (see `session`).
const UPDATES_PER_CART: usize = 64;

/// Longest wait for NATS to register a new subscription.
const SETUP_TIMEOUT: Duration = Duration::from_secs(5);

/// A change of one cart, with its push frame `{"type":"cart","cart"}` already encoded.
#[derive(Debug)]
pub struct CartUpdate {
    /// The cart.
    pub cart_id: String,
    /// Its version after the change.
    pub version: u64,
    /// The push frame.
    pub frame: Utf8Bytes,
}

impl CartUpdate {
    /// Encodes the push frame of `cart`.
    pub fn new(cart: &Cart) -> CartUpdate {
        CartUpdate {
            cart_id: cart.id.clone(),
            version: cart.version,
            frame: protocol::push(cart),
        }
    }
}

/// Fans cart events out to sockets; shared by every socket of an edge.
pub struct Hub {
    bus: BusClient,
    entries: Mutex<HashMap<String, Entry>>,
}

/// One watched cart.
struct Entry {
    /// Live [`Watch`]es (and `watch` calls in progress) of this cart.
    watchers: usize,
    /// Set once the NATS subscription is registered; concurrent first watchers wait on it.
    live: Arc<OnceCell<Live>>,
}

/// A registered subscription and its forwarder.
struct Live {
    sender: broadcast::Sender<Arc<CartUpdate>>,
    /// Dropping the entry stops the forwarder, which then unsubscribes.
    _stop: DropGuard,
}

impl Hub {
    /// A hub with no subscriptions.
    pub fn new(bus: BusClient) -> Hub {
        Hub {
            bus,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // The map stays consistent even if a holder panicked: every update is one step.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many carts have a live subscription.
    #[cfg(test)]
    pub fn watched(&self) -> usize {
        self.entries().len()
    }

    /// Watches `cart_id` (already validated). When this returns, the NATS server has
    /// registered the subscription, so any change after this moment reaches the watch —
    /// read the current cart only after it.
    pub async fn watch(self: &Arc<Self>, cart_id: &str) -> Result<Watch, BusError> {
        let cell = {
            let mut entries = self.entries();
            let entry = entries.entry(cart_id.to_owned()).or_insert_with(|| Entry {
                watchers: 0,
                live: Arc::new(OnceCell::new()),
            });
            entry.watchers += 1;
            entry.live.clone()
        };
        // From here the count is released on every path, including cancellation.
        let release = Release {
            hub: self.clone(),
            cart_id: cart_id.to_owned(),
        };
        let live = cell.get_or_try_init(|| self.start(cart_id)).await?;
        Ok(Watch {
            rx: live.sender.subscribe(),
            _release: release,
        })
    }

    /// Subscribes to the cart's changes and starts its forwarder.
    async fn start(&self, cart_id: &str) -> Result<Live, BusError> {
        let kind = EntityKind::Cart.as_str();
        let subject = self.bus.names().live(kind, cart_id);
        let events = self.bus.names().event(kind, cart_id);
        let nats = self.bus.nats();
        let subscribe = |subject: String| async move {
            nats.subscribe(subject.clone())
                .await
                .map_err(|e| BusError::Nats(format!("subscribe {subject}: {e}")))
        };
        let setup = async {
            let live = subscribe(subject.clone()).await?;
            let published = subscribe(events).await?;
            nats.flush()
                .await
                .map_err(|e| BusError::Nats(format!("flush after subscribe {subject}: {e}")))?;
            Ok::<_, BusError>(futures::stream::select(live, published))
        };
        let sub = tokio::time::timeout(SETUP_TIMEOUT, setup)
            .await
            .map_err(|_| BusError::Timeout {
                subject: subject.clone(),
                timeout_ms: u64::try_from(SETUP_TIMEOUT.as_millis()).unwrap_or(u64::MAX),
            })??;
        let (sender, _) = broadcast::channel(UPDATES_PER_CART);
        let stop = CancellationToken::new();
        tokio::spawn(forward(sub, sender.clone(), stop.clone(), subject));
        Ok(Live {
            sender,
            _stop: stop.drop_guard(),
        })
    }

    /// Drops one watcher; the last one removes the entry (stopping its forwarder).
    fn release(&self, cart_id: &str) {
        let removed = {
            let mut entries = self.entries();
            let last = match entries.get_mut(cart_id) {
                Some(entry) => {
                    entry.watchers = entry.watchers.saturating_sub(1);
                    entry.watchers == 0
                }
                None => false,
            };
            if last { entries.remove(cart_id) } else { None }
        };
        // Dropped outside the lock.
        drop(removed);
    }
}

/// One socket's view of a cart's updates. Dropping it releases the hub entry.
pub struct Watch {
    rx: broadcast::Receiver<Arc<CartUpdate>>,
    _release: Release,
}

impl Watch {
    /// The next update; `Lagged` when this watcher fell behind and missed some.
    pub async fn recv(&mut self) -> Result<Arc<CartUpdate>, broadcast::error::RecvError> {
        self.rx.recv().await
    }
}

struct Release {
    hub: Arc<Hub>,
    cart_id: String,
}

impl Drop for Release {
    fn drop(&mut self) {
        self.hub.release(&self.cart_id);
    }
}

/// Decodes the cart's events and broadcasts newer carts until stopped.
async fn forward(
    mut sub: futures::stream::Select<async_nats::Subscriber, async_nats::Subscriber>,
    sender: broadcast::Sender<Arc<CartUpdate>>,
    stop: CancellationToken,
    subject: String,
) {
    // Versions only grow: anything not newer than the last broadcast is a duplicate.
    let mut last = 0;
    loop {
        let msg = tokio::select! {
            () = stop.cancelled() => break,
            msg = sub.next() => msg,
        };
        let Some(msg) = msg else {
            // The client closed (the edge is shutting down).
            tracing::debug!(%subject, "cart event subscription ended");
            return;
        };
        let events = match events::decode_events::<Cart>(msg.headers.as_ref(), &msg.payload) {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!(%subject, error = %e, "undecodable cart change");
                continue;
            }
        };
        for event in events {
            match event {
                Event::CartUpdated { cart } | Event::CartCheckedOut { cart, .. } => {
                    if cart.version > last {
                        last = cart.version;
                        // No receivers is fine: the last socket may be leaving right now.
                        let _ = sender.send(Arc::new(CartUpdate::new(&cart)));
                    }
                }
                other => tracing::debug!(%subject, event = other.name(), "ignored event"),
            }
        }
    }
    // Dropping the subscribers unsubscribes both.
    drop(sub);
}

#[cfg(test)]
mod tests {
    use super::*;
    use cartwheel_bus::BusConfig;
    use cartwheel_domain::Timestamp;
    use cartwheel_testkit::NatsServer;

    async fn publish(nats: &async_nats::Client, cart: &Cart) {
        let subject = cartwheel_bus::Names::default().event("cart", &cart.id);
        let event = Event::CartUpdated { cart: cart.clone() };
        let (headers, payload) = cartwheel_bus::events::event_message(&event).unwrap();
        nats.publish_with_headers(subject, headers, payload)
            .await
            .unwrap();
        nats.flush().await.unwrap();
    }

    async fn next_version(w: &mut Watch) -> u64 {
        tokio::time::timeout(Duration::from_secs(5), w.recv())
            .await
            .unwrap()
            .unwrap()
            .version
    }

    #[tokio::test]
    async fn one_subscription_per_cart_until_the_last_watch_goes() {
        let server = NatsServer::start().await.unwrap();
        let nats = cartwheel_testkit::connect(&server.url()).await.unwrap();
        let hub = Arc::new(Hub::new(BusClient::new(nats.clone(), BusConfig::default())));
        let mut a = hub.watch("c1").await.unwrap();
        let mut b = hub.watch("c1").await.unwrap();
        let c = hub.watch("c2").await.unwrap();
        assert_eq!(hub.watched(), 2);

        let mut cart = Cart::new("c1", "u1", Timestamp(0)).unwrap();
        cart.version = 2;
        publish(&nats, &cart).await;
        let mut stale = cart.clone();
        stale.version = 1;
        publish(&nats, &stale).await;
        cart.version = 3;
        publish(&nats, &cart).await;
        for w in [&mut a, &mut b] {
            assert_eq!(next_version(w).await, 2);
            assert_eq!(
                next_version(w).await,
                3,
                "the stale version is not broadcast"
            );
        }

        drop(a);
        assert_eq!(hub.watched(), 2);
        drop(b);
        assert_eq!(hub.watched(), 1);
        drop(c);
        assert_eq!(hub.watched(), 0);
        // A new watch after the last one left subscribes afresh.
        let mut again = hub.watch("c1").await.unwrap();
        cart.version = 4;
        publish(&nats, &cart).await;
        assert_eq!(next_version(&mut again).await, 4);

        // What the carts bucket republishes: the stored record, whose changes name the
        // events and whose state is the cart.
        #[derive(serde::Serialize)]
        struct Stored<'a> {
            state: &'a Cart,
            outbox: Vec<Event>,
            changes: Vec<cartwheel_domain::Change>,
        }
        let live = cartwheel_bus::Names::default().live("cart", "c1");
        cart.version = 5;
        let stored = |cart: &Cart, changes: Vec<cartwheel_domain::Change>| {
            cartwheel_bus::codec::encode(&Stored {
                state: cart,
                outbox: Vec::new(),
                changes,
            })
            .unwrap()
        };
        // A record without changes (an older release's, whose node published its events)
        // is no push; the next one is.
        nats.publish(live.clone(), stored(&cart, Vec::new()))
            .await
            .unwrap();
        cart.version = 6;
        let changes = vec![cartwheel_domain::Change::CartUpdated];
        nats.publish(live, stored(&cart, changes)).await.unwrap();
        assert_eq!(next_version(&mut again).await, 6);
    }
}

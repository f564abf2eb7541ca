//! The per-edge hub of live pushes: one pair of core NATS subscriptions per watched
//! [`Topic`] (a cart, an order or a sku's stock), fanned out to every socket that watches
//! it.
//!
//! The first [`Hub::watch`] of a topic subscribes to its live subject
//! (`names.live(kind, id)`, where the KV bucket republishes each stored record) and to its
//! event subject (`names.event(kind, id)`, where nodes publish the events of entities kept
//! in Redis or MongoDB, and nodes of older releases all of them), flushes so the server
//! has registered the interest, and starts a forwarder task that decodes each message's
//! events and broadcasts the newer states. Each update is serialized to its push frame
//! once, here, so a thousand sockets on one cart cost one JSON encoding and a thousand
//! cheap clones. A sku's stock is coalesced: at most one push per
//! [`STOCK_PUSH_INTERVAL`], always the latest stock (a hot sku changes hundreds of times
//! a second during a sale; a shopper needs the number, not every step). The last
//! [`Watch`] dropped removes the entry, which stops the forwarder and unsubscribes.
//!
//! The hub only reads events; it never answers requests and never touches storage.

use crate::ws::protocol::{self, Body};
use axum::extract::ws::Utf8Bytes;
use cartwheel_bus::names::EntityKind;
use cartwheel_bus::{BusClient, BusError, events};
use cartwheel_domain::{Cart, Event, Inventory, InventoryView, Order};
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{OnceCell, broadcast};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

/// Updates kept per topic for sockets that fall behind; a socket further behind re-reads
/// the entity instead (see `session`).
const UPDATES_PER_TOPIC: usize = 64;

/// Longest wait for NATS to register a new subscription.
const SETUP_TIMEOUT: Duration = Duration::from_secs(5);

/// At most one stock push per sku this often (the latest stock).
pub const STOCK_PUSH_INTERVAL: Duration = Duration::from_secs(1);

/// What a socket can watch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// A cart's every change.
    Cart(String),
    /// An order's every change (its status as the saga moves it).
    Order(String),
    /// A sku's stock, coalesced.
    Stock(String),
}

impl Topic {
    /// The entity kind whose subjects carry the topic's changes.
    fn kind(&self) -> &'static str {
        match self {
            Topic::Cart(_) => EntityKind::Cart.as_str(),
            Topic::Order(_) => EntityKind::Order.as_str(),
            Topic::Stock(_) => EntityKind::Inventory.as_str(),
        }
    }

    /// The cart id, order id or sku.
    pub fn id(&self) -> &str {
        match self {
            Topic::Cart(id) | Topic::Order(id) | Topic::Stock(id) => id,
        }
    }
}

/// A change of one topic, with its push frame already encoded.
#[derive(Debug)]
pub struct Update {
    /// What changed.
    pub topic: Topic,
    /// Its version after the change.
    pub version: u64,
    /// The push frame.
    pub frame: Utf8Bytes,
}

impl Update {
    /// The push of `cart`.
    pub fn cart(cart: &Cart) -> Update {
        Update {
            topic: Topic::Cart(cart.id.clone()),
            version: cart.version,
            frame: protocol::push(Body::Cart(cart)),
        }
    }

    /// The push of `order`.
    pub fn order(order: &Order) -> Update {
        Update {
            topic: Topic::Order(order.id.clone()),
            version: order.version,
            frame: protocol::push(Body::Order(order)),
        }
    }

    /// The push of a sku's stock.
    pub fn stock(stock: &InventoryView) -> Update {
        Update {
            topic: Topic::Stock(stock.sku.clone()),
            version: stock.version,
            frame: protocol::push(Body::Stock(stock)),
        }
    }
}

/// Fans changes out to sockets; shared by every socket of an edge.
pub struct Hub {
    bus: BusClient,
    entries: Mutex<HashMap<Topic, Entry>>,
}

/// One watched topic.
struct Entry {
    /// Live [`Watch`]es (and `watch` calls in progress) of this topic.
    watchers: usize,
    /// Set once the NATS subscription is registered; concurrent first watchers wait on it.
    live: Arc<OnceCell<Live>>,
}

/// A registered subscription and its forwarder.
struct Live {
    sender: broadcast::Sender<Arc<Update>>,
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

    fn entries(&self) -> MutexGuard<'_, HashMap<Topic, Entry>> {
        // The map stays consistent even if a holder panicked: every update is one step.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many topics have a live subscription.
    #[cfg(test)]
    pub fn watched(&self) -> usize {
        self.entries().len()
    }

    /// Watches `topic` (its id already validated). When this returns, the NATS server
    /// has registered the subscription, so any change after this moment reaches the
    /// watch — read the current state only after it.
    pub async fn watch(self: &Arc<Self>, topic: &Topic) -> Result<Watch, BusError> {
        let cell = {
            let mut entries = self.entries();
            let entry = entries.entry(topic.clone()).or_insert_with(|| Entry {
                watchers: 0,
                live: Arc::new(OnceCell::new()),
            });
            entry.watchers += 1;
            entry.live.clone()
        };
        // From here the count is released on every path, including cancellation.
        let release = Release {
            hub: self.clone(),
            topic: topic.clone(),
        };
        let live = cell.get_or_try_init(|| self.start(topic)).await?;
        Ok(Watch {
            rx: live.sender.subscribe(),
            _release: release,
        })
    }

    /// Subscribes to the topic's changes and starts its forwarder.
    async fn start(&self, topic: &Topic) -> Result<Live, BusError> {
        let subject = self.bus.names().live(topic.kind(), topic.id());
        let events = self.bus.names().event(topic.kind(), topic.id());
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
        let (sender, _) = broadcast::channel(UPDATES_PER_TOPIC);
        let stop = CancellationToken::new();
        let every = matches!(topic, Topic::Stock(_)).then_some(STOCK_PUSH_INTERVAL);
        tokio::spawn(forward(
            sub,
            topic.clone(),
            sender.clone(),
            stop.clone(),
            subject,
            every,
        ));
        Ok(Live {
            sender,
            _stop: stop.drop_guard(),
        })
    }

    /// Drops one watcher; the last one removes the entry (stopping its forwarder).
    fn release(&self, topic: &Topic) {
        let removed = {
            let mut entries = self.entries();
            let last = match entries.get_mut(topic) {
                Some(entry) => {
                    entry.watchers = entry.watchers.saturating_sub(1);
                    entry.watchers == 0
                }
                None => false,
            };
            if last { entries.remove(topic) } else { None }
        };
        // Dropped outside the lock.
        drop(removed);
    }
}

/// One socket's view of a topic's updates. Dropping it releases the hub entry.
pub struct Watch {
    rx: broadcast::Receiver<Arc<Update>>,
    _release: Release,
}

impl Watch {
    /// The next update; `Lagged` when this watcher fell behind and missed some.
    pub async fn recv(&mut self) -> Result<Arc<Update>, broadcast::error::RecvError> {
        self.rx.recv().await
    }
}

struct Release {
    hub: Arc<Hub>,
    topic: Topic,
}

impl Drop for Release {
    fn drop(&mut self) {
        self.hub.release(&self.topic);
    }
}

/// The topic's updates in one message (a stored record or published events).
fn updates(topic: &Topic, msg: &async_nats::Message) -> Result<Vec<Update>, BusError> {
    let headers = msg.headers.as_ref();
    let events = match topic {
        Topic::Cart(_) => events::decode_events::<Cart>(headers, &msg.payload)?,
        Topic::Order(_) => events::decode_events::<Order>(headers, &msg.payload)?,
        Topic::Stock(_) => events::decode_events::<Inventory>(headers, &msg.payload)?,
    };
    Ok(events
        .into_iter()
        .filter_map(|event| match event {
            Event::CartUpdated { cart } | Event::CartCheckedOut { cart, .. } => {
                Some(Update::cart(&cart))
            }
            Event::OrderCreated { order } | Event::OrderStatusUpdated { order, .. } => {
                Some(Update::order(&order))
            }
            Event::StockUpdated { inventory } => Some(Update::stock(&inventory)),
            _ => None,
        })
        .filter(|u| &u.topic == topic)
        .collect())
}

/// Decodes the topic's events and broadcasts newer states until stopped; with `every`,
/// at most one broadcast per `every`, the latest.
async fn forward(
    mut sub: futures::stream::Select<async_nats::Subscriber, async_nats::Subscriber>,
    topic: Topic,
    sender: broadcast::Sender<Arc<Update>>,
    stop: CancellationToken,
    subject: String,
    every: Option<Duration>,
) {
    // Versions only grow: anything not newer than the last one seen is a duplicate.
    let mut last = 0;
    // With `every`: the newest update not yet broadcast, and when the next may go.
    let mut pending: Option<Update> = None;
    let mut next_at = Instant::now();
    loop {
        let msg = tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep_until(next_at), if pending.is_some() => None,
            msg = sub.next() => match msg {
                Some(msg) => Some(msg),
                None => {
                    // The client closed (the edge is shutting down).
                    tracing::debug!(%subject, "event subscription ended");
                    return;
                }
            },
        };
        if let Some(msg) = msg {
            match updates(&topic, &msg) {
                Ok(found) => {
                    for update in found {
                        if update.version > last {
                            last = update.version;
                            pending = Some(update);
                        }
                    }
                }
                Err(e) => tracing::warn!(%subject, error = %e, "undecodable change"),
            }
        }
        let now = Instant::now();
        if pending.is_some() && now >= next_at {
            if let Some(update) = pending.take() {
                // No receivers is fine: the last socket may be leaving right now.
                let _ = sender.send(Arc::new(update));
            }
            if let Some(every) = every {
                next_at = now + every;
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
        let c1 = Topic::Cart("c1".into());
        let mut a = hub.watch(&c1).await.unwrap();
        let mut b = hub.watch(&c1).await.unwrap();
        let c = hub.watch(&Topic::Cart("c2".into())).await.unwrap();
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
        let mut again = hub.watch(&c1).await.unwrap();
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

    #[tokio::test]
    async fn stock_pushes_are_coalesced_to_the_latest_once_a_second() {
        let server = NatsServer::start().await.unwrap();
        let nats = cartwheel_testkit::connect(&server.url()).await.unwrap();
        let hub = Arc::new(Hub::new(BusClient::new(nats.clone(), BusConfig::default())));
        let mut w = hub.watch(&Topic::Stock("MUG".into())).await.unwrap();
        let subject = cartwheel_bus::Names::default().event("inventory", "MUG");
        let stock = |version: u64| Event::StockUpdated {
            inventory: InventoryView {
                sku: "MUG".into(),
                on_hand: 100 - version,
                reserved: 0,
                available: 100 - version,
                version,
            },
        };
        // Twenty changes in a burst, then two stale repeats.
        for version in (1..=20).chain([3, 7]) {
            let (headers, payload) = cartwheel_bus::events::event_message(&stock(version)).unwrap();
            nats.publish_with_headers(subject.clone(), headers, payload)
                .await
                .unwrap();
        }
        nats.flush().await.unwrap();
        let mut seen = Vec::new();
        while seen.last().map(|(v, _)| *v) != Some(20) {
            let u = tokio::time::timeout(Duration::from_secs(10), w.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(u.topic, Topic::Stock("MUG".into()));
            seen.push((u.version, Instant::now()));
        }
        // The first change goes out at once, the latest one last; between them a second
        // at least (the hub's clock; a loaded receiver may see them a little closer).
        let versions: Vec<u64> = seen.iter().map(|(v, _)| *v).collect();
        assert!(versions.len() < 20, "not coalesced: {versions:?}");
        assert!(versions.windows(2).all(|p| p[0] < p[1]), "{versions:?}");
        for pair in seen.windows(2) {
            assert!(
                pair[1].1 - pair[0].1 >= Duration::from_millis(500),
                "{versions:?} pushed too close together"
            );
        }
    }
}

//! Stock of one sku: on hand, reserved per order, available. Never negative.
//!
//! Reservations are keyed by order id so every operation is idempotent: reserving twice
//! for the same order, releasing twice, or committing twice changes nothing the second
//! time. That is what lets the checkout saga retry any step after a crash.

use crate::error::DomainError;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Largest quantity of stock one sku may hold.
pub const MAX_ON_HAND: u64 = 1_000_000_000;

/// Stock held for one order until it is committed or released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// Units held.
    pub qty: u64,
    /// When the hold was taken (stale holds expire).
    pub at: Timestamp,
}

/// What happened to an order's stock after commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    /// Units taken out of stock.
    pub qty: u64,
    /// Whether the units were put back (order cancelled).
    #[serde(default)]
    pub restocked: bool,
}

/// The stored inventory record of one sku.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// The sku.
    pub sku: String,
    /// Units physically in stock, including reserved ones.
    pub on_hand: u64,
    /// Open reservations by order id.
    #[serde(default)]
    pub reservations: BTreeMap<String, Reservation>,
    /// Committed orders by order id (kept so commit and restock are idempotent).
    #[serde(default)]
    pub committed: BTreeMap<String, Committed>,
    /// Grows by one on every change.
    #[serde(default)]
    pub version: u64,
}

/// The public view: `{"sku","on_hand","reserved","available"}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryView {
    /// The sku.
    pub sku: String,
    /// Units in stock.
    pub on_hand: u64,
    /// Units held by open reservations.
    pub reserved: u64,
    /// `on_hand - reserved`.
    pub available: u64,
    /// Version of the inventory record.
    pub version: u64,
}

/// Whether an idempotent operation changed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// The state changed; persist it.
    Changed,
    /// The operation had already been applied; nothing to persist.
    Unchanged,
}

impl Inventory {
    /// An empty record for `sku`.
    pub fn new(sku: &str) -> Inventory {
        Inventory {
            sku: sku.to_owned(),
            on_hand: 0,
            reservations: BTreeMap::new(),
            committed: BTreeMap::new(),
            version: 0,
        }
    }

    /// Units held by open reservations.
    pub fn reserved(&self) -> u64 {
        self.reservations.values().map(|r| r.qty).sum()
    }

    /// Units that can still be reserved.
    pub fn available(&self) -> u64 {
        self.on_hand.saturating_sub(self.reserved())
    }

    /// The public view.
    pub fn view(&self) -> InventoryView {
        InventoryView {
            sku: self.sku.clone(),
            on_hand: self.on_hand,
            reserved: self.reserved(),
            available: self.available(),
            version: self.version,
        }
    }

    fn bump(&mut self) -> Effect {
        self.version += 1;
        Effect::Changed
    }

    /// Sets the stock on hand. It can never go below what is reserved.
    pub fn set_on_hand(&mut self, on_hand: u64) -> Result<Effect, DomainError> {
        if on_hand > MAX_ON_HAND {
            return Err(DomainError::invalid(
                "on_hand",
                format!("must be at most {MAX_ON_HAND}"),
            ));
        }
        let reserved = self.reserved();
        if on_hand < reserved {
            return Err(DomainError::Conflict(format!(
                "on_hand {on_hand} would be below the {reserved} units reserved"
            )));
        }
        self.on_hand = on_hand;
        Ok(self.bump())
    }

    /// Adds `delta` (which may be negative) to the stock on hand, never below what is reserved.
    pub fn adjust(&mut self, delta: i64) -> Result<Effect, DomainError> {
        if delta == 0 {
            return Err(DomainError::invalid("delta", "must not be zero"));
        }
        let target = i128::from(self.on_hand) + i128::from(delta);
        if target < 0 {
            return Err(DomainError::Conflict(format!(
                "adjusting by {delta} would make on_hand negative"
            )));
        }
        let target =
            u64::try_from(target).map_err(|_| DomainError::invalid("delta", "out of range"))?;
        self.set_on_hand(target)
    }

    /// Holds `qty` units for `order_id`. Idempotent: the same order reserving the same
    /// quantity again is a no-op; a different quantity for the same order is a conflict.
    pub fn reserve(
        &mut self,
        order_id: &str,
        qty: u64,
        now: Timestamp,
    ) -> Result<Effect, DomainError> {
        if qty == 0 {
            return Err(DomainError::invalid("qty", "must be greater than zero"));
        }
        if let Some(existing) = self.reservations.get(order_id) {
            return if existing.qty == qty {
                Ok(Effect::Unchanged)
            } else {
                Err(DomainError::Conflict(format!(
                    "order {order_id} already reserved {} units of {}",
                    existing.qty, self.sku
                )))
            };
        }
        if self.committed.contains_key(order_id) {
            return Ok(Effect::Unchanged);
        }
        let available = self.available();
        if qty > available {
            return Err(DomainError::InsufficientStock {
                sku: self.sku.clone(),
                requested: qty,
                available,
            });
        }
        self.reservations
            .insert(order_id.to_owned(), Reservation { qty, at: now });
        Ok(self.bump())
    }

    /// Drops the hold of `order_id`, if any. Idempotent.
    pub fn release(&mut self, order_id: &str) -> Effect {
        if self.reservations.remove(order_id).is_some() {
            self.bump()
        } else {
            Effect::Unchanged
        }
    }

    /// Takes the held units of `order_id` out of stock. Idempotent: committing an order
    /// already committed is a no-op; committing without a hold is a conflict.
    pub fn commit(&mut self, order_id: &str) -> Result<Effect, DomainError> {
        if self.committed.contains_key(order_id) {
            return Ok(Effect::Unchanged);
        }
        let Some(r) = self.reservations.remove(order_id) else {
            return Err(DomainError::Conflict(format!(
                "order {order_id} holds no reservation of {}",
                self.sku
            )));
        };
        // on_hand >= reserved >= r.qty always holds, so this cannot underflow.
        self.on_hand = self.on_hand.saturating_sub(r.qty);
        self.committed.insert(
            order_id.to_owned(),
            Committed {
                qty: r.qty,
                restocked: false,
            },
        );
        Ok(self.bump())
    }

    /// Puts the committed units of a cancelled order back in stock. Idempotent.
    pub fn restock(&mut self, order_id: &str) -> Result<Effect, DomainError> {
        let Some(c) = self.committed.get_mut(order_id) else {
            // Never committed: release any hold instead, which is also idempotent.
            return Ok(self.release(order_id));
        };
        if c.restocked {
            return Ok(Effect::Unchanged);
        }
        c.restocked = true;
        self.on_hand = self.on_hand.saturating_add(c.qty);
        Ok(self.bump())
    }

    /// Drops reservations taken before `cutoff` (abandoned sagas). Returns the order ids.
    pub fn expire(&mut self, cutoff: Timestamp) -> Vec<String> {
        let stale: Vec<String> = self
            .reservations
            .iter()
            .filter(|(_, r)| r.at < cutoff)
            .map(|(k, _)| k.clone())
            .collect();
        if !stale.is_empty() {
            for k in &stale {
                self.reservations.remove(k);
            }
            self.bump();
        }
        stale
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn reserve_commit_release_are_idempotent() {
        let mut inv = Inventory::new("S");
        inv.set_on_hand(10).unwrap();
        assert_eq!(inv.reserve("o1", 4, Timestamp(0)).unwrap(), Effect::Changed);
        assert_eq!(
            inv.reserve("o1", 4, Timestamp(0)).unwrap(),
            Effect::Unchanged
        );
        assert!(matches!(
            inv.reserve("o1", 5, Timestamp(0)),
            Err(DomainError::Conflict(_))
        ));
        assert!(matches!(
            inv.reserve("o2", 7, Timestamp(0)),
            Err(DomainError::InsufficientStock { available: 6, .. })
        ));
        assert_eq!(inv.commit("o1").unwrap(), Effect::Changed);
        assert_eq!(inv.commit("o1").unwrap(), Effect::Unchanged);
        assert_eq!(
            inv.reserve("o1", 4, Timestamp(0)).unwrap(),
            Effect::Unchanged
        );
        assert_eq!(inv.view().on_hand, 6);
        assert_eq!(inv.release("o9"), Effect::Unchanged);
        assert!(inv.set_on_hand(0).is_ok());
        assert_eq!(inv.restock("o1").unwrap(), Effect::Changed);
        assert_eq!(inv.restock("o1").unwrap(), Effect::Unchanged);
        assert_eq!(inv.on_hand, 4);
    }

    #[test]
    fn on_hand_never_below_reserved() {
        let mut inv = Inventory::new("S");
        inv.set_on_hand(5).unwrap();
        inv.reserve("o", 3, Timestamp(0)).unwrap();
        assert!(inv.set_on_hand(2).is_err());
        assert!(inv.adjust(-3).is_err());
        assert!(inv.adjust(-2).is_ok());
        assert!(inv.adjust(-100).is_err());
        assert_eq!(inv.available(), 0);
    }

    #[test]
    fn expire_drops_only_stale_holds() {
        let mut inv = Inventory::new("S");
        inv.set_on_hand(5).unwrap();
        inv.reserve("old", 1, Timestamp(10)).unwrap();
        inv.reserve("new", 1, Timestamp(100)).unwrap();
        assert_eq!(inv.expire(Timestamp(50)), vec!["old".to_string()]);
        assert_eq!(inv.reserved(), 1);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Set(u64),
        Adjust(i64),
        Reserve(u8, u64),
        Release(u8),
        Commit(u8),
        Restock(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..50).prop_map(Op::Set),
            (-20i64..20).prop_map(Op::Adjust),
            (0u8..6, 0u64..12).prop_map(|(o, q)| Op::Reserve(o, q)),
            (0u8..6).prop_map(Op::Release),
            (0u8..6).prop_map(Op::Commit),
            (0u8..6).prop_map(Op::Restock),
        ]
    }

    /// The simple model: on hand, holds and commits as plain maps.
    #[derive(Default)]
    struct Model {
        on_hand: u64,
        holds: HashMap<u8, u64>,
        committed: HashMap<u8, (u64, bool)>,
    }

    impl Model {
        fn reserved(&self) -> u64 {
            self.holds.values().sum()
        }
    }

    proptest! {
        #[test]
        fn matches_the_model(ops in proptest::collection::vec(op(), 1..80)) {
            let mut inv = Inventory::new("S");
            let mut m = Model::default();
            for op in ops {
                let before = inv.clone();
                let ok = match op {
                    Op::Set(n) => {
                        let legal = n >= m.reserved();
                        if legal { m.on_hand = n; }
                        prop_assert_eq!(inv.set_on_hand(n).is_ok(), legal);
                        legal
                    }
                    Op::Adjust(d) => {
                        let t = m.on_hand as i64 + d;
                        let legal = d != 0 && t >= 0 && t as u64 >= m.reserved();
                        if legal { m.on_hand = t as u64; }
                        prop_assert_eq!(inv.adjust(d).is_ok(), legal);
                        legal
                    }
                    Op::Reserve(o, q) => {
                        let id = format!("o{o}");
                        let r = inv.reserve(&id, q, Timestamp(0));
                        let legal = if q == 0 { false }
                            else if let Some(h) = m.holds.get(&o) { *h == q }
                            else if m.committed.contains_key(&o) { true }
                            else { q <= m.on_hand - m.reserved() };
                        if legal && !m.holds.contains_key(&o) && !m.committed.contains_key(&o) {
                            m.holds.insert(o, q);
                        }
                        prop_assert_eq!(r.is_ok(), legal);
                        legal
                    }
                    Op::Release(o) => {
                        m.holds.remove(&o);
                        inv.release(&format!("o{o}"));
                        true
                    }
                    Op::Commit(o) => {
                        let r = inv.commit(&format!("o{o}"));
                        let legal = m.committed.contains_key(&o) || m.holds.contains_key(&o);
                        if let Some(q) = m.holds.remove(&o) {
                            m.on_hand -= q;
                            m.committed.insert(o, (q, false));
                        }
                        prop_assert_eq!(r.is_ok(), legal);
                        legal
                    }
                    Op::Restock(o) => {
                        if let Some((q, done)) = m.committed.get_mut(&o) {
                            if !*done { *done = true; m.on_hand += *q; }
                        } else {
                            m.holds.remove(&o);
                        }
                        let r = inv.restock(&format!("o{}", o));
                        prop_assert!(r.is_ok());
                        true
                    }
                };
                if !ok {
                    prop_assert_eq!(&inv, &before, "a refused operation changed nothing");
                }
                prop_assert_eq!(inv.on_hand, m.on_hand);
                prop_assert_eq!(inv.reserved(), m.reserved());
                prop_assert!(inv.reserved() <= inv.on_hand);
                prop_assert!(inv.version >= before.version);
            }
        }
    }
}

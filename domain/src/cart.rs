//! Shopping carts: lines by sku with quantities > 0, priced from the catalog at add time.

use crate::error::DomainError;
use crate::money::{Currency, line_total};
use crate::product::Product;
use crate::time::Timestamp;
use crate::validate;
use serde::{Deserialize, Serialize};

/// Most units of one sku in a cart.
pub const MAX_QTY_PER_LINE: u32 = 999;
/// Most distinct skus in a cart.
pub const MAX_LINES: usize = 100;

/// Whether the cart can still change.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CartStatus {
    /// Lines can be added, changed and removed.
    Open,
    /// An order was placed from this cart; it no longer changes.
    CheckedOut,
}

/// One line: `{"sku","qty","unit_price","currency"}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartLine {
    /// The product.
    pub sku: String,
    /// Units, always greater than zero.
    pub qty: u32,
    /// Catalog price per unit when the line was last added to, in minor units.
    pub unit_price: i64,
    /// Currency of `unit_price`.
    pub currency: Currency,
}

/// The checkout that froze the cart: which key and which order.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutRecord {
    /// The client's `Idempotency-Key`.
    pub idempotency_key: String,
    /// The order placed (derived from cart id and key, so a replay finds it).
    pub order_id: String,
    /// When checkout began.
    pub at: Timestamp,
}

/// A cart. Its `version` grows on every change and never goes back.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cart {
    /// Cart id.
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// Lines in the order they were first added.
    pub items: Vec<CartLine>,
    /// Sum of `qty * unit_price` over the lines, in minor units.
    pub total: i64,
    /// Currency of every line; `null` while the cart is empty.
    pub currency: Option<Currency>,
    /// Open or checked out.
    pub status: CartStatus,
    /// Grows by one on every change.
    pub version: u64,
    /// Set once checkout began.
    #[serde(default)]
    pub checkout: Option<CheckoutRecord>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

impl Cart {
    /// A new, empty, open cart at version 1.
    pub fn new(id: &str, user_id: &str, now: Timestamp) -> Result<Cart, DomainError> {
        validate::id("cart_id", id)?;
        validate::id("user_id", user_id)?;
        Ok(Cart {
            id: id.to_owned(),
            user_id: user_id.to_owned(),
            items: Vec::new(),
            total: 0,
            currency: None,
            status: CartStatus::Open,
            version: 1,
            checkout: None,
            created_at: now,
            updated_at: now,
        })
    }

    fn ensure_open(&self) -> Result<(), DomainError> {
        match self.status {
            CartStatus::Open => Ok(()),
            CartStatus::CheckedOut => Err(DomainError::Conflict(format!(
                "cart {} is checked out and can no longer change",
                self.id
            ))),
        }
    }

    fn check_qty(qty: u32) -> Result<(), DomainError> {
        if qty == 0 {
            return Err(DomainError::invalid("qty", "must be greater than zero"));
        }
        if qty > MAX_QTY_PER_LINE {
            return Err(DomainError::invalid(
                "qty",
                format!("must be at most {MAX_QTY_PER_LINE} per line"),
            ));
        }
        Ok(())
    }

    fn recompute(&mut self, now: Timestamp) -> Result<(), DomainError> {
        let mut total: i64 = 0;
        for l in &self.items {
            total = total
                .checked_add(line_total(l.qty, l.unit_price)?)
                .ok_or_else(|| DomainError::invalid("qty", "cart total overflows"))?;
        }
        self.total = total;
        if self.items.is_empty() {
            self.currency = None;
        }
        self.version += 1;
        self.updated_at = now;
        Ok(())
    }

    /// Applies `f` to a copy and keeps it only if every rule held, so a refused change
    /// leaves the cart exactly as it was.
    fn transact(
        &mut self,
        now: Timestamp,
        f: impl FnOnce(&mut Cart) -> Result<(), DomainError>,
    ) -> Result<(), DomainError> {
        self.ensure_open()?;
        let mut next = self.clone();
        f(&mut next)?;
        next.recompute(now)?;
        *self = next;
        Ok(())
    }

    /// Adds `qty` units of `product`, adding to an existing line. The line takes the
    /// product's current catalog price.
    pub fn add_item(
        &mut self,
        product: &Product,
        qty: u32,
        now: Timestamp,
    ) -> Result<(), DomainError> {
        Self::check_qty(qty)?;
        if !product.active {
            return Err(DomainError::ProductInactive(product.sku.clone()));
        }
        self.transact(now, |c| {
            if let Some(cur) = &c.currency
                && *cur != product.currency
            {
                return Err(DomainError::invalid(
                    "currency",
                    format!(
                        "product {} is priced in {} but the cart is in {cur}",
                        product.sku, product.currency
                    ),
                ));
            }
            if let Some(line) = c.items.iter_mut().find(|l| l.sku == product.sku) {
                let q = line.qty.saturating_add(qty);
                Self::check_qty(q)?;
                line.qty = q;
                line.unit_price = product.price;
            } else {
                if c.items.len() >= MAX_LINES {
                    return Err(DomainError::invalid(
                        "sku",
                        format!("a cart holds at most {MAX_LINES} different products"),
                    ));
                }
                c.items.push(CartLine {
                    sku: product.sku.clone(),
                    qty,
                    unit_price: product.price,
                    currency: product.currency.clone(),
                });
            }
            c.currency = Some(product.currency.clone());
            Ok(())
        })
    }

    /// Sets the quantity of an existing line; 0 removes it.
    pub fn set_qty(&mut self, sku: &str, qty: u32, now: Timestamp) -> Result<(), DomainError> {
        if qty == 0 {
            return self.remove_item(sku, now);
        }
        Self::check_qty(qty)?;
        self.transact(now, |c| {
            let line = c
                .items
                .iter_mut()
                .find(|l| l.sku == sku)
                .ok_or_else(|| DomainError::not_found(format!("item {sku} in cart")))?;
            line.qty = qty;
            Ok(())
        })
    }

    /// Removes the line of `sku`.
    pub fn remove_item(&mut self, sku: &str, now: Timestamp) -> Result<(), DomainError> {
        self.transact(now, |c| {
            let before = c.items.len();
            c.items.retain(|l| l.sku != sku);
            if c.items.len() == before {
                return Err(DomainError::not_found(format!("item {sku} in cart")));
            }
            Ok(())
        })
    }

    /// Freezes the cart for checkout under `idempotency_key`, placing `order_id`.
    ///
    /// Returns `Ok(false)` when the same key already checked this cart out (a replay: the
    /// caller continues with the recorded order), `Ok(true)` when the cart changed.
    pub fn check_out(
        &mut self,
        idempotency_key: &str,
        order_id: &str,
        now: Timestamp,
    ) -> Result<bool, DomainError> {
        validate::idempotency_key(idempotency_key)?;
        if let Some(rec) = &self.checkout {
            return if rec.idempotency_key == idempotency_key {
                Ok(false)
            } else {
                Err(DomainError::Conflict(format!(
                    "cart {} was already checked out as order {}",
                    self.id, rec.order_id
                )))
            };
        }
        self.ensure_open()?;
        if self.items.is_empty() {
            return Err(DomainError::Conflict(format!(
                "cart {} is empty; add items before checking out",
                self.id
            )));
        }
        self.status = CartStatus::CheckedOut;
        self.checkout = Some(CheckoutRecord {
            idempotency_key: idempotency_key.to_owned(),
            order_id: order_id.to_owned(),
            at: now,
        });
        self.version += 1;
        self.updated_at = now;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::product::ProductDraft;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn product(sku: &str, price: i64, cur: &str) -> Product {
        Product::create(
            ProductDraft {
                sku: sku.into(),
                name: "n".into(),
                description: String::new(),
                price,
                currency: Currency::new(cur).unwrap(),
                category: "c".into(),
                active: true,
            },
            Timestamp(0),
        )
        .unwrap()
    }

    #[test]
    fn adds_to_existing_line_and_totals() {
        let mut c = Cart::new("c1", "u1", Timestamp(0)).unwrap();
        let p = product("A", 250, "EUR");
        c.add_item(&p, 2, Timestamp(1)).unwrap();
        c.add_item(&p, 1, Timestamp(2)).unwrap();
        c.add_item(&product("B", 100, "EUR"), 1, Timestamp(3))
            .unwrap();
        assert_eq!(c.items.len(), 2);
        assert_eq!(c.items[0].qty, 3);
        assert_eq!(c.total, 850);
        assert_eq!(c.version, 4);
        assert_eq!(c.currency.as_ref().map(Currency::as_str), Some("EUR"));
    }

    #[test]
    fn refuses_bad_changes_without_changing_anything() {
        let mut c = Cart::new("c1", "u1", Timestamp(0)).unwrap();
        c.add_item(&product("A", 250, "EUR"), 2, Timestamp(1))
            .unwrap();
        let before = c.clone();
        assert!(
            c.add_item(&product("A", 250, "EUR"), 0, Timestamp(2))
                .is_err()
        );
        assert!(
            c.add_item(&product("B", 1, "USD"), 1, Timestamp(2))
                .is_err()
        );
        assert!(
            c.add_item(&product("A", 250, "EUR"), 998, Timestamp(2))
                .is_err()
        );
        assert!(c.set_qty("Z", 1, Timestamp(2)).is_err());
        assert!(c.remove_item("Z", Timestamp(2)).is_err());
        let mut inactive = product("C", 1, "EUR");
        inactive.active = false;
        assert!(matches!(
            c.add_item(&inactive, 1, Timestamp(2)),
            Err(DomainError::ProductInactive(_))
        ));
        assert_eq!(c, before);
    }

    #[test]
    fn checkout_is_idempotent_per_key_and_freezes() {
        let mut c = Cart::new("c1", "u1", Timestamp(0)).unwrap();
        assert!(matches!(
            c.check_out("k", "o", Timestamp(1)),
            Err(DomainError::Conflict(_))
        ));
        c.add_item(&product("A", 1, "EUR"), 1, Timestamp(1))
            .unwrap();
        assert!(c.check_out("k", "o", Timestamp(2)).unwrap());
        assert!(!c.check_out("k", "o", Timestamp(3)).unwrap());
        assert!(c.check_out("other", "o2", Timestamp(3)).is_err());
        assert!(
            c.add_item(&product("A", 1, "EUR"), 1, Timestamp(4))
                .is_err()
        );
        assert_eq!(c.status, CartStatus::CheckedOut);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Add(u8, u32),
        Set(u8, u32),
        Remove(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..5, 0u32..1200).prop_map(|(s, q)| Op::Add(s, q)),
            (0u8..5, 0u32..1200).prop_map(|(s, q)| Op::Set(s, q)),
            (0u8..5).prop_map(Op::Remove),
        ]
    }

    proptest! {
        #[test]
        fn matches_the_model(ops in proptest::collection::vec(op(), 1..60)) {
            let prices = [100i64, 250, 999, 1, 5000];
            let mut cart = Cart::new("c", "u", Timestamp(0)).unwrap();
            let mut model: BTreeMap<u8, u32> = BTreeMap::new();
            for (i, op) in ops.into_iter().enumerate() {
                let now = Timestamp(i as i64 + 1);
                let before = cart.clone();
                let (result, legal) = match op {
                    Op::Add(s, q) => {
                        let p = product(&format!("S{s}"), prices[s as usize], "EUR");
                        let cur = model.get(&s).copied().unwrap_or(0);
                        let legal = q > 0 && cur + q <= MAX_QTY_PER_LINE;
                        if legal { model.insert(s, cur + q); }
                        (cart.add_item(&p, q, now), legal)
                    }
                    Op::Set(s, q) => {
                        let legal = model.contains_key(&s) && q <= MAX_QTY_PER_LINE;
                        if legal { if q == 0 { model.remove(&s); } else { model.insert(s, q); } }
                        (cart.set_qty(&format!("S{s}"), q, now), legal)
                    }
                    Op::Remove(s) => {
                        let legal = model.remove(&s).is_some();
                        (cart.remove_item(&format!("S{s}"), now), legal)
                    }
                };
                prop_assert_eq!(result.is_ok(), legal);
                if legal {
                    prop_assert_eq!(cart.version, before.version + 1);
                } else {
                    prop_assert_eq!(&cart, &before);
                }
                prop_assert!(cart.items.iter().all(|l| l.qty > 0));
                let expect: i64 = model.iter().map(|(s, q)| prices[*s as usize] * i64::from(*q)).sum();
                prop_assert_eq!(cart.total, expect);
                prop_assert_eq!(cart.items.len(), model.len());
            }
        }
    }
}

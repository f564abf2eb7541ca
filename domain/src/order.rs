//! Orders, their six statuses, the legal transitions, and the saga step stored with them.
//!
//! ```text
//! PENDING ──► PRODUCT_RESERVED ──► CONFIRMED ──► COMPLETED
//!    │               │                 │
//!    └──► FAILED ◄───┘                 └──► CANCELLED (stock returned)
//! ```

use crate::cart::Cart;
use crate::error::DomainError;
use crate::money::Currency;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

/// Where an order is in its life.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    /// Placed; stock not yet reserved.
    Pending,
    /// Every line's stock is held.
    ProductReserved,
    /// Paid; stock taken.
    Confirmed,
    /// Could not be fulfilled; `failure_reason` says why. Nothing stays reserved.
    Failed,
    /// Delivered.
    Completed,
    /// Cancelled after confirmation; stock returned.
    Cancelled,
}

impl OrderStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [OrderStatus; 6] = [
        OrderStatus::Pending,
        OrderStatus::ProductReserved,
        OrderStatus::Confirmed,
        OrderStatus::Failed,
        OrderStatus::Completed,
        OrderStatus::Cancelled,
    ];

    /// The status as it appears in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "PENDING",
            OrderStatus::ProductReserved => "PRODUCT_RESERVED",
            OrderStatus::Confirmed => "CONFIRMED",
            OrderStatus::Failed => "FAILED",
            OrderStatus::Completed => "COMPLETED",
            OrderStatus::Cancelled => "CANCELLED",
        }
    }

    /// Parses the JSON form.
    pub fn parse(s: &str) -> Option<OrderStatus> {
        OrderStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether `self → to` is a legal transition.
    pub fn can_become(self, to: OrderStatus) -> bool {
        use OrderStatus::*;
        matches!(
            (self, to),
            (Pending, ProductReserved)
                | (Pending, Failed)
                | (ProductReserved, Confirmed)
                | (ProductReserved, Failed)
                | (Confirmed, Completed)
                | (Confirmed, Cancelled)
        )
    }

    /// Whether the checkout saga has ended (the order will not change by itself).
    pub fn saga_settled(self) -> bool {
        !matches!(self, OrderStatus::Pending | OrderStatus::ProductReserved)
    }
}

/// The next thing the saga must do for this order. Stored with the order so a new owner
/// resumes exactly where the last one stopped.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaStep {
    /// Reserve every line (idempotent per order).
    Reserve,
    /// Ask the payment port.
    Pay,
    /// Commit the reservations of a confirmed order.
    Commit,
    /// Release whatever was reserved of a failed order.
    Release,
    /// Return committed stock of a cancelled order.
    Restock,
    /// Nothing left to do.
    Done,
}

/// One line of an order, priced when the order was placed.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    /// The product.
    pub sku: String,
    /// Units.
    pub qty: u32,
    /// Price per unit in minor units.
    pub unit_price: i64,
    /// Currency.
    pub currency: Currency,
}

/// An order.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Order id (derived from the cart id and the idempotency key).
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// The cart it came from.
    pub cart_id: String,
    /// Lines.
    pub items: Vec<OrderLine>,
    /// Sum of the lines in minor units.
    pub total: i64,
    /// Currency.
    pub currency: Currency,
    /// Current status.
    pub status: OrderStatus,
    /// Why it failed, when `status` is `FAILED`.
    #[serde(default)]
    pub failure_reason: Option<String>,
    /// The stored saga step.
    pub saga_step: SagaStep,
    /// The checkout's idempotency key.
    pub idempotency_key: String,
    /// When it was placed.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// Grows by one on every change.
    pub version: u64,
}

impl Order {
    /// Places a `PENDING` order from a checked-out cart.
    pub fn place(
        order_id: &str,
        cart: &Cart,
        idempotency_key: &str,
        now: Timestamp,
    ) -> Result<Order, DomainError> {
        let currency = cart
            .currency
            .clone()
            .ok_or_else(|| DomainError::Conflict(format!("cart {} is empty", cart.id)))?;
        Ok(Order {
            id: order_id.to_owned(),
            user_id: cart.user_id.clone(),
            cart_id: cart.id.clone(),
            items: cart
                .items
                .iter()
                .map(|l| OrderLine {
                    sku: l.sku.clone(),
                    qty: l.qty,
                    unit_price: l.unit_price,
                    currency: l.currency.clone(),
                })
                .collect(),
            total: cart.total,
            currency,
            status: OrderStatus::Pending,
            failure_reason: None,
            saga_step: SagaStep::Reserve,
            idempotency_key: idempotency_key.to_owned(),
            created_at: now,
            updated_at: now,
            version: 1,
        })
    }

    /// Moves to `to` with the saga's next step, refusing illegal transitions.
    pub fn transition(
        &mut self,
        to: OrderStatus,
        next_step: SagaStep,
        now: Timestamp,
    ) -> Result<(), DomainError> {
        if !self.status.can_become(to) {
            return Err(DomainError::Conflict(format!(
                "order {} cannot go from {} to {}",
                self.id,
                self.status.as_str(),
                to.as_str()
            )));
        }
        self.status = to;
        self.saga_step = next_step;
        self.version += 1;
        self.updated_at = now;
        Ok(())
    }

    /// Marks the order `FAILED` with `reason`; the saga must still release reservations.
    pub fn fail(&mut self, reason: impl Into<String>, now: Timestamp) -> Result<(), DomainError> {
        self.transition(OrderStatus::Failed, SagaStep::Release, now)?;
        self.failure_reason = Some(reason.into());
        Ok(())
    }

    /// Records that the saga's cleanup step finished.
    pub fn step_done(&mut self, now: Timestamp) {
        self.saga_step = SagaStep::Done;
        self.version += 1;
        self.updated_at = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_legal_transitions() {
        use OrderStatus::*;
        let legal = [
            (Pending, ProductReserved),
            (Pending, Failed),
            (ProductReserved, Confirmed),
            (ProductReserved, Failed),
            (Confirmed, Completed),
            (Confirmed, Cancelled),
        ];
        for from in OrderStatus::ALL {
            for to in OrderStatus::ALL {
                assert_eq!(
                    from.can_become(to),
                    legal.contains(&(from, to)),
                    "{from:?}->{to:?}"
                );
            }
        }
    }

    #[test]
    fn statuses_round_trip() {
        for s in OrderStatus::ALL {
            assert_eq!(OrderStatus::parse(s.as_str()), Some(s));
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
        }
    }
}

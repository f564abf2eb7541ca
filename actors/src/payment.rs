//! The payment port of the checkout saga, and the default rules-based implementation.

use async_trait::async_trait;
use cartwheel_domain::Order;

/// Charges an order. `Err(reason)` is a decline; the saga fails the order with it.
#[async_trait]
pub trait PaymentPort: Send + Sync + 'static {
    /// Charges `order.total` in `order.currency` to `order.user_id`.
    async fn charge(&self, order: &Order) -> Result<(), String>;
}

/// Approves every payment except those its rules decline. With no rules set, it approves
/// everything (the default for a laptop); the rules exist so tests and demos can exercise
/// the saga's failure path.
#[derive(Debug, Clone, Default)]
pub struct RulesPayment {
    /// Decline orders whose total (minor units) is above this.
    pub decline_above: Option<i64>,
    /// Decline every order of these users.
    pub decline_users: Vec<String>,
}

#[async_trait]
impl PaymentPort for RulesPayment {
    async fn charge(&self, order: &Order) -> Result<(), String> {
        if let Some(max) = self.decline_above
            && order.total > max
        {
            return Err(format!(
                "payment declined: total {} {} is above the limit of {max}",
                order.total, order.currency
            ));
        }
        if self.decline_users.contains(&order.user_id) {
            return Err(format!("payment declined for user {}", order.user_id));
        }
        Ok(())
    }
}

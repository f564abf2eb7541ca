//! Ownership: a cart and an order belong to the user in the token's `sub` that created
//! them, and anyone else gets `404 not_found` — the same answer as for an id that does
//! not exist, so ids of other users' carts cannot be probed.
//!
//! Reads compare the owner in the reply (no extra request). Changes must be checked
//! *before* they are forwarded: the edge learns the owner by reading the entity over the
//! bus once and remembers it in [`Owners`]. That is safe because an owner never changes
//! (`user_id` is set when the cart is created and copied into its orders), so a
//! remembered owner cannot go stale, and it keeps the wire contract unchanged: nodes
//! need not know about identity at all. Admins and development mode pass every check.

use crate::auth::Caller;
use crate::error::AppError;
use crate::state::AppState;
use cartwheel_bus::messages::{CartCommand, OrderCommand};
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// Owners remembered at most; the map starts over when full (a miss costs one read).
const MAX_REMEMBERED: usize = 100_000;

/// Remembered owners of carts and orders, keyed `cart:{id}` / `order:{id}`.
#[derive(Debug, Default)]
pub(crate) struct Owners {
    map: Mutex<HashMap<String, String>>,
}

impl Owners {
    fn get(&self, key: &str) -> Option<String> {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    pub(crate) fn remember(&self, key: String, owner: &str) {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_REMEMBERED {
            map.clear();
        }
        map.insert(key, owner.to_owned());
    }
}

/// The `404` for a cart the caller may not see.
pub(crate) fn cart_not_found(id: &str) -> AppError {
    AppError::not_found(format!("cart {id} not found"))
}

/// The `404` for an order the caller may not see.
pub(crate) fn order_not_found(id: &str) -> AppError {
    AppError::not_found(format!("order {id} not found"))
}

/// Checks a cart read: `404` when the cart in the reply belongs to someone else.
pub(crate) fn check_cart(
    state: &AppState,
    caller: &Caller,
    id: &str,
    owner: &str,
) -> Result<(), AppError> {
    state.owners().remember(format!("cart:{id}"), owner);
    if caller.may_access(owner) {
        Ok(())
    } else {
        Err(cart_not_found(id))
    }
}

/// Checks an order read: `404` when the order belongs to someone else.
pub(crate) fn check_order(
    state: &AppState,
    caller: &Caller,
    id: &str,
    owner: &str,
) -> Result<(), AppError> {
    state.owners().remember(format!("order:{id}"), owner);
    if caller.may_access(owner) {
        Ok(())
    } else {
        Err(order_not_found(id))
    }
}

/// Before a change of cart `id`: passes when the caller may change it, else `404`
/// (also for a cart that does not exist). `401` without a token.
pub(crate) async fn cart_change(
    state: &AppState,
    caller: &Caller,
    id: &str,
    request_id: &str,
) -> Result<(), AppError> {
    let Some(user) = caller.user()? else {
        return Ok(());
    };
    if user.admin {
        return Ok(());
    }
    let owner = match state.owners().get(&format!("cart:{id}")) {
        Some(owner) => owner,
        None => {
            let cart = state.bus().cart(id, &CartCommand::Get, request_id).await?;
            state.owners().remember(format!("cart:{id}"), &cart.user_id);
            cart.user_id
        }
    };
    if owner == user.id {
        Ok(())
    } else {
        Err(cart_not_found(id))
    }
}

/// Before a change of order `id` by its owner (cancel): as [`cart_change`].
pub(crate) async fn order_change(
    state: &AppState,
    caller: &Caller,
    id: &str,
    request_id: &str,
) -> Result<(), AppError> {
    let Some(user) = caller.user()? else {
        return Ok(());
    };
    if user.admin {
        return Ok(());
    }
    let owner = match state.owners().get(&format!("order:{id}")) {
        Some(owner) => owner,
        None => {
            let order = state
                .bus()
                .order(id, &OrderCommand::Get, request_id)
                .await?;
            state
                .owners()
                .remember(format!("order:{id}"), &order.user_id);
            order.user_id
        }
    };
    if owner == user.id {
        Ok(())
    } else {
        Err(order_not_found(id))
    }
}

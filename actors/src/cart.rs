//! The cart behaviour: lines priced from the catalog, checkout that places an order.

use crate::ctx::Ctx;
use crate::entity::{Behavior, Me, Origin};
use crate::persist::{WriteError, encode_reply, publish_outbox, retry_once, save, store_error};
use bytes::Bytes;
use cartwheel_bus::ApiError;
use cartwheel_bus::messages::{CartCommand, CheckoutReply, OrderCommand, Reply};
use cartwheel_bus::names::EntityKind;
use cartwheel_domain::{Cart, DomainError, ErrorCode, Event, Order, validate};
use cartwheel_storage::{Applied, StoreError, Versioned};
use ractor::{ActorProcessingErr, RpcReplyPort};

/// Namespace of order ids derived from `(cart id, idempotency key)`.
const ORDER_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x5c1f_7a2e_8b44_4c0d_9a61_2f0e_d3b7_c8a1);

/// The order id a checkout of `cart_id` under `idempotency_key` places. Deterministic, so
/// a replayed key finds the same order even after a restart.
pub fn order_id_for(cart_id: &str, idempotency_key: &str) -> String {
    uuid::Uuid::new_v5(
        &ORDER_ID_NAMESPACE,
        format!("{cart_id}/{idempotency_key}").as_bytes(),
    )
    .simple()
    .to_string()
}

/// Cart behaviour.
pub struct CartBehavior;

/// A cart actor's state: the stored cart, if any.
pub struct CartState {
    current: Option<Versioned<Cart>>,
}

fn missing(id: &str) -> ApiError {
    ApiError::not_found(format!("cart {id} not found"))
}

fn domain(e: DomainError) -> WriteError {
    WriteError::Failed(e.into())
}

async fn apply(
    ctx: &Ctx,
    id: &str,
    state: &mut CartState,
    cmd: &CartCommand,
    origin: &Origin,
) -> Result<Cart, WriteError> {
    if let Some(repeat) = repeat_of(id, state, cmd, origin) {
        return repeat.map_err(WriteError::Failed);
    }
    let now = ctx.now();
    let mut cart = match (&state.current, cmd) {
        (Some(_), CartCommand::Create { .. }) => {
            return Err(WriteError::Failed(ApiError::new(
                ErrorCode::Conflict,
                format!("cart {id} already exists"),
            )));
        }
        (None, CartCommand::Create { user_id }) => Cart::new(id, user_id, now).map_err(domain)?,
        (None, _) => return Err(WriteError::Failed(missing(id))),
        (Some(v), _) => v.record.state.clone(),
    };
    match cmd {
        CartCommand::Create { .. } => {}
        CartCommand::Get => return Ok(cart),
        CartCommand::AddItem { sku, qty } => {
            validate::id("sku", sku).map_err(domain)?;
            if ctx.faults.panic_on_sku.as_deref() == Some(sku.as_str()) {
                panic!("fault injection: panic on sku {sku}");
            }
            // Priced from the node's catalog cache: no storage read on the hot path.
            let product = ctx
                .catalog
                .product(&ctx.stores, sku)
                .await?
                .ok_or_else(|| {
                    WriteError::Failed(ApiError::not_found(format!("product {sku} not found")))
                })?;
            cart.add_item(&product, *qty, now).map_err(domain)?;
        }
        CartCommand::SetQty { sku, qty } => cart.set_qty(sku, *qty, now).map_err(domain)?,
        CartCommand::RemoveItem { sku } => cart.remove_item(sku, now).map_err(domain)?,
        CartCommand::Checkout { .. } => {
            return Err(WriteError::Failed(ApiError::internal(
                "checkout is not a plain cart change",
            )));
        }
    }
    let events = vec![Event::CartUpdated { cart: cart.clone() }];
    let applied = Applied::new(&origin.command_id, &origin.payload, cart.version);
    save(
        ctx,
        &*ctx.stores.carts,
        id,
        &mut state.current,
        cart.clone(),
        events,
        Some(applied),
        &origin.request_id,
    )
    .await?;
    Ok(cart)
}

/// A write whose command id the cart has applied already: answered with the cart as it
/// is (it holds that command's effect, and whatever came after), not applied again. The
/// same id with a different command is refused. `None`: not a repeat.
fn repeat_of(
    id: &str,
    state: &CartState,
    cmd: &CartCommand,
    origin: &Origin,
) -> Option<Result<Cart, ApiError>> {
    if matches!(cmd, CartCommand::Get | CartCommand::Checkout { .. }) {
        return None;
    }
    let current = state.current.as_ref()?;
    let applied = current.record.applied(&origin.command_id)?;
    if !applied.same_command(&origin.payload) {
        if !origin.explicit {
            return None;
        }
        return Some(Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "command id {} was already used for a different change of cart {id}; use a new one",
                origin.command_id
            ),
        )));
    }
    metrics::counter!("cartwheel_commands_repeated_total", "kind" => "cart").increment(1);
    tracing::info!(cart = %id, command_id = %origin.command_id, version = applied.version,
        "repeated command answered without applying it again");
    Some(Ok(current.record.state.clone()))
}

async fn reload(ctx: &Ctx, id: &str, state: &mut CartState) -> Result<(), ApiError> {
    state.current = ctx
        .stores
        .carts
        .load(id)
        .await
        .map_err(|e| store_error(&e))?;
    Ok(())
}

async fn execute(
    ctx: &Ctx,
    id: &str,
    state: &mut CartState,
    cmd: &CartCommand,
    origin: &Origin,
) -> Reply<Cart> {
    retry_once!(
        format!("cart {id}"),
        apply(ctx, id, state, cmd, origin),
        reload(ctx, id, state),
    )
}

/// Freezes the cart under `key`: the frozen cart, and whether this call froze it (a
/// cart frozen under the same key earlier is answered as it is).
async fn freeze(
    ctx: &Ctx,
    id: &str,
    state: &mut CartState,
    key: &str,
    request_id: &str,
) -> Result<(Cart, bool), WriteError> {
    let Some(current) = &state.current else {
        return Err(WriteError::Failed(missing(id)));
    };
    let mut cart = current.record.state.clone();
    let order_id = order_id_for(id, key);
    if !cart.check_out(key, &order_id, ctx.now()).map_err(domain)? {
        return Ok((cart, false));
    }
    let events = vec![Event::CartCheckedOut {
        cart: cart.clone(),
        order_id,
    }];
    let carts = &*ctx.stores.carts;
    save(
        ctx,
        carts,
        id,
        &mut state.current,
        cart.clone(),
        events,
        None,
        request_id,
    )
    .await?;
    Ok((cart, true))
}

/// Freezes the cart under the key (or finds the earlier checkout of the same key), then
/// places the order and waits for its saga, up to `wait_ms`.
async fn checkout(
    ctx: &Ctx,
    id: &str,
    state: &mut CartState,
    key: &str,
    wait_ms: u64,
    request_id: &str,
) -> Reply<CheckoutReply> {
    validate::idempotency_key(key)?;
    // The cart frozen under the key, and whether this call froze it.
    let (cart, created) = retry_once!(
        format!("cart {id}"),
        freeze(ctx, id, state, key, request_id),
        reload(ctx, id, state),
    )?;
    let record = cart
        .checkout
        .clone()
        .ok_or_else(|| ApiError::internal("checked-out cart without a checkout record"))?;
    let order = Order::place(&record.order_id, &cart, key, record.at)?;
    let placed = ctx
        .bus
        .order(
            &record.order_id,
            &OrderCommand::Place {
                order: Box::new(order),
                wait_ms,
            },
            request_id,
        )
        .await
        .map_err(|e| e.to_api())?;
    Ok(CheckoutReply {
        order: placed,
        created,
    })
}

impl Behavior for CartBehavior {
    type Command = CartCommand;
    type State = CartState;
    type Internal = ();
    const KIND: EntityKind = EntityKind::Cart;
    // Every cart write carries a command id the cart remembers; checkout is idempotent
    // by its key; reads change nothing.
    const RESEND_SAFE: bool = true;

    fn backend(ctx: &Ctx) -> &'static str {
        ctx.stores.carts.backend()
    }

    async fn load(ctx: &Ctx, id: &str) -> Result<CartState, StoreError> {
        Ok(CartState {
            current: ctx.stores.carts.load(id).await?,
        })
    }

    async fn activated(ctx: &Ctx, _me: &Me<Self>, state: &mut CartState) {
        if let Some(v) = &mut state.current {
            publish_outbox(ctx, &mut v.record.outbox, None).await;
        }
    }

    async fn handle(
        ctx: &Ctx,
        _me: &Me<Self>,
        id: &str,
        state: &mut CartState,
        cmd: CartCommand,
        origin: &Origin,
        reply: RpcReplyPort<Bytes>,
    ) -> Result<(), ActorProcessingErr> {
        let bytes = match &cmd {
            CartCommand::Checkout {
                idempotency_key,
                wait_ms,
            } => encode_reply(
                &checkout(
                    ctx,
                    id,
                    state,
                    idempotency_key,
                    *wait_ms,
                    &origin.request_id,
                )
                .await,
            ),
            other => encode_reply(&execute(ctx, id, state, other, origin).await),
        };
        let _ = reply.send(bytes);
        Ok(())
    }

    async fn internal(
        _ctx: &Ctx,
        _me: &Me<Self>,
        _id: &str,
        _state: &mut CartState,
        _msg: (),
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_ids_are_deterministic_per_cart_and_key() {
        assert_eq!(order_id_for("c1", "k"), order_id_for("c1", "k"));
        assert_ne!(order_id_for("c1", "k"), order_id_for("c1", "k2"));
        assert_ne!(order_id_for("c1", "k"), order_id_for("c2", "k"));
        assert!(validate::id("order_id", &order_id_for("c1", "k")).is_ok());
    }
}

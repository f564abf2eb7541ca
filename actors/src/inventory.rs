//! The sku behaviour: one actor per sku owns its product record and its stock.
//!
//! Stock operations for the saga (reserve, release, commit, restock) are idempotent per
//! order id, so a saga that resumes after a crash can repeat any step safely.

use crate::ctx::Ctx;
use crate::entity::{Behavior, EntityMsg, Origin};
use crate::persist::{WriteError, encode_reply, publish_outbox, retry_once, save, store_error};
use bytes::Bytes;
use cartwheel_bus::ApiError;
use cartwheel_bus::messages::{InventoryCommand, Reply};
use cartwheel_bus::names::EntityKind;
use cartwheel_domain::inventory::Effect;
use cartwheel_domain::{
    DomainError, ErrorCode, Event, Inventory, InventoryView, Product, Timestamp, validate,
};
use cartwheel_storage::{StoreError, Versioned};
use ractor::{ActorProcessingErr, ActorRef, RpcReplyPort};

/// Sku behaviour.
pub struct InventoryBehavior;

/// A sku actor's state: the stored product and inventory records.
pub struct InventoryState {
    product: Option<Versioned<Product>>,
    inventory: Option<Versioned<Inventory>>,
}

enum Out {
    Product(Product),
    Stock(InventoryView),
}

fn domain(e: DomainError) -> WriteError {
    WriteError::Failed(e.into())
}

fn no_product(sku: &str) -> WriteError {
    WriteError::Failed(ApiError::not_found(format!("product {sku} not found")))
}

impl InventoryState {
    fn product(&self, sku: &str) -> Result<Product, WriteError> {
        self.product
            .as_ref()
            .map(|v| v.record.state.clone())
            .ok_or_else(|| no_product(sku))
    }

    fn inventory(&self, sku: &str) -> Inventory {
        self.inventory
            .as_ref()
            .map(|v| v.record.state.clone())
            .unwrap_or_else(|| Inventory::new(sku))
    }
}

async fn save_stock(
    ctx: &Ctx,
    sku: &str,
    state: &mut InventoryState,
    inv: Inventory,
    request_id: &str,
) -> Result<Out, WriteError> {
    let view = inv.view();
    let events = vec![Event::StockUpdated {
        inventory: view.clone(),
    }];
    save(
        ctx,
        &*ctx.stores.inventory,
        sku,
        &mut state.inventory,
        inv,
        events,
        None,
        request_id,
    )
    .await?;
    Ok(Out::Stock(view))
}

async fn save_product(
    ctx: &Ctx,
    sku: &str,
    state: &mut InventoryState,
    product: Product,
    events: Vec<Event>,
    request_id: &str,
) -> Result<Out, WriteError> {
    save(
        ctx,
        &*ctx.stores.products,
        sku,
        &mut state.product,
        product.clone(),
        events,
        None,
        request_id,
    )
    .await?;
    Ok(Out::Product(product))
}

/// Drops holds older than the reservation TTL (abandoned sagas). Returns whether anything
/// was dropped.
fn expire(ctx: &Ctx, inv: &mut Inventory, now: Timestamp) -> bool {
    let ttl = i64::try_from(ctx.settings.reservation_ttl.as_millis()).unwrap_or(i64::MAX);
    let dropped = inv.expire(now.plus_millis(-ttl));
    if !dropped.is_empty() {
        tracing::warn!(sku = %inv.sku, orders = ?dropped, "expired abandoned reservations");
    }
    !dropped.is_empty()
}

async fn apply(
    ctx: &Ctx,
    sku: &str,
    state: &mut InventoryState,
    cmd: &InventoryCommand,
    request_id: &str,
) -> Result<Out, WriteError> {
    let now = ctx.now();
    match cmd {
        InventoryCommand::CreateProduct { draft } => {
            if draft.sku != sku {
                return Err(domain(DomainError::invalid(
                    "sku",
                    "must match the addressed sku",
                )));
            }
            if state.product.is_some() {
                return Err(WriteError::Failed(ApiError::new(
                    ErrorCode::Conflict,
                    format!("product {sku} already exists"),
                )));
            }
            let p = Product::create(draft.clone(), now).map_err(domain)?;
            let events = vec![Event::ProductCreated { product: p.clone() }];
            save_product(ctx, sku, state, p, events, request_id).await
        }
        InventoryCommand::ReplaceProduct { draft } => {
            let mut p = state.product(sku)?;
            let old_price = p.price;
            let price_changed = p.replace(draft.clone(), now).map_err(domain)?;
            let mut events = vec![Event::ProductUpdated { product: p.clone() }];
            if price_changed {
                events.push(Event::PriceChanged {
                    product: p.clone(),
                    old_price,
                });
            }
            save_product(ctx, sku, state, p, events, request_id).await
        }
        InventoryCommand::DeactivateProduct => {
            let mut p = state.product(sku)?;
            if !p.deactivate(now) {
                return Ok(Out::Product(p));
            }
            let events = vec![Event::ProductUpdated { product: p.clone() }];
            save_product(ctx, sku, state, p, events, request_id).await
        }
        InventoryCommand::GetProduct => Ok(Out::Product(state.product(sku)?)),
        InventoryCommand::GetStock => {
            state.product(sku)?;
            Ok(Out::Stock(state.inventory(sku).view()))
        }
        InventoryCommand::SetStock { on_hand } => {
            state.product(sku)?;
            let mut inv = state.inventory(sku);
            expire(ctx, &mut inv, now);
            inv.set_on_hand(*on_hand).map_err(domain)?;
            save_stock(ctx, sku, state, inv, request_id).await
        }
        InventoryCommand::AdjustStock { delta } => {
            state.product(sku)?;
            let mut inv = state.inventory(sku);
            expire(ctx, &mut inv, now);
            inv.adjust(*delta).map_err(domain)?;
            save_stock(ctx, sku, state, inv, request_id).await
        }
        InventoryCommand::Reserve { order_id, qty } => {
            validate::id("order_id", order_id).map_err(domain)?;
            let product = state.product(sku)?;
            let mut inv = state.inventory(sku);
            let expired = expire(ctx, &mut inv, now);
            let already =
                inv.reservations.contains_key(order_id) || inv.committed.contains_key(order_id);
            if !product.active && !already {
                return Err(domain(DomainError::ProductInactive(sku.to_owned())));
            }
            let effect = inv.reserve(order_id, *qty, now).map_err(domain)?;
            if effect == Effect::Unchanged && !expired {
                return Ok(Out::Stock(inv.view()));
            }
            save_stock(ctx, sku, state, inv, request_id).await
        }
        InventoryCommand::Release { order_id }
        | InventoryCommand::Commit { order_id }
        | InventoryCommand::Restock { order_id } => {
            validate::id("order_id", order_id).map_err(domain)?;
            let mut inv = state.inventory(sku);
            let effect = match cmd {
                InventoryCommand::Release { .. } => inv.release(order_id),
                InventoryCommand::Commit { .. } => inv.commit(order_id).map_err(domain)?,
                _ => inv.restock(order_id).map_err(domain)?,
            };
            if effect == Effect::Unchanged {
                return Ok(Out::Stock(inv.view()));
            }
            save_stock(ctx, sku, state, inv, request_id).await
        }
    }
}

async fn execute(
    ctx: &Ctx,
    sku: &str,
    state: &mut InventoryState,
    cmd: &InventoryCommand,
    request_id: &str,
) -> Result<Out, ApiError> {
    retry_once!(
        format!("sku {sku}"),
        apply(ctx, sku, state, cmd, request_id),
        reload(ctx, sku, state),
    )
}

async fn reload(ctx: &Ctx, sku: &str, state: &mut InventoryState) -> Result<(), ApiError> {
    *state = InventoryBehavior::load(ctx, sku)
        .await
        .map_err(|e| store_error(&e))?;
    Ok(())
}

impl Behavior for InventoryBehavior {
    type Command = InventoryCommand;
    type State = InventoryState;
    type Internal = ();
    const KIND: EntityKind = EntityKind::Inventory;

    fn internal_only(cmd: &InventoryCommand) -> bool {
        cmd.is_internal()
    }

    fn backend(ctx: &Ctx) -> &'static str {
        ctx.stores.inventory.backend()
    }

    async fn load(ctx: &Ctx, sku: &str) -> Result<InventoryState, StoreError> {
        let (product, inventory) = tokio::try_join!(
            ctx.stores.products.load(sku),
            ctx.stores.inventory.load(sku)
        )?;
        Ok(InventoryState { product, inventory })
    }

    async fn activated(ctx: &Ctx, _me: &ActorRef<EntityMsg<Self>>, state: &mut InventoryState) {
        if let Some(v) = &mut state.product {
            publish_outbox(ctx, &mut v.record.outbox, None).await;
        }
        if let Some(v) = &mut state.inventory {
            publish_outbox(ctx, &mut v.record.outbox, None).await;
        }
    }

    async fn handle(
        ctx: &Ctx,
        _me: &ActorRef<EntityMsg<Self>>,
        sku: &str,
        state: &mut InventoryState,
        cmd: InventoryCommand,
        origin: &Origin,
        reply: RpcReplyPort<Bytes>,
    ) -> Result<(), ActorProcessingErr> {
        let request_id = origin.request_id.as_str();
        let bytes = match execute(ctx, sku, state, &cmd, request_id).await {
            Ok(Out::Product(p)) => encode_reply::<Product>(&Ok(p)),
            Ok(Out::Stock(s)) => encode_reply::<InventoryView>(&Ok(s)),
            Err(e) => encode_reply::<()>(&Reply::Err(e)),
        };
        let _ = reply.send(bytes);
        Ok(())
    }

    async fn internal(
        _ctx: &Ctx,
        _me: &ActorRef<EntityMsg<Self>>,
        _sku: &str,
        _state: &mut InventoryState,
        _msg: (),
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

//! The sku behaviour: one actor per sku owns its product record and its stock.
//!
//! Stock operations for the saga (reserve, release, commit, restock) are idempotent per
//! order id, so a saga that resumes after a crash can repeat any step safely.

use crate::ctx::Ctx;
use crate::entity::{Behavior, Me, Origin, Queued};
use crate::persist::{
    WriteError, conflict_error, encode_reply, publish_outbox, retry_once, save, store_error,
};
use bytes::Bytes;
use cartwheel_bus::ApiError;
use cartwheel_bus::messages::{InventoryCommand, Reply};
use cartwheel_bus::names::EntityKind;
use cartwheel_domain::inventory::Effect;
use cartwheel_domain::{
    DomainError, ErrorCode, Event, Inventory, InventoryView, Product, Timestamp, validate,
};
use cartwheel_storage::{StoreError, Versioned};
use ractor::{ActorProcessingErr, RpcReplyPort};

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
    store_stock(ctx, sku, state, inv, request_id)
        .await
        .map(Out::Stock)
}

/// Stores `inv` with its `StockUpdated` event; answers the stock as stored.
async fn store_stock(
    ctx: &Ctx,
    sku: &str,
    state: &mut InventoryState,
    inv: Inventory,
    request_id: &str,
) -> Result<InventoryView, WriteError> {
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
    Ok(view)
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
        InventoryCommand::Reserve { .. }
        | InventoryCommand::Release { .. }
        | InventoryCommand::Commit { .. }
        | InventoryCommand::Restock { .. } => {
            let mut inv = state.inventory(sku);
            let expired = expire(ctx, &mut inv, now);
            let product = state.product.as_ref().map(|v| &v.record.state);
            let effect = stock_op(sku, product, &mut inv, cmd, now)?;
            if effect == Effect::Unchanged && !expired {
                return Ok(Out::Stock(inv.view()));
            }
            save_stock(ctx, sku, state, inv, request_id).await
        }
    }
}

/// Applies one saga stock step (reserve, release, commit, restock) to `inv`; a refused
/// step changes nothing (the domain checks before it changes).
fn stock_op(
    sku: &str,
    product: Option<&Product>,
    inv: &mut Inventory,
    cmd: &InventoryCommand,
    now: Timestamp,
) -> Result<Effect, WriteError> {
    match cmd {
        InventoryCommand::Reserve { order_id, qty } => {
            validate::id("order_id", order_id).map_err(domain)?;
            let product = product.ok_or_else(|| no_product(sku))?;
            let already =
                inv.reservations.contains_key(order_id) || inv.committed.contains_key(order_id);
            if !product.active && !already {
                return Err(domain(DomainError::ProductInactive(sku.to_owned())));
            }
            inv.reserve(order_id, *qty, now).map_err(domain)
        }
        InventoryCommand::Release { order_id } => {
            validate::id("order_id", order_id).map_err(domain)?;
            Ok(inv.release(order_id))
        }
        InventoryCommand::Commit { order_id } => {
            validate::id("order_id", order_id).map_err(domain)?;
            inv.commit(order_id).map_err(domain)
        }
        InventoryCommand::Restock { order_id } => {
            validate::id("order_id", order_id).map_err(domain)?;
            inv.restock(order_id).map_err(domain)
        }
        InventoryCommand::GetStock => {
            product.ok_or_else(|| no_product(sku))?;
            Ok(Effect::Unchanged)
        }
        _ => Err(WriteError::Failed(ApiError::internal(
            "not a stock step of a group",
        ))),
    }
}

/// A group commit: stock steps queued one behind another on this sku, applied in
/// arrival order to one copy of the stock and stored in one write (one version, one
/// `StockUpdated` event). Each command gets its own answer: the stock after the group,
/// or its own refusal (a refused step changed nothing). A lost compare-and-set reloads
/// and applies the whole group again, once; a failed write fails every step it carried.
async fn group(
    ctx: &Ctx,
    sku: &str,
    state: &mut InventoryState,
    cmds: &[&InventoryCommand],
    request_id: &str,
) -> Vec<Result<InventoryView, ApiError>> {
    let mut first = true;
    loop {
        let now = ctx.now();
        let mut inv = state.inventory(sku);
        let version = inv.version;
        let mut changed = expire(ctx, &mut inv, now);
        let product = state.product.as_ref().map(|v| &v.record.state);
        let steps: Vec<Result<(), ApiError>> = cmds
            .iter()
            .map(|cmd| match stock_op(sku, product, &mut inv, cmd, now) {
                Ok(effect) => {
                    changed |= effect == Effect::Changed;
                    Ok(())
                }
                Err(WriteError::Failed(e)) => Err(e),
                Err(WriteError::Conflict) => Err(conflict_error(&format!("sku {sku}"))),
            })
            .collect();
        let written = if changed {
            // One stored write, one version.
            inv.version = version + 1;
            store_stock(ctx, sku, state, inv, request_id).await
        } else {
            Ok(inv.view())
        };
        let view = match written {
            Ok(view) => view,
            Err(WriteError::Conflict) if first => {
                first = false;
                if let Err(e) = reload(ctx, sku, state).await {
                    return steps.into_iter().map(|s| s.and(Err(e.clone()))).collect();
                }
                continue;
            }
            Err(WriteError::Conflict) => {
                let e = conflict_error(&format!("sku {sku}"));
                return steps.into_iter().map(|s| s.and(Err(e.clone()))).collect();
            }
            Err(WriteError::Failed(e)) => {
                return steps.into_iter().map(|s| s.and(Err(e.clone()))).collect();
            }
        };
        return steps
            .into_iter()
            .map(|s| s.map(|()| view.clone()))
            .collect();
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

    fn batchable(cmd: &InventoryCommand) -> bool {
        matches!(
            cmd,
            InventoryCommand::Reserve { .. }
                | InventoryCommand::Release { .. }
                | InventoryCommand::Commit { .. }
                | InventoryCommand::Restock { .. }
                | InventoryCommand::GetStock
        )
    }

    async fn handle_batch(
        ctx: &Ctx,
        _me: &Me<Self>,
        sku: &str,
        state: &mut InventoryState,
        batch: Vec<Queued<Self>>,
    ) -> Result<(), ActorProcessingErr> {
        let cmds: Vec<&InventoryCommand> = batch.iter().map(|q| &q.cmd).collect();
        let request_id = batch.first().map_or("", |q| q.origin.request_id.as_str());
        let answers = group(ctx, sku, state, &cmds, request_id).await;
        metrics::histogram!("cartwheel_group_commit_size", "kind" => "inventory")
            .record(batch.len() as f64);
        for (q, answer) in batch.into_iter().zip(answers) {
            let _ = q.reply.send(encode_reply::<InventoryView>(&answer));
        }
        Ok(())
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

    async fn activated(ctx: &Ctx, _me: &Me<Self>, state: &mut InventoryState) {
        if let Some(v) = &mut state.product {
            publish_outbox(ctx, &mut v.record.outbox, None).await;
        }
        if let Some(v) = &mut state.inventory {
            publish_outbox(ctx, &mut v.record.outbox, None).await;
        }
    }

    async fn handle(
        ctx: &Ctx,
        _me: &Me<Self>,
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
        _me: &Me<Self>,
        _sku: &str,
        _state: &mut InventoryState,
        _msg: (),
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

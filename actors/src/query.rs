//! The read side: product and order lists answered from storage by any node.
//!
//! Every node joins one queue group on `{prefix}.query.catalog` and
//! `{prefix}.query.orders`, so queries spread over the nodes and never touch actors.

use crate::persist::{encode_error, encode_reply, store_error};
use async_nats::{Client, Message};
use bytes::Bytes;
use cartwheel_bus::messages::{CatalogQuery, OrdersQuery};
use cartwheel_bus::{ApiError, Names, codec};
use cartwheel_domain::validate;
use cartwheel_storage::Stores;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Serves both query subjects until `shutdown`, then drains.
pub async fn serve(
    nats: Client,
    names: Names,
    stores: Stores,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) -> Result<(), async_nats::SubscribeError> {
    let group = names.query_queue_group();
    let catalog = nats
        .queue_subscribe(names.query_catalog(), group.clone())
        .await?;
    let orders = nats.queue_subscribe(names.query_orders(), group).await?;
    let catalog_subject = names.query_catalog();
    let mut subs = futures::stream::select(catalog, orders);
    loop {
        let msg = tokio::select! {
            m = subs.next() => m,
            _ = shutdown.cancelled() => break,
        };
        let Some(msg) = msg else { break };
        let stores = stores.clone();
        let nats = nats.clone();
        let is_catalog = msg.subject.as_str() == catalog_subject;
        tracker.spawn(async move {
            let body = if is_catalog {
                catalog_page(&stores, &msg).await
            } else {
                orders_page(&stores, &msg).await
            };
            if let Some(reply) = msg.reply
                && let Err(e) = nats.publish(reply, body).await
            {
                tracing::warn!(error = %e, "query reply not sent");
            }
        });
    }
    Ok(())
}

async fn catalog_page(stores: &Stores, msg: &Message) -> Bytes {
    let q: CatalogQuery = match codec::decode(&msg.payload) {
        Ok(q) => q,
        Err(e) => return encode_error(&ApiError::invalid(format!("malformed query: {e}"))),
    };
    if let Some(c) = &q.category
        && let Err(e) = validate::id("category", c)
    {
        return encode_error(&e.into());
    }
    encode_reply(
        &stores
            .catalog
            .list_products(&q)
            .await
            .map_err(|e| store_error(&e)),
    )
}

async fn orders_page(stores: &Stores, msg: &Message) -> Bytes {
    let q: OrdersQuery = match codec::decode(&msg.payload) {
        Ok(q) => q,
        Err(e) => return encode_error(&ApiError::invalid(format!("malformed query: {e}"))),
    };
    if let Some(u) = &q.user_id
        && let Err(e) = validate::id("user_id", u)
    {
        return encode_error(&e.into());
    }
    encode_reply(
        &stores
            .order_index
            .list_orders(&q)
            .await
            .map_err(|e| store_error(&e)),
    )
}

//! The read side: product and order lists answered from storage, and the cluster's
//! status answered from the placement buckets, by any node.
//!
//! Every node joins one queue group on `{prefix}.query.catalog`, `{prefix}.query.orders`
//! and `{prefix}.query.cluster.{status,locate}`, so queries spread over the nodes and
//! never touch actors. The cluster queries are here so that an edge needs no JetStream
//! rights: with least privilege (`deploy/nats/nats-server.conf`) it may not read the
//! placement buckets itself.

use crate::persist::{encode_error, encode_reply, store_error};
use async_nats::jetstream;
use async_nats::{Client, Message};
use bytes::Bytes;
use cartwheel_bus::cluster;
use cartwheel_bus::messages::{CatalogQuery, ClusterStatusQuery, LocateQuery, OrdersQuery};
use cartwheel_bus::names::EntityKind;
use cartwheel_bus::{ApiError, Names, codec};
use cartwheel_domain::validate;
use cartwheel_storage::Stores;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What the query subjects are answered from.
#[derive(Clone)]
pub struct Queries {
    /// The connection the replies go out on.
    pub nats: Client,
    /// Subject names.
    pub names: Names,
    /// The product and order stores.
    pub stores: Stores,
    /// JetStream, for the placement buckets.
    pub js: jetstream::Context,
    /// Partition count of the cluster.
    pub partitions: u32,
}

/// Which query a message asks.
#[derive(Clone, Copy)]
enum Query {
    Catalog,
    Orders,
    Status,
    Locate,
}

/// Serves every query subject until `shutdown`, then drains.
pub async fn serve(
    q: Queries,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) -> Result<(), async_nats::SubscribeError> {
    let group = q.names.query_queue_group();
    let mut subs = futures::stream::SelectAll::new();
    for (subject, query) in [
        (q.names.query_catalog(), Query::Catalog),
        (q.names.query_orders(), Query::Orders),
        (q.names.query_cluster_status(), Query::Status),
        (q.names.query_locate(), Query::Locate),
    ] {
        let sub = q.nats.queue_subscribe(subject, group.clone()).await?;
        subs.push(sub.map(move |m| (query, m)));
    }
    loop {
        let next = tokio::select! {
            m = subs.next() => m,
            _ = shutdown.cancelled() => break,
        };
        let Some((query, msg)) = next else { break };
        let q = q.clone();
        tracker.spawn(async move {
            let body = match query {
                Query::Catalog => catalog_page(&q.stores, &msg).await,
                Query::Orders => orders_page(&q.stores, &msg).await,
                Query::Status => status(&q, &msg).await,
                Query::Locate => locate(&q, &msg).await,
            };
            if let Some(reply) = msg.reply
                && let Err(e) = q.nats.publish(reply, body).await
            {
                tracing::warn!(error = %e, "query reply not sent");
            }
        });
    }
    Ok(())
}

fn cluster_unavailable(e: &cartwheel_bus::BusError) -> ApiError {
    ApiError::unavailable(format!("cluster status unavailable: {e}"))
}

/// The query in `msg`, or the encoded `invalid_input` reply for a malformed one.
fn decode_query<T: serde::de::DeserializeOwned>(msg: &Message) -> Result<T, Bytes> {
    codec::decode(&msg.payload)
        .map_err(|e| encode_error(&ApiError::invalid(format!("malformed query: {e}"))))
}

async fn status(q: &Queries, msg: &Message) -> Bytes {
    if let Err(reply) = decode_query::<ClusterStatusQuery>(msg) {
        return reply;
    }
    encode_reply(
        &cluster::status(&q.js, &q.names, q.partitions)
            .await
            .map_err(|e| cluster_unavailable(&e)),
    )
}

async fn locate(q: &Queries, msg: &Message) -> Bytes {
    let l: LocateQuery = match decode_query(msg) {
        Ok(l) => l,
        Err(reply) => return reply,
    };
    let Some(kind) = EntityKind::parse(&l.kind) else {
        return encode_error(&ApiError::invalid("kind must be cart, order or inventory"));
    };
    if let Err(e) = validate::id("id", &l.id) {
        return encode_error(&e.into());
    }
    encode_reply(
        &cluster::locate(&q.js, &q.names, q.partitions, kind, &l.id)
            .await
            .map_err(|e| cluster_unavailable(&e)),
    )
}

async fn catalog_page(stores: &Stores, msg: &Message) -> Bytes {
    let q: CatalogQuery = match decode_query(msg) {
        Ok(q) => q,
        Err(reply) => return reply,
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
    let q: OrdersQuery = match decode_query(msg) {
        Ok(q) => q,
        Err(reply) => return reply,
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

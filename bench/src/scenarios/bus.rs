//! `bus`: NATS request-reply to the in-process echo responder (the bus limit) vs a cart
//! `add_item` through the real actor (decode, actor turn, compare-and-set write to the
//! store, event publish, reply), both over the same kind of NATS connection.

use super::Ctx;
use crate::client::bus_kind;
use crate::load;
use crate::raw::{DurableEcho, EchoResponder};
use crate::report::{Ratio, ScenarioReport};
use anyhow::Context;
use cartwheel_bus::codec;
use cartwheel_bus::messages::CartCommand;
use std::sync::Arc;

/// Runs the scenario.
pub async fn run(ctx: &Ctx) -> anyhow::Result<ScenarioReport> {
    let bus = ctx.bus().await?;
    let skus = ctx.products_bus(&bus, "bs", 10).await?;
    let carts = ctx.carts_bus(&bus, ctx.args.carts.max(1)).await?;

    let echo = nats_echo(ctx, &skus[0]).await?;
    let durable = durable_echo(ctx, &skus[0]).await?;

    let (carts, skus) = (Arc::new(carts), Arc::new(skus));
    let rid = ctx.id("bus");
    let system = load::run(
        &ctx.spec(
            "bus-add-item",
            "system",
            "CartCommand::AddItem via BusClient to the cart actor: decode, actor turn, the CAS write (which is the event), reply",
        ),
        ctx.workers(|_| bus.clone()),
        move |bus, seq| {
            let (carts, skus, rid) = (carts.clone(), skus.clone(), rid.clone());
            async move {
                let (cart, sku) = pick(&carts, &skus, seq);
                let cmd = CartCommand::AddItem {
                    sku: sku.to_owned(),
                    qty: 1,
                };
                let r = bus.cart(cart, &cmd, &rid).await.map(|_| ()).map_err(|e| bus_kind(&e));
                (bus, r)
            }
        },
    )
    .await;
    Ok(ScenarioReport {
        name: "bus".into(),
        ratios: vec![
            Ratio::throughput(&system, &echo),
            Ratio::p99(&system, &echo),
            Ratio::throughput(&system, &durable),
            Ratio::p99(&system, &durable),
        ],
        measurements: vec![echo, durable, system],
        live_carts: None,
        notes: vec![],
    })
}

/// The cart and sku of operation `seq`: round-robin over the carts, then over the skus
/// (a cart line holds at most 999 units; this keeps every line far below that).
pub fn pick<'a>(carts: &'a [String], skus: &'a [String], seq: u64) -> (&'a str, &'a str) {
    let n = carts.len().max(1) as u64;
    let cart = &carts[(seq % n) as usize];
    let sku = &skus[((seq / n) % skus.len().max(1) as u64) as usize];
    (cart, sku)
}

/// The raw NATS request-reply baseline: a payload the size of an `add_item` command to
/// the echo responder (on a connection of its own, like a node), answered with itself.
pub async fn nats_echo(ctx: &Ctx, sku: &str) -> anyhow::Result<crate::stats::Measurement> {
    let responder_conn = ctx.connect_nats().await?;
    let responder = EchoResponder::start(&responder_conn, &ctx.run_id).await?;
    let m = echo_load(
        ctx,
        sku,
        &responder.subject,
        "nats-echo",
        "async-nats request to an in-process echo responder (payload: an encoded add_item)",
    )
    .await?;
    drop(responder);
    Ok(m)
}

/// The durable echo baseline: the same request to a responder that first does the one
/// durable write of a cart change (a compare-and-set of a 10-line cart record, as the workloads' carts, in a
/// bucket set up like Cartwheel's: republished, sourced by an event stream).
pub async fn durable_echo(ctx: &Ctx, sku: &str) -> anyhow::Result<crate::stats::Measurement> {
    let responder_conn = ctx.connect_nats().await?;
    let responder = DurableEcho::start(&responder_conn, &format!("{}b", ctx.run_id)).await?;
    let m = echo_load(
        ctx,
        sku,
        &responder.subject,
        "bus-durable-echo",
        &format!("async-nats request to an in-process responder that does one KV compare-and-set of a 10-line cart record ({} bytes; bucket republishing, event stream sourcing it) before answering", responder.record_bytes),
    )
    .await?;
    responder.remove().await;
    Ok(m)
}

/// Requests with an encoded `add_item` to `subject`, answered by an in-process responder.
async fn echo_load(
    ctx: &Ctx,
    sku: &str,
    subject: &str,
    name: &str,
    description: &str,
) -> anyhow::Result<crate::stats::Measurement> {
    let nats = ctx.nats().await?;
    let payload = codec::encode(&CartCommand::AddItem {
        sku: sku.to_owned(),
        qty: 1,
    })
    .context("encoding the echo payload")?;
    let subject = subject.to_owned();
    let m = load::run(
        &ctx.spec(name, "baseline", description),
        ctx.workers(|_| nats.clone()),
        move |nats, _| {
            let (subject, payload) = (subject.clone(), payload.clone());
            async move {
                let r = match nats.request(subject, payload).await {
                    Ok(m) if m.payload.is_empty() => Err("echo_failed".to_owned()),
                    Ok(_) => Ok(()),
                    Err(e) => Err(format!("nats_{:?}", e.kind()).to_lowercase()),
                };
                (nats, r)
            }
        },
    )
    .await;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pick_goes_round_the_carts_then_the_skus() {
        let carts: Vec<String> = vec!["a".into(), "b".into()];
        let skus: Vec<String> = vec!["x".into(), "y".into(), "z".into()];
        let seen: Vec<(&str, &str)> = (0..7).map(|s| pick(&carts, &skus, s)).collect();
        assert_eq!(
            seen,
            vec![
                ("a", "x"),
                ("b", "x"),
                ("a", "y"),
                ("b", "y"),
                ("a", "z"),
                ("b", "z"),
                ("a", "x")
            ]
        );
    }
}

//! `ws`: raw NATS request-reply (the bus limit) and a raw WebSocket echo (an axum socket
//! in the bench doing one NATS echo per frame) vs an `add_item` command round trip on the
//! edge's `/ws`. One socket per worker, one command in flight per socket.

use super::Ctx;
use super::bus::{nats_echo, pick};
use crate::client::Ws;
use crate::load;
use crate::raw::{EchoResponder, RawEdge};
use crate::report::{Ratio, ScenarioReport};
use std::sync::Arc;

/// Runs the scenario.
pub async fn run(ctx: &Ctx) -> anyhow::Result<ScenarioReport> {
    let skus = ctx.products_http("ws", 10).await?;
    let carts = ctx.carts_http(ctx.args.carts.max(1)).await?;
    let echo = nats_echo(ctx, &skus[0]).await?;

    let responder_conn = ctx.connect_nats().await?;
    let responder = EchoResponder::start(&responder_conn, &format!("{}w", ctx.run_id)).await?;
    let raw = RawEdge::start(ctx.connect_nats().await?, responder.subject.clone()).await?;
    let sockets = connect_all(&raw.base(), None, ctx.args.concurrency).await?;
    let frame = format!(
        r#"{{"id":1,"op":"add_item","cart_id":"{}","sku":"{}","qty":1}}"#,
        carts[0], skus[0]
    );
    let raw_ws = load::run(
        &ctx.spec(
            "ws-raw-echo",
            "baseline",
            "a text frame to an axum WebSocket in the bench, one NATS echo request, the reply frame",
        ),
        sockets,
        move |mut ws, _| {
            let frame = frame.clone();
            async move {
                let r = ws.echo(frame).await;
                (ws, r)
            }
        },
    )
    .await;
    drop(raw);
    drop(responder);

    let sockets = connect_all(
        ctx.http.base(),
        ctx.args.token.as_deref(),
        ctx.args.concurrency,
    )
    .await?;
    let (carts, skus) = (Arc::new(carts), Arc::new(skus));
    let system = load::run(
        &ctx.spec(
            "ws-add-item",
            "system",
            "{op: add_item} on the edge's /ws and its reply frame, round-robin over the carts",
        ),
        sockets,
        move |mut ws, seq| {
            let (carts, skus) = (carts.clone(), skus.clone());
            async move {
                let (cart, sku) = pick(&carts, &skus, seq);
                let frame = format!(
                    r#"{{"id":{seq},"op":"add_item","cart_id":"{cart}","sku":"{sku}","qty":1}}"#
                );
                let r = ws.request(seq, frame).await.map(|_| ());
                (ws, r)
            }
        },
    )
    .await;
    Ok(ScenarioReport {
        name: "ws".into(),
        ratios: vec![
            Ratio::throughput(&system, &echo),
            Ratio::throughput(&system, &raw_ws),
            Ratio::p99(&system, &raw_ws),
        ],
        measurements: vec![echo, raw_ws, system],
        live_carts: None,
        notes: vec![],
    })
}

/// `n` sockets to `{base}/ws`, opened a few at a time, with `token` when the edge wants one.
pub async fn connect_all(base: &str, token: Option<&str>, n: usize) -> anyhow::Result<Vec<Ws>> {
    use futures::{StreamExt, TryStreamExt};
    futures::stream::iter(0..n.max(1))
        .map(|_| Ws::connect(base, token))
        .buffer_unordered(32)
        .try_collect()
        .await
}

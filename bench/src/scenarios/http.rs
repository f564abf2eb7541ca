//! `http`: an axum endpoint doing one NATS echo request (the edge limit, served by the
//! bench itself) vs `POST /carts/{id}/items` and `GET /carts/{id}` on the real edge, over
//! many carts, all with the same HTTP client and concurrency.

use super::Ctx;
use super::bus::pick;
use crate::client::Http;
use crate::load;
use crate::raw::{DurableEcho, EchoResponder, RawEdge};
use crate::report::{Ratio, ScenarioReport};
use reqwest::Method;
use std::sync::Arc;

/// Runs the scenario.
pub async fn run(ctx: &Ctx) -> anyhow::Result<ScenarioReport> {
    let skus = ctx.products_http("hs", 10).await?;
    let carts = ctx.carts_http(ctx.args.carts.max(1)).await?;

    let responder_conn = ctx.connect_nats().await?;
    let responder = EchoResponder::start(&responder_conn, &format!("{}h", ctx.run_id)).await?;
    let echo = raw_edge_load(
        ctx,
        &skus[0],
        &responder.subject,
        "axum-nats-echo",
        "POST /echo on an axum server in the bench: one NATS request to the echo responder per HTTP request",
    )
    .await?;
    drop(responder);
    let responder = DurableEcho::start(&responder_conn, &format!("{}d", ctx.run_id)).await?;
    let durable = raw_edge_load(
        ctx,
        &skus[0],
        &responder.subject,
        "http-durable-echo",
        &format!("POST /echo on an axum server in the bench: one NATS request per HTTP request to a responder that does one KV compare-and-set of a 10-line cart record ({} bytes) first", responder.record_bytes),
    )
    .await?;
    responder.remove().await;

    let (carts, skus) = (Arc::new(carts), Arc::new(skus));
    let (c, s) = (carts.clone(), skus.clone());
    let add = load::run(
        &ctx.spec(
            "http-add-item",
            "system",
            "POST /carts/{id}/items {sku, qty: 1} on the edge, round-robin over the carts",
        ),
        ctx.workers(|_| ctx.http.clone()),
        move |http, seq| {
            let (carts, skus) = (c.clone(), s.clone());
            async move {
                let (cart, sku) = pick(&carts, &skus, seq);
                let body = format!(r#"{{"sku":"{sku}","qty":1}}"#);
                let r = http
                    .expect(
                        Method::POST,
                        &format!("/carts/{cart}/items"),
                        Some(body),
                        &[],
                        200,
                    )
                    .await
                    .map(|_| ());
                (http, r)
            }
        },
    )
    .await;
    let c = carts.clone();
    let get = load::run(
        &ctx.spec(
            "http-get-cart",
            "system",
            "GET /carts/{id} on the edge, round-robin over the carts",
        ),
        ctx.workers(|_| ctx.http.clone()),
        move |http, seq| {
            let carts = c.clone();
            async move {
                let cart = &carts[(seq % carts.len() as u64) as usize];
                let r = http
                    .expect(Method::GET, &format!("/carts/{cart}"), None, &[], 200)
                    .await
                    .map(|_| ());
                (http, r)
            }
        },
    )
    .await;
    Ok(ScenarioReport {
        name: "http".into(),
        ratios: vec![
            Ratio::throughput(&add, &echo),
            Ratio::p99(&add, &echo),
            Ratio::throughput(&add, &durable),
            Ratio::p99(&add, &durable),
            Ratio::throughput(&get, &echo),
            Ratio::p99(&get, &echo),
        ],
        measurements: vec![echo, durable, add, get],
        live_carts: None,
        notes: vec![],
    })
}

/// `POST /echo` with an `add_item` body on a raw axum edge in the bench, each request one
/// NATS request to `subject`.
async fn raw_edge_load(
    ctx: &Ctx,
    sku: &str,
    subject: &str,
    name: &str,
    description: &str,
) -> anyhow::Result<crate::stats::Measurement> {
    let raw = RawEdge::start(ctx.connect_nats().await?, subject.to_owned()).await?;
    let raw_http = Http::new(&raw.base(), None)?;
    let body = format!(r#"{{"sku":"{sku}","qty":1}}"#);
    let m = load::run(
        &ctx.spec(name, "baseline", description),
        ctx.workers(|_| raw_http.clone()),
        move |http, _| {
            let body = body.clone();
            async move {
                let r = http
                    .expect(Method::POST, "/echo", Some(body), &[], 200)
                    .await
                    .map(|_| ());
                (http, r)
            }
        },
    )
    .await;
    drop(raw);
    Ok(m)
}

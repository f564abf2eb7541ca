//! `checkout`: carts of 3 lines checked out concurrently over HTTP — the full saga
//! (order stored `PENDING`, 3 reservations, payment, `CONFIRMED`, 3 commits, every step
//! persisted, events published). Orders per second and latency; compared (in the
//! targets) with the HTTP add-item rate of the same run.

use super::Ctx;
use crate::client::status_kind;
use crate::load;
use crate::report::ScenarioReport;
use futures::{StreamExt, TryStreamExt};
use reqwest::Method;
use serde_json::json;
use std::sync::Arc;

/// Skus the carts draw their 3 lines from (spread so no one sku actor is the limit).
const SKUS: usize = 30;

/// Runs the scenario.
pub async fn run(ctx: &Ctx) -> anyhow::Result<ScenarioReport> {
    let skus = ctx.products_http("co", SKUS).await?;
    let n = usize::try_from(ctx.args.checkout_carts.max(1))?;
    let carts = ctx.carts_http(n).await?;
    futures::stream::iter(carts.iter().enumerate())
        .map(|(i, cart)| {
            let skus = &skus;
            async move {
                for line in 0..3 {
                    let sku = &skus[(i + line * 7) % SKUS];
                    ctx.http
                        .json(
                            Method::POST,
                            &format!("/carts/{cart}/items"),
                            json!({"sku": sku, "qty": 1 + line}),
                            200,
                        )
                        .await?;
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await?;

    let carts = Arc::new(carts);
    let mut spec = ctx.spec(
        "http-checkout",
        "system",
        "POST /carts/{id}/checkout with an Idempotency-Key on a 3-line cart: answered 201 CONFIRMED after the whole saga",
    );
    spec.max_ops = Some(carts.len() as u64);
    // Each cart checks out once, so a warm-up would only use up carts; every order is a
    // new order actor anyway (the steady state of checkout is cold order actors).
    spec.warmup = std::time::Duration::ZERO;
    let run_id = ctx.run_id.clone();
    let m = load::run(
        &spec,
        ctx.workers(|_| ctx.http.clone()),
        move |http, seq| {
            let (carts, run_id) = (carts.clone(), run_id.clone());
            async move {
                let cart = &carts[seq as usize % carts.len()];
                let key = format!("{run_id}-{seq}");
                let r = match http
                    .send(
                        Method::POST,
                        &format!("/carts/{cart}/checkout"),
                        None,
                        &[("Idempotency-Key", key.as_str())],
                    )
                    .await
                {
                    Ok((201, body)) if body.contains(r#""status":"CONFIRMED""#) => Ok(()),
                    Ok((201, _)) => Err("not_confirmed".into()),
                    Ok((202, _)) => Err("pending_202".into()),
                    Ok((status, body)) => Err(status_kind(status, &body)),
                    Err(kind) => Err(kind),
                };
                (http, r)
            }
        },
    )
    .await;
    let notes = vec![format!(
        "{n} carts of 3 lines prepared from {SKUS} skus; no warm-up; the run stops early when they are all checked out"
    )];
    Ok(ScenarioReport {
        name: "checkout".into(),
        measurements: vec![m],
        ratios: vec![],
        live_carts: None,
        notes,
    })
}

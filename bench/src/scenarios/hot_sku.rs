//! `hot-sku`: 1,000 concurrent reservations of one sku (`--hot-reservations`), each for
//! its own order, sent at once over the bus to the sku's internal subject — what a
//! flash sale does to one inventory entity. Repeated `--hot-rounds` times, each round on
//! a fresh sku; the figure is reservations per second of the whole round (the round's
//! wall time is what the last buyer waits). Every reservation must be answered with the
//! stock it left: an error counts.

use super::Ctx;
use crate::client::bus_kind;
use crate::load;
use crate::report::ScenarioReport;
use cartwheel_bus::messages::InventoryCommand;
use std::sync::Arc;
use std::time::Duration;

/// Runs the scenario.
pub async fn run(ctx: &Ctx) -> anyhow::Result<ScenarioReport> {
    let bus = ctx.bus().await?;
    let n = ctx.args.hot_reservations.max(1);
    let mut report = ScenarioReport {
        name: "hot-sku".into(),
        ..Default::default()
    };
    for round in 1..=ctx.args.hot_rounds.max(1) {
        let skus = ctx.products_bus(&bus, &format!("hot{round}-"), 1).await?;
        let sku: Arc<str> = skus[0].as_str().into();
        let mut spec = ctx.spec(
            &format!("hot-sku-reserve-{n}-r{round}"),
            "system",
            "InventoryCommand::Reserve of 1 unit, each for its own order, all in flight at once on one sku: reservations/s of the whole round",
        );
        spec.warmup = Duration::ZERO;
        spec.duration = Duration::from_secs(300);
        spec.max_ops = Some(n);
        spec.load = crate::stats::LoadMode::Closed;
        let order_prefix = ctx.id(&format!("hot{round}-o"));
        let m = load::run(
            &spec,
            (0..n).map(|_| bus.clone()).collect(),
            move |bus, seq| {
                let (sku, order_id) = (sku.clone(), format!("{order_prefix}{seq}"));
                async move {
                    let cmd = InventoryCommand::Reserve { order_id, qty: 1 };
                    let r = bus
                        .stock(&sku, &cmd, "bench-hot")
                        .await
                        .map(|_| ())
                        .map_err(|e| bus_kind(&e));
                    (bus, r)
                }
            },
        )
        .await;
        report.measurements.push(m);
    }
    report.notes.push(format!(
        "{n} reservations of one sku in flight at once, {} rounds on fresh skus; the target compares the median round with the figure of the one-write-per-command path",
        ctx.args.hot_rounds.max(1)
    ));
    Ok(report)
}

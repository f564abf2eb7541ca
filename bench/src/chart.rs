//! The SVG picture of a set of runs (`report --svg-out`): throughput of every measurement
//! of the request scenarios, the system beside its baselines, and latency percentile
//! curves (p50 … p99.9, on HdrHistogram's "1 / (1 − percentile)" axis) of the HTTP and
//! WebSocket measurements. Drawn with `plotters`' SVG backend.

use crate::report::RunReport;
use crate::stats::Measurement;
use plotters::coord::Shift;
use plotters::prelude::*;

/// Scenarios whose measurements are request rates worth comparing.
const THROUGHPUT_SCENARIOS: [&str; 4] = ["bus", "http", "ws", "checkout"];

/// Scenarios whose latency curves are drawn.
const LATENCY_SCENARIOS: [&str; 2] = ["http", "ws"];

/// The percentiles of a curve and their place on the x axis (`log10(1 / (1 − p))`).
const PERCENTILES: [(&str, f64); 4] = [("p50", 0.301), ("p90", 1.0), ("p99", 2.0), ("p99.9", 3.0)];

type Bar = (String, f64, bool);

/// The chart of `runs` as an SVG document.
pub fn svg(runs: &[RunReport]) -> anyhow::Result<String> {
    let bars = bars(runs);
    let curves = curves(runs);
    let height = 120 + 22 * bars.len() as u32 + 460;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (1100, height)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let (top, bottom) = root.split_vertically(height - 460);
        throughput(&top, &bars)?;
        latency(&bottom, &curves)?;
        root.present().map_err(draw_error)?;
    }
    Ok(out)
}

fn draw_error<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {e:?}")
}

/// Every measurement of `scenarios` in `runs`, with its scenario's name and the run's
/// durability mode.
fn measured<'a>(
    runs: &'a [RunReport],
    scenarios: &'a [&str],
) -> impl Iterator<Item = (&'a str, &'a str, &'a Measurement)> {
    runs.iter().flat_map(move |run| {
        run.scenarios
            .iter()
            .filter(move |s| scenarios.contains(&s.name.as_str()))
            .flat_map(move |s| {
                s.measurements
                    .iter()
                    .map(move |m| (s.name.as_str(), run.durability.as_str(), m))
            })
    })
}

/// `(label, ops/s, is a baseline)` of every measurement of the request scenarios.
fn bars(runs: &[RunReport]) -> Vec<Bar> {
    measured(runs, &THROUGHPUT_SCENARIOS)
        .map(|(scenario, fsync, m)| {
            let label = format!("{scenario} · {} · fsync {fsync}", m.name);
            (label, m.throughput, m.kind == "baseline")
        })
        .collect()
}

/// `(label, measurement)` of every HTTP and WebSocket measurement.
fn curves(runs: &[RunReport]) -> Vec<(String, &Measurement)> {
    measured(runs, &LATENCY_SCENARIOS)
        .map(|(_, fsync, m)| (format!("{} (fsync {fsync})", m.name), m))
        .collect()
}

fn throughput(area: &DrawingArea<SVGBackend<'_>, Shift>, bars: &[Bar]) -> anyhow::Result<()> {
    let max = bars.iter().map(|b| b.1).fold(1.0, f64::max) * 1.15;
    let n = bars.len().max(1);
    let mut chart = ChartBuilder::on(area)
        .caption(
            "Throughput, ops/s (baselines grey, Cartwheel blue)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(330)
        .build_cartesian_2d(0f64..max, (0..n).into_segmented())
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                bars.get(*i).map(|b| b.0.clone()).unwrap_or_default()
            }
            SegmentValue::Last => String::new(),
        })
        .x_desc("operations per second")
        .draw()
        .map_err(draw_error)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, value, baseline))| {
            let color = if *baseline {
                RGBColor(170, 170, 170)
            } else {
                RGBColor(40, 100, 200)
            };
            let mut bar = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(i)),
                    (*value, SegmentValue::Exact(i + 1)),
                ],
                color.filled(),
            );
            bar.set_margin(3, 3, 0, 0);
            bar
        }))
        .map_err(draw_error)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, value, _))| {
            Text::new(
                format!("{value:.0}"),
                (*value + max * 0.005, SegmentValue::CenterOf(i)),
                ("sans-serif", 12),
            )
        }))
        .map_err(draw_error)?;
    Ok(())
}

fn latency(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    curves: &[(String, &Measurement)],
) -> anyhow::Result<()> {
    let ms = |m: &Measurement| {
        [
            m.latency.p50_us,
            m.latency.p90_us,
            m.latency.p99_us,
            m.latency.p999_us,
        ]
        .map(|us| us as f64 / 1000.0)
    };
    let max = curves.iter().flat_map(|(_, m)| ms(m)).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(
            "Latency by percentile, HTTP and WebSocket (ms)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0.2f64..3.1, 0f64..max)
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .x_labels(4)
        .x_label_formatter(&|x| {
            PERCENTILES
                .iter()
                .min_by(|a, b| (a.1 - x).abs().total_cmp(&(b.1 - x).abs()))
                .map(|p| p.0.to_owned())
                .unwrap_or_default()
        })
        .x_desc("percentile (log scale of 1 / (1 − p))")
        .y_desc("ms")
        .draw()
        .map_err(draw_error)?;
    for (i, (label, m)) in curves.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points: Vec<(f64, f64)> = PERCENTILES
            .iter()
            .zip(ms(m))
            .map(|((_, x), y)| (*x, y))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(draw_error)?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, color.filled())),
            )
            .map_err(draw_error)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(draw_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_draws_bars_and_curves() {
        let json = include_str!("../results/2026-12-02T001316Z.json");
        let combined: crate::report::Combined = serde_json::from_str(json).unwrap();
        let svg = svg(&combined.runs).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100]);
        assert!(svg.contains("http-add-item"));
        assert!(svg.contains("http-durable-echo"));
        assert!(svg.contains("<polyline"), "latency curves drawn");
    }
}

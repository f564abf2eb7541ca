//! What a run measures: latency histograms (HdrHistogram, microseconds), counts of
//! operations and of errors by kind, and the serializable summaries that go into the
//! JSON report. Nothing here does I/O.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// `x` rounded to one decimal (rates, CPU per operation, seconds of a settle).
pub fn tenths(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// `x` rounded to three decimals (ratios, a measurement's seconds).
pub fn thousandths(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Highest latency a histogram tracks (larger values are clamped to it): 5 minutes.
const MAX_TRACKED_US: u64 = 300_000_000;

/// A latency histogram in microseconds with three significant digits.
#[derive(Debug, Clone)]
pub struct Latencies {
    hist: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies::new()
    }
}

impl Latencies {
    /// An empty histogram.
    pub fn new() -> Latencies {
        // 1 µs .. 5 min at 3 significant digits: fixed, valid bounds.
        match Histogram::new_with_bounds(1, MAX_TRACKED_US, 3) {
            Ok(hist) => Latencies { hist },
            Err(e) => panic!("HdrHistogram rejected fixed bounds: {e}"),
        }
    }

    /// Records one latency (clamped into the tracked range).
    pub fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.hist.saturating_record(us.clamp(1, MAX_TRACKED_US));
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Latencies) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.hist.add(&other.hist);
    }

    /// How many values were recorded.
    pub fn len(&self) -> u64 {
        self.hist.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.hist.is_empty()
    }

    /// The summary that goes into the report.
    pub fn summary(&self) -> LatencySummary {
        let q = |p: f64| self.hist.value_at_quantile(p);
        LatencySummary {
            count: self.hist.len(),
            min_us: self.hist.min(),
            mean_us: self.hist.mean().round() as u64,
            p50_us: q(0.50),
            p90_us: q(0.90),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: self.hist.max(),
        }
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Values recorded.
    pub count: u64,
    /// Smallest.
    pub min_us: u64,
    /// Mean.
    pub mean_us: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
}

/// Closed loop (each worker sends its next request when the last one returned) or open
/// loop (requests start on a fixed schedule; latency counts from the scheduled start, so
/// a stall shows up as latency instead of hiding as a lower rate).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum LoadMode {
    /// `concurrency` workers, one request in flight each.
    Closed,
    /// A request every `1/rate` seconds, at most `concurrency` in flight.
    Open {
        /// Requests per second.
        rate: f64,
    },
}

/// One measured workload: a baseline or the system.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// Stable name, e.g. `nats-echo` or `http-add-item`.
    pub name: String,
    /// `baseline` (a raw building block) or `system` (Cartwheel).
    pub kind: String,
    /// What exactly was measured, in words.
    pub description: String,
    /// Closed or open loop.
    pub load: LoadMode,
    /// Requests in flight (closed) or the cap on them (open).
    pub concurrency: usize,
    /// Length of the measured window in seconds (warm-up excluded).
    pub seconds: f64,
    /// Operations that succeeded in the window.
    pub ok: u64,
    /// Operations that failed in the window.
    pub errors: u64,
    /// Failures by kind (`http_503`, `timeout`, `conflict`, …).
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Successful operations per second.
    pub throughput: f64,
    /// Latency of successful operations.
    pub latency: LatencySummary,
    /// CPU time (user + system) per successful operation in the measured window, in µs,
    /// by process (`bench` is the load generator itself, with its baselines).
    #[serde(default)]
    pub cpu_us_per_op: BTreeMap<String, f64>,
}

/// Counts of errors by kind.
#[derive(Debug, Clone, Default)]
pub struct ErrorCounts {
    by_kind: BTreeMap<String, u64>,
}

impl ErrorCounts {
    /// Counts one error of `kind`.
    pub fn add(&mut self, kind: &str) {
        *self.by_kind.entry(kind.to_owned()).or_default() += 1;
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &ErrorCounts) {
        for (k, n) in &other.by_kind {
            *self.by_kind.entry(k.clone()).or_default() += n;
        }
    }

    /// Total errors.
    pub fn total(&self) -> u64 {
        self.by_kind.values().sum()
    }

    /// The counts by kind.
    pub fn into_map(self) -> BTreeMap<String, u64> {
        self.by_kind
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_recorded_values() {
        let mut l = Latencies::new();
        for ms in 1..=100u64 {
            l.record(Duration::from_millis(ms));
        }
        let s = l.summary();
        assert_eq!(s.count, 100);
        assert!((49_000..=51_000).contains(&s.p50_us), "{s:?}");
        assert!((98_000..=100_500).contains(&s.p99_us), "{s:?}");
        assert!(s.max_us >= 99_900, "{s:?}");
        assert!(s.min_us <= 1_001, "{s:?}");
    }

    #[test]
    fn merge_adds_counts_and_out_of_range_values_are_clamped() {
        let mut a = Latencies::new();
        let mut b = Latencies::new();
        a.record(Duration::ZERO);
        b.record(Duration::from_secs(3600));
        a.merge(&b);
        let s = a.summary();
        assert_eq!(s.count, 2);
        assert_eq!(s.min_us, 1);
        assert!(s.max_us >= MAX_TRACKED_US - MAX_TRACKED_US / 1000, "{s:?}");
    }

    #[test]
    fn errors_are_counted_by_kind() {
        let mut e = ErrorCounts::default();
        e.add("timeout");
        e.add("timeout");
        let mut f = ErrorCounts::default();
        f.add("http_503");
        e.merge(&f);
        assert_eq!(e.total(), 3);
        let m = e.into_map();
        assert_eq!(m.get("timeout"), Some(&2));
        assert_eq!(m.get("http_503"), Some(&1));
    }

    #[test]
    fn load_mode_serializes_with_a_tag() {
        let open = serde_json::to_value(LoadMode::Open { rate: 100.0 }).unwrap_or_default();
        assert_eq!(open["mode"], "open");
        assert_eq!(open["rate"], 100.0);
        let closed = serde_json::to_value(LoadMode::Closed).unwrap_or_default();
        assert_eq!(closed["mode"], "closed");
    }
}

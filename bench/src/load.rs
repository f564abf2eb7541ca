//! The load driver: runs one operation over and over, closed loop or open loop, for a
//! bounded time (and optionally a bounded count), and turns what it saw into a
//! [`Measurement`].
//!
//! An operation owns a *resource* while it runs (a WebSocket, an HTTP client, a cart
//! slot) and hands it back with its outcome, so the same operation works in both modes:
//! closed loop gives each worker its own resource; open loop keeps them in a pool and an
//! operation that finds none free waits — and that wait counts as latency, because
//! latency is measured from the *scheduled* start (no coordinated omission).
//!
//! The driver knows nothing about Cartwheel.

use crate::cpu;
use crate::stats::{ErrorCounts, Latencies, LoadMode, Measurement};
use std::future::Future;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, mpsc};

/// What one operation reports: `Ok` or the kind of error (`http_503`, `timeout`, …).
pub type OpResult = Result<(), String>;

/// How to drive one workload.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Measurement name (`http-add-item`).
    pub name: String,
    /// `baseline` or `system`.
    pub kind: &'static str,
    /// What is measured, in words.
    pub description: String,
    /// Measured time, after the warm-up.
    pub duration: Duration,
    /// Time before measuring starts (operations run, nothing is recorded).
    pub warmup: Duration,
    /// Closed or open loop.
    pub load: LoadMode,
    /// Stop after this many operations have started (warm-up included).
    pub max_ops: Option<u64>,
    /// Print a progress line while running.
    pub progress: bool,
    /// Processes whose CPU time is charged to the measured window (`node`, `edge`, …).
    pub procs: Vec<(String, u32)>,
}

/// How long the driver waits for operations still in flight when time is up.
const DRAIN: Duration = Duration::from_secs(30);

/// What the workers share.
struct Shared {
    started: Instant,
    measure_from: Instant,
    end: Instant,
    seq: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    stop: AtomicBool,
    max_ops: Option<u64>,
}

impl Shared {
    /// The next sequence number, or `None` when the run is over.
    fn next(&self) -> Option<u64> {
        if self.stop.load(Ordering::Relaxed) || Instant::now() >= self.end {
            return None;
        }
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        match self.max_ops {
            Some(max) if seq >= max => None,
            _ => Some(seq),
        }
    }
}

/// One worker's (or task's) private tally, merged at the end.
#[derive(Default)]
struct Tally {
    lat: Latencies,
    errors: ErrorCounts,
}

impl Tally {
    fn record(&mut self, shared: &Shared, scheduled: Instant, result: &OpResult) {
        if scheduled < shared.measure_from {
            return;
        }
        match result {
            Ok(()) => {
                self.lat.record(scheduled.elapsed());
                shared.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(kind) => {
                self.errors.add(kind);
                shared.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn merge(&mut self, other: &Tally) {
        self.lat.merge(&other.lat);
        self.errors.merge(&other.errors);
    }
}

/// Runs `op` per `spec` with `resources` (closed loop: one worker per resource; open
/// loop: at most that many in flight) and returns the measurement.
pub async fn run<R, F, Fut>(spec: &LoadSpec, resources: Vec<R>, op: F) -> Measurement
where
    R: Send + 'static,
    F: Fn(R, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = (R, OpResult)> + Send + 'static,
{
    let concurrency = resources.len();
    let started = Instant::now();
    let shared = Arc::new(Shared {
        started,
        measure_from: started + spec.warmup,
        end: started + spec.warmup + spec.duration,
        seq: AtomicU64::new(0),
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        max_ops: spec.max_ops,
    });
    let progress = spec.progress.then(|| {
        tokio::spawn(progress_line(
            spec.name.clone(),
            shared.clone(),
            spec.duration,
        ))
    });
    let op = Arc::new(op);
    let cpu_start = {
        let (procs, at) = (spec.procs.clone(), shared.measure_from);
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            cpu::sample(&procs)
        })
    };
    let tally = match spec.load {
        LoadMode::Closed => closed(shared.clone(), resources, op).await,
        LoadMode::Open { rate } => open(shared.clone(), resources, op, rate).await,
    };
    if let Some(p) = progress {
        p.abort();
        eprintln!();
    }
    // Throughput counts what succeeded in the measured window over the window's length
    // (shorter when a bounded count ran out first).
    let cpu_end = cpu::sample(&spec.procs);
    let window_end = Instant::now().min(shared.end);
    let seconds = window_end
        .saturating_duration_since(shared.measure_from)
        .as_secs_f64()
        .max(1e-3);
    let ok = tally.lat.len();
    let errors = tally.errors.total();
    let cpu_start = cpu_start.await.unwrap_or_default();
    let cpu_us_per_op = cpu::per_op(&cpu_start, &cpu_end, ok);
    Measurement {
        name: spec.name.clone(),
        kind: spec.kind.to_owned(),
        description: spec.description.clone(),
        load: spec.load,
        concurrency,
        seconds: crate::stats::thousandths(seconds),
        ok,
        errors,
        errors_by_kind: tally.errors.into_map(),
        throughput: crate::stats::tenths(ok as f64 / seconds),
        latency: tally.lat.summary(),
        cpu_us_per_op,
    }
}

async fn closed<R, F, Fut>(shared: Arc<Shared>, resources: Vec<R>, op: Arc<F>) -> Tally
where
    R: Send + 'static,
    F: Fn(R, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = (R, OpResult)> + Send + 'static,
{
    let workers: Vec<_> = resources
        .into_iter()
        .map(|mut r| {
            let shared = shared.clone();
            let op = op.clone();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                while let Some(seq) = shared.next() {
                    let t = Instant::now();
                    let (back, result) = op(r, seq).await;
                    r = back;
                    tally.record(&shared, t, &result);
                }
                tally
            })
        })
        .collect();
    collect(shared, workers).await
}

async fn open<R, F, Fut>(shared: Arc<Shared>, resources: Vec<R>, op: Arc<F>, rate: f64) -> Tally
where
    R: Send + 'static,
    F: Fn(R, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = (R, OpResult)> + Send + 'static,
{
    let (give_back, pool) = mpsc::unbounded_channel::<R>();
    for r in resources {
        let _ = give_back.send(r);
    }
    let pool = Arc::new(Mutex::new(pool));
    let interval = Duration::from_secs_f64(1.0 / rate.max(1e-3));
    let mut tasks = Vec::new();
    let mut i: u32 = 0;
    loop {
        let scheduled = shared.started + interval * i;
        i = i.saturating_add(1);
        tokio::time::sleep_until(scheduled.into()).await;
        let Some(seq) = shared.next() else { break };
        let (shared, op, pool, give_back) =
            (shared.clone(), op.clone(), pool.clone(), give_back.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            // Waiting for a free resource is part of the latency.
            let r = pool.lock().await.recv().await;
            if let Some(r) = r {
                let (back, result) = op(r, seq).await;
                let _ = give_back.send(back);
                tally.record(&shared, scheduled, &result);
            }
            tally
        }));
    }
    collect(shared, tasks).await
}

/// Waits (bounded) for every worker and merges their tallies; what did not finish within
/// [`DRAIN`] is counted as `unfinished`.
async fn collect(shared: Arc<Shared>, handles: Vec<tokio::task::JoinHandle<Tally>>) -> Tally {
    let mut total = Tally::default();
    let deadline = shared.end.max(Instant::now()) + DRAIN;
    for h in handles {
        let abort = h.abort_handle();
        match tokio::time::timeout_at(deadline.into(), h).await {
            Ok(Ok(t)) => total.merge(&t),
            Ok(Err(_)) => total.errors.add("worker_panicked"),
            Err(_) => {
                abort.abort();
                total.errors.add("unfinished");
            }
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    total
}

/// A live progress line on stderr (only when stderr is a terminal).
async fn progress_line(name: String, shared: Arc<Shared>, duration: Duration) {
    if !std::io::stderr().is_terminal() {
        return;
    }
    let mut last_ok = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = Instant::now();
        let ok = shared.ok.load(Ordering::Relaxed);
        let failed = shared.failed.load(Ordering::Relaxed);
        let phase = if now < shared.measure_from {
            "warm-up".to_owned()
        } else {
            format!(
                "{:>5.1}/{:.0}s",
                now.duration_since(shared.measure_from).as_secs_f64(),
                duration.as_secs_f64()
            )
        };
        eprint!(
            "\r  {name:<24} {phase:<12} {:>9} ok/s  {ok:>9} ok  {failed:>6} errors   ",
            ok - last_ok
        );
        let _ = std::io::stderr().flush();
        last_ok = ok;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(load: LoadMode, max_ops: Option<u64>) -> LoadSpec {
        LoadSpec {
            name: "t".into(),
            kind: "baseline",
            description: String::new(),
            duration: Duration::from_millis(300),
            warmup: Duration::from_millis(50),
            load,
            max_ops,
            progress: false,
            procs: vec![],
        }
    }

    #[tokio::test]
    async fn closed_loop_counts_successes_and_errors_by_kind() {
        let m = run(
            &spec(LoadMode::Closed, None),
            vec![(); 4],
            |r, seq| async move {
                tokio::time::sleep(Duration::from_millis(2)).await;
                (
                    r,
                    if seq % 2 == 0 {
                        Ok(())
                    } else {
                        Err("odd".into())
                    },
                )
            },
        )
        .await;
        assert_eq!(m.concurrency, 4);
        assert!(m.ok > 50, "{m:?}");
        assert!(m.errors > 50, "{m:?}");
        assert_eq!(m.errors_by_kind.get("odd"), Some(&m.errors));
        assert!(m.latency.p50_us >= 2000, "{m:?}");
        assert!(m.throughput > 0.0);
    }

    #[tokio::test]
    async fn a_bounded_count_stops_the_run() {
        let m = run(
            &LoadSpec {
                warmup: Duration::ZERO,
                duration: Duration::from_secs(10),
                ..spec(LoadMode::Closed, Some(25))
            },
            vec![(); 3],
            |r, _| async move { (r, Ok(())) },
        )
        .await;
        assert_eq!(m.ok, 25);
        assert!(m.seconds < 5.0, "{m:?}");
    }

    #[tokio::test]
    async fn open_loop_keeps_its_rate_and_counts_queueing_as_latency() {
        // One resource, 10 ms per operation, 200 scheduled per second: the queue grows,
        // and latency measured from the schedule must show it.
        let m = run(
            &spec(LoadMode::Open { rate: 200.0 }, None),
            vec![()],
            |r, _| async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                (r, Ok(()))
            },
        )
        .await;
        assert!(m.ok > 10, "{m:?}");
        assert!(m.latency.max_us > 50_000, "queueing hidden: {m:?}");
    }
}

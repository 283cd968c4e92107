//! The measurement harness: samples, interleaved rounds and their summary into report rows.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::runtime::Runtime;
use tokio::sync::Notify;

use crate::report::Row;

/// What one run of one system measured.
#[derive(Debug, Default, Clone)]
pub(crate) struct Sample {
    /// Operations completed (events handled, round trips, items received...).
    pub(crate) ops: u64,
    /// Wall time from the first operation to the last completion (setup excluded).
    pub(crate) elapsed: Duration,
    /// Per-operation latencies in nanoseconds, where the workload measures them.
    pub(crate) latencies_ns: Vec<u64>,
    /// Memory, where the workload measures it.
    pub(crate) rss: Option<Rss>,
    /// Anything worth showing next to the numbers (rejections, losses...).
    pub(crate) note: Option<String>,
}

impl Sample {
    pub(crate) fn new(ops: u64, elapsed: Duration) -> Sample {
        Sample {
            ops,
            elapsed,
            ..Sample::default()
        }
    }

    pub(crate) fn with_latencies(mut self, mut latencies_ns: Vec<u64>) -> Sample {
        latencies_ns.sort_unstable();
        self.latencies_ns = latencies_ns;
        self
    }

    pub(crate) fn with_note(mut self, note: impl Into<String>) -> Sample {
        self.note = Some(note.into());
        self
    }

    pub(crate) fn ops_per_sec(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 { self.ops as f64 / s } else { 0.0 }
    }
}

/// Resident memory of a run, in KiB.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub(crate) struct Rss {
    /// Peak resident set (VmHWM of a fresh child, or the sampled VmRSS maximum in-process).
    pub(crate) peak_kib: u64,
    /// Peak minus the resident set just before the run started.
    pub(crate) growth_kib: u64,
}

/// The result of one run: a sample, or why it failed.
pub(crate) type RunResult = Result<Sample, String>;

/// A system under test: a name and a function running one measurement of `count` operations.
/// Setup and teardown happen inside the function, outside the timed part.
pub(crate) struct System {
    pub(crate) name: String,
    run: Arc<dyn Fn(u64) -> BoxFuture<'static, RunResult> + Send + Sync>,
}

impl System {
    /// One measurement of `count` operations, to be run on a Tokio runtime.
    pub(crate) fn start(&self, count: u64) -> BoxFuture<'static, RunResult> {
        (self.run)(count)
    }
}

/// Wraps an async function as a [`System`].
pub(crate) fn system<F, Fut>(name: &str, f: F) -> System
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = RunResult> + Send + 'static,
{
    System {
        name: name.to_owned(),
        run: Arc::new(move |n| Box::pin(f(n))),
    }
}

/// Settings shared by every workload.
pub(crate) struct Bench {
    pub(crate) rt: Runtime,
    pub(crate) rounds: usize,
    pub(crate) quick: bool,
    /// Upper bound on one run, so a stuck system shows up as an error row instead of a hang.
    pub(crate) run_timeout: Duration,
}

impl Bench {
    /// Runs one measurement on `rt`'s worker threads (not on the calling thread).
    pub(crate) fn run_on(&self, rt: &Runtime, system: &System, count: u64) -> RunResult {
        let fut = system.start(count);
        let limit = self.run_timeout;
        rt.block_on(async move {
            match tokio::time::timeout(limit, tokio::spawn(fut)).await {
                Ok(Ok(r)) => r,
                Ok(Err(join)) => Err(format!("run panicked: {join}")),
                Err(_) => Err(format!("run did not finish within {limit:?}")),
            }
        })
    }

    /// One warm-up round, then `rounds` rounds running the systems in turn (A B A B ...) on
    /// the bench runtime. `baseline` names the system ratios are taken against.
    pub(crate) fn compare(
        &self,
        workload: &str,
        count: u64,
        systems: &[System],
        baseline: &str,
    ) -> Vec<Row> {
        let on: Vec<(&System, &Runtime)> = systems.iter().map(|s| (s, &self.rt)).collect();
        let mut rows = self.interleave(workload, count, &on);
        apply_ratios(&mut rows, baseline);
        rows
    }

    /// Like [`Bench::compare`], but each system runs on the runtime paired with it, and no
    /// ratios are set: one row per system, in the order given.
    pub(crate) fn interleave(
        &self,
        workload: &str,
        count: u64,
        systems: &[(&System, &Runtime)],
    ) -> Vec<Row> {
        eprint!("{workload} ({count}): warm-up");
        for (s, rt) in systems {
            let _ = self.run_on(rt, s, count);
        }
        let mut samples: Vec<Vec<Sample>> = systems.iter().map(|_| Vec::new()).collect();
        let mut errors: Vec<Option<String>> = systems.iter().map(|_| None).collect();
        for round in 0..self.rounds {
            eprint!(", round {}", round + 1);
            // Each round starts one system later, so that over the rounds each system runs
            // after each other one: what a system leaves behind (an actix System's thread
            // winding down, a heap grown by a peer) does not weigh on one neighbour only.
            // (Seen: ask-seq's happen row 1.45M/s run after actix, 1.67M/s after kameo.)
            for k in 0..systems.len() {
                let i = (k + round) % systems.len();
                let (s, rt) = &systems[i];
                match self.run_on(rt, s, count) {
                    Ok(sample) => samples[i].push(sample),
                    Err(e) => errors[i] = Some(e),
                }
            }
        }
        eprintln!();
        systems
            .iter()
            .zip(samples)
            .zip(errors)
            .map(|(((s, _), samples), error)| summarize(workload, &s.name, count, &samples, error))
            .collect()
    }
}

/// A Tokio multi-thread runtime with `workers` worker threads, all drivers enabled.
pub(crate) fn multi_thread(workers: usize) -> std::io::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
}

/// Sets each row's ratio to its median over the baseline row's median.
pub(crate) fn apply_ratios(rows: &mut [Row], baseline: &str) {
    let base = rows
        .iter()
        .find(|r| r.system == baseline)
        .and_then(|r| r.median_ops_per_sec);
    for r in rows.iter_mut() {
        if r.system == baseline {
            continue;
        }
        r.ratio = match (r.median_ops_per_sec, base) {
            (Some(v), Some(b)) if b > 0.0 => Some(v / b),
            _ => None,
        };
        r.ratio_to = Some(baseline.to_owned());
    }
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// The `q` quantile of sorted nanosecond latencies, in microseconds.
fn quantile_us(sorted_ns: &[u64], q: f64) -> f64 {
    let idx = ((sorted_ns.len() as f64 * q).ceil() as usize).clamp(1, sorted_ns.len()) - 1;
    sorted_ns[idx] as f64 / 1_000.0
}

/// Summarizes the rounds of one system into a row: median/min/max throughput, the median of
/// the per-round latency quantiles, the largest memory figures, and the notes of the rounds.
pub(crate) fn summarize(
    workload: &str,
    system: &str,
    count: u64,
    samples: &[Sample],
    error: Option<String>,
) -> Row {
    let mut row = Row::new(workload, system, count);
    row.rounds = samples.len();
    if !samples.is_empty() {
        let mut ops: Vec<f64> = samples.iter().map(Sample::ops_per_sec).collect();
        ops.sort_by(f64::total_cmp);
        row.median_ops_per_sec = Some(median(&ops));
        row.min_ops_per_sec = ops.first().copied();
        row.max_ops_per_sec = ops.last().copied();
        let with_lat: Vec<&Sample> = samples
            .iter()
            .filter(|s| !s.latencies_ns.is_empty())
            .collect();
        if !with_lat.is_empty() {
            let mut p50: Vec<f64> = with_lat
                .iter()
                .map(|s| quantile_us(&s.latencies_ns, 0.50))
                .collect();
            let mut p99: Vec<f64> = with_lat
                .iter()
                .map(|s| quantile_us(&s.latencies_ns, 0.99))
                .collect();
            p50.sort_by(f64::total_cmp);
            p99.sort_by(f64::total_cmp);
            row.p50_us = Some(median(&p50));
            row.p99_us = Some(median(&p99));
        }
        row.peak_rss_mib = samples
            .iter()
            .filter_map(|s| s.rss)
            .map(|r| r.peak_kib as f64 / 1024.0)
            .reduce(f64::max);
        row.rss_growth_mib = samples
            .iter()
            .filter_map(|s| s.rss)
            .map(|r| r.growth_kib as f64 / 1024.0)
            .reduce(f64::max);
        // Distinct notes in first-seen order; at most two are shown.
        let mut notes: Vec<&str> = Vec::new();
        for n in samples.iter().filter_map(|s| s.note.as_deref()) {
            if !notes.contains(&n) {
                notes.push(n);
            }
        }
        if !notes.is_empty() {
            row.note = notes[..notes.len().min(2)].join(" | ");
            if notes.len() > 2 {
                row.note
                    .push_str(&format!(" | (+{} more)", notes.len() - 2));
            }
        }
    }
    if let Some(e) = error {
        if !row.note.is_empty() {
            row.note.push_str("; ");
        }
        row.note.push_str(&format!("error: {e}"));
    }
    row
}

/// Counts completions and wakes the measuring task when a target is reached. Used by happen
/// and by the floors alike, so both pay the same for completion detection.
pub(crate) struct Countdown {
    done: AtomicU64,
    target: AtomicU64,
    notify: Notify,
}

impl Countdown {
    /// A countdown that lives for the rest of the process (a few dozen per benchmark run), so
    /// handlers capture a plain reference instead of cloning an `Arc` per event.
    pub(crate) fn leaked(target: u64) -> &'static Countdown {
        Box::leak(Box::new(Countdown {
            done: AtomicU64::new(0),
            target: AtomicU64::new(target),
            notify: Notify::new(),
        }))
    }

    /// Records one completion.
    pub(crate) fn hit(&self) {
        let v = self.done.fetch_add(1, Ordering::AcqRel) + 1;
        if v == self.target.load(Ordering::Acquire) {
            self.notify.notify_one();
        }
    }

    /// Completions so far.
    pub(crate) fn count(&self) -> u64 {
        self.done.load(Ordering::Acquire)
    }

    /// Lowers the target by `by` (operations that were rejected or lost and will never complete).
    pub(crate) fn lower_target(&self, by: u64) {
        if by > 0 {
            self.target.fetch_sub(by, Ordering::AcqRel);
            self.notify.notify_one();
        }
    }

    /// Waits until the completions reach the target.
    pub(crate) async fn wait(&self) {
        loop {
            if self.done.load(Ordering::Acquire) >= self.target.load(Ordering::Acquire) {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(5), self.notify.notified()).await;
        }
    }

    /// Waits for the target, giving up once the count has not moved for `idle` (lost
    /// messages); returns when the last hit came (the target, or the last count change).
    pub(crate) async fn wait_or_idle(&self, idle: std::time::Duration) -> std::time::Instant {
        let mut last = (self.count(), std::time::Instant::now());
        loop {
            if tokio::time::timeout(std::time::Duration::from_millis(100), self.wait())
                .await
                .is_ok()
            {
                return std::time::Instant::now();
            }
            let c = self.count();
            if c != last.0 {
                last = (c, std::time::Instant::now());
            } else if last.1.elapsed() >= idle {
                return last.1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_medians() {
        let lat: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(quantile_us(&lat, 0.5), 50.0);
        assert_eq!(quantile_us(&lat, 0.99), 99.0);
        assert_eq!(median(&[1.0, 2.0, 3.0]), 2.0);
        assert_eq!(median(&[1.0, 2.0, 3.0, 4.0]), 2.5);
    }

    #[test]
    fn summary_takes_median_min_max_and_ratio() {
        let s = |ops| Sample::new(ops, Duration::from_secs(1));
        let a = summarize("w", "happen", 10, &[s(1), s(3), s(2)], None);
        let b = summarize("w", "floor", 10, &[s(4), s(4), s(4)], None);
        let mut rows = vec![a, b];
        apply_ratios(&mut rows, "floor");
        assert_eq!(rows[0].median_ops_per_sec, Some(2.0));
        assert_eq!(rows[0].min_ops_per_sec, Some(1.0));
        assert_eq!(rows[0].max_ops_per_sec, Some(3.0));
        assert_eq!(rows[0].ratio, Some(0.5));
        assert_eq!(rows[0].ratio_to.as_deref(), Some("floor"));
        assert_eq!(rows[1].ratio, None);
        assert_eq!(rows[1].ratio_to, None);
    }
}

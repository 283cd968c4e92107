//! Resident memory: `/proc/self/status`, a sampling thread, and fresh child processes.
//!
//! Two ways to measure, chosen per workload:
//! - **Child process** (stream sizes, the overload run): the same binary is started with the
//!   hidden `--child WORKLOAD SYSTEM COUNT` arguments, builds the same runtime, records VmRSS
//!   just before the run and VmHWM just after, and prints one JSON line. Nothing from earlier
//!   workloads (allocator caches, leaked countdowns) inflates the peak, so the peak is
//!   comparable across sizes and systems.
//! - **Sampling thread** (in-process `admission` rounds): a thread reads VmRSS every
//!   millisecond during the run; growth is the maximum minus the value before the run. The
//!   allocator may reuse memory freed by earlier rounds, so this underestimates growth; it is
//!   only used to show order-of-magnitude differences (limits on vs off).

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::measure::{Rss, Sample};

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`); 0 where unavailable.
pub(crate) fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Samples VmRSS on a thread until stopped.
pub(crate) struct RssSampler {
    baseline: u64,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<u64>,
}

impl RssSampler {
    pub(crate) fn start() -> RssSampler {
        let baseline = status_kib("VmRSS");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = status_kib("VmRSS");
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(1));
                peak = peak.max(status_kib("VmRSS"));
            }
            peak.max(status_kib("VmRSS"))
        });
        RssSampler {
            baseline,
            stop,
            thread,
        }
    }

    pub(crate) fn finish(self) -> Rss {
        self.stop.store(true, Ordering::Relaxed);
        let peak = self.thread.join().unwrap_or(0);
        Rss {
            peak_kib: peak,
            growth_kib: peak.saturating_sub(self.baseline),
        }
    }
}

/// What a child process prints (one JSON line on stdout).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ChildReport {
    pub(crate) ops: u64,
    pub(crate) elapsed_ns: u64,
    pub(crate) baseline_kib: u64,
    pub(crate) hwm_kib: u64,
    pub(crate) note: Option<String>,
}

impl ChildReport {
    pub(crate) fn from_sample(sample: &Sample, baseline_kib: u64) -> ChildReport {
        ChildReport {
            ops: sample.ops,
            elapsed_ns: sample.elapsed.as_nanos() as u64,
            baseline_kib,
            hwm_kib: status_kib("VmHWM"),
            note: sample.note.clone(),
        }
    }

    fn into_sample(self) -> Sample {
        let mut s = Sample::new(self.ops, Duration::from_nanos(self.elapsed_ns));
        s.rss = Some(Rss {
            peak_kib: self.hwm_kib,
            growth_kib: self.hwm_kib.saturating_sub(self.baseline_kib),
        });
        s.note = self.note;
        s
    }
}

/// Runs one measurement in a fresh child process of this binary.
pub(crate) fn run_child(workload: &str, system: &str, count: u64) -> Result<Sample, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))?;
    let out = Command::new(exe)
        .args(["--child", workload, system, &count.to_string()])
        .output()
        .map_err(|e| format!("cannot start child: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "child {workload}/{system} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| format!("child {workload}/{system} printed no report"))?;
    let report: ChildReport =
        serde_json::from_str(line).map_err(|e| format!("bad child report: {e}"))?;
    Ok(report.into_sample())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_memory() {
        if std::path::Path::new("/proc/self/status").exists() {
            assert!(status_kib("VmRSS") > 0);
            assert!(status_kib("VmHWM") >= status_kib("VmRSS") / 2);
        }
        assert_eq!(status_kib("NoSuchField"), 0);
    }
}

//! Report rows: the printed table and the `--json` file.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

/// One line of the report: one system on one workload.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    pub(crate) workload: String,
    pub(crate) system: String,
    /// Operations per run.
    pub(crate) count: u64,
    /// Measured rounds (the warm-up round excluded).
    pub(crate) rounds: usize,
    pub(crate) median_ops_per_sec: Option<f64>,
    pub(crate) min_ops_per_sec: Option<f64>,
    pub(crate) max_ops_per_sec: Option<f64>,
    /// Median over the rounds of each round's p50 latency, in microseconds.
    pub(crate) p50_us: Option<f64>,
    /// Median over the rounds of each round's p99 latency, in microseconds.
    pub(crate) p99_us: Option<f64>,
    pub(crate) peak_rss_mib: Option<f64>,
    pub(crate) rss_growth_mib: Option<f64>,
    /// This row's median over the median of the row named by `ratio_to` (for most workloads
    /// the floor, so this is "× floor").
    pub(crate) ratio: Option<f64>,
    /// The system `ratio` is taken against (`None` on the baseline row itself).
    pub(crate) ratio_to: Option<String>,
    pub(crate) note: String,
}

impl Row {
    pub(crate) fn new(workload: &str, system: &str, count: u64) -> Row {
        Row {
            workload: workload.to_owned(),
            system: system.to_owned(),
            count,
            rounds: 0,
            median_ops_per_sec: None,
            min_ops_per_sec: None,
            max_ops_per_sec: None,
            p50_us: None,
            p99_us: None,
            peak_rss_mib: None,
            rss_growth_mib: None,
            ratio: None,
            ratio_to: None,
            note: String::new(),
        }
    }

    /// A row for a system that could not be measured.
    pub(crate) fn unavailable(workload: &str, system: &str, count: u64, why: &str) -> Row {
        let mut r = Row::new(workload, system, count);
        r.note = format!("not available: {why}");
        r
    }
}

/// Everything `--json` writes.
#[derive(Debug, Serialize)]
pub(crate) struct Report<'a> {
    pub(crate) machine: &'a Machine,
    pub(crate) command: String,
    pub(crate) rounds: usize,
    pub(crate) quick: bool,
    pub(crate) rows: &'a [Row],
}

/// Where the numbers were taken.
#[derive(Debug, Serialize)]
pub(crate) struct Machine {
    pub(crate) nproc: usize,
    pub(crate) cpu_model: String,
    pub(crate) profile: &'static str,
    pub(crate) worker_threads: usize,
}

impl Machine {
    pub(crate) fn detect(worker_threads: usize) -> Machine {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        Machine {
            nproc: std::thread::available_parallelism().map_or(0, usize::from),
            cpu_model,
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            worker_threads,
        }
    }
}

fn rate(v: Option<f64>) -> String {
    match v {
        None => "-".to_owned(),
        Some(v) if v >= 1e6 => format!("{:.2}M", v / 1e6),
        Some(v) if v >= 1e3 => format!("{:.1}k", v / 1e3),
        Some(v) => format!("{v:.0}"),
    }
}

fn num(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

/// The table as Markdown (readable in a terminal and pasteable into RESULTS.md).
pub(crate) fn table(rows: &[Row]) -> String {
    let header = [
        "workload",
        "system",
        "count",
        "median ops/s",
        "min – max ops/s",
        "p50 µs",
        "p99 µs",
        "peak RSS MiB",
        "RSS growth MiB",
        "× floor",
        "note",
    ];
    let cells: Vec<[String; 11]> = rows
        .iter()
        .map(|r| {
            [
                r.workload.clone(),
                r.system.clone(),
                r.count.to_string(),
                rate(r.median_ops_per_sec),
                match (r.min_ops_per_sec, r.max_ops_per_sec) {
                    (Some(a), Some(b)) => format!("{} – {}", rate(Some(a)), rate(Some(b))),
                    _ => "-".to_owned(),
                },
                num(r.p50_us, 1),
                num(r.p99_us, 1),
                num(r.peak_rss_mib, 1),
                num(r.rss_growth_mib, 1),
                num(r.ratio, 3),
                r.note.clone(),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for c in &cells {
        for (w, s) in widths.iter_mut().zip(c.iter()) {
            *w = (*w).max(s.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cols: &mut dyn Iterator<Item = &str>| {
        out.push('|');
        for (s, w) in cols.zip(&widths) {
            let pad = w - s.chars().count();
            let _ = write!(out, " {s}{} |", " ".repeat(pad));
        }
        out.push('\n');
    };
    line(&mut out, &mut header.iter().copied());
    out.push('|');
    for w in &widths {
        let _ = write!(out, "{}|", "-".repeat(w + 2));
    }
    out.push('\n');
    for c in &cells {
        line(&mut out, &mut c.iter().map(String::as_str));
    }
    out
}

/// Writes the report as JSON.
pub(crate) fn write_json(path: &Path, report: &Report<'_>) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    std::fs::write(path, text + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_a_line_per_row_and_aligned_columns() {
        let mut r = Row::new("tell", "happen", 10);
        r.median_ops_per_sec = Some(2_500_000.0);
        r.ratio = Some(0.25);
        let t = table(&[r, Row::unavailable("tell", "floor", 10, "test")]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[2].contains("2.50M") && lines[2].contains("0.250"));
        assert!(lines[3].contains("not available: test"));
        let width = lines[0].chars().count();
        assert!(lines.iter().all(|l| l.chars().count() == width));
    }
}

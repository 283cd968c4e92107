//! `cargo xtask instructions`: instructions per event under callgrind, checked against the
//! figures recorded in the repository (a ratchet no machine load can make flaky).

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

/// The figures checked by `--check`, one `WORKLOAD INSTRUCTIONS` line each.
const RECORDED: &str = "crates/happen-bench/instructions.txt";
/// The workloads measured (happen's row of `happen-bench --child WORKLOAD happen N`).
const WORKLOADS: [&str; 2] = ["tell", "ask-seq"];
/// The two event counts: their difference divides out the set-up.
const N1: u64 = 10_000;
const N2: u64 = 30_000;
/// How far above its recorded figure (in percent) a count may go before `--check` fails.
const TOLERANCE_PERCENT: u64 = 10;

enum Mode {
    Print,
    Check,
    Record,
}

pub(crate) fn run(args: Vec<String>) -> ExitCode {
    let mode = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => Mode::Print,
        ["--check"] => Mode::Check,
        ["--record"] => Mode::Record,
        _ => {
            eprintln!("xtask: usage: cargo xtask instructions [--check | --record]");
            return ExitCode::from(2);
        }
    };
    match measure_and(mode) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask instructions: {e}");
            ExitCode::FAILURE
        }
    }
}

fn measure_and(mode: Mode) -> Result<(), String> {
    crate::ensure_installed("valgrind", || crate::on_path("valgrind"), "")?;
    let root = workspace_root()?;
    let bench = build_bench(&root)?;
    let mut measured = Vec::new();
    for workload in WORKLOADS {
        let a = callgrind_total(&bench, workload, N1)?;
        let b = callgrind_total(&bench, workload, N2)?;
        let per_event = b.saturating_sub(a) / (N2 - N1);
        println!("{workload} happen {per_event}");
        measured.push((workload, per_event));
    }
    let file = root.join(RECORDED);
    match mode {
        Mode::Print => Ok(()),
        Mode::Record => {
            let mut text = String::from(
                "# Instructions per event of happen (callgrind; `cargo xtask instructions`).\n\
                 # `cargo xtask instructions --check` (CI) fails when a count rises more than\n\
                 # 10 % above its figure here; lower the figures with `--record` as they fall.\n",
            );
            for (w, n) in &measured {
                let _ = writeln!(text, "{w} {n}");
            }
            fs::write(&file, text).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
            println!("recorded in {RECORDED}");
            Ok(())
        }
        Mode::Check => {
            let text = fs::read_to_string(&file).map_err(|e| {
                format!(
                    "cannot read {}: {e}; run `cargo xtask instructions --record`",
                    file.display()
                )
            })?;
            let recorded = parse_recorded(&text)?;
            check(&measured, &recorded)
        }
    }
}

/// `WORKLOAD COUNT` lines; `#` starts a comment.
fn parse_recorded(text: &str) -> Result<Vec<(String, u64)>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(w), Some(n), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!(
                "{RECORDED}:{}: expected `WORKLOAD INSTRUCTIONS`, found `{line}`",
                i + 1
            ));
        };
        let n = n
            .parse()
            .map_err(|_| format!("{RECORDED}:{}: `{n}` is not a count", i + 1))?;
        out.push((w.to_owned(), n));
    }
    Ok(out)
}

fn check(measured: &[(&str, u64)], recorded: &[(String, u64)]) -> Result<(), String> {
    let mut failures = Vec::new();
    for (w, n) in measured {
        let Some((_, limit_base)) = recorded.iter().find(|(r, _)| r == w) else {
            failures.push(format!(
                "{w}: no figure recorded in {RECORDED} (run `cargo xtask instructions --record`)"
            ));
            continue;
        };
        let limit = limit_base + limit_base * TOLERANCE_PERCENT / 100;
        if *n > limit {
            failures.push(format!(
                "{w}: {n} instructions per event, above {limit} (recorded {limit_base} + 10 %); \
                 find what the hot path gained (callgrind_annotate) or, if it is worth it, \
                 record the new figure with `cargo xtask instructions --record` and say why"
            ));
        } else {
            println!("{w}: {n} ≤ {limit} (recorded {limit_base})");
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

fn workspace_root() -> Result<PathBuf, String> {
    // This crate lives in `<root>/crates/xtask`.
    let manifest = env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .ok_or_else(|| "cannot find the workspace root".to_owned())
}

/// Builds `happen-bench` in release (the figures are release figures) and returns its path.
fn build_bench(root: &Path) -> Result<PathBuf, String> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(root)
        .args(["build", "--quiet", "--release", "-p", "happen-bench"])
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building happen-bench failed ({status})"));
    }
    let target = env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    Ok(target.join("release").join("happen-bench"))
}

/// The total instructions of one `happen-bench --child WORKLOAD happen N` run under callgrind.
fn callgrind_total(bench: &Path, workload: &str, n: u64) -> Result<u64, String> {
    let dir = env::temp_dir().join(format!("xtask-callgrind-{}", std::process::id()));
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let out = dir.join(format!("{workload}-{n}.out"));
    let result = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(bench)
        .args(["--child", workload, "happen", &n.to_string()])
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run valgrind: {e}"));
    let total = result.and_then(|o| {
        if !o.status.success() {
            let err = String::from_utf8_lossy(&o.stderr);
            let tail: Vec<_> = err.lines().rev().take(3).collect();
            return Err(format!(
                "`happen-bench --child {workload} happen {n}` under callgrind failed ({}): {}",
                o.status,
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ));
        }
        let text =
            fs::read_to_string(&out).map_err(|e| format!("cannot read {}: {e}", out.display()))?;
        total_of(&text).ok_or_else(|| format!("no `summary:` line in {}", out.display()))
    });
    let _ = fs::remove_dir_all(&dir);
    total
}

/// The `summary:` (or `totals:`) figure of a callgrind output file.
fn total_of(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_figures_parse_and_bad_lines_are_named() {
        let r = parse_recorded("# c\ntell 2300\n\nask-seq 4100 # trailing\n").unwrap();
        assert_eq!(r, [("tell".to_owned(), 2300), ("ask-seq".to_owned(), 4100)]);
        let e = parse_recorded("tell\n").unwrap_err();
        assert!(e.contains(":1:"), "{e}");
        let e = parse_recorded("tell x\n").unwrap_err();
        assert!(e.contains("`x` is not a count"), "{e}");
    }

    #[test]
    fn check_allows_ten_percent_and_no_more() {
        let rec = [("tell".to_owned(), 1000)];
        assert!(check(&[("tell", 1100)], &rec).is_ok());
        assert!(check(&[("tell", 1101)], &rec).is_err());
        assert!(
            check(&[("ask-seq", 1)], &rec)
                .unwrap_err()
                .contains("no figure")
        );
    }

    #[test]
    fn callgrind_totals_are_read() {
        assert_eq!(total_of("events: Ir\nsummary: 12345\n"), Some(12345));
        assert_eq!(total_of("totals: 7 8\n"), Some(7));
        assert_eq!(total_of("events: Ir\n"), None);
    }
}

//! `happen-bench`: runs each workload for happen and for its raw floor (tokio channels or raw
//! async-nats) in the same process, interleaved round by round, and prints one table with each
//! system's ratio to the floor (`× floor`; `--json` names the baseline of each ratio in
//! `ratio_to`).
//!
//! ```text
//! cargo run --release -p happen-bench -- [WORKLOAD...] [--json FILE] [--quick] [--rounds N] [--nats-url URL]
//! ```
//!
//! Workloads: `tell`, `ask-seq`, `ask-par`, `flow`, `broadcast`, `stream`, `admission`,
//! `node-scale`, `fan-out`, `signed`, `state`, `nats-ask-seq`, `nats-ask-par`,
//! `nats-broadcast`, `nats-tell`, `nats-durable`, `nats-signed`, `nats-state` (default: all; `nats-durable`
//! and `nats-state` start their own `nats-server -js`; `signed` and `nats-signed` report signed
//! ÷ unsigned sends). Each runs one warm-up round and then `--rounds` (default and minimum 5) rounds, running the systems in turn
//! (A B A B ...), on a Tokio multi-thread runtime with 2 workers — except `node-scale`, which
//! runs each system on a 2-worker and on a 1-worker runtime and reports 2 workers ÷ 1 worker.
//! `--quick` uses tiny counts: it proves the tool runs (CI); its numbers mean nothing.
//!
//! Built with `--features peers` (off by default), `tell`, `ask-seq`, `ask-par`, `flow`,
//! `broadcast` and `stream` also run the actor crates kameo, ractor and actix, interleaved with
//! happen and the floor (see `workloads/peers/`).
//!
//! The tool is never judged on speed in CI: only `--quick` runs there, and only its exit status
//! and the presence of rows are checked (see `tests/quick.rs`).

mod measure;
mod report;
mod rss;
mod workloads;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use measure::Bench;
use report::{Machine, Report, Row};
use rss::{ChildReport, status_kib};
use workloads::peers::{self, Workload};
use workloads::{LOCAL, NATS};

/// Tokio worker threads (the benchmark machines have 2 cores).
const WORKERS: usize = 2;
/// Fewest measured rounds.
const MIN_ROUNDS: usize = 5;

const USAGE: &str = "\
usage: happen-bench [WORKLOAD...] [--json FILE] [--quick] [--rounds N] [--nats-url URL]

workloads: tell ask-seq ask-par flow broadcast stream admission node-scale fan-out signed
           state nats-ask-seq nats-ask-par nats-broadcast nats-tell nats-durable
           nats-signed nats-state   (default: all)
  --json FILE     also write the rows as JSON
  --quick         tiny counts: a smoke run for CI (numbers mean nothing)
  --rounds N      measured rounds after the warm-up round (default and minimum 5)
  --nats-url URL  use this NATS server instead of starting nats-server on a free port

built with --features peers: kameo, ractor and actix rows in tell ask-seq ask-par flow
broadcast stream";

struct Args {
    workloads: Vec<&'static str>,
    json: Option<PathBuf>,
    quick: bool,
    rounds: usize,
    nats_url: Option<String>,
}

fn known(name: &str) -> Option<&'static str> {
    LOCAL.iter().chain(NATS).find(|w| **w == name).copied()
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut a = Args {
        workloads: Vec::new(),
        json: None,
        quick: false,
        rounds: MIN_ROUNDS,
        nats_url: None,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match arg.as_str() {
            "--json" => a.json = Some(PathBuf::from(value("--json")?)),
            "--quick" => a.quick = true,
            "--rounds" => {
                let v = value("--rounds")?;
                let n: usize = v
                    .parse()
                    .map_err(|_| format!("--rounds: `{v}` is not a number"))?;
                if n < MIN_ROUNDS {
                    return Err(format!("--rounds: at least {MIN_ROUNDS} rounds are needed"));
                }
                a.rounds = n;
            }
            "--nats-url" => a.nats_url = Some(value("--nats-url")?),
            "-h" | "--help" => return Err(String::new()),
            w => match known(w) {
                Some(w) if !a.workloads.contains(&w) => a.workloads.push(w),
                Some(_) => {}
                None => return Err(format!("unknown workload or option `{w}`")),
            },
        }
    }
    if a.workloads.is_empty() {
        a.workloads = LOCAL.iter().chain(NATS).copied().collect();
    }
    Ok(a)
}

/// Hidden child mode (`--child WORKLOAD SYSTEM COUNT`): one measurement in a fresh process,
/// reported as one JSON line with the process's memory figures. Also handy for profiling one
/// system alone: `perf record -g happen-bench --child tell happen 1000000` (peer systems too,
/// when built with `--features peers`).
fn child(args: &[String]) -> ExitCode {
    let [workload, system, count] = args else {
        eprintln!("--child needs WORKLOAD SYSTEM COUNT");
        return ExitCode::from(2);
    };
    let Ok(count) = count.parse::<u64>() else {
        eprintln!("--child: bad count `{count}`");
        return ExitCode::from(2);
    };
    let rt = match measure::multi_thread(WORKERS) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot build the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let baseline = status_kib("VmRSS");
    let (workload, system) = (workload.clone(), system.clone());
    let peer = Workload::named(&workload)
        .map(peers::systems)
        .and_then(|all| all.into_iter().find(|s| s.name == system));
    let result = rt.block_on(async move {
        let run = tokio::spawn(async move {
            if let Some(peer) = peer {
                return peer.start(count).await;
            }
            match workload.as_str() {
                "tell" => workloads::tell::child(&system, count).await,
                w if w.starts_with("nats-") => workloads::nats::child(w, &system, count).await,
                "ask-seq" | "ask-par" | "flow" => {
                    workloads::ask::child(&workload, &system, count).await
                }
                "broadcast" => workloads::broadcast::child(&system, count).await,
                "stream" => workloads::stream::child(&system, count).await,
                "fan-out" => workloads::fanout::child(&system, count).await,
                "signed" => workloads::signed::child(&system, count).await,
                "admission-overload" => workloads::admission::overload(count).await,
                other => Err(format!("no child mode for `{other}`")),
            }
        });
        match tokio::time::timeout(Duration::from_secs(300), run).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(format!("run panicked: {e}")),
            Err(_) => Err("run did not finish within 300 s".to_owned()),
        }
    });
    match result {
        Ok(sample) => {
            let report = ChildReport::from_sample(&sample, baseline);
            match serde_json::to_string(&report) {
                Ok(line) => {
                    println!("{line}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    if raw.first().map(String::as_str) == Some("--child") {
        return child(&raw[1..]);
    }
    let args = match parse(&raw) {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let rt = match measure::multi_thread(WORKERS) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot build the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bench = Bench {
        rt,
        rounds: args.rounds,
        quick: args.quick,
        run_timeout: Duration::from_secs(if args.quick { 60 } else { 300 }),
    };
    let machine = Machine::detect(WORKERS);
    eprintln!(
        "happen-bench: {} build, {} cpus ({}), {WORKERS} tokio workers, 1 warm-up + {} rounds{}",
        machine.profile,
        machine.nproc,
        machine.cpu_model,
        bench.rounds,
        if bench.quick { ", quick" } else { "" },
    );

    let mut rows: Vec<Row> = Vec::new();
    for &w in args.workloads.iter().filter(|w| LOCAL.contains(w)) {
        rows.extend(match w {
            "tell" => workloads::tell::run(&bench),
            "ask-seq" => workloads::ask::run_seq(&bench),
            "ask-par" => workloads::ask::run_par(&bench),
            "flow" => workloads::ask::run_flow(&bench),
            "broadcast" => workloads::broadcast::run(&bench),
            "stream" => workloads::stream::run(&bench),
            "admission" => workloads::admission::run(&bench),
            "node-scale" => workloads::node_scale::run(&bench),
            "fan-out" => workloads::fanout::run(&bench),
            "signed" => workloads::signed::run_local(&bench),
            "state" => workloads::state::run(&bench),
            _ => Vec::new(),
        });
    }
    let nats: Vec<&str> = args
        .workloads
        .iter()
        .copied()
        .filter(|w| {
            NATS.contains(w) && !matches!(*w, "nats-durable" | "nats-signed" | "nats-state")
        })
        .collect();
    if !nats.is_empty() {
        rows.extend(workloads::nats::run(
            &bench,
            &nats,
            args.nats_url.as_deref(),
        ));
    }

    if args.workloads.contains(&"nats-signed") {
        rows.extend(workloads::signed::run_nats(
            &bench,
            args.nats_url.as_deref(),
        ));
    }

    if args.workloads.contains(&"nats-durable") {
        // its own server, with JetStream
        rows.extend(workloads::durable::run(&bench, args.nats_url.as_deref()));
    }
    if args.workloads.contains(&"nats-state") {
        // stored state on JetStream key-value: its own server, with JetStream
        rows.extend(workloads::state::run_nats(&bench, args.nats_url.as_deref()));
    }

    println!("{}", report::table(&rows));
    if let Some(path) = &args.json {
        let report = Report {
            machine: &machine,
            command: std::env::args().collect::<Vec<_>>().join(" "),
            rounds: bench.rounds,
            quick: bench.quick,
            rows: &rows,
        };
        if let Err(e) = report::write_json(path, &report) {
            eprintln!("cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    let failed = rows.iter().any(|r| r.note.contains("error:"));
    if failed {
        eprintln!("some runs failed (see the `error:` notes)");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn parses_workloads_and_flags() {
        let a = parse(&strings(&["tell", "flow", "--quick", "--json", "x.json"])).unwrap();
        assert_eq!(a.workloads, ["tell", "flow"]);
        assert!(a.quick);
        assert_eq!(a.json, Some(PathBuf::from("x.json")));
        assert_eq!(a.rounds, MIN_ROUNDS);
        let all = parse(&[]).unwrap();
        assert_eq!(all.workloads.len(), LOCAL.len() + NATS.len());
        assert!(parse(&strings(&["nope"])).is_err());
        assert!(parse(&strings(&["--rounds", "2"])).is_err());
        assert_eq!(parse(&strings(&["--rounds", "7"])).unwrap().rounds, 7);
    }
}

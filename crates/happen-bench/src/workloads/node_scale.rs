//! `node-scale`: does one node use more than one core when its handlers compute?
//!
//! happen: one node (64 concurrent flows, default queue of 10,000) gets 200,000 `tell`s from
//! another node; its handler computes ~5 µs of CPU work without awaiting (a xorshift busy loop
//! whose iteration count is calibrated once at startup) and counts. The producer is paced by
//! backpressure as in `tell`. Floor: the same work in 200,000 `tokio::spawn`ed tasks, the
//! spawning task yielding every 256 spawns (see [`floor_scale`]) — what the machine can do.
//!
//! Each system runs on a multi-thread runtime with 2 workers and on one with 1 worker, built for
//! this workload, all four interleaved round by round. The ratio on the 2-worker rows is
//! 2 workers ÷ 1 worker of the same system (`ratio_to` names the 1-worker row): ~2 means the
//! work spreads over both cores, ~1 that it runs on one. The aim for happen is ≥ 1.7 on 2 cores.

use std::hint::black_box;
use std::time::{Duration, Instant};

use happen::{Context, Event, Happen, NodeOptions};
use tokio::runtime::Runtime;

use super::{PACE_EVERY, err, tell_paced};
use crate::measure::{Bench, Countdown, RunResult, Sample, System, multi_thread, system};
use crate::report::Row;

/// CPU work per event.
const WORK: Duration = Duration::from_micros(5);
/// Flows the node may run at once.
const CONCURRENT: usize = 64;

pub(crate) fn run(bench: &Bench) -> Vec<Row> {
    let n = if bench.quick { 2_000 } else { 200_000 };
    let (two, one) = match (multi_thread(2), multi_thread(1)) {
        (Ok(two), Ok(one)) => (two, one),
        (Err(e), _) | (_, Err(e)) => {
            let why = format!("cannot build the runtimes: {e}");
            return ["happen(2 workers)", "floor(2 workers)"]
                .iter()
                .map(|s| Row::unavailable("node-scale", s, n, &why))
                .collect();
        }
    };
    let (iters, cost) = calibrate();
    eprintln!(
        "node-scale: {iters} xorshift rounds per event take {:.2} µs here",
        cost.as_secs_f64() * 1e6
    );

    let happen_sys = |name: &str| system(name, move |n| happen_scale(n, iters));
    let floor_sys = |name: &str| system(name, move |n| floor_scale(n, iters));
    let systems: [(System, &Runtime); 4] = [
        (happen_sys("happen(2 workers)"), &two),
        (happen_sys("happen(1 worker)"), &one),
        (floor_sys("floor(2 workers)"), &two),
        (floor_sys("floor(1 worker)"), &one),
    ];
    let on: Vec<(&System, &Runtime)> = systems.iter().map(|(s, rt)| (s, *rt)).collect();
    let mut rows = bench.interleave("node-scale", n, &on);

    // Rows 0/1 and 2/3 are the 2-worker / 1-worker pairs.
    for pair in rows.chunks_mut(2) {
        let (two, one) = pair.split_at_mut(1);
        let (two, one) = (&mut two[0], &one[0]);
        two.ratio = match (two.median_ops_per_sec, one.median_ops_per_sec) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        two.ratio_to = Some(one.system.clone());
    }
    let at_two = match (rows[0].median_ops_per_sec, rows[2].median_ops_per_sec) {
        (Some(h), Some(f)) if f > 0.0 => format!("; happen ÷ floor at 2 workers {:.3}", h / f),
        _ => String::new(),
    };
    let what = format!(
        "{:.1} µs CPU per event; × = 2 workers ÷ 1 worker",
        cost.as_secs_f64() * 1e6
    );
    for (i, r) in rows.iter_mut().enumerate() {
        let mut note = if i % 2 == 0 {
            what.clone()
        } else {
            format!("{:.1} µs CPU per event", cost.as_secs_f64() * 1e6)
        };
        if i == 0 {
            note.push_str(&at_two);
        }
        if !r.note.is_empty() {
            note = format!("{note}; {}", r.note);
        }
        r.note = note;
    }
    rows
}

/// `rounds` steps of xorshift64: CPU work the compiler cannot skip or fold.
fn spin(rounds: u64) -> u64 {
    let mut x = black_box(0x9E37_79B9_7F4A_7C15_u64);
    for _ in 0..black_box(rounds) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    black_box(x)
}

/// How many [`spin`] rounds take about [`WORK`] on this machine, and what that many cost: the
/// fastest of several timed batches (the one least disturbed by other load on the machine).
fn calibrate() -> (u64, Duration) {
    const PROBE: u64 = 100_000;
    let fastest = |rounds: u64, tries: u32| {
        (0..tries)
            .map(|_| {
                let t = Instant::now();
                spin(rounds);
                t.elapsed()
            })
            .min()
            .unwrap_or_default()
    };
    let probe = fastest(PROBE, 20);
    let per_round = probe.as_secs_f64() / PROBE as f64;
    let rounds = if per_round > 0.0 {
        ((WORK.as_secs_f64() / per_round).round() as u64).max(1)
    } else {
        1
    };
    (rounds, fastest(rounds, 200))
}

async fn happen_scale(n: u64, rounds: u64) -> RunResult {
    let happen = Happen::new();
    let options = NodeOptions::new().max_concurrent(CONCURRENT);
    let worker = happen.node_with("worker", options).await.map_err(err)?;
    let src = happen.node("src").await.map_err(err)?;
    let done = Countdown::leaked(n);
    worker
        .on("work", move |e: Event, _ctx: Context| async move {
            black_box(&e);
            spin(rounds);
            done.hit();
        })
        .map_err(err)?;
    let start = Instant::now();
    let retries = tell_paced(&src, &worker, n, |i| Event::new("work", i)).await?;
    done.wait().await;
    let elapsed = start.elapsed();

    happen.shutdown(Duration::from_secs(5)).await;
    let sample = Sample::new(done.count(), elapsed);
    Ok(if retries > 0 {
        sample.with_note(format!("{retries} QueueFull retries"))
    } else {
        sample
    })
}

/// The spawning task yields every [`PACE_EVERY`] spawns (as often as happen's producer looks
/// at its pacing), so it does not hold its worker for the whole loop.
async fn floor_scale(n: u64, rounds: u64) -> RunResult {
    let done = Countdown::leaked(n);
    let start = Instant::now();
    for i in 0..n {
        if i % PACE_EVERY == 0 {
            tokio::task::yield_now().await;
        }
        tokio::spawn(async move {
            black_box(i);
            spin(rounds);
            done.hit();
        });
    }
    done.wait().await;
    Ok(Sample::new(n, start.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_finds_some_work() {
        let (rounds, cost) = calibrate();
        assert!(rounds >= 1);
        assert!(cost > Duration::ZERO);
    }
}

//! `admission`: what the admission limits cost, and what they do under overload.
//!
//! - `admission`: `tell` to a node whose handler awaits once (`yield_now`), so flows really
//!   are concurrent and the limit engages; default limits (100 concurrent, queue 10,000; the
//!   producer paced by backpressure as in `tell`) against `Limits::unlimited()`. The ratio is
//!   limits / unlimited. RSS is sampled in-process (see [`crate::rss`]).
//! - `admission-overload` (one fresh child process): a node with default limits whose handler
//!   holds each flow for 1 ms (nominal capacity 100 / 1 ms = 100k events/s) is offered 10× that
//!   (1M events/s) for 2 s. Reported: events offered/accepted/rejected (from `Node::stats`),
//!   accepted throughput (completed flows over the time until the node is idle again) and the
//!   child's peak RSS.

use std::hint::black_box;
use std::time::{Duration, Instant};

use happen::{Context, ErrorKind, Event, Happen, Limits, NodeOptions};

use super::{err, tell_paced};
use crate::measure::{Bench, Countdown, RunResult, Sample, summarize, system};
use crate::report::Row;
use crate::rss::{RssSampler, run_child};

/// How long each flow holds its slot in the overload run.
const HOLD: Duration = Duration::from_millis(1);
/// Offered load over nominal capacity in the overload run.
const OVERLOAD: f64 = 10.0;

pub(crate) fn run(bench: &Bench) -> Vec<Row> {
    let n = if bench.quick { 10_000 } else { 1_000_000 };
    let systems = [
        system("happen(limits)", |n| limited_tell(n, true)),
        system("happen(unlimited)", |n| limited_tell(n, false)),
    ];
    let mut rows = bench.compare("admission", n, &systems, "happen(unlimited)");
    for r in &mut rows {
        let what = "handler awaits once; ratio = limits/unlimited; RSS sampled in-process";
        r.note = if r.note.is_empty() {
            what.to_owned()
        } else {
            format!("{what}; {}", r.note)
        };
    }

    let millis = if bench.quick { 100 } else { 2_000 };
    eprintln!("admission-overload: child process, {millis} ms at {OVERLOAD}x capacity");
    rows.push(
        match run_child("admission-overload", "happen(limits)", millis) {
            Ok(s) => {
                let mut r = summarize("admission-overload", "happen(limits)", s.ops, &[s], None);
                r.note = format!("accepted throughput; {}", r.note);
                r
            }
            Err(e) => summarize("admission-overload", "happen(limits)", 0, &[], Some(e)),
        },
    );
    rows
}

async fn limited_tell(n: u64, limits: bool) -> RunResult {
    let happen = Happen::new();
    let options = if limits {
        NodeOptions::new()
    } else {
        let u = Limits::unlimited();
        NodeOptions::new()
            .max_concurrent(u.max_concurrent)
            .queue_limit(u.queue_limit)
    };
    let sink = happen.node_with("sink", options).await.map_err(err)?;
    let src = happen.node("src").await.map_err(err)?;
    let done = Countdown::leaked(n);
    sink.on("tick", move |e: Event, _ctx: Context| async move {
        tokio::task::yield_now().await;
        black_box(&e);
        done.hit();
    })
    .map_err(err)?;
    let rss = RssSampler::start();
    let start = Instant::now();
    let retries = tell_paced(&src, &sink, n, |i| Event::new("tick", i)).await?;
    done.wait().await;
    let elapsed = start.elapsed();
    let rss = rss.finish();
    let peak_queued = sink.stats().peak_queued;

    happen.shutdown(Duration::from_secs(5)).await;
    // Rounded, so that rounds agree and the row's note stays short.
    let queued = (peak_queued + 500) / 1_000 * 1_000;
    let mut sample = Sample::new(done.count(), elapsed).with_note(if retries > 0 {
        format!("peak queued ~{queued}, {retries} QueueFull retries")
    } else {
        format!("peak queued ~{queued}")
    });
    sample.rss = Some(rss);
    Ok(sample)
}

/// The overload run (in a child process): offers 10× nominal capacity for `millis` ms.
pub(crate) async fn overload(millis: u64) -> RunResult {
    let happen = Happen::new();
    let busy = happen.node("busy").await.map_err(err)?;
    let src = happen.node("src").await.map_err(err)?;
    busy.on("work", |e: Event, _ctx: Context| async move {
        tokio::time::sleep(HOLD).await;
        black_box(&e);
    })
    .map_err(err)?;
    let capacity = busy.limits().max_concurrent as f64 / HOLD.as_secs_f64();
    let rate = capacity * OVERLOAD;
    let window = Duration::from_millis(millis);

    let start = Instant::now();
    let mut offered = 0u64;
    loop {
        let now = start.elapsed();
        if now >= window {
            break;
        }
        let due = (rate * now.as_secs_f64()) as u64;
        while offered < due {
            match src.tell(&busy, Event::new("work", offered)) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::QueueFull => {}
                Err(e) => return Err(err(e)),
            }
            offered += 1;
        }
        tokio::task::yield_now().await;
    }
    let offered_for = start.elapsed();
    loop {
        let s = busy.stats();
        if s.active == 0 && s.queued == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = start.elapsed();
    let stats = busy.stats();

    happen.shutdown(Duration::from_secs(5)).await;
    let offered_rate = offered as f64 / offered_for.as_secs_f64();
    Ok(Sample::new(stats.completed, elapsed).with_note(format!(
        "offered {offered} ({:.0}k/s = {:.1}x nominal capacity {:.0}k/s); accepted {}, rejected {} ({:.1}%), peak queued {}, queue wait p99 {:?}",
        offered_rate / 1e3,
        offered_rate / capacity,
        capacity / 1e3,
        stats.accepted,
        stats.rejected,
        100.0 * stats.rejected as f64 / offered.max(1) as f64,
        stats.peak_queued,
        stats.queue_wait_p99,
    )))
}

//! `Emitter::try_emit`: never waits for the reader; a full buffer drops the new item
//! (`Ok(false)`); a cancelled consumer is `Err(Cancelled)`, counted as cancelled, not failed;
//! nobody reading (fire-and-forget) takes every item.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use happen::{Context, Emitter, ErrorKind, Event, Happen, Json, Node, NodeOptions};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::time::timeout;

const T: Duration = Duration::from_secs(10);
const BUFFER: usize = 4;

/// Counts what a producer's `try_emit`s did, across its flows.
#[derive(Default)]
struct Counts {
    taken: AtomicU64,
    dropped: AtomicU64,
    errors: Mutex<Vec<ErrorKind>>,
}

/// Offers `n` progress items with `try_emit`, yielding every `yield_every` items; answers
/// how many were taken and dropped.
async fn progress(
    Json((n, yield_every)): Json<(u64, u64)>,
    ctx: Context,
    emit: Emitter,
) -> happen::Result<Value> {
    let counts = ctx.state::<Arc<Counts>>().unwrap();
    let (mut taken, mut dropped) = (0u64, 0u64);
    for i in 0..n {
        if emit.try_emit(i)? {
            taken += 1;
        } else {
            dropped += 1;
        }
        if yield_every > 0 && i % yield_every == 0 {
            tokio::task::yield_now().await;
        }
    }
    counts.taken.fetch_add(taken, Ordering::SeqCst);
    counts.dropped.fetch_add(dropped, Ordering::SeqCst);
    Ok(json!({ "taken": taken, "dropped": dropped }))
}

async fn setup(happen: &Happen) -> (Node, Arc<Counts>) {
    let counts = Arc::new(Counts::default());
    let node = happen
        .node_with(
            "job",
            NodeOptions::new()
                .stream_buffer(BUFFER)
                .state(counts.clone()),
        )
        .await
        .unwrap();
    node.on("progress", progress).unwrap();
    (node, counts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_does_not_read_never_slows_the_producer() {
    let happen = Happen::new();
    let (node, _) = setup(&happen).await;
    let mut stream = node
        .send(&node, Event::new("progress", json!([10_000, 100])))
        .into_stream();
    // Nobody reads until the job is done: with `emit` it would wait on the full buffer.
    support::wait_until("the job to finish", || node.stats().completed == 1).await;
    let mut items = Vec::new();
    while let Some(item) = timeout(T, stream.next()).await.unwrap() {
        items.push(item.unwrap());
    }
    // The buffered items are the first ones; every later one was dropped.
    assert_eq!(items, [json!(0), json!(1), json!(2), json!(3)]);
    assert_eq!(
        stream.final_value(),
        Some(&json!({ "taken": BUFFER, "dropped": 10_000 - BUFFER }))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_reader_sees_an_ordered_subset_and_the_counts_add_up() {
    let happen = Happen::new();
    let (node, counts) = setup(&happen).await;
    let jobs = 8;
    let mut readers = Vec::new();
    for _ in 0..jobs {
        let mut stream = node
            .send(&node, Event::new("progress", json!([20_000, 10])))
            .into_stream();
        readers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some(item) = stream.next().await {
                seen.push(item.unwrap().as_u64().unwrap());
                if seen.len() % 16 == 0 {
                    tokio::time::sleep(Duration::from_micros(200)).await; // a slow reader
                }
            }
            (seen, stream.final_value().cloned().unwrap())
        }));
    }
    let mut total_seen = 0;
    for reader in readers {
        let (seen, end) = timeout(T, reader).await.unwrap().unwrap();
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "items arrive in order"
        );
        assert_eq!(end["taken"], seen.len() as u64, "every taken item is read");
        assert_eq!(
            end["taken"].as_u64().unwrap() + end["dropped"].as_u64().unwrap(),
            20_000
        );
        total_seen += seen.len() as u64;
    }
    assert_eq!(counts.taken.load(Ordering::SeqCst), total_seen);
    assert_eq!(
        counts.taken.load(Ordering::SeqCst) + counts.dropped.load(Ordering::SeqCst),
        jobs * 20_000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_consumer_is_an_error_for_try_emit_and_not_a_failure() {
    let happen = Happen::new();
    let counts = Arc::new(Counts::default());
    let node = happen
        .node_with(
            "spin",
            NodeOptions::new()
                .stream_buffer(BUFFER)
                .state(counts.clone()),
        )
        .await
        .unwrap();
    // Never awaits: only `try_emit` can notice the consumer went away.
    node.on(
        "spin",
        |_e: Event, ctx: Context, emit: Emitter| async move {
            let deadline = Instant::now() + T;
            let mut i = 0u64;
            while Instant::now() < deadline {
                if let Err(e) = emit.try_emit(i) {
                    ctx.state::<Arc<Counts>>()
                        .unwrap()
                        .errors
                        .lock()
                        .push(e.kind());
                    return Err(e);
                }
                i += 1;
            }
            Ok(json!("never cancelled"))
        },
    )
    .unwrap();
    let mut stream = node.send(&node, Event::new("spin", ())).into_stream();
    assert_eq!(
        timeout(T, stream.next()).await.unwrap().unwrap().unwrap(),
        0
    );
    drop(stream);
    // `active` drops before the flow is counted: wait for the count.
    support::wait_until("the producer to be counted", || {
        let s = node.stats();
        s.completed + s.failed + s.cancelled == 1
    })
    .await;
    assert_eq!(*counts.errors.lock(), [ErrorKind::Cancelled]);
    let stats = node.stats();
    assert_eq!((stats.cancelled, stats.failed), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nobody_reading_every_item_is_taken() {
    let happen = Happen::new();
    let counts = Arc::new(Counts::default());
    // One slot, held by a job that waits for `gate`: the reply below is dropped before its
    // flow can start (a flow that starts first meets a live reader that does not read).
    let node = happen
        .node_with(
            "job",
            NodeOptions::new()
                .max_concurrent(1)
                .stream_buffer(BUFFER)
                .state(counts.clone()),
        )
        .await
        .unwrap();
    node.on("progress", progress).unwrap();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g = gate.clone();
    node.on("hold", move |_e: Event, _c: Context| {
        let g = g.clone();
        async move { drop(g.acquire().await) }
    })
    .unwrap();
    node.tell(&node, Event::new("hold", ())).unwrap();
    support::wait_until("the slot to be taken", || node.stats().active == 1).await;
    // A dropped reply (fire-and-forget) and a `tell` (no reply at all).
    drop(node.send(&node, Event::new("progress", json!([1_000, 0]))));
    node.tell(&node, Event::new("progress", json!([1_000, 0])))
        .unwrap();
    gate.add_permits(1);
    support::wait_until("all jobs to finish", || node.stats().completed == 3).await;
    assert_eq!(counts.taken.load(Ordering::SeqCst), 2_000);
    assert_eq!(counts.dropped.load(Ordering::SeqCst), 0);
}

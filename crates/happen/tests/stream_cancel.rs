//! Dropping a stream's consumer cancels its producer: the producing flow stops promptly, its
//! cleanup runs, no task is left behind. An unconsumed reply (fire-and-forget) is not cancelled.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use futures::StreamExt;
use happen::{Context, Emitter, Event, Happen, Node, NodeOptions};
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::oneshot;
use tokio::time::timeout;

const T: Duration = Duration::from_secs(10);
/// How long a cancelled producer may take to stop. Cancellation is event-driven (the consumer's
/// drop wakes the producing flow), so this is generous.
const STOP_BOUND: Duration = Duration::from_secs(1);
const BUFFER: usize = 4;

/// Fires its oneshot when dropped: the producer's `finally`.
struct CleanupGuard(Option<oneshot::Sender<()>>);

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

type GuardSlot = Arc<Mutex<Option<oneshot::Sender<()>>>>;

/// A producer node whose `endless` handler emits forever and whose `parked` handler emits 10
/// items then waits forever on something other than `emit`. Both hold a cleanup guard.
async fn setup(happen: &Happen) -> (Node, Arc<AtomicU64>, GuardSlot) {
    let producer = happen
        .node_with("producer", NodeOptions::new().stream_buffer(BUFFER))
        .await
        .unwrap();
    let emitted = Arc::new(AtomicU64::new(0));
    let slot: GuardSlot = Arc::new(Mutex::new(None));

    let (e, s) = (emitted.clone(), slot.clone());
    producer
        .on("endless", move |_e: Event, _c: Context, emit: Emitter| {
            let (emitted, guard) = (e.clone(), CleanupGuard(s.lock().take()));
            async move {
                let _guard = guard;
                emit_forever(&emit, &emitted).await
            }
        })
        .unwrap();

    let (e, s) = (emitted.clone(), slot.clone());
    producer
        .on("parked", move |_e: Event, _c: Context, emit: Emitter| {
            let (emitted, guard) = (e.clone(), CleanupGuard(s.lock().take()));
            async move {
                let _guard = guard;
                for i in 0..10u64 {
                    emit.emit(i).await?;
                    emitted.fetch_add(1, SeqCst);
                }
                // Not in `emit`: the cancellation must still reach this flow.
                std::future::pending::<()>().await;
                Ok::<_, happen::Error>(())
            }
        })
        .unwrap();

    producer
        .on("ping", |_e: Event, _c: Context| async { json!("pong") })
        .unwrap();
    (producer, emitted, slot)
}

async fn emit_forever(emit: &Emitter, emitted: &AtomicU64) -> happen::Result<()> {
    for i in 0u64.. {
        emit.emit(i).await?;
        emitted.fetch_add(1, SeqCst);
    }
    Ok(())
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Yields until `cond` holds (the driver tasks run in between); fails after `T`.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    timeout(T, async {
        while !cond() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting until {what}"));
}

async fn dropping_the_consumer_stops_the_producer(event_type: &'static str) {
    let happen = Happen::new();
    let (producer, emitted, slot) = setup(&happen).await;
    let client = happen.node("client").await.unwrap();
    // A flow that waits runs in its own task; a node's drivers are tasks too, started on
    // demand (at most one per worker). Start the producer's first driver before counting.
    let pong = timeout(T, client.send(&producer, Event::new("ping", ())))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pong, "pong");
    let baseline = alive_tasks();
    let workers = tokio::runtime::Handle::current().metrics().num_workers();

    let (cleaned_tx, cleaned_rx) = oneshot::channel();
    *slot.lock() = Some(cleaned_tx);
    let mut stream = client
        .send(&producer, Event::new(event_type, ()))
        .into_stream();
    for i in 0..10u64 {
        let item = timeout(T, stream.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(item, i);
    }
    assert_eq!(producer.stats().active, 1);
    drop(stream);

    timeout(STOP_BOUND, cleaned_rx)
        .await
        .expect("the producer's cleanup guard ran within the bound")
        .expect("the guard fired its oneshot");

    // The producer emitted at most what the buffer could take beyond the 10 consumed items
    // (+1: the send it was blocked in may have completed when the consumer took an item).
    let stopped_at = emitted.load(SeqCst);
    assert!(
        (10..=10 + BUFFER as u64 + 1).contains(&stopped_at),
        "emitted {stopped_at}"
    );
    // A finishing flow gives its slot back before it is counted: wait for both.
    eventually("the flow is no longer active and is counted", || {
        let s = producer.stats();
        s.active == 0 && s.completed + s.failed + s.cancelled == 2
    })
    .await;
    let stats = producer.stats();
    assert_eq!(
        (stats.completed, stats.failed, stats.cancelled),
        (1, 0, 1),
        "the warm-up ping completed; a flow its consumer cancelled counts as cancelled, not failed"
    );
    assert_eq!(
        (
            stats.unobserved_failures,
            client.stats().unobserved_failures
        ),
        (0, 0),
        "a stream its consumer cancelled is not reported as a failure nobody saw"
    );

    // The node's driver keeps running (it answers), and the producer emitted nothing more.
    let pong = timeout(T, client.send(&producer, Event::new("ping", ())))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pong, "pong");
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        emitted.load(SeqCst),
        stopped_at,
        "the producer kept emitting"
    );
    // The cancelled flow's task is gone; a second driver may have started meanwhile on a
    // multi-thread runtime.
    assert!(
        alive_tasks() <= baseline + (workers - 1),
        "a task was left running: {} alive, {baseline} before",
        alive_tasks()
    );
}

#[tokio::test]
async fn dropping_the_consumer_stops_a_producer_blocked_in_emit() {
    dropping_the_consumer_stops_the_producer("endless").await;
}

#[tokio::test]
async fn dropping_the_consumer_stops_a_producer_waiting_elsewhere() {
    dropping_the_consumer_stops_the_producer("parked").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_consumer_stops_the_producer_on_a_multi_thread_runtime() {
    dropping_the_consumer_stops_the_producer("endless").await;
}

/// Dropping an awaited reply (here: a timeout around it) cancels the producer too.
#[tokio::test]
async fn abandoning_an_awaited_streaming_reply_stops_the_producer() {
    let happen = Happen::new();
    let (producer, _emitted, slot) = setup(&happen).await;
    let client = happen.node("client").await.unwrap();
    let (cleaned_tx, cleaned_rx) = oneshot::channel();
    *slot.lock() = Some(cleaned_tx);
    let reply = client.send(&producer, Event::new("parked", ()));
    // The flow never ends, so the await times out and the reply future is dropped.
    assert!(timeout(Duration::from_millis(50), reply).await.is_err());
    timeout(STOP_BOUND, cleaned_rx)
        .await
        .expect("the producer's cleanup guard ran within the bound")
        .unwrap();
    // A finishing flow gives its slot back before it is counted: wait for both.
    eventually("the flow is no longer active and is counted", || {
        let s = producer.stats();
        s.active == 0 && s.cancelled == 1
    })
    .await;
}

/// A reply dropped without being read is fire-and-forget: the stream's items are discarded
/// and the producer runs to its end (it is not cancelled).
#[tokio::test]
async fn an_unread_streaming_reply_lets_the_producer_finish() {
    let happen = Happen::new();
    let producer = happen
        .node_with("producer", NodeOptions::new().stream_buffer(BUFFER))
        .await
        .unwrap();
    let (done_tx, done_rx) = oneshot::channel::<u64>();
    let done = Arc::new(Mutex::new(Some(done_tx)));
    producer
        .on("count", move |_e: Event, _c: Context, emit: Emitter| {
            let done = done.clone();
            async move {
                let mut n = 0;
                for i in 0..100u64 {
                    emit.emit(i).await?;
                    n += 1;
                }
                if let Some(tx) = done.lock().take() {
                    let _ = tx.send(n);
                }
                Ok::<_, happen::Error>(n)
            }
        })
        .unwrap();
    let client = happen.node("client").await.unwrap();
    drop(client.send(&producer, Event::new("count", ())));
    // 100 items through a buffer of 4 with nobody reading: only possible if they are discarded.
    let n = timeout(T, done_rx).await.unwrap().unwrap();
    assert_eq!(n, 100);
    eventually("the flow completed", || producer.stats().completed == 1).await;
    assert_eq!(producer.stats().failed, 0);
}

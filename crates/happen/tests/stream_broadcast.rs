//! Broadcast streams: every subscriber reads at its own pace; a slow one lags (and is told by
//! how much) without slowing the producer or the other subscribers.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use happen::stream::StreamItem;
use happen::{Config, Context, Emitter, Event, Happen};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

const T: Duration = Duration::from_secs(10);
/// Per-subscriber buffer. A power of two: the underlying channel rounds its capacity up to one.
const BUFFER: usize = 64;
/// Items produced: far more than the buffer, so a subscriber that reads none of them lags.
const N: u64 = 300;

/// What one subscriber saw: its node, the items (and lag notices) in order, and how it ended.
type Seen = (
    String,
    Vec<StreamItem>,
    Result<Option<Value>, happen::Error>,
);

// Deterministic pacing: a current_thread runtime, and the producer yields after each emit, so
// the fast subscribers (each on its own node's driver task) take every item before the next
// one is produced; at most a handful pile up while the flows start, far below BUFFER.
#[tokio::test]
async fn a_slow_subscriber_lags_without_blocking_the_producer_or_the_others() {
    let mut config = Config::default();
    config.streams.broadcast_buffer = BUFFER;
    let happen = Happen::with_config(config).unwrap();

    let source = happen.node("source").await.unwrap();
    source
        .on(
            "ticks",
            |_e: Event, _c: Context, emit: Emitter| async move {
                for i in 0..N {
                    emit.emit(i).await?;
                    tokio::task::yield_now().await;
                }
                Ok::<_, happen::Error>(json!({ "ticks": N }))
            },
        )
        .unwrap();

    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<Seen>();
    // The slow subscriber waits on this gate before reading anything.
    let (gate_tx, gate_rx) = oneshot::channel::<()>();
    let gate = Arc::new(Mutex::new(Some(gate_rx)));
    for name in ["fast-1", "fast-2", "slow"] {
        let node = happen.node(name).await.unwrap();
        let (seen_tx, gate) = (seen_tx.clone(), gate.clone());
        node.on("ticks", move |_e: Event, ctx: Context| {
            let seen_tx = seen_tx.clone();
            let gate = if name == "slow" {
                gate.lock().take()
            } else {
                None
            };
            async move {
                let mut items = ctx.items().expect("the broadcast carries a stream");
                if let Some(gate) = gate {
                    let _ = gate.await;
                }
                let mut seen = Vec::new();
                let mut end = Ok(None);
                while let Some(item) = items.next().await {
                    match item {
                        Ok(item) => seen.push(item),
                        Err(e) => end = Err(e),
                    }
                }
                if end.is_ok() {
                    end = Ok(items.final_value().cloned());
                }
                let _ = seen_tx.send((name.to_owned(), seen, end));
            }
        })
        .unwrap();
    }
    drop(seen_tx);

    source.broadcast(Event::new("ticks", ())).unwrap();

    // The two fast subscribers finish with every item, while the slow one is still gated.
    let mut fast = Vec::new();
    for _ in 0..2 {
        let got = timeout(T, seen_rx.recv()).await.unwrap().unwrap();
        fast.push(got);
    }
    // The producer is not blocked by the slow subscriber: it finishes while that one waits.
    timeout(T, async {
        while source.stats().completed == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the producer finished while the slow subscriber was gated");
    assert_eq!(source.stats().failed, 0);

    let every: Vec<StreamItem> = (0..N).map(|i| StreamItem::Item(i.into())).collect();
    fast.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, items, end) in &fast {
        assert!(
            name.starts_with("fast"),
            "{name} finished before the gate opened"
        );
        assert_eq!(items, &every, "{name} got every item in order");
        assert_eq!(
            end.as_ref().unwrap(),
            &Some(json!({ "ticks": N })),
            "{name}"
        );
    }

    gate_tx.send(()).unwrap();
    let (name, items, end) = timeout(T, seen_rx.recv()).await.unwrap().unwrap();
    assert_eq!(name, "slow");
    // Lag policy: the slow subscriber first learns how many items it missed, then reads the
    // oldest items still buffered -- the newest ones, contiguous up to the last -- then the
    // final value. Its buffer holds BUFFER frames and the end of the stream is one of them,
    // so BUFFER - 1 items remain.
    let kept = BUFFER as u64 - 1;
    let missed = N - kept;
    let mut expected = vec![StreamItem::Lagged(missed)];
    expected.extend((missed..N).map(|i| StreamItem::Item(i.into())));
    assert_eq!(items, expected);
    assert_eq!(end.unwrap(), Some(json!({ "ticks": N })));
}

/// Subscribers that keep up see no lag notice even when the stream is much longer than the
/// buffer, and a failing producer's error reaches every subscriber after its items.
#[tokio::test]
async fn a_producer_error_reaches_every_subscriber_after_the_items() {
    let mut config = Config::default();
    config.streams.broadcast_buffer = BUFFER;
    let happen = Happen::with_config(config).unwrap();
    let source = happen.node("source").await.unwrap();
    source
        .on(
            "ticks",
            |_e: Event, _c: Context, emit: Emitter| async move {
                for i in 0..3u64 {
                    emit.emit(i).await?;
                }
                Err::<(), happen::BoxError>("sensor unplugged".into())
            },
        )
        .unwrap();
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<Seen>();
    for name in ["a", "b"] {
        let node = happen.node(name).await.unwrap();
        let seen_tx = seen_tx.clone();
        node.on("ticks", move |_e: Event, ctx: Context| {
            let seen_tx = seen_tx.clone();
            async move {
                let mut items = ctx.items().expect("a stream");
                let mut seen = Vec::new();
                let mut end = Ok(None);
                while let Some(item) = items.next().await {
                    match item {
                        Ok(item) => seen.push(item),
                        Err(e) => end = Err(e),
                    }
                }
                let _ = seen_tx.send((name.to_owned(), seen, end));
            }
        })
        .unwrap();
    }
    source.broadcast(Event::new("ticks", ())).unwrap();
    for _ in 0..2 {
        let (name, items, end) = timeout(T, seen_rx.recv()).await.unwrap().unwrap();
        let expected: Vec<StreamItem> = (0..3u64).map(|i| StreamItem::Item(i.into())).collect();
        assert_eq!(items, expected, "{name}");
        let err = end.expect_err("the producer's error");
        assert_eq!(err.kind(), happen::ErrorKind::Handler);
        assert_eq!(err.message(), "sensor unplugged");
    }
}

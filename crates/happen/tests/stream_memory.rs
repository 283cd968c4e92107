//! Backpressure: a long stream read slowly keeps a constant number of items in flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use futures::StreamExt;
use happen::{Context, Emitter, Event, Happen, NodeOptions};
use serde_json::json;
use tokio::time::timeout;

const BUFFER: u64 = 16;
const ITEMS: u64 = 1_000_000;

#[derive(Default)]
struct Counters {
    /// Incremented by the producer after each successful emit.
    produced: AtomicU64,
    /// Incremented by the consumer for each item it received.
    consumed: AtomicU64,
    /// The most `produced - consumed` the producer ever saw.
    high_water: AtomicU64,
}

// The bound, precisely. The channel holds at most BUFFER items (the permit of an item is
// returned when the consumer takes it). `produced` counts items already in the channel or
// taken; `consumed` lags the items taken by at most one (the item the consumer holds between
// taking it and counting it). So `produced - consumed <= BUFFER + 1`, and nothing else
// (no other queue, no task per item) holds items: memory is bounded by the buffer, whatever
// the stream's length. On this current_thread runtime the consumer counts an item before it
// can yield, so the producer actually sees at most BUFFER; BUFFER + 1 is the bound that holds
// on any runtime.
#[tokio::test]
async fn a_million_items_read_slowly_stay_within_the_buffer() {
    let happen = Happen::new();
    let producer = happen
        .node_with(
            "producer",
            NodeOptions::new().stream_buffer(BUFFER as usize),
        )
        .await
        .unwrap();
    let client = happen.node("client").await.unwrap();
    let counters = Arc::new(Counters::default());

    let c = counters.clone();
    producer
        .on(
            "numbers",
            move |event: Event, _ctx: Context, emit: Emitter| {
                let c = c.clone();
                async move {
                    let n = event.payload().as_u64().unwrap_or(0);
                    for i in 0..n {
                        emit.emit(i).await?;
                        let produced = c.produced.fetch_add(1, SeqCst) + 1;
                        let in_flight = produced - c.consumed.load(SeqCst);
                        c.high_water.fetch_max(in_flight, SeqCst);
                    }
                    Ok::<_, happen::Error>(json!({ "sent": n }))
                }
            },
        )
        .unwrap();

    let mut stream = client
        .send(&producer, Event::new("numbers", ITEMS))
        .into_stream();
    let mut high_water_early = None;
    let mut expected = 0u64;
    let consume = async {
        while let Some(item) = stream.next().await {
            let v = item.expect("no error");
            assert_eq!(v, expected, "items in order");
            // Also check from the consumer's side, before counting the item it holds.
            let in_flight = counters.produced.load(SeqCst) - counters.consumed.load(SeqCst);
            assert!(
                in_flight <= BUFFER + 1,
                "{in_flight} items in flight at item {expected}"
            );
            counters.consumed.fetch_add(1, SeqCst);
            expected += 1;
            if expected == 10_000 {
                high_water_early = Some(counters.high_water.load(SeqCst));
            }
            // A slow consumer: let the producer run (and fill the buffer) before each item.
            tokio::task::yield_now().await;
        }
    };
    timeout(Duration::from_secs(300), consume)
        .await
        .expect("the stream completes");
    assert_eq!(expected, ITEMS);
    assert_eq!(stream.final_value(), Some(&json!({ "sent": ITEMS })));
    assert_eq!(counters.produced.load(SeqCst), ITEMS);
    assert_eq!(counters.consumed.load(SeqCst), ITEMS);

    let high_water = counters.high_water.load(SeqCst);
    assert!(
        high_water <= BUFFER + 1,
        "{high_water} items were produced but unconsumed at once (bound {})",
        BUFFER + 1
    );
    // The buffer really filled (the consumer was the slow side), so the bound was binding...
    assert!(high_water >= BUFFER, "high water {high_water}");
    // ...and it did not grow with the stream's length: the same after 10k items as after 1M.
    assert_eq!(high_water_early, Some(high_water));
    // `active` is updated by the node's driver just after the flow answers.
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while producer.stats().active != 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the finished stream is no longer active");
}

//! Streaming flows hold their admission slot until the stream ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use futures::StreamExt;
use happen::{Context, Emitter, Event, Happen, NodeOptions, ReplyStream};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::time::timeout;

const T: Duration = Duration::from_secs(10);

async fn next_item(stream: &mut ReplyStream) -> serde_json::Value {
    timeout(T, stream.next())
        .await
        .expect("an item in time")
        .expect("an item, not the end")
        .expect("no error")
}

#[tokio::test(start_paused = true)]
async fn a_third_stream_waits_for_a_slot_under_max_concurrent_2() {
    let happen = Happen::new();
    let producer = happen
        .node_with("producer", NodeOptions::new().max_concurrent(2))
        .await
        .unwrap();
    // Replies wait longer than this test's virtual minute.
    let client = happen
        .node_with(
            "client",
            NodeOptions::new().request_timeout(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    // Each stream, once started, emits one item and then waits for a permit to finish.
    let finish = Arc::new(Semaphore::new(0));
    let (s, f) = (started.clone(), finish.clone());
    producer
        .on("report", move |event: Event, _c: Context, emit: Emitter| {
            let (started, finish) = (s.clone(), f.clone());
            async move {
                started.fetch_add(1, SeqCst);
                let id = event.payload().clone();
                emit.emit(json!({ "started": id })).await?;
                finish.acquire().await.expect("open").forget();
                emit.emit(json!({ "finishing": id })).await?;
                Ok::<_, happen::Error>(json!({ "done": id }))
            }
        })
        .unwrap();

    let mut streams: Vec<ReplyStream> = (0..3)
        .map(|i| {
            client
                .send(&producer, Event::new("report", i))
                .into_stream()
        })
        .collect();

    // The first two start (FIFO) and stream...
    for (i, stream) in streams.iter_mut().take(2).enumerate() {
        assert_eq!(next_item(stream).await, json!({ "started": i }));
    }
    // ...the third waits in the queue, whatever time passes.
    assert!(
        timeout(Duration::from_secs(60), streams[2].next())
            .await
            .is_err(),
        "the third stream produced while two streams held both slots"
    );
    assert_eq!(started.load(SeqCst), 2);
    let stats = producer.stats();
    assert_eq!((stats.active, stats.queued), (2, 1), "{stats:?}");

    // Let one stream finish; the consumer reads it to its end.
    finish.add_permits(1);
    let mut first = streams.remove(0);
    assert_eq!(next_item(&mut first).await, json!({ "finishing": 0 }));
    assert!(timeout(T, first.next()).await.unwrap().is_none());
    assert_eq!(first.final_value(), Some(&json!({ "done": 0 })));

    // Its slot goes to the waiting stream.
    let mut third = streams.remove(1);
    assert_eq!(next_item(&mut third).await, json!({ "started": 2 }));
    assert_eq!(started.load(SeqCst), 3);
    let stats = producer.stats();
    assert_eq!((stats.active, stats.queued), (2, 0), "{stats:?}");

    finish.add_permits(2);
    for stream in [streams.remove(0), third] {
        let v = timeout(T, stream.skip_to_final()).await.unwrap().unwrap();
        assert!(v["done"].is_u64(), "{v}");
    }
    let stats = producer.stats();
    assert_eq!((stats.active, stats.completed), (0, 3), "{stats:?}");
}

//! Streams over NATS: credit-based flow control, the end frame with the final value, the error
//! frame, and cancellation when the consumer drops the stream.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{instance, instance_with, within};
use futures::StreamExt;
use happen::{Context, Emitter, ErrorKind, Event};
use happen_nats::NatsConfig;
use serde_json::json;
use test_support::NatsServer;
use tokio::sync::oneshot;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_100k_items_respects_the_credit() {
    let server = NatsServer::start();
    const WINDOW: usize = 64;
    let mut config = NatsConfig::with_server(server.url());
    config.stream_window = WINDOW;
    let (producer_h, producer_t) = instance_with(config.clone()).await;
    let (consumer_h, consumer_t) = instance_with(config).await;
    let emitted = Arc::new(AtomicU64::new(0));
    let e = emitted.clone();
    let counter = producer_h.node("counter").await.unwrap();
    counter
        .on("count", move |event: Event, _c: Context, emit: Emitter| {
            let e = e.clone();
            async move {
                let n = event.payload().as_u64().unwrap();
                for i in 0..n {
                    emit.emit(i).await?;
                    e.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, happen::Error>(json!({"total": n}))
            }
        })
        .unwrap();
    let client = consumer_h.node("client").await.unwrap();
    let mut stream = client
        .send("counter", Event::new("count", 100_000))
        .into_stream();
    let mut received = 0u64;
    let mut max_ahead = 0u64;
    while let Some(item) = within(30, "next item", stream.next()).await {
        assert_eq!(item.unwrap(), json!(received));
        received += 1;
        let ahead = emitted.load(Ordering::Relaxed).saturating_sub(received);
        max_ahead = max_ahead.max(ahead);
        if received.is_multiple_of(10_000) {
            // a slow moment: the producer must stop at the credit, not run ahead
            tokio::time::sleep(Duration::from_millis(20)).await;
            let ahead = emitted.load(Ordering::Relaxed).saturating_sub(received);
            max_ahead = max_ahead.max(ahead);
        }
    }
    assert_eq!(received, 100_000);
    assert_eq!(stream.final_value(), Some(&json!({"total": 100_000})));
    let in_flight = producer_t.stats().max_stream_in_flight;
    assert!(
        in_flight <= WINDOW as u64,
        "in flight {in_flight} > credit {WINDOW}"
    );
    assert!(in_flight > 0);
    // end to end: the window, plus the producer's and consumer's local buffers (64 + 16)
    assert!(
        max_ahead <= (WINDOW + 64 + WINDOW / 4 + 2) as u64,
        "producer ran {max_ahead} ahead"
    );
    assert_eq!(consumer_t.stats().protocol_errors, 0);
    assert_eq!(producer_t.stats().stream_items, 100_000);
}

struct Cleanup(Option<oneshot::Sender<()>>);
impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_remote_stream_cancels_the_producer() {
    let server = NatsServer::start();
    let (producer_h, _) = instance(&server.url()).await;
    let (consumer_h, _) = instance(&server.url()).await;
    let (done_tx, done_rx) = oneshot::channel();
    let done_tx = Arc::new(parking_lot::Mutex::new(Some(done_tx)));
    let ticker = producer_h.node("ticker").await.unwrap();
    ticker
        .on("ticks", move |_e: Event, _c: Context, emit: Emitter| {
            let guard = Cleanup(done_tx.lock().take());
            async move {
                let _guard = guard;
                let mut i = 0u64;
                loop {
                    emit.emit(i).await?;
                    i += 1;
                }
                #[allow(unreachable_code)]
                Ok::<_, happen::Error>(())
            }
        })
        .unwrap();
    let client = consumer_h.node("client").await.unwrap();
    let mut stream = client.send("ticker", Event::new("ticks", ())).into_stream();
    for i in 0..10u64 {
        let v = within(10, "item", stream.next()).await.unwrap().unwrap();
        assert_eq!(v, json!(i));
    }
    drop(stream);
    within(10, "producer cleanup after cancel", done_rx)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_stream_error_reaches_the_consumer() {
    let server = NatsServer::start();
    let (producer_h, _) = instance(&server.url()).await;
    let (consumer_h, _) = instance(&server.url()).await;
    let node = producer_h.node("flaky").await.unwrap();
    node.on("go", |_e: Event, _c: Context, emit: Emitter| async move {
        emit.emit(1).await?;
        emit.emit(2).await?;
        Err::<(), happen::Error>(happen::Error::new(ErrorKind::Handler, "disk on fire"))
    })
    .unwrap();
    let client = consumer_h.node("client").await.unwrap();
    let mut stream = client.send("flaky", Event::new("go", ())).into_stream();
    assert_eq!(within(10, "1", stream.next()).await.unwrap().unwrap(), 1);
    assert_eq!(within(10, "2", stream.next()).await.unwrap().unwrap(), 2);
    let err = within(10, "err", stream.next()).await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Handler);
    assert_eq!(err.message(), "disk on fire");
    assert!(within(10, "end", stream.next()).await.is_none());

    // awaiting a streaming reply directly yields the final value
    node.on(
        "short",
        |_e: Event, _c: Context, emit: Emitter| async move {
            emit.emit("x").await?;
            Ok::<_, happen::Error>("fin")
        },
    )
    .unwrap();
    let v = within(10, "final", client.send("flaky", Event::new("short", ())))
        .await
        .unwrap();
    assert_eq!(v, "fin");
}

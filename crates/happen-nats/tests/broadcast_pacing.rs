//! Broadcasts are paced by the receiving node's backpressure: a burst far larger than the
//! node's queue is handled completely (the subscription buffer absorbs it), while requests to
//! the same node are still admitted or answered with `QueueFull` at once.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{instance, within};
use happen::{Context, ErrorKind, Event, Node, NodeOptions};
use happen_nats::NatsTransport;
use test_support::NatsServer;
use tokio::sync::{Notify, Semaphore};

/// Broadcasts `n` events of `event_type`, waiting for room when the outgoing buffer is full.
async fn broadcast_all(node: &Node, transport: &NatsTransport, event_type: &str, n: u64) {
    for i in 0..n {
        let event = Event::new(event_type.to_owned(), i);
        loop {
            match node.broadcast(event.clone()) {
                Ok(()) => break,
                Err(e) if e.kind() == ErrorKind::Transport && transport.is_backlogged() => {
                    within(30, "room in the outgoing buffer", transport.ready())
                        .await
                        .unwrap();
                }
                Err(e) => panic!("broadcast {i} failed: {e}"),
            }
        }
    }
}

/// Counts handled events; `wait(n)` resolves once `n` were handled.
#[derive(Clone, Default)]
struct Counter {
    count: Arc<AtomicU64>,
    changed: Arc<Notify>,
}

impl Counter {
    fn hit(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.changed.notify_waiters();
    }
    fn get(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
    async fn wait(&self, n: u64) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.get() >= n {
                return;
            }
            notified.await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_burst_larger_than_the_queue_is_handled_completely() {
    const N: u64 = 50_000;
    let server = NatsServer::start();
    let (sink_h, sink_t) = instance(&server.url()).await;
    let (source_h, source_t) = instance(&server.url()).await;
    let sink = sink_h
        .node_with(
            "sink",
            NodeOptions::new().max_concurrent(20).queue_limit(100),
        )
        .await
        .unwrap();
    let handled = Counter::default();
    let h = handled.clone();
    sink.on("tick", move |_e: Event, _c: Context| {
        let h = h.clone();
        async move {
            // slow: at most 20 at a time, each a timer tick (≥ 1 ms); far slower than the
            // publisher, so the node's queue of 100 would overflow many times over
            tokio::time::sleep(Duration::from_millis(1)).await;
            h.hit();
        }
    })
    .unwrap();
    let source = source_h.node("source").await.unwrap();

    broadcast_all(&source, &source_t, "tick", N).await;
    within(180, "every broadcast handled", handled.wait(N)).await;

    let stats = sink.stats();
    assert_eq!(handled.get(), N);
    assert_eq!(stats.rejected, 0, "{stats:?}");
    assert_eq!(stats.unobserved_failures, 0, "{stats:?}");
    assert!(stats.peak_queued <= 100, "{stats:?}");
    assert_eq!(sink_t.stats().slow_consumer, 0);
    assert_eq!(source_t.stats().broadcasts, N);
    source_h.shutdown(Duration::from_secs(5)).await;
    sink_h.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_admitted_or_rejected_at_once_while_broadcasts_wait() {
    const N: u64 = 100;
    let server = NatsServer::start();
    let (sink_h, _) = instance(&server.url()).await;
    let (source_h, source_t) = instance(&server.url()).await;
    // under pressure from 8 waiting events, full at 10
    let sink = sink_h
        .node_with(
            "sink",
            NodeOptions::new()
                .max_concurrent(1)
                .queue_limit(10)
                .backpressure_threshold(0.8),
        )
        .await
        .unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let handled = Counter::default();
    let (g, h) = (gate.clone(), handled.clone());
    sink.on("work", move |_e: Event, _c: Context| {
        let (g, h) = (g.clone(), h.clone());
        async move {
            g.acquire().await.unwrap().forget();
            h.hit();
        }
    })
    .unwrap();
    sink.on("ping", |_e: Event, _c: Context| async move { "pong" })
        .unwrap();
    let source = source_h.node("source").await.unwrap();
    let mut pressure = sink.watch_pressure();

    broadcast_all(&source, &source_t, "work", N).await;
    within(
        10,
        "the sink under pressure",
        pressure.wait_for(|p| p.under_pressure),
    )
    .await
    .unwrap();
    // the remaining broadcasts wait in the subscription; requests still get through: the
    // first fill the queue, the last finds it full and hears so at once
    let first = source.send("sink", Event::new("ping", ()));
    let second = source.send("sink", Event::new("ping", ()));
    let third = source.send("sink", Event::new("ping", ()));
    let err = within(10, "a prompt QueueFull", third).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::QueueFull, "{err}");
    assert_eq!(err.limit(), Some(10));
    assert!(handled.get() < N);

    gate.add_permits(N as usize);
    within(30, "every broadcast handled", handled.wait(N)).await;
    assert_eq!(within(10, "the first ping", first).await.unwrap(), "pong");
    // the second ping was admitted unless a broadcast took its place before the pressure
    // report was seen
    let rejected = match within(10, "the second ping", second).await {
        Ok(v) => {
            assert_eq!(v, "pong");
            1
        }
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::QueueFull, "{e}");
            2
        }
    };
    let stats = sink.stats();
    assert_eq!(handled.get(), N);
    assert_eq!(
        stats.rejected, rejected,
        "only pings are rejected: {stats:?}"
    );
    source_h.shutdown(Duration::from_secs(5)).await;
    sink_h.shutdown(Duration::from_secs(5)).await;
}

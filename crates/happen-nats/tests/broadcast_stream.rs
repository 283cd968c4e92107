//! Broadcast streams across processes: a streaming handler in one instance produces the items,
//! the receivers of the same broadcast in another instance read them through `ctx.items()`,
//! each with its own bounded buffer; a slow one lags (and is told by how much) without holding
//! up the producer; the final value or the producer's error ends every subscriber's stream.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{instance_with, within};
use futures::StreamExt;
use happen::stream::StreamItem;
use happen::{Context, Emitter, ErrorKind, Event, Happen};
use happen_nats::NatsConfig;
use parking_lot::Mutex;
use serde_json::{Value, json};
use test_support::NatsServer;
use tokio::sync::{mpsc, oneshot};

/// What one dashboard saw: its name, the items and lag notices in order, and how it ended.
type Seen = (
    String,
    Vec<StreamItem>,
    Result<Option<Value>, happen::Error>,
);

/// Hosts `monitor`: waits until `ready` subscribers have started (so none misses the first
/// items), then emits `n` items (paced, so fast subscribers keep up) and ends with
/// `{"items": n}`, or fails after `fail_after` items. Signals `done` when it has finished.
async fn monitor(
    h: &Happen,
    n: u64,
    fail_after: Option<u64>,
    ready: mpsc::UnboundedReceiver<()>,
    readers: usize,
    done: oneshot::Sender<()>,
) {
    let ready_rx = Arc::new(tokio::sync::Mutex::new(ready));
    let done = Arc::new(Mutex::new(Some(done)));
    let node = h.node("monitor").await.unwrap();
    node.on("metrics", move |_e: Event, _c: Context, emit: Emitter| {
        let (ready_rx, done) = (ready_rx.clone(), done.clone());
        async move {
            {
                let mut ready = ready_rx.lock().await;
                for _ in 0..readers {
                    within(10, "the dashboards to start", ready.recv())
                        .await
                        .unwrap();
                }
            }
            for i in 0..n {
                if fail_after == Some(i) {
                    let _ = done.lock().take().map(|d| d.send(()));
                    return Err(happen::Error::new(ErrorKind::Handler, "sensor failed")
                        .with_code("sensor_failed"));
                }
                emit.emit(i).await?;
                // paces the producer (not a synchronisation): fast readers keep up
                tokio::time::sleep(Duration::from_micros(300)).await;
            }
            let _ = done.lock().take().map(|d| d.send(()));
            Ok::<_, happen::Error>(json!({ "items": n }))
        }
    })
    .unwrap();
}

/// Hosts dashboards `names` on `h`; each signals `ready` once it holds its items, the ones in
/// `gated` then wait for their gate before reading.
async fn dashboards(
    h: &Happen,
    names: &[&'static str],
    ready: mpsc::UnboundedSender<()>,
    seen: mpsc::UnboundedSender<Seen>,
    gate: Option<(&'static str, oneshot::Receiver<()>)>,
) {
    let gate = Arc::new(Mutex::new(gate));
    for &name in names {
        let node = h.node(name).await.unwrap();
        let (ready, seen, gate) = (ready.clone(), seen.clone(), gate.clone());
        node.on("metrics", move |_e: Event, ctx: Context| {
            let (ready, seen) = (ready.clone(), seen.clone());
            let gate = {
                let mut g = gate.lock();
                if g.as_ref().is_some_and(|(n, _)| *n == name) {
                    g.take().map(|(_, rx)| rx)
                } else {
                    None
                }
            };
            async move {
                let mut items = ctx.items().expect("the broadcast carries a stream");
                let _ = ready.send(());
                if let Some(gate) = gate {
                    within(10, "the gate", gate).await.unwrap();
                }
                let mut got = Vec::new();
                let mut end = Ok(None);
                while let Some(item) = within(10, "the next item", items.next()).await {
                    match item {
                        Ok(item) => got.push(item),
                        Err(e) => end = Err(e),
                    }
                }
                if end.is_ok() {
                    end = Ok(items.final_value().cloned());
                }
                let _ = seen.send((name.to_owned(), got, end));
                Ok::<_, happen::Error>(())
            }
        })
        .unwrap();
    }
}

async fn collect(rx: &mut mpsc::UnboundedReceiver<Seen>, n: usize) -> Vec<Seen> {
    let mut all = Vec::new();
    for _ in 0..n {
        all.push(within(10, "a dashboard's result", rx.recv()).await.unwrap());
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

fn items(n: u64) -> Vec<StreamItem> {
    (0..n).map(|i| StreamItem::Item(json!(i))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_remote_subscriber_gets_the_items_in_order_and_the_final_value() {
    let server = NatsServer::start();
    let config = NatsConfig::with_server(server.url());
    let (a, _) = instance_with(config.clone()).await;
    let (b, _) = instance_with(config).await;
    let (ready_tx, ready_rx) = mpsc::unbounded_channel();
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    let (done_tx, done_rx) = oneshot::channel();
    const N: u64 = 100;
    monitor(&a, N, None, ready_rx, 2, done_tx).await;
    dashboards(&b, &["dash-1", "dash-2"], ready_tx, seen_tx, None).await;

    // the broadcasting process hosts the streaming handler: the broadcast is marked
    let source = a.node("source").await.unwrap();
    source.broadcast(Event::new("metrics", ())).unwrap();

    let all = collect(&mut seen_rx, 2).await;
    for (name, got, end) in all {
        assert_eq!(got, items(N), "{name}");
        assert_eq!(end.unwrap(), Some(json!({ "items": N })), "{name}");
    }
    within(10, "the producer", done_rx).await.unwrap();
    within(10, "shutdown", a.shutdown(Duration::from_secs(5))).await;
    within(10, "shutdown", b.shutdown(Duration::from_secs(5))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_remote_subscriber_lags_while_the_producer_finishes() {
    let server = NatsServer::start();
    const BUFFER: usize = 16;
    const N: u64 = 200;
    let config = NatsConfig::with_server(server.url());
    let mut b_config = config.clone();
    b_config.broadcast_buffer = Some(BUFFER);
    let (a, _) = instance_with(config).await;
    let (b, _) = instance_with(b_config).await;
    let (ready_tx, ready_rx) = mpsc::unbounded_channel();
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    let (done_tx, done_rx) = oneshot::channel();
    let (gate_tx, gate_rx) = oneshot::channel();
    monitor(&a, N, None, ready_rx, 2, done_tx).await;
    dashboards(
        &b,
        &["fast", "slow"],
        ready_tx,
        seen_tx,
        Some(("slow", gate_rx)),
    )
    .await;

    a.node("source")
        .await
        .unwrap()
        .broadcast(Event::new("metrics", ()))
        .unwrap();

    // the producer finishes while the slow dashboard has read nothing
    within(10, "the producer to finish", done_rx).await.unwrap();
    let fast = within(10, "the fast dashboard", seen_rx.recv())
        .await
        .unwrap();
    assert_eq!(fast.0, "fast");
    // the fast one may lag a little on a loaded machine, but never reorders and gets the end
    assert_in_order(&fast.1, N);
    assert_eq!(fast.2.unwrap(), Some(json!({ "items": N })));

    gate_tx.send(()).unwrap();
    let slow = within(10, "the slow dashboard", seen_rx.recv())
        .await
        .unwrap();
    assert_eq!(slow.0, "slow");
    assert!(
        matches!(slow.1.first(), Some(StreamItem::Lagged(n)) if *n > 0),
        "the slow dashboard is told it lagged first: {:?}",
        &slow.1[..slow.1.len().min(3)]
    );
    let read = slow
        .1
        .iter()
        .filter(|i| matches!(i, StreamItem::Item(_)))
        .count();
    assert!(read <= BUFFER, "it kept only its buffer: {read}");
    assert_in_order(&slow.1, N);
    assert_eq!(slow.2.unwrap(), Some(json!({ "items": N })));
    within(10, "shutdown", a.shutdown(Duration::from_secs(5))).await;
    within(10, "shutdown", b.shutdown(Duration::from_secs(5))).await;
}

/// Items strictly increasing, items plus lag notices account for all `n`, the last one last.
fn assert_in_order(seen: &[StreamItem], n: u64) {
    let mut next = 0u64;
    for item in seen {
        match item {
            StreamItem::Item(v) => {
                let v = v.as_u64().unwrap();
                assert_eq!(v, next, "items in order, gaps reported: {seen:?}");
                next = v + 1;
            }
            StreamItem::Lagged(k) => next += k,
        }
    }
    assert_eq!(next, n, "every item read or reported missed: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_producers_error_reaches_every_subscriber() {
    let server = NatsServer::start();
    let config = NatsConfig::with_server(server.url());
    // a third process broadcasts: it knows `metrics` streams from its configuration only
    let mut c_config = config.clone();
    c_config.stream_types = vec!["metrics".to_owned()];
    let (a, _) = instance_with(config.clone()).await;
    let (b, _) = instance_with(config).await;
    let (c, _) = instance_with(c_config).await;
    let (ready_tx, ready_rx) = mpsc::unbounded_channel();
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    let (done_tx, done_rx) = oneshot::channel();
    monitor(&a, 10, Some(3), ready_rx, 2, done_tx).await;
    dashboards(&b, &["dash-1", "dash-2"], ready_tx, seen_tx, None).await;

    c.node("source")
        .await
        .unwrap()
        .broadcast(Event::new("metrics", ()))
        .unwrap();

    for (name, got, end) in collect(&mut seen_rx, 2).await {
        assert_eq!(got, items(3), "{name}");
        let err = end.expect_err("the producer failed");
        assert_eq!(err.kind(), ErrorKind::Handler, "{name}: {err}");
        assert!(err.message().contains("sensor failed"), "{name}: {err}");
        // the error frame carries the whole error (its JSON body)
        assert_eq!(err.code(), Some("sensor_failed"), "{name}: {err:?}");
        assert_eq!(
            err.node().map(|n| n.as_str()),
            Some("monitor"),
            "{name}: {err:?}"
        );
    }
    within(10, "the producer", done_rx).await.unwrap();
    within(10, "shutdown", a.shutdown(Duration::from_secs(5))).await;
    within(10, "shutdown", b.shutdown(Duration::from_secs(5))).await;
    within(10, "shutdown", c.shutdown(Duration::from_secs(5))).await;
}

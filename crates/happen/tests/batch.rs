//! Batches in process: `Node::on_batch`, `Node::send_batch`, `Context::send_batch`.

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use happen::liner::{Liner, Next};
use happen::{Batch, Context, Error, ErrorKind, Event, Happen, NodeOptions};
use serde_json::{Value, json};

fn readings(n: u64) -> Vec<Event> {
    (0..n)
        .map(|i| Event::new("sensor.reading", json!({"seq": i})))
        .collect()
}

#[tokio::test]
async fn a_batch_of_50_is_one_call_with_the_events_in_order() {
    let happen = Happen::new();
    let store = happen.node("store").await.unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    {
        let (calls, seen) = (calls.clone(), seen.clone());
        store
            .on_batch("sensor.*", move |batch: Batch, ctx: Context| {
                calls.fetch_add(1, Ordering::Relaxed);
                let seen = seen.clone();
                async move {
                    assert!(batch.received_at() > 0);
                    for e in batch.iter() {
                        seen.lock().unwrap().push(json!({
                            "seq": e.payload()["seq"],
                            "id": e.id().to_string(),
                            "correlation": e.correlation_id().to_string(),
                            "sender": e.sender().as_str(),
                            "at": ctx.node_id().as_str(),
                        }));
                    }
                    batch.len()
                }
            })
            .unwrap();
    }
    let sensor = happen.node("sensor").await.unwrap();

    let reply = sensor.send_batch(&store, readings(50)).await.unwrap();
    assert_eq!(reply, 50);
    assert_eq!(calls.load(Ordering::Relaxed), 1);
    let seen = seen.lock().unwrap();
    let seqs: Vec<u64> = seen.iter().map(|v| v["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (0..50).collect::<Vec<_>>());
    // Each event keeps its own causal context.
    let ids: HashSet<&str> = seen.iter().map(|v| v["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 50);
    assert!(
        seen.iter()
            .all(|v| v["sender"] == "sensor" && v["at"] == "store")
    );
    // Admission counted the batch as one flow.
    assert_eq!(store.stats().accepted, 1);
}

#[tokio::test]
async fn a_batch_with_a_type_outside_the_pattern_is_rejected_without_a_call() {
    let happen = Happen::new();
    let store = happen.node("store").await.unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    {
        let calls = calls.clone();
        store
            .on_batch("sensor.reading", move |_b: Batch, _c: Context| {
                calls.fetch_add(1, Ordering::Relaxed);
                async {}
            })
            .unwrap();
    }
    let mut events = readings(3);
    events.push(Event::new("sensor.reset", ()));
    let err = store.send_batch(&store, events).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidEvent);
    assert!(err.message().contains("sensor.reset"), "{err}");
    assert_eq!(calls.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn without_a_batch_handler_the_single_handler_runs_per_event() {
    let happen = Happen::new();
    let store = happen.node("store").await.unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    {
        let calls = calls.clone();
        store
            .on("sensor.reading", move |event: Event, _c: Context| {
                calls.fetch_add(1, Ordering::Relaxed);
                async move { event.payload()["seq"].as_u64().unwrap() * 10 }
            })
            .unwrap();
    }
    let reply = store.send_batch(&store, readings(50)).await.unwrap();
    let values: Vec<u64> = reply
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(values, (0..50).map(|i| i * 10).collect::<Vec<_>>());
    assert_eq!(calls.load(Ordering::Relaxed), 50);
}

#[tokio::test]
async fn the_per_event_fallback_runs_under_node_liners_and_fails_on_the_first_error() {
    let happen = Happen::new();
    let node = happen.node("n").await.unwrap();
    let lined = Arc::new(AtomicUsize::new(0));
    {
        let lined = lined.clone();
        node.line(Liner::new(move |e: Event, c: Context, next: Next| {
            lined.fetch_add(1, Ordering::Relaxed);
            next.run(e, c)
        }));
    }
    node.on("ok", |_e: Event, _c: Context| async { 1 }).unwrap();
    node.on("bad", |_e: Event, _c: Context| async {
        Err::<(), _>(Error::handler("bad row"))
    })
    .unwrap();

    let events = vec![Event::new("ok", ()), Event::new("ok", ())];
    assert_eq!(node.send_batch(&node, events).await.unwrap(), json!([1, 1]));
    assert_eq!(lined.load(Ordering::Relaxed), 2);

    let events = vec![
        Event::new("ok", ()),
        Event::new("bad", ()),
        Event::new("missing", ()),
    ];
    let err = node.send_batch(&node, events).await.unwrap_err();
    assert_eq!((err.kind(), err.message()), (ErrorKind::Handler, "bad row"));
    let err = node
        .send_batch(&node, vec![Event::new("missing", ())])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoHandler);
}

#[tokio::test]
async fn an_empty_batch_replies_null_without_a_call() {
    let happen = Happen::new();
    let node = happen.node("n").await.unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    {
        let calls = calls.clone();
        node.on_batch("*", move |_b: Batch, _c: Context| {
            calls.fetch_add(1, Ordering::Relaxed);
            async { "called" }
        })
        .unwrap();
    }
    assert!(node.send_batch(&node, Vec::new()).await.unwrap().is_null());
    assert_eq!(calls.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn batch_errors_of_the_send_itself() {
    let happen = Happen::new();
    let node = happen.node("n").await.unwrap();
    node.on_batch("a", |_b: Batch, _c: Context| async {})
        .unwrap();
    let err = node
        .on_batch("a", |_b: Batch, _c: Context| async {})
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DuplicateHandler);

    let err = node
        .send_batch("nobody", vec![Event::new("a", ())])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnknownNode);
    let err = node
        .send_batch(&node, vec![Event::new("a", ()), Event::new("", ())])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidEvent);
    assert_eq!(node.stats().accepted, 0);
}

#[tokio::test]
async fn from_a_flow_every_event_of_the_batch_is_caused_by_it() {
    let happen = Happen::new();
    let store = happen.node("store").await.unwrap();
    store
        .on_batch("row", |batch: Batch, _c: Context| async move {
            batch
                .iter()
                .map(|e| {
                    json!({
                        "causation": e.causation_id().map(|c| c.to_string()),
                        "correlation": e.correlation_id().to_string(),
                    })
                })
                .collect::<Value>()
        })
        .unwrap();
    let import = happen.node("import").await.unwrap();
    import
        .on("file", |event: Event, ctx: Context| async move {
            let rows = ctx
                .send_batch("store", (0..3).map(|i| Event::new("row", i)))
                .await?;
            Ok::<_, Error>(json!({
                "me": event.id().to_string(),
                "txn": event.correlation_id().to_string(),
                "rows": rows,
            }))
        })
        .unwrap();
    let reply = import.send(&import, Event::new("file", ())).await.unwrap();
    let rows = reply["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for row in rows {
        assert_eq!(row["causation"], reply["me"]);
        assert_eq!(row["correlation"], reply["txn"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_batches_at_once_each_get_their_own_events() {
    const BATCHES: u64 = 200;
    const SIZE: u64 = 20;
    let happen = Happen::new();
    let options = NodeOptions::new().max_concurrent(4);
    let store = happen.node_with("store", options).await.unwrap();
    store
        .on_batch("n", |batch: Batch, _c: Context| async move {
            tokio::task::yield_now().await;
            batch.iter().map(|e| e.payload().clone()).collect::<Value>()
        })
        .unwrap();
    let mut tasks = Vec::new();
    for b in 0..BATCHES {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let events = (0..SIZE).map(|i| Event::new("n", b * SIZE + i));
            let reply = store.send_batch(&store, events).await.unwrap();
            let expected: Vec<u64> = (0..SIZE).map(|i| b * SIZE + i).collect();
            assert_eq!(reply, json!(expected));
        }));
    }
    support::join_all_within("every sender got its answers", tasks).await;
    let stats = store.stats();
    assert_eq!((stats.accepted, stats.completed), (BATCHES, BATCHES));
}

#[tokio::test]
async fn a_handler_on_the_reserved_batch_type_never_gets_a_carrier() {
    let happen = Happen::new();
    let store = happen.node("store").await.unwrap();
    let carrier_calls = Arc::new(AtomicUsize::new(0));
    {
        let carrier_calls = carrier_calls.clone();
        store
            .on(happen::BATCH_EVENT, move |_e: Event, _c: Context| {
                carrier_calls.fetch_add(1, Ordering::Relaxed);
                async { "the carrier" }
            })
            .unwrap();
    }
    store
        .on_batch("sensor.*", |batch: Batch, _c: Context| async move {
            batch.len()
        })
        .unwrap();

    let reply = store.send_batch(&store, readings(3)).await.unwrap();
    assert_eq!(reply, 3, "the batch handler answered");
    assert_eq!(carrier_calls.load(Ordering::Relaxed), 0);
}

/// A node with one slot whose first flow (`hold`) waits for the gate, and a batch handler
/// for `r` counting the events it gets.
async fn held_node(
    happen: &Happen,
    options: NodeOptions,
) -> (happen::Node, Arc<tokio::sync::Semaphore>, Arc<AtomicUsize>) {
    let node = happen.node_with("store", options).await.unwrap();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g = gate.clone();
    node.on("hold", move |_e: Event, _c: Context| {
        let g = g.clone();
        async move {
            g.acquire().await.unwrap().forget();
        }
    })
    .unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let s = seen.clone();
    node.on_batch("r", move |batch: Batch, _c: Context| {
        s.fetch_add(batch.len(), Ordering::Relaxed);
        async move { batch.len() }
    })
    .unwrap();
    (node, gate, seen)
}

fn rs(n: usize) -> Vec<Event> {
    (0..n).map(|i| Event::new("r", i)).collect()
}

#[tokio::test]
async fn by_default_a_batch_takes_one_queue_place_and_counts_once() {
    let happen = Happen::new();
    let options = NodeOptions::new().max_concurrent(1).queue_limit(2);
    let (node, gate, seen) = held_node(&happen, options).await;
    let hold = node.send(&node, Event::new("hold", ()));
    let big = node.send_batch(&node, rs(50)); // one place of two
    let single = node.send(&node, Event::new("hold", ()));
    assert_eq!(node.stats().queued, 2);
    gate.add_permits(2);
    hold.await.unwrap();
    assert_eq!(big.await.unwrap(), 50);
    single.await.unwrap();
    let s = node.stats();
    assert_eq!((s.accepted, s.completed, s.rejected), (3, 3, 0));
    assert_eq!(seen.load(Ordering::Relaxed), 50);
}

#[tokio::test]
async fn counting_events_a_batch_takes_a_place_per_event_and_is_refused_whole_when_they_do_not_fit()
{
    let happen = Happen::new();
    let options = NodeOptions::new()
        .max_concurrent(1)
        .queue_limit(10)
        .backpressure_threshold(0.5)
        .batch_admission(happen::BatchAdmission::Events);
    let (node, gate, seen) = held_node(&happen, options).await;
    let hold = node.send(&node, Event::new("hold", ()));
    assert!(!node.pressure().under_pressure);

    let eight = node.send_batch(&node, rs(8));
    let s = node.stats();
    assert_eq!(s.queued, 8, "eight places for a batch of eight");
    assert!(
        node.pressure().under_pressure,
        "8 of 10 is past the threshold of 5"
    );

    let three = node.send_batch(&node, rs(3)).await.unwrap_err();
    assert_eq!(
        three.kind(),
        ErrorKind::QueueFull,
        "3 more do not fit in the 2 left"
    );
    assert_eq!(node.stats().queued, 8, "refused whole: nothing of it waits");
    let two = node.send_batch(&node, rs(2)); // fits exactly
    assert_eq!(node.stats().queued, 10);
    let one_more = node.send(&node, Event::new("r", 0)).await.unwrap_err();
    assert_eq!(one_more.kind(), ErrorKind::QueueFull);

    gate.add_permits(1);
    hold.await.unwrap();
    assert_eq!(eight.await.unwrap(), 8);
    assert_eq!(two.await.unwrap(), 2);
    let s = node.stats();
    assert_eq!(seen.load(Ordering::Relaxed), 10);
    assert_eq!(
        (s.accepted, s.rejected, s.completed, s.failed, s.peak_queued),
        (11, 4, 11, 0, 10),
        "1 hold + 8 + 2 accepted; 3 + 1 rejected; counted as events"
    );
    assert!(!node.pressure().under_pressure);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counting_events_under_load_the_queue_never_holds_more_events_than_its_limit() {
    const SENDERS: usize = 200;
    let happen = Happen::new();
    let options = NodeOptions::new()
        .max_concurrent(4)
        .queue_limit(100)
        .batch_admission(happen::BatchAdmission::Events);
    let node = happen.node_with("store", options).await.unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let s = seen.clone();
    node.on_batch("r", move |batch: Batch, _c: Context| {
        s.fetch_add(batch.len(), Ordering::Relaxed);
        async move {
            tokio::task::yield_now().await;
            batch.len()
        }
    })
    .unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for k in 0..SENDERS {
        let node = node.clone();
        let (sent, ok, refused) = (sent.clone(), ok.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            for round in 0..10 {
                let n = 1 + (k * 7 + round * 13) % 40;
                sent.fetch_add(n, Ordering::Relaxed);
                match node.send_batch(&node, rs(n)).await {
                    Ok(v) => {
                        assert_eq!(v, n);
                        ok.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(e) => {
                        assert_eq!(e.kind(), ErrorKind::QueueFull, "{e}");
                        refused.fetch_add(n, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    support::join_all_within("every sender done", tasks).await;
    let s = node.stats();
    let (sent, ok, refused) = (
        sent.load(Ordering::Relaxed) as u64,
        ok.load(Ordering::Relaxed) as u64,
        refused.load(Ordering::Relaxed) as u64,
    );
    assert_eq!(ok + refused, sent);
    assert_eq!((s.accepted, s.rejected, s.completed), (ok, refused, ok));
    assert_eq!(
        seen.load(Ordering::Relaxed) as u64,
        ok,
        "each accepted event handled once"
    );
    assert!(
        s.peak_queued <= 100,
        "peak {} events waiting",
        s.peak_queued
    );
    assert!(
        refused > 0 && ok > 0,
        "the load both filled the queue and got through"
    );
    assert_eq!((s.active, s.queued), (0, 0));
}

#[tokio::test]
async fn counting_events_a_displaced_batch_gives_back_all_its_places() {
    let happen = Happen::new();
    let options = NodeOptions::new()
        .max_concurrent(1)
        .queue_limit(4)
        .queue_strategy(happen::QueueStrategy::Priority)
        .batch_admission(happen::BatchAdmission::Events);
    let (node, gate, seen) = held_node(&happen, options).await;
    let hold = node.send(&node, Event::new("hold", ()));
    let low = node.send(&node, Event::new("hold", ()));
    let batch = node.send_batch(&node, rs(3)); // the newest of the lowest priority
    assert_eq!(node.stats().queued, 4);
    let urgent = node.send(&node, Event::new("hold", ()).with_priority(9));
    let err = batch.await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::QueueFull, "{err}");
    assert_eq!(
        node.stats().queued,
        2,
        "the batch's three places are free, one retaken"
    );
    let next = node.send_batch(&node, rs(2)); // fits in the two left
    assert_eq!(node.stats().queued, 4);

    gate.add_permits(3);
    hold.await.unwrap();
    urgent.await.unwrap();
    low.await.unwrap();
    assert_eq!(next.await.unwrap(), 2);
    let s = node.stats();
    assert_eq!(seen.load(Ordering::Relaxed), 2);
    assert_eq!((s.accepted, s.displaced, s.completed), (8, 3, 5));
    assert_eq!(
        s.accepted,
        s.completed + s.failed + s.cancelled + s.displaced
    );
}

//! Durable delivery on JetStream: stored before delivery, retried, dead-lettered, paced by
//! the node's admission limits. Real nats-server processes with JetStream.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{instance_with, within};
use futures::StreamExt;
use happen::{Context, Error, ErrorKind, Event, NodeOptions};
use happen_nats::NatsConfig;
use happen_nats::{DeliveryMode, DurableNode};
use parking_lot::Mutex;
use serde_json::json;
use test_support::{NatsServer, NatsServerOptions};

fn config(url: &str, mode: DeliveryMode) -> NatsConfig {
    NatsConfig::with_server(url).with_durable(
        "worker*",
        DurableNode::new(mode)
            .with_backoff(Duration::from_millis(20), Duration::from_millis(200))
            .with_ack_wait(Duration::from_secs(3)),
    )
}

/// Polls `cond` until it holds or `secs` pass.
async fn eventually(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {secs}s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_returns_the_value_and_events_wait_for_a_node_that_is_not_there_yet() {
    let server = NatsServer::start_with(NatsServerOptions::new().with_jetstream());
    let (sender_h, sender_t) =
        instance_with(config(&server.url(), DeliveryMode::AtLeastOnce)).await;
    let client = sender_h.node("client").await.unwrap();

    // nobody hosts `worker-1` yet: over core NATS these would be lost
    for i in 0..100 {
        client
            .tell("worker-1", Event::new("job", json!({ "n": i })))
            .unwrap();
    }
    eventually(20, "100 tells stored", || {
        sender_t.stats().durable_published == 100
    })
    .await;

    let (worker_h, worker_t) =
        instance_with(config(&server.url(), DeliveryMode::AtLeastOnce)).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let worker = worker_h.node("worker-1").await.unwrap();
    let s = seen.clone();
    worker
        .on("job", move |e: Event, _c: Context| {
            let s = s.clone();
            async move {
                let n = e.payload()["n"].as_u64().unwrap();
                s.lock().push(n);
                json!({ "double": n * 2 })
            }
        })
        .unwrap();
    eventually(20, "the 100 stored tells processed", || {
        seen.lock().len() >= 100
    })
    .await;

    // a send to a durable node answers with the flow's value
    let v = within(
        20,
        "durable send",
        client.send("worker-1", Event::new("job", json!({ "n": 1000 }))),
    )
    .await
    .unwrap();
    assert_eq!(v, json!({ "double": 2000 }));
    let mut seen = seen.lock().clone();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 101, "every event processed once");
    eventually(20, "all acked", || worker_t.stats().durable_acked == 101).await;
    // a non-durable node is untouched: plain request/reply
    let plain = worker_h.node("plain").await.unwrap();
    plain
        .on("ping", |_e: Event, _c: Context| async { "pong" })
        .unwrap();
    let v = within(
        10,
        "plain send",
        client.send("plain", Event::new("ping", ())),
    )
    .await
    .unwrap();
    assert_eq!(v, json!("pong"));
    assert_eq!(worker_t.stats().durable_acked, 101);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_flow_is_retried_and_one_that_always_fails_is_dead_lettered() {
    let server = NatsServer::start_with(NatsServerOptions::new().with_jetstream());
    let cfg = NatsConfig::with_server(server.url()).with_durable(
        "worker-*",
        DurableNode::new(DeliveryMode::AtLeastOnce)
            .with_max_deliveries(5)
            .with_backoff(Duration::from_millis(20), Duration::from_millis(100)),
    );
    let (h, t) = instance_with(cfg).await;
    // the dead-letter subject, read from its stream
    let js = async_nats::jetstream::new(t.client().clone());
    let (_, dlq) = t.durable_streams().unwrap();
    let attempts: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let worker = h.node("worker-r").await.unwrap();
    let a = attempts.clone();
    worker
        .on("flaky", move |e: Event, _c: Context| {
            let a = a.clone();
            async move {
                let key = e.payload()["key"].as_str().unwrap().to_owned();
                let n = {
                    let mut a = a.lock();
                    let n = a.entry(key.clone()).or_insert(0);
                    *n += 1;
                    *n
                };
                if key == "always" || n <= 3 {
                    Err(Error::new(
                        ErrorKind::Handler,
                        format!("attempt {n} of {key} failed"),
                    ))
                } else {
                    Ok(json!({ "ok": n }))
                }
            }
        })
        .unwrap();
    let client = h.node("client").await.unwrap();

    // fails 3 times, then succeeds: the requester gets the value of the 4th run
    let v = within(
        30,
        "flaky send",
        client.send("worker-r", Event::new("flaky", json!({ "key": "thrice" }))),
    )
    .await
    .unwrap();
    assert_eq!(v, json!({ "ok": 4 }));
    assert_eq!(attempts.lock()["thrice"], 4);

    // always fails: after 5 deliveries the requester gets the error and it is dead-lettered
    let err = within(
        30,
        "always failing send",
        client.send("worker-r", Event::new("flaky", json!({ "key": "always" }))),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Handler, "{err}");
    assert!(err.message().contains("attempt 5 of always"), "{err}");
    assert_eq!(attempts.lock()["always"], 5);

    // a tell that always fails ends there too (nobody would see its error otherwise)
    client
        .tell("worker-r", Event::new("flaky", json!({ "key": "always" })))
        .unwrap();
    eventually(30, "two dead letters", || {
        t.stats().durable_dead_lettered == 2
    })
    .await;

    let stream = js.get_stream(dlq).await.unwrap();
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config::default())
        .await
        .unwrap();
    let mut msgs = consumer.fetch().max_messages(10).messages().await.unwrap();
    let mut letters = Vec::new();
    while let Some(m) = within(10, "dead letter", msgs.next()).await {
        letters.push(m.unwrap());
    }
    assert_eq!(letters.len(), 2);
    for m in &letters {
        assert_eq!(m.subject.as_str(), "happen.dlq.worker-r");
        let h = m.headers.as_ref().unwrap();
        assert_eq!(h.get("Happen-Error-Kind").unwrap().as_str(), "handler");
        assert!(
            h.get("Happen-Error-Message")
                .unwrap()
                .as_str()
                .contains("of always failed")
        );
        assert_eq!(h.get("Happen-Deliveries").unwrap().as_str(), "5");
        let event: Event = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(event.payload()["key"], "always");
    }
    let s = t.stats();
    assert_eq!(s.durable_retried, 3 + 4 + 4, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_node_pulls_only_what_fits_and_jetstream_holds_the_backlog() {
    const EVENTS: u64 = 20_000;
    let server = NatsServer::start_with(NatsServerOptions::new().with_jetstream());
    let (h, t) = instance_with(config(&server.url(), DeliveryMode::AtLeastOnce)).await;
    let client = h.node("client").await.unwrap();
    // 20,000 events of 4 KiB: 80 MiB of payload, far more than the node may hold
    let pad = "x".repeat(4096);
    let rss_before = test_rss_kib();
    let mut rss_peak = rss_before;
    let sample_rss = |peak: &mut Option<u64>| {
        if let (Some(p), Some(now)) = (peak.as_mut(), test_rss_kib()) {
            *p = (*p).max(now);
        }
    };
    let mut sent = 0;
    while sent < EVENTS {
        // the producer paces itself by what the server stored, so its own buffer stays small
        if sent - t.stats().durable_published >= 500 {
            sample_rss(&mut rss_peak);
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        client
            .tell(
                "worker-slow",
                Event::new("job", json!({ "n": sent, "pad": pad })),
            )
            .unwrap();
        sent += 1;
    }
    eventually(60, "every event stored", || {
        t.stats().durable_published == EVENTS
    })
    .await;
    // the whole backlog is on the server before the node exists
    let (stream, _) = t.durable_streams().unwrap();
    let mut info = async_nats::jetstream::new(t.client().clone())
        .get_stream(stream)
        .await
        .unwrap();
    assert_eq!(info.info().await.unwrap().state.messages, EVENTS);

    let done = Arc::new(AtomicU64::new(0));
    let worker = h
        .node_with(
            "worker-slow",
            NodeOptions::new().max_concurrent(8).queue_limit(64),
        )
        .await
        .unwrap();
    let d = done.clone();
    worker
        .on("job", move |_e: Event, _c: Context| {
            let d = d.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                d.fetch_add(1, Ordering::Relaxed);
            }
        })
        .unwrap();
    let mut max_queued = 0;
    let mut min_stored = EVENTS;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while done.load(Ordering::Relaxed) < EVENTS {
        let st = worker.stats();
        max_queued = max_queued.max(st.queued);
        assert!(st.active <= 8 && st.queued <= 64, "{st:?}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {EVENTS} processed: {:?} {:?}",
            done.load(Ordering::Relaxed),
            t.stats(),
            worker.stats()
        );
        // acknowledged messages leave the work-queue stream; the rest waits there
        let stored = info.info().await.unwrap().state.messages;
        let processed = done.load(Ordering::Relaxed);
        assert!(
            stored + processed >= EVENTS,
            "{stored} stored + {processed} processed: where are the others?"
        );
        min_stored = min_stored.min(stored);
        sample_rss(&mut rss_peak);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let s = t.stats();
    assert!(
        s.durable_max_held <= 72,
        "held at most max_concurrent + queue_limit: {s:?}"
    );
    assert_eq!(worker.stats().rejected, 0);
    assert!(max_queued > 0, "the node was kept busy");
    if let (Some(before), Some(peak)) = (rss_before, rss_peak) {
        // holding the backlog would take over 80 MiB (payloads alone); the process (other
        // tests of this file included) stays well below that
        println!("RSS {before} KiB before, peak {peak} KiB; stored at least {min_stored}");
        assert!(
            peak < before + 48 * 1024,
            "RSS grew from {before} KiB to {peak} KiB"
        );
    }
    let _ = h;
}

fn test_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requester_that_gave_up_does_not_stop_the_flow() {
    let server = NatsServer::start_with(NatsServerOptions::new().with_jetstream());
    let (h, t) = instance_with(config(&server.url(), DeliveryMode::AtLeastOnce)).await;
    let (release, released) = tokio::sync::watch::channel(false);
    let finished = Arc::new(AtomicU64::new(0));
    let worker = h.node("worker-slow").await.unwrap();
    let f = finished.clone();
    worker
        .on("job", move |_e: Event, _c: Context| {
            let (f, mut released) = (f.clone(), released.clone());
            async move {
                let _ = released.wait_for(|r| *r).await;
                f.fetch_add(1, Ordering::Relaxed);
                "late"
            }
        })
        .unwrap();
    let client = h.node("client").await.unwrap();
    let err = client
        .send("worker-slow", Event::new("job", ()))
        .timeout(Duration::from_millis(300))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    release.send_replace(true);
    eventually(20, "the flow finished and was acknowledged", || {
        finished.load(Ordering::Relaxed) == 1 && t.stats().durable_acked == 1
    })
    .await;
    // a later send is answered as usual
    let v = within(
        20,
        "send",
        client.send("worker-slow", Event::new("job", ())),
    )
    .await
    .unwrap();
    assert_eq!(v, json!("late"));
    assert_eq!(finished.load(Ordering::Relaxed), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_of_a_durable_node_share_its_consumer() {
    const EVENTS: u64 = 5_000;
    let server = NatsServer::start_with(NatsServerOptions::new().with_jetstream());
    let url = server.url();
    let seen: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let mut replicas = Vec::new();
    for r in 0..2u32 {
        let (h, t) = instance_with(config(&url, DeliveryMode::AtLeastOnce)).await;
        // small room, so neither replica can pull everything at once
        let worker = h
            .node_with(
                "worker-shared",
                NodeOptions::new().max_concurrent(4).queue_limit(16),
            )
            .await
            .unwrap();
        let s = seen.clone();
        worker
            .on("job", move |e: Event, _c: Context| {
                let s = s.clone();
                async move {
                    tokio::time::sleep(Duration::from_micros(100)).await;
                    *s.lock()
                        .entry(e.payload()["n"].as_u64().unwrap())
                        .or_insert(0) += 1;
                    r
                }
            })
            .unwrap();
        replicas.push((h, t));
    }
    let (h, _t) = instance_with(config(&url, DeliveryMode::AtLeastOnce)).await;
    let client = h.node("client").await.unwrap();
    for n in 0..EVENTS {
        loop {
            match client.tell("worker-shared", Event::new("job", json!({ "n": n }))) {
                Ok(()) => break,
                Err(e) if e.kind() == ErrorKind::Transport => {
                    tokio::time::sleep(Duration::from_millis(2)).await
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
    eventually(60, "every event processed", || {
        seen.lock().len() as u64 == EVENTS
    })
    .await;
    let seen = seen.lock();
    assert!(seen.values().all(|c| *c == 1), "no failure, no duplicate");
    let acked: Vec<u64> = replicas
        .iter()
        .map(|(_, t)| t.stats().durable_acked)
        .collect();
    assert_eq!(acked.iter().sum::<u64>(), EVENTS);
    assert!(
        acked.iter().all(|a| *a > 0),
        "both replicas pulled: {acked:?}"
    );
}

/// A graceful shutdown hands what the node did not finish back to JetStream: another instance
/// processes the rest, nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_node_hands_the_rest_back() {
    const EVENTS: u64 = 3_000;
    let server = NatsServer::start_with(NatsServerOptions::new().with_jetstream());
    let url = server.url();
    let seen: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let start_worker = |seen: Arc<Mutex<HashMap<u64, u32>>>| {
        let url = url.clone();
        async move {
            let (h, t) = instance_with(config(&url, DeliveryMode::AtLeastOnce)).await;
            let worker = h
                .node_with(
                    "worker-handoff",
                    NodeOptions::new().max_concurrent(4).queue_limit(16),
                )
                .await
                .unwrap();
            worker
                .on("job", move |e: Event, _c: Context| {
                    let seen = seen.clone();
                    async move {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        *seen
                            .lock()
                            .entry(e.payload()["n"].as_u64().unwrap())
                            .or_insert(0) += 1;
                    }
                })
                .unwrap();
            (h, t)
        }
    };
    let (first, first_t) = start_worker(seen.clone()).await;
    let (h, t) = instance_with(config(&url, DeliveryMode::AtLeastOnce)).await;
    let client = h.node("client").await.unwrap();
    for n in 0..EVENTS {
        client
            .tell("worker-handoff", Event::new("job", json!({ "n": n })))
            .unwrap();
    }
    eventually(30, "all stored", || t.stats().durable_published == EVENTS).await;
    eventually(60, "some processed", || seen.lock().len() >= 500).await;
    within(
        30,
        "graceful shutdown",
        first.shutdown(Duration::from_secs(10)),
    )
    .await;
    let handed_over = seen.lock().len();
    println!(
        "first instance processed {handed_over}; {:?}",
        first_t.stats()
    );
    assert!(
        (handed_over as u64) < EVENTS,
        "the first instance did not finish everything"
    );
    let (_second, second_t) = start_worker(seen.clone()).await;
    eventually(120, "the rest processed by the second instance", || {
        seen.lock().len() as u64 == EVENTS
    })
    .await;
    let duplicates: u32 = seen.lock().values().map(|c| c - 1).sum();
    assert_eq!(duplicates, 0, "{:?}", second_t.stats());
    assert!(second_t.stats().durable_acked > 0);
}

/// The same event stored twice (as a publisher outside the dedup window would): an
/// exactly-once node runs it once and answers the second request from its record; an
/// at-least-once node runs it twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_runs_a_redelivered_event_once_and_answers_from_its_record() {
    let server = NatsServer::start_with(NatsServerOptions::new().with_jetstream());
    let cfg = NatsConfig::with_server(server.url())
        .with_durable("worker-once", DurableNode::new(DeliveryMode::ExactlyOnce))
        .with_durable("worker-twice", DurableNode::new(DeliveryMode::AtLeastOnce));
    let (h, t) = instance_with(cfg).await;
    let runs = Arc::new(AtomicU64::new(0));
    for id in ["worker-once", "worker-twice"] {
        let node = h.node(id).await.unwrap();
        let r = runs.clone();
        node.on("charge", move |e: Event, _c: Context| {
            let r = r.clone();
            async move {
                let run = r.fetch_add(1, Ordering::Relaxed) + 1;
                json!({ "charged": e.payload()["amount"], "run": run })
            }
        })
        .unwrap();
    }
    let raw = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(raw.clone());
    // one event (one id) as a reference publisher would send it
    let body = bytes::Bytes::from_static(
        br#"{"type":"charge","payload":{"amount":5},"context":{"causal":{"id":"evt-3b241101-e2bb-4255-8caf-4136c566a962","sender":"billing","correlationId":"txn-0b8f2d6a-1111-4222-8333-444455556666","path":["billing"],"timestamp":1700000000000}}}"#,
    );
    let mut inbox = raw.subscribe("answers.>").await.unwrap();
    common::round_trip(&raw).await;
    let mut answers = HashMap::new();
    for (target, copy) in [
        ("worker-once", "a"),
        ("worker-once", "b"),
        ("worker-twice", "a"),
        ("worker-twice", "b"),
    ] {
        let mut headers = async_nats::HeaderMap::new();
        // different message ids: the server stores both copies of the same event
        headers.insert("Nats-Msg-Id", format!("{target}-{copy}").as_str());
        headers.insert(
            "Happen-Reply-To",
            format!("answers.{target}.{copy}").as_str(),
        );
        js.publish_with_headers(format!("happen.durable.{target}"), headers, body.clone())
            .await
            .unwrap()
            .await
            .unwrap();
        let m = within(20, "answer", inbox.next()).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        answers.insert(m.subject.to_string(), v);
    }
    let once_a = &answers["answers.worker-once.a"];
    assert_eq!(once_a["charged"], 5);
    assert_eq!(
        &answers["answers.worker-once.b"], once_a,
        "the second copy is answered from the record"
    );
    assert_ne!(
        answers["answers.worker-twice.a"]["run"], answers["answers.worker-twice.b"]["run"],
        "at-least-once runs both copies"
    );
    assert_eq!(runs.load(Ordering::Relaxed), 3);
    assert_eq!(t.stats().durable_duplicates_skipped, 1);
}

/// A durable node stopped while events flow (a replica leaving) keeps a short grace: its
/// consumer does not wait for its outstanding pull requests to expire at the server (2 s)
/// before it lets go, so a 1 s shutdown is clean, and every event is processed (the other
/// replica takes what the leaving one handed back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_replica_shut_down_under_load_is_clean_within_a_short_grace() {
    let server = NatsServer::start_with(NatsServerOptions::new().with_jetstream());
    let url = server.url();
    let seen: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let replica = || async {
        let (h, _t) = instance_with(config(&url, DeliveryMode::AtLeastOnce)).await;
        let worker = h.node("worker-stop").await.unwrap();
        let seen = seen.clone();
        worker
            .on("job", move |e: Event, _c: Context| {
                *seen
                    .lock()
                    .entry(e.payload().as_u64().unwrap())
                    .or_default() += 1;
                async {}
            })
            .unwrap();
        h
    };
    let (stays, leaves) = (replica().await, replica().await);
    let (client_h, client_t) = instance_with(config(&url, DeliveryMode::AtLeastOnce)).await;
    let client = client_h.node("client").await.unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sending = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                client.tell("worker-stop", Event::new("job", n)).unwrap();
                n += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            n
        })
    };
    eventually(20, "both replicas work", || seen.lock().len() > 200).await;
    let started = std::time::Instant::now();
    let report = within(10, "shutdown", leaves.shutdown(Duration::from_secs(1))).await;
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let sent = sending.await.unwrap();
    assert!(report.is_clean(), "{report:?} after {took:?}");
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    eventually(30, "every event processed", || {
        client_t.stats().durable_published == sent && seen.lock().len() as u64 == sent
    })
    .await;
    drop(stays);
}

/// A producer of durable tells paces itself on `NatsTransport::ready`: when the durable
/// outgoing buffer (`outbound_buffer` events waiting to be stored) is full, `tell` fails with
/// `Transport`, `is_backlogged` says why, and `ready` waits until the buffer has drained to
/// half. 3,000 tells through a buffer of 32: every one is stored and handled, and the
/// producer waited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_producer_paces_itself_on_ready() {
    let server = NatsServer::start_with(NatsServerOptions::new().with_jetstream());
    let mut small = config(&server.url(), DeliveryMode::AtLeastOnce);
    small.outbound_buffer = 32;
    let (sender_h, sender_t) = instance_with(small).await;
    let (worker_h, _worker_t) =
        instance_with(config(&server.url(), DeliveryMode::AtLeastOnce)).await;
    let handled = Arc::new(AtomicU64::new(0));
    let worker = worker_h.node("worker-paced").await.unwrap();
    let h = handled.clone();
    worker
        .on("job", move |_e: Event, _c: Context| {
            h.fetch_add(1, Ordering::Relaxed);
            async {}
        })
        .unwrap();
    let client = sender_h.node("client").await.unwrap();

    const N: u64 = 3_000;
    let mut waits = 0u64;
    for i in 0..N {
        loop {
            match client.tell("worker-paced", Event::new("job", i)) {
                Ok(()) => break,
                Err(e) if e.kind() == ErrorKind::Transport && sender_t.is_backlogged() => {
                    waits += 1;
                    within(20, "room in the durable buffer", sender_t.ready())
                        .await
                        .unwrap();
                }
                Err(e) => panic!("tell {i}: {e}"),
            }
        }
    }
    assert!(waits > 0, "3,000 tells never filled a buffer of 32");
    eventually(30, "every paced tell handled", || {
        handled.load(Ordering::Relaxed) >= N
    })
    .await;
    assert_eq!(sender_t.stats().durable_published, N);
    sender_h.shutdown(Duration::from_secs(2)).await;
    worker_h.shutdown(Duration::from_secs(2)).await;
}

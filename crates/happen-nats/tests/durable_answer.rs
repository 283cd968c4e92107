//! The answer of a durable `send` survives its requester's outage (issue 23; WIRE.md,
//! "Guarantees"): on a 3-server cluster, a requester on its own connection has hundreds of
//! durable sends in flight to a node served by a worker on another member; the requester's
//! member is killed while the worker answers, and the requester reconnects elsewhere only
//! after a pause, so that many answers are published while it is disconnected (the server
//! drops them). Every send must still resolve with its own answer — none waits out its
//! timeout — for an at-least-once and an exactly-once node. And when the worker is gone too
//! by the time the requester is back (nobody holds the answers): an exactly-once node's
//! record answers, an at-least-once send fails at once with `transport`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::instance_with;
use futures::future::join_all;
use happen::{Context, ErrorKind, Event, NodeOptions};
use happen_nats::{DeliveryMode, DurableNode, NatsConfig};
use serde_json::json;
use test_support::NatsCluster;

/// Durable sends in flight at once.
const SENDS: u64 = 500;
/// A durable send's timeout: far above what the run takes, so a lost answer shows as a timeout.
const SEND_TIMEOUT: Duration = Duration::from_secs(20);
const NODE: &str = "book";

/// `servers`: the members this process may use; `reconnect_after`: its pause before each
/// reconnect attempt.
fn config(servers: Vec<String>, mode: DeliveryMode, reconnect_after: Duration) -> NatsConfig {
    let mut c = NatsConfig::with_server(servers[0].clone()).with_durable(
        NODE,
        DurableNode::new(mode)
            .with_backoff(Duration::from_millis(20), Duration::from_millis(200))
            .with_ack_wait(Duration::from_secs(2)),
    );
    c.servers = servers;
    c.durable.replicas = 3;
    c.reconnect.delay = reconnect_after;
    c.reconnect.max_delay = reconnect_after;
    c.request_timeout = Some(SEND_TIMEOUT);
    c
}

/// Polls `done` every 5 ms until it holds, failing with `what` after `secs` seconds.
async fn wait_until(secs: u64, what: impl Fn() -> String, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "{}", what());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Moves the leaders of `streams` and of the node's consumer off member `victim` (stepping
/// them down until another member leads): an acknowledgement to a leader that dies is lost,
/// and the event runs again and is answered after the reconnect, hiding a lost answer.
async fn leaders_off(
    client: &async_nats::Client,
    cluster: &NatsCluster,
    victim: usize,
    streams: &[String],
) {
    let js = async_nats::jetstream::new(client.clone());
    let victim = cluster.server_name(victim);
    let consumer = format!("happen_{NODE}");
    // (what leads, its step-down subject): each stream, then the node's consumer
    let mut groups: Vec<(Option<String>, String)> = streams
        .iter()
        .map(|s| (None, format!("$JS.API.STREAM.LEADER.STEPDOWN.{s}")))
        .collect();
    groups.push((
        Some(consumer.clone()),
        format!("$JS.API.CONSUMER.LEADER.STEPDOWN.{}.{consumer}", streams[0]),
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    for (i, (consumer, stepdown)) in groups.iter().enumerate() {
        let stream = &streams[if consumer.is_some() { 0 } else { i }];
        let mut asked: Option<Instant> = None;
        loop {
            assert!(
                Instant::now() < deadline,
                "{stepdown}: still led by {victim}"
            );
            // while a leader is being elected the look-ups fail: look again
            let cluster_info = match (js.get_stream(stream).await, consumer) {
                (Ok(mut s), None) => s.info().await.ok().and_then(|i| i.cluster.clone()),
                (Ok(s), Some(c)) => match s
                    .get_consumer::<async_nats::jetstream::consumer::pull::Config>(c)
                    .await
                {
                    Ok(mut c) => c.info().await.ok().and_then(|i| i.cluster.clone()),
                    Err(_) => None,
                },
                (Err(_), _) => None,
            };
            match cluster_info.and_then(|c| c.leader) {
                Some(l) if l != victim => break,
                Some(_) if asked.is_none_or(|at| at.elapsed() > Duration::from_secs(1)) => {
                    let _ = client.request(stepdown.clone(), "".into()).await;
                    asked = Some(Instant::now());
                }
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// `worker_gone`: the worker also shuts down (once it answered and acknowledged every send)
/// before the requester reconnects, so no replica holds the answers any more.
async fn answers_survive_the_requesters_outage(mode: DeliveryMode, worker_gone: bool) {
    let sends_n = if worker_gone { 200 } else { SENDS };
    let reconnect_after = Duration::from_millis(if worker_gone { 3000 } else { 800 });
    let mut cluster = tokio::task::spawn_blocking(NatsCluster::start)
        .await
        .unwrap();
    let urls = cluster.urls();

    // the requester on member 1; after the kill it reconnects (to 0 or 2) only after 800 ms
    let (r, tr) = instance_with(config(
        vec![urls[1].clone(), urls[2].clone(), urls[0].clone()],
        mode,
        reconnect_after,
    ))
    .await;
    let victim = cluster
        .index_of_port(tr.client().server_info().port)
        .expect("the requester is connected to a member");
    let worker_member = (victim + 1) % 3;

    // the worker on another member only, counting runs and the answers it gives while the
    // requester is disconnected
    let (w, tw) = instance_with(config(
        vec![urls[worker_member].clone()],
        mode,
        Duration::from_millis(10),
    ))
    .await;
    let runs = Arc::new(AtomicU64::new(0));
    let while_down = Arc::new(AtomicU64::new(0));
    let book = w
        .node_with(NODE, NodeOptions::new().max_concurrent(32).queue_limit(512))
        .await
        .unwrap();
    let (rn, wd, requester_client) = (runs.clone(), while_down.clone(), tr.client().clone());
    book.on("entry", move |e: Event, _c: Context| {
        let (rn, wd, rc) = (rn.clone(), wd.clone(), requester_client.clone());
        async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            rn.fetch_add(1, Ordering::Relaxed);
            if rc.connection_state() != async_nats::connection::State::Connected {
                wd.fetch_add(1, Ordering::Relaxed);
            }
            json!({ "n": e.payload()["n"] })
        }
    })
    .unwrap();

    let (stream, _) = tw.durable_streams().unwrap();
    let mut streams = vec![stream.to_owned()];
    if mode == DeliveryMode::ExactlyOnce {
        streams.push(format!("{stream}_DONE"));
    }
    leaders_off(tw.client(), &cluster, victim, &streams).await;

    let producer = r.node("producer").await.unwrap();
    let sends: Vec<_> = (0..sends_n)
        .map(|n| {
            let reply = producer
                .send(NODE, Event::new("entry", json!({ "n": n })))
                .timeout(SEND_TIMEOUT);
            async move { (n, reply.await) }
        })
        .collect();
    let all = tokio::spawn(join_all(sends));

    // kill the requester's member once the worker is under way (and, when the worker is to
    // be gone before the requester is back, once every send is stored: one whose store the
    // server acknowledges only after the reconnect runs only then)
    wait_until(
        60,
        || format!("the worker did not start: {:?}", tw.stats()),
        || {
            runs.load(Ordering::Relaxed) >= 20
                && (!worker_gone || tr.stats().durable_published >= sends_n)
        },
    )
    .await;
    cluster.kill(victim);
    let at_kill = runs.load(Ordering::Relaxed);
    let started = Instant::now();
    if worker_gone {
        wait_until(
            60,
            || format!("the worker did not finish: {:?}", tw.stats()),
            || tw.stats().durable_acked >= sends_n,
        )
        .await;
        w.shutdown(Duration::from_secs(2)).await;
        assert_ne!(
            tr.client().connection_state(),
            async_nats::connection::State::Connected,
            "the requester reconnected before the worker was gone: the test tests nothing"
        );
    }

    let results = tokio::time::timeout(SEND_TIMEOUT + Duration::from_secs(20), all)
        .await
        .expect("every send resolves (its own timeout at the latest)")
        .unwrap();
    let took = started.elapsed();
    let mut answered = 0u64;
    let mut timeouts = 0u64;
    let mut lost = 0u64;
    let mut other = Vec::new();
    for (n, r) in results {
        match r {
            Ok(v) if v["n"] == json!(n) => answered += 1,
            Ok(v) => other.push(format!("{n}: wrong answer {v}")),
            Err(e) if e.kind() == ErrorKind::Timeout => timeouts += 1,
            Err(e) if e.kind() == ErrorKind::Transport && e.message().contains("no replica") => {
                lost += 1
            }
            Err(e) => other.push(format!("{n}: {e}")),
        }
    }
    let (rs, ws) = (tr.stats(), tw.stats());
    println!(
        "{mode:?}{}: {answered}/{sends_n} answered, {lost} failed at once (answer lost), \
         {timeouts} waited out their timeout, {} other; \
         {at_kill} run before the kill, {} answered while the requester was disconnected; \
         resolved {took:?} after the kill",
        if worker_gone { " (worker gone)" } else { "" },
        other.len(),
        while_down.load(Ordering::Relaxed),
    );
    println!("requester {rs:?}");
    println!("worker {ws:?}");
    assert!(
        while_down.load(Ordering::Relaxed) > 0,
        "nothing was answered while the requester was disconnected: the test tested nothing"
    );
    assert_eq!(timeouts, 0, "durable sends waited out their timeout");
    assert!(other.is_empty(), "{other:?}");
    match (worker_gone, mode) {
        (false, _) => assert_eq!(answered, sends_n),
        // the record tells the outcome
        (true, DeliveryMode::ExactlyOnce) => {
            assert_eq!(answered, sends_n);
            // all but those answered before the kill
            assert!(rs.durable_answers_from_record > 0, "{rs:?}");
            assert_eq!(rs.durable_answers_lost, 0, "{rs:?}");
        }
        // nobody holds the answer: a typed error at once, not the timeout (those answered
        // before the kill arrived)
        (true, _) => {
            assert!(lost > 0);
            assert_eq!(answered + lost, sends_n);
            assert_eq!(rs.durable_answers_lost, lost, "{rs:?}");
        }
    }
    assert!(took < SEND_TIMEOUT * 3 / 4, "resolved only after {took:?}");
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_answers_survive_the_requesters_outage() {
    answers_survive_the_requesters_outage(DeliveryMode::AtLeastOnce, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_answers_survive_the_requesters_outage() {
    answers_survive_the_requesters_outage(DeliveryMode::ExactlyOnce, false).await;
}

/// The worker that ran the events is gone too when the requester comes back: an exactly-once
/// node's record answers; an at-least-once send fails at once with `transport`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_sends_fail_at_once_when_no_replica_holds_the_answer() {
    answers_survive_the_requesters_outage(DeliveryMode::AtLeastOnce, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_sends_are_answered_from_the_record_when_no_replica_holds_the_answer() {
    answers_survive_the_requesters_outage(DeliveryMode::ExactlyOnce, true).await;
}

/// The figures behind the design (DESIGN.md, "How does a durable answer survive its
/// requester's outage?"): durable sends per second as built (answers kept in memory), beside
/// what storing every answer in JetStream instead would add per send (a file-stream publish
/// awaited, 64 in flight), and a core publish of the same answers. One JetStream server.
/// `cargo nextest run -p happen-nats --test durable_answer --run-ignored only --no-capture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn measure_answer_costs() {
    use futures::StreamExt as _;
    use test_support::{NatsServer, NatsServerOptions};
    const N: usize = 3_000;
    const IN_FLIGHT: usize = 64;
    let server = NatsServer::start_with(NatsServerOptions::new().with_jetstream());
    let one = |mode| {
        let mut c = config(vec![server.url()], mode, Duration::from_millis(10));
        c.durable.replicas = 1;
        c
    };
    for mode in [DeliveryMode::AtLeastOnce, DeliveryMode::ExactlyOnce] {
        let (w, _tw) = instance_with(one(mode)).await;
        let book = w
            .node_with(NODE, NodeOptions::new().max_concurrent(64).queue_limit(512))
            .await
            .unwrap();
        book.on("entry", |e: Event, _c: Context| async move {
            json!({ "n": e.payload()["n"] })
        })
        .unwrap();
        let (r, _tr) = instance_with(one(mode)).await;
        let producer = r.node("producer").await.unwrap();
        let started = Instant::now();
        let ok = futures::stream::iter(0..N)
            .map(|n| producer.send(NODE, Event::new("entry", json!({ "n": n }))))
            .buffer_unordered(IN_FLIGHT)
            .filter(|r| std::future::ready(r.is_ok()))
            .count()
            .await;
        let took = started.elapsed();
        assert_eq!(ok, N);
        println!(
            "{mode:?} durable sends: {N} in {took:?}: {:.0}/s, {:.2} ms each",
            N as f64 / took.as_secs_f64(),
            took.as_secs_f64() * 1000.0 / N as f64
        );
        w.shutdown(Duration::from_secs(2)).await;
        r.shutdown(Duration::from_secs(2)).await;
    }

    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: "ANSWERS".into(),
        subjects: vec!["answers.>".into()],
        storage: async_nats::jetstream::stream::StorageType::File,
        max_age: Duration::from_secs(30),
        ..Default::default()
    })
    .await
    .unwrap();
    let body = bytes::Bytes::from_static(br#"{"n":12345}"#);
    let started = Instant::now();
    let stored = futures::stream::iter(0..N)
        .map(|n| {
            let (js, body) = (js.clone(), body.clone());
            async move {
                js.publish(format!("answers.{n}"), body)
                    .await
                    .unwrap()
                    .await
                    .is_ok()
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await;
    let js_took = started.elapsed();
    assert_eq!(stored, N);
    let started = Instant::now();
    for n in 0..N {
        client
            .publish(format!("_INBOX.x.{n}"), body.clone())
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    let core_took = started.elapsed();
    println!(
        "answers stored in JetStream (file, awaited, {IN_FLIGHT} in flight): {N} in {js_took:?}: \
         {:.0}/s; core publishes: {N} in {core_took:?}: {:.0}/s",
        N as f64 / js_took.as_secs_f64(),
        N as f64 / core_took.as_secs_f64()
    );
}

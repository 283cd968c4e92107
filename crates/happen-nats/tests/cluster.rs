//! Happen over a 3-server NATS cluster: a client given every server URL survives the loss of
//! the server it is connected to. Requests in flight fail with clear errors (never a silent
//! loss, never a wait past their timeout), the client reconnects to another member and
//! resubscribes, and every later send succeeds; tells made during the switch are buffered and
//! all delivered.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{instance_with, within};
use happen::{Context, ErrorKind, Event, Happen};
use happen_nats::{CONNECTION_STATUS_EVENT, NatsConfig};
use parking_lot::Mutex;
use serde_json::{Value, json};
use test_support::NatsCluster;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Each request's own timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

fn config(urls: Vec<String>) -> NatsConfig {
    let mut config = NatsConfig::with_server(urls[0].clone());
    config.servers = urls;
    config.reconnect.delay = Duration::from_millis(10);
    config.reconnect.max_delay = Duration::from_millis(200);
    config
}

/// A node on `happen` that forwards the payloads of `system.connection-status` events.
async fn status_watcher(happen: &Happen) -> mpsc::UnboundedReceiver<Value> {
    let (tx, rx) = mpsc::unbounded_channel();
    let watcher = happen.node("watcher").await.unwrap();
    watcher
        .on(CONNECTION_STATUS_EVENT, move |event: Event, _c: Context| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(event.payload().clone());
            }
        })
        .unwrap();
    rx
}

/// Waits for the next status event with `status`, skipping others.
async fn wait_status(rx: &mut mpsc::UnboundedReceiver<Value>, status: &str) -> Value {
    within(60, status, async {
        loop {
            let v = rx.recv().await.expect("status channel open");
            if v["status"] == status {
                return v;
            }
        }
    })
    .await
}

/// One request of the steady stream.
struct Outcome {
    started: Instant,
    took: Duration,
    result: happen::Result<Value>,
    sent: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_keep_flowing_when_the_clients_server_is_killed() {
    let mut cluster = tokio::task::spawn_blocking(NatsCluster::start)
        .await
        .unwrap();
    let (b, tb) = instance_with(config(cluster.urls())).await;
    let svc = b.node("svc").await.unwrap();
    svc.on("echo", |event: Event, _c: Context| async move {
        event.payload().clone()
    })
    .unwrap();
    let mut b_status = status_watcher(&b).await;
    let (a, ta) = instance_with(config(cluster.urls())).await;
    let mut a_status = status_watcher(&a).await;
    let client = a.node("client").await.unwrap();

    // a steady stream: 4 producers, each sending one request after the other
    let outcomes = Arc::new(Mutex::new(Vec::<Outcome>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut producers = Vec::new();
    for p in 0..4u64 {
        let (client, outcomes, stop) = (client.clone(), outcomes.clone(), stop.clone());
        producers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let sent = p * 1_000_000 + i;
                i += 1;
                let started = Instant::now();
                let result = client
                    .send("svc", Event::new("echo", sent))
                    .timeout(REQUEST_TIMEOUT)
                    .await;
                let failed = result.is_err();
                outcomes.lock().push(Outcome {
                    started,
                    took: started.elapsed(),
                    result,
                    sent,
                });
                if failed {
                    // a failed send is retried by the next one, not in a tight loop
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }));
    }
    let ok = |outcomes: &Mutex<Vec<Outcome>>| {
        outcomes.lock().iter().filter(|o| o.result.is_ok()).count()
    };
    within(60, "200 sends before the kill", async {
        while ok(&outcomes) < 200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    let victim = cluster
        .index_of_port(ta.client().server_info().port)
        .expect("a is connected to a member");
    let b_too = cluster.index_of_port(tb.client().server_info().port) == Some(victim);
    let killed_at = Instant::now();
    cluster.kill(victim);
    let up = wait_status(&mut a_status, "reconnected").await;
    assert!(
        !up["server"]
            .as_str()
            .unwrap()
            .contains(&cluster.server(victim).port().to_string()),
        "a moved to another member: {up}"
    );
    if b_too {
        wait_status(&mut b_status, "reconnected").await;
    }
    let reconnected_at = Instant::now();
    // then 300 more successful sends
    let before = ok(&outcomes);
    within(60, "300 sends after the reconnect", async {
        while ok(&outcomes) < before + 300 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for p in producers {
        within(30, "a producer ends", p).await.unwrap();
    }

    let outcomes = std::mem::take(&mut *outcomes.lock());
    let mut failures = Vec::new();
    for o in outcomes.iter() {
        assert!(
            o.took < REQUEST_TIMEOUT,
            "send {} took {:?}, its timeout is {REQUEST_TIMEOUT:?}",
            o.sent,
            o.took
        );
        match &o.result {
            Ok(v) => assert_eq!(*v, json!(o.sent), "a reply to another request"),
            Err(e) => {
                failures.push(e.kind());
                assert!(
                    matches!(e.kind(), ErrorKind::Transport | ErrorKind::UnknownNode),
                    "send {}: an unclear failure: {e}",
                    o.sent
                );
                assert!(
                    o.started + o.took >= killed_at,
                    "send {} failed before the kill: {e}",
                    o.sent
                );
            }
        }
    }
    // once a send succeeded after the reconnect, every send started later succeeds
    let first_ok_after = outcomes
        .iter()
        .filter(|o| o.result.is_ok() && o.started >= reconnected_at)
        .map(|o| o.started)
        .min()
        .expect("sends succeeded after the reconnect");
    let late_failures: Vec<String> = outcomes
        .iter()
        .filter(|o| o.started > first_ok_after)
        .filter_map(|o| o.result.as_ref().err().map(|e| format!("{}: {e}", o.sent)))
        .collect();
    assert!(late_failures.is_empty(), "{late_failures:?}");
    eprintln!(
        "{} sends, {} failed during the switch ({failures:?}) (b on the killed server too: {b_too}); \
         {:?} from the kill to the reconnect event, {:?} to the first success after it",
        outcomes.len(),
        failures.len(),
        reconnected_at - killed_at,
        first_ok_after - killed_at
    );
    assert!(ta.stats().disconnects >= 1);
    a.shutdown(Duration::from_secs(10)).await;
    b.shutdown(Duration::from_secs(10)).await;
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tells_during_the_switch_to_another_member_are_all_delivered() {
    const TELLS: u64 = 1_000;
    let mut cluster = tokio::task::spawn_blocking(NatsCluster::start)
        .await
        .unwrap();
    // a waits a second before its first reconnect attempt: the tells below find it
    // disconnected and are buffered
    let mut a_config = config(cluster.urls());
    a_config.reconnect.delay = Duration::from_millis(500);
    a_config.reconnect.max_delay = Duration::from_millis(2000);
    let (a, ta) = instance_with(a_config).await;
    let victim = cluster
        .index_of_port(ta.client().server_info().port)
        .expect("a is connected to a member");
    // b stays connected throughout: it only knows the other members
    let others: Vec<String> = (0..cluster.len())
        .filter(|&i| i != victim)
        .map(|i| cluster.server(i).url())
        .collect();
    let (b, tb) = instance_with(config(others)).await;
    let seen = Arc::new(Mutex::new(Vec::<u64>::new()));
    let svc = b.node("svc").await.unwrap();
    let s = seen.clone();
    svc.on("tick", move |event: Event, _c: Context| {
        let s = s.clone();
        async move {
            s.lock().push(event.payload().as_u64().unwrap());
        }
    })
    .unwrap();
    svc.on("echo", |event: Event, _c: Context| async move {
        event.payload().clone()
    })
    .unwrap();
    let mut a_status = status_watcher(&a).await;
    let client = a.node("client").await.unwrap();
    // svc's subscription has reached a's server
    within(30, "svc reachable", async {
        while client
            .send("svc", Event::new("echo", 0))
            .timeout(REQUEST_TIMEOUT)
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    cluster.kill(victim);
    let down = wait_status(&mut a_status, "disconnected").await;
    assert!(
        down["reason"].as_str().unwrap().contains("buffered"),
        "{down}"
    );
    // accepted while a is disconnected (or, if it is quick, already reconnected)
    for i in 0..TELLS {
        client
            .tell("svc", Event::new("tick", i))
            .unwrap_or_else(|e| panic!("tell {i} during the switch: {e}"));
    }
    wait_status(&mut a_status, "reconnected").await;
    within(60, "every tell handled", async {
        while seen.lock().len() < TELLS as usize {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // a round trip: nothing else is on its way
    assert_eq!(
        within(10, "after", client.send("svc", Event::new("echo", 1)))
            .await
            .unwrap(),
        json!(1)
    );
    let seen = seen.lock().clone();
    assert_eq!(seen.len(), TELLS as usize, "duplicates");
    assert_eq!(
        seen.iter().copied().collect::<HashSet<_>>().len(),
        TELLS as usize
    );
    assert_eq!(tb.stats().disconnects, 0, "b stayed connected");
    assert!(ta.stats().buffered_while_disconnected > 0);
    a.shutdown(Duration::from_secs(10)).await;
    b.shutdown(Duration::from_secs(10)).await;
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .unwrap();
}

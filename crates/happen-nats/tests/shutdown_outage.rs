//! A shutdown keeps its deadline whatever the server does: killed before the shutdown, or
//! alive but not answering (SIGSTOP), with requests and a durable send in flight. A process
//! that cannot exit during an outage cannot be restarted by its supervisor.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{instance_with, within};
use happen::{Context, ErrorKind, Event, Happen, Node};
use happen_nats::{DeliveryMode, DurableNode, NatsConfig};
use test_support::{NatsServer, NatsServerOptions};

const GRACE: Duration = Duration::from_secs(2);
/// What the issue allows a 2 s shutdown to take.
const BOUND: Duration = Duration::from_secs(3);

/// An instance with a plain node and a durable node, both holding flows that never end, and
/// a client with requests in flight to each.
async fn busy_instance(server: &NatsServer) -> (Happen, Node, Node, Vec<happen::Reply>) {
    let config = NatsConfig::with_server(server.url())
        .with_durable("ledger", DurableNode::new(DeliveryMode::AtLeastOnce));
    let (happen, _transport) = instance_with(config).await;
    let never = |_e: Event, _c: Context| async { futures::future::pending::<()>().await };
    let worker = happen.node("worker").await.unwrap();
    worker.on("work", never).unwrap();
    let ledger = happen.node("ledger").await.unwrap();
    ledger.on("post", never).unwrap();
    let client = happen.node("client").await.unwrap();
    let mut replies: Vec<_> = (0..20)
        .map(|i| client.send("worker", Event::new("work", i)))
        .collect();
    replies.push(client.send("ledger", Event::new("post", 1)));
    let (w, l) = (worker.clone(), ledger.clone());
    within(20, "the flows run", async move {
        while w.stats().active < 20 || l.stats().active < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    (happen, worker, ledger, replies)
}

async fn shutdown_in_time(happen: &Happen) -> happen::ShutdownReport {
    let started = Instant::now();
    let report = within(30, "shutdown returned", happen.shutdown(GRACE)).await;
    let took = started.elapsed();
    assert!(
        took < BOUND,
        "a {GRACE:?} shutdown took {took:?}: {report:?}"
    );
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_keeps_its_deadline_when_the_server_was_killed() {
    let mut server = NatsServer::start_with(NatsServerOptions::new().with_jetstream());
    let (happen, _worker, _ledger, replies) = busy_instance(&server).await;
    server.stop(); // SIGKILL
    let report = shutdown_in_time(&happen).await;
    assert_eq!(report.cancelled_flows, 21, "{report:?}");
    // Every request gets an answer; none waits out its timeout.
    for reply in replies {
        let err = within(5, "an answer", reply).await.unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::ShutDown | ErrorKind::Transport),
            "{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_keeps_its_deadline_when_the_server_stops_answering() {
    let server = NatsServer::start_with(NatsServerOptions::new().with_jetstream());
    let (happen, _worker, _ledger, replies) = busy_instance(&server).await;
    let pid = server.pid().expect("the server runs").to_string();
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let report = shutdown_in_time(&happen).await;
    assert!(
        Command::new("kill")
            .args(["-CONT", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(report.cancelled_flows, 21, "{report:?}");
    for reply in replies {
        let err = within(5, "an answer", reply).await.unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::ShutDown | ErrorKind::Transport),
            "{err}"
        );
    }
}

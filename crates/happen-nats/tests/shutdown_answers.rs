//! Shutting down an instance that serves remote requests: every request that reached it
//! before it stopped taking new ones is answered (with the value, or `ShutDown` when the
//! deadline cancelled it), and every later one fails fast because the node is gone. No
//! remote sender waits out its own timeout.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{instance, within};
use happen::{Context, ErrorKind, Event, NodeOptions};
use serde_json::json;
use test_support::NatsServer;
use tokio::sync::Notify;

const ROUNDS: u64 = 100;
const SENDS: u64 = 20;
const DEADLINE: Duration = Duration::from_millis(100);
/// Long enough that a lost answer shows up as `Timeout`, not as slowness.
const SENDER_TIMEOUT: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_every_remote_request() {
    let server = NatsServer::start();
    let (client_h, _) = instance(&server.url()).await;
    let client = client_h
        .node_with("client", NodeOptions::new().request_timeout(SENDER_TIMEOUT))
        .await
        .unwrap();
    let (mut values, mut shut_down, mut gone) = (0u64, 0u64, 0u64);
    for round in 0..ROUNDS {
        let (worker_h, _) = instance(&server.url()).await;
        let worker = worker_h
            .node_with(
                "worker",
                NodeOptions::new().max_concurrent(4).queue_limit(100),
            )
            .await
            .unwrap();
        // 1–30 ms per request: 20 requests on 4 slots take 5–150 ms, so some rounds finish
        // within the deadline and in others the deadline cancels the tail
        let work = Duration::from_millis(1 + round % 30);
        let started = Arc::new(Notify::new());
        let s = started.clone();
        worker
            .on("job", move |e: Event, _c: Context| {
                s.notify_one();
                async move {
                    tokio::time::sleep(work).await;
                    e.payload().clone()
                }
            })
            .unwrap();

        let replies: Vec<_> = (0..SENDS)
            .map(|i| {
                let reply = client.send("worker", Event::new("job", json!(i)));
                tokio::spawn(async move { (reply.await, Instant::now()) })
            })
            .collect();
        // some requests run, some are queued, the rest are on their way
        within(5, "first request running", started.notified()).await;
        let stopping = Instant::now();
        within(5, "shutdown", worker_h.shutdown(DEADLINE)).await;
        let mut outcomes = Vec::new();
        for r in replies {
            outcomes.push(within(10, "remote sender", r).await.unwrap());
        }
        for (i, (outcome, at)) in outcomes.into_iter().enumerate() {
            let took = at.saturating_duration_since(stopping);
            assert!(
                took <= DEADLINE + Duration::from_secs(1),
                "round {round}: request {i} answered {took:?} after shutdown began: {outcome:?}"
            );
            match outcome {
                Ok(v) => {
                    assert_eq!(v, json!(i));
                    values += 1;
                }
                Err(e) if e.kind() == ErrorKind::ShutDown => shut_down += 1,
                Err(e) if e.kind() == ErrorKind::UnknownNode => gone += 1,
                Err(e) => panic!("round {round}: request {i} failed with {:?}: {e}", e.kind()),
            }
        }
    }
    eprintln!("{values} values, {shut_down} shut_down, {gone} unknown_node");
    assert!(values > 0 && shut_down > 0, "both outcomes occur");
}

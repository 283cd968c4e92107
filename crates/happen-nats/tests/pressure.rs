//! Backpressure across the wire: a remote node's pressure, caused by a third process, is
//! visible to producers in another process (through the node's `node.pressure` reports), so
//! `Node::ready` waits for it to drain.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{instance, within};
use happen::transport::Transport;
use happen::{Context, Event, NodeId, NodeOptions};
use test_support::NatsServer;
use tokio::sync::Semaphore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_honours_remote_pressure() {
    let server = NatsServer::start();
    let (producer_h, producer_t) = instance(&server.url()).await;
    let (loader_h, _) = instance(&server.url()).await;
    let (sink_h, _) = instance(&server.url()).await;
    let gate = Arc::new(Semaphore::new(0));
    let sink = sink_h
        .node_with(
            "sink",
            NodeOptions::new()
                .max_concurrent(1)
                .queue_limit(10)
                .backpressure_threshold(0.5),
        )
        .await
        .unwrap();
    let g = gate.clone();
    sink.on("work", move |_e: Event, _c: Context| {
        let g = g.clone();
        async move {
            g.acquire().await.unwrap().forget();
        }
    })
    .unwrap();
    let producer = producer_h.node("producer").await.unwrap();
    let loader = loader_h.node("loader").await.unwrap();
    let mut remote = producer_t.pressure(&NodeId::from("sink")).unwrap();
    // held while the sink's limits are asked for (one round trip)
    within(
        10,
        "limits known",
        remote.wait_for(|p| !p.under_pressure && p.queue_limit == 10),
    )
    .await
    .unwrap();

    // another process loads the sink: 1 running + 6 queued, over the threshold of 5
    let mut replies = Vec::new();
    for _ in 0..7 {
        replies.push(loader.send("sink", Event::new("work", ())));
    }
    within(
        10,
        "remote pressure seen",
        remote.wait_for(|p| p.under_pressure),
    )
    .await
    .unwrap();
    assert_eq!(remote.borrow().queue_limit, 10);

    let paced = tokio::spawn({
        let producer = producer.clone();
        async move {
            producer
                .ready("sink")
                .timeout(Duration::from_secs(20))
                .await
                .map(|()| producer.send("sink", Event::new("work", ())))
        }
    });
    // still under pressure: the paced send waits
    assert!(
        tokio::time::timeout(Duration::from_millis(200), remote.changed())
            .await
            .is_err()
    );
    assert!(!paced.is_finished());
    gate.add_permits(100);
    let reply = within(20, "paced send", paced).await.unwrap().unwrap();
    within(10, "paced reply", reply).await.unwrap();
    assert!(!remote.borrow().under_pressure);
    for r in replies {
        within(10, "queued replies", r).await.unwrap();
    }
    assert_eq!(sink.stats().rejected, 0);
}

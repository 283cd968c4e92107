//! `Node::ready` before each send to a node in another process paces itself: producers firing as fast as pacing
//! lets them never overrun the remote queue.

mod common;

use std::time::Duration;

use common::{instance, within};
use happen::{Context, ErrorKind, Event, NodeOptions};
use test_support::NatsServer;

const PRODUCERS: u64 = 4;
const PER_PRODUCER: u64 = 1_250;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_producers_never_overrun_a_remote_queue() {
    let server = NatsServer::start();
    let (target_h, _) = instance(&server.url()).await;
    let target = target_h
        .node_with(
            "target",
            NodeOptions::new().max_concurrent(4).queue_limit(100),
        )
        .await
        .unwrap();
    target
        .on("work", |e: Event, _c: Context| async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            e.payload().clone()
        })
        .unwrap();

    let (producer_h, _) = instance(&server.url()).await;
    let producer = producer_h
        .node_with(
            "producer",
            NodeOptions::new().request_timeout(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    // each producer fires its sends as fast as pacing allows and collects the replies
    let tasks: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let producer = producer.clone();
            tokio::spawn(async move {
                let mut replies = Vec::new();
                for i in 0..PER_PRODUCER {
                    producer
                        .ready("target")
                        .timeout(Duration::from_secs(30))
                        .await
                        .expect("pacing waits less than 30 s");
                    let reply = producer.send("target", Event::new("work", p * PER_PRODUCER + i));
                    replies.push(reply);
                }
                futures::future::join_all(
                    replies
                        .into_iter()
                        .map(std::future::IntoFuture::into_future),
                )
                .await
            })
        })
        .collect();
    let (mut answered, mut queue_full) = (0u64, 0u64);
    for t in tasks {
        for outcome in within(60, "producer", t).await.unwrap() {
            match outcome {
                Ok(_) => answered += 1,
                Err(e) if e.kind() == ErrorKind::QueueFull => queue_full += 1,
                Err(e) => panic!("unexpected {:?}: {e}", e.kind()),
            }
        }
    }
    let stats = target.stats();
    eprintln!(
        "answered {answered}, queue_full {queue_full}, target peak queue {}",
        stats.peak_queued
    );
    assert_eq!(queue_full, 0);
    assert_eq!(answered, PRODUCERS * PER_PRODUCER);
    assert_eq!(stats.rejected, 0);
    assert!(stats.peak_queued < 100, "peak {}", stats.peak_queued);
}

//! Fan-out to durable nodes across processes: every target of every `send_all` runs exactly
//! once (each target gets its own event id, so JetStream's per-id dedup and the exactly-once
//! records keep them apart), and every target answers. Real nats-server with JetStream.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use common::{instance_with, within};
use happen::{Context, Event};
use happen_nats::{DeliveryMode, DurableNode, NatsConfig};
use parking_lot::Mutex;
use serde_json::json;
use test_support::{NatsServer, NatsServerOptions};

const TARGETS: [&str; 3] = ["pricing-a", "pricing-b", "pricing-c"];
const FANOUTS: u64 = 300;

/// (node, n) -> the event ids the handler ran for.
type Runs = HashMap<(String, u64), Vec<String>>;

fn config(url: &str) -> NatsConfig {
    NatsConfig::with_server(url).with_durable(
        "pricing-*",
        DurableNode::new(DeliveryMode::ExactlyOnce)
            .with_backoff(Duration::from_millis(20), Duration::from_millis(200)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_to_three_durable_nodes_runs_each_target_once() {
    let server = NatsServer::start_with(NatsServerOptions::new().with_jetstream());
    let url = server.url();
    let (workers, wt) = instance_with(config(&url)).await;
    let (clients, ct) = instance_with(config(&url)).await;

    let runs: Arc<Mutex<Runs>> = Arc::default();
    let mut nodes = Vec::new();
    for id in TARGETS {
        let node = workers.node(id).await.unwrap();
        let runs = runs.clone();
        node.on("quote", move |e: Event, ctx: Context| {
            let runs = runs.clone();
            async move {
                let n = e.payload()["n"].as_u64().unwrap_or(u64::MAX);
                let me = ctx.node_id().to_string();
                runs.lock()
                    .entry((me.clone(), n))
                    .or_default()
                    .push(e.id().to_string());
                json!({ "by": me, "n": n })
            }
        })
        .unwrap();
        nodes.push(node);
    }
    let shop = clients.node("shop").await.unwrap();

    let mut pending = Vec::new();
    for n in 0..FANOUTS {
        pending.push(
            shop.send_all(TARGETS, Event::new("quote", json!({ "n": n })))
                .timeout(Duration::from_secs(30)),
        );
    }
    let all = within(
        60,
        "every fan-out answered",
        futures::future::join_all(pending),
    )
    .await;
    for (n, replies) in all.into_iter().enumerate() {
        let replies = replies.expect("the fan-out's input is valid");
        assert_eq!(replies.len(), 3);
        for (target, result) in replies.iter() {
            let v = result
                .as_ref()
                .unwrap_or_else(|e| panic!("fan-out {n} to {target}: {e}"));
            assert_eq!(v, &json!({ "by": target.to_string(), "n": n }));
        }
    }

    // They went through JetStream: one stored message per target per fan-out.
    let total = TARGETS.len() as u64 * FANOUTS;
    assert_eq!(ct.stats().durable_published, total);
    assert!(wt.stats().durable_pulled >= total, "{:?}", wt.stats());

    let runs = runs.lock();
    assert_eq!(runs.len(), TARGETS.len() * FANOUTS as usize);
    let mut ids = HashSet::new();
    for ((node, n), seen) in runs.iter() {
        assert_eq!(seen.len(), 1, "{node} ran fan-out {n} {} times", seen.len());
        assert!(
            ids.insert(seen[0].clone()),
            "each target has its own event id"
        );
    }
}

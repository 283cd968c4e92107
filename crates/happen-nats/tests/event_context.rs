//! Unknown context fields and the origin cross NATS: raw JSON in, through a happen node,
//! forwarded over NATS to another process's node, and back out as raw JSON.

mod common;

use bytes::Bytes;
use common::{instance, within};
use happen::{Context, Event};
use serde_json::{Value, json};
use test_support::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_context_fields_survive_a_round_trip_over_nats() {
    let server = NatsServer::start();
    let (a, _ta) = instance(&server.url()).await;
    let (b, _tb) = instance(&server.url()).await;
    let front = a.node("front").await.unwrap();
    front
        .on("job", |event: Event, ctx: Context| async move {
            ctx.send("back", event).await // forwarded over NATS to the other instance
        })
        .unwrap();
    let back = b.node("back").await.unwrap();
    back.on("job", |event: Event, _c: Context| async move {
        serde_json::to_value(&event).unwrap()
    })
    .unwrap();

    let raw = async_nats::connect(server.url()).await.unwrap();
    let body = json!({
        "type": "job",
        "payload": {"n": 1},
        "context": {
            "causal": {"id": "evt-1", "sender": "ts", "correlationId": "txn-1", "path": ["ts"],
                       "timestamp": 1_700_000_000_000u64, "trace": "t-9"},
            "tenant": {"id": 42},
            "origin": {"nodeId": "ts", "sourceId": "ada", "sourceType": "user"}
        }
    });
    let reply = within(
        10,
        "raw request",
        raw.request("happen.node.front", Bytes::from(body.to_string())),
    )
    .await
    .unwrap();
    let seen: Value = serde_json::from_slice(&reply.payload).unwrap();
    let c = &seen["context"];
    assert_eq!(c["tenant"], json!({"id": 42}), "{seen}");
    assert_eq!(c["causal"]["trace"], "t-9");
    assert_eq!(c["causal"]["sender"], "front");
    assert_eq!(c["origin"]["nodeId"], "front");
    assert_eq!(c["origin"]["sourceId"], "ada");
    assert_eq!(c["origin"]["sourceType"], "user");
    assert_eq!(c["causal"]["path"], json!(["ts", "front"]));
}

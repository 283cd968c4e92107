//! Unknown context fields and `context.origin`: kept from decoding through the handler to a
//! forwarded event; derived sends inherit the source, `origin.nodeId` is the immediate sender.

use happen::{Context, Event, Happen};
use serde_json::{Value, json};

#[tokio::test]
async fn unknown_context_fields_survive_decode_handle_forward_encode() {
    let happen = Happen::new();
    let front = happen.node("front").await.unwrap();
    let back = happen.node("back").await.unwrap();
    front
        .on("job", |event: Event, ctx: Context| async move {
            // forward the received event itself: its unknown fields go along
            ctx.send("back", event).await
        })
        .unwrap();
    back.on("job", |event: Event, _c: Context| async move {
        serde_json::to_value(&event).unwrap()
    })
    .unwrap();

    let raw = json!({
        "type": "job",
        "payload": {"n": 1},
        "context": {
            "causal": {"id": "evt-1", "sender": "ts", "correlationId": "txn-1", "path": ["ts"],
                       "timestamp": 1, "trace": {"span": 7}},
            "tenant": {"id": 42, "tags": ["a", null, 1.5]},
            "origin": {"nodeId": "ts", "sourceId": "ada", "sourceType": "user", "via": "web"}
        }
    });
    let event: Event = serde_json::from_value(raw).unwrap();
    assert_eq!(event.origin().source_id(), Some("ada"));
    assert_eq!(event.origin().node_id(), "ts");
    let seen = front.send(&front, event).await.unwrap();
    let c = &seen["context"];
    assert_eq!(c["tenant"], json!({"id": 42, "tags": ["a", null, 1.5]}));
    assert_eq!(c["causal"]["trace"], json!({"span": 7}));
    assert_eq!(c["causal"]["sender"], "front");
    assert_eq!(
        c["origin"]["nodeId"], "front",
        "origin.nodeId is the immediate sender"
    );
    assert_eq!(c["origin"]["sourceId"], "ada");
    assert_eq!(c["origin"]["sourceType"], "user");
    assert_eq!(c["origin"]["via"], "web");
    // and read back once more, it is the same
    let again: Event = serde_json::from_value(seen.clone()).unwrap();
    assert_eq!(serde_json::to_value(&again).unwrap(), seen);
}

#[tokio::test]
async fn derived_sends_inherit_the_source_and_name_their_sender() {
    let happen = Happen::new();
    let web = happen.node("web").await.unwrap();
    let orders = happen.node("orders").await.unwrap();
    let billing = happen.node("billing").await.unwrap();
    orders
        .on("order", |_e: Event, ctx: Context| async move {
            ctx.send(
                "billing",
                Event::new("invoice", ()).with_context_field("x", 1),
            )
            .await
        })
        .unwrap();
    billing
        .on("invoice", |e: Event, _c: Context| async move {
            let o = e.origin();
            json!([
                o.node_id().as_str(),
                o.source_id(),
                o.source_type(),
                e.context_field("x")
            ])
        })
        .unwrap();
    let order = Event::new("order", ())
        .with_source_id("u-1")
        .with_source_type("user");
    let seen = web.send(&orders, order).await.unwrap();
    assert_eq!(seen, json!(["orders", "u-1", "user", 1]));

    // a root event without a source has no origin on the wire (as the reference writes it)
    let plain = web.send(&billing, Event::new("invoice", ())).await.unwrap();
    assert_eq!(plain, json!(["web", Value::Null, Value::Null, Value::Null]));
}

#[test]
fn an_event_without_extra_fields_writes_what_it_wrote_before() {
    let v: Value = serde_json::from_value::<Event>(json!({"type": "t", "payload": 1}))
        .map(|e| serde_json::to_value(&e).unwrap())
        .unwrap();
    let c = v["context"].as_object().unwrap();
    assert_eq!(c.keys().collect::<Vec<_>>(), ["causal"]);
}

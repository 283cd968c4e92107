//! Streaming replies: items in order then the final value; awaiting directly; non-streaming
//! handlers read as streams; a producer error after some items.

use std::time::Duration;

use futures::StreamExt;
use happen::{BoxError, Context, Emitter, ErrorKind, Event, Happen, Node};
use serde_json::{Value, json};
use tokio::time::timeout;

const T: Duration = Duration::from_secs(10);

/// Emits `0..n`, then answers `{"done": n}`.
async fn count(event: Event, _ctx: Context, emit: Emitter) -> happen::Result<Value> {
    let n = event.payload().as_u64().unwrap_or(0);
    for i in 0..n {
        emit.emit(i).await?;
    }
    Ok(json!({ "done": n }))
}

/// Emits `0..k`, then fails with a handler error.
async fn fail_after(event: Event, _ctx: Context, emit: Emitter) -> Result<Value, BoxError> {
    let k = event.payload().as_u64().unwrap_or(0);
    for i in 0..k {
        emit.emit(i).await?;
    }
    Err(format!("disk on fire after {k} items").into())
}

async fn setup() -> (Happen, Node, Node) {
    let happen = Happen::new();
    let producer = happen.node("producer").await.unwrap();
    producer.on("count", count).unwrap();
    producer.on("fail", fail_after).unwrap();
    producer
        .on("plain", |e: Event, _c: Context| async move {
            json!({ "plain": e.payload().clone() })
        })
        .unwrap();
    let client = happen.node("client").await.unwrap();
    (happen, producer, client)
}

/// Reads a whole reply stream: its items, and the error that ended it (if any).
async fn drain(
    mut stream: happen::ReplyStream,
) -> (Vec<Value>, Option<happen::Error>, happen::ReplyStream) {
    let mut items = Vec::new();
    let mut error = None;
    while let Some(item) = timeout(T, stream.next()).await.expect("next item in time") {
        match item {
            Ok(v) => items.push(v),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    if error.is_some() {
        // After an error the stream ends.
        assert!(timeout(T, stream.next()).await.unwrap().is_none());
    }
    (items, error, stream)
}

#[tokio::test(start_paused = true)]
async fn items_arrive_in_order_then_the_final_value() {
    let (_h, producer, client) = setup().await;
    // More items than the default buffer (64), so the producer has to wait for the consumer.
    let n = 500u64;
    let stream = client.send(&producer, Event::new("count", n)).into_stream();
    let (items, error, stream) = drain(stream).await;
    assert!(error.is_none(), "{error:?}");
    let expected: Vec<Value> = (0..n).map(Value::from).collect();
    assert_eq!(items, expected);
    assert_eq!(stream.final_value(), Some(&json!({ "done": n })));

    // A streaming handler that emits nothing: no items, then its value.
    let stream = client.send(&producer, Event::new("count", 0)).into_stream();
    let (items, error, stream) = drain(stream).await;
    assert!(items.is_empty() && error.is_none());
    assert_eq!(stream.final_value(), Some(&json!({ "done": 0 })));
}

#[tokio::test(start_paused = true)]
async fn awaiting_a_streaming_reply_yields_its_final_value() {
    let (_h, producer, client) = setup().await;
    let v = timeout(T, client.send(&producer, Event::new("count", 300)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v, json!({ "done": 300 }));
    // `ReplyStream::finish` does the same after some items were read.
    let mut stream = client
        .send(&producer, Event::new("count", 10))
        .into_stream();
    let first = timeout(T, stream.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(first, 0);
    let v = timeout(T, stream.skip_to_final()).await.unwrap().unwrap();
    assert_eq!(v, json!({ "done": 10 }));
    assert_eq!(producer.stats().completed, 2);
}

#[tokio::test(start_paused = true)]
async fn a_non_streaming_handler_read_as_a_stream_yields_no_items_then_its_value() {
    let (_h, producer, client) = setup().await;
    let stream = client.send(&producer, Event::new("plain", 7)).into_stream();
    let (items, error, stream) = drain(stream).await;
    assert!(items.is_empty(), "{items:?}");
    assert!(error.is_none(), "{error:?}");
    assert_eq!(stream.final_value(), Some(&json!({ "plain": 7 })));
}

#[tokio::test(start_paused = true)]
async fn a_producer_error_after_k_items_arrives_after_those_items() {
    let (_h, producer, client) = setup().await;
    for k in [0u64, 1, 5, 200] {
        let stream = client.send(&producer, Event::new("fail", k)).into_stream();
        let (items, error, stream) = drain(stream).await;
        let expected: Vec<Value> = (0..k).map(Value::from).collect();
        assert_eq!(items, expected, "k = {k}");
        let err = error.unwrap_or_else(|| panic!("k = {k}: the stream ended without the error"));
        assert_eq!(err.kind(), ErrorKind::Handler, "{err}");
        assert_eq!(err.message(), format!("disk on fire after {k} items"));
        assert_eq!(stream.final_value(), None);
    }
    // Awaited directly, the same error comes back (the items are skipped).
    let err = timeout(T, client.send(&producer, Event::new("fail", 3)))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Handler);
    assert_eq!(err.message(), "disk on fire after 3 items");
    assert_eq!(producer.stats().failed, 5);
}

//! Typed stream items (`ReplyStream::typed`) and the final value after a combinator consumed
//! the stream (`ReplyStream::outcome`).

mod support;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use happen::{BoxError, Context, Emitter, ErrorKind, Event, Happen, Json, Node, NodeOptions};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::time::timeout;

const T: Duration = Duration::from_secs(10);

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Progress {
    done: u64,
    of: u64,
}

#[derive(Deserialize)]
struct Job {
    records: u64,
    /// Emit this item (0-based) with a field of the wrong type.
    #[serde(default)]
    bad_item: Option<u64>,
    /// Fail after this many items.
    #[serde(default)]
    fail_after: Option<u64>,
}

async fn job(Json(job): Json<Job>, _c: Context, emit: Emitter) -> Result<Value, BoxError> {
    for i in 0..job.records {
        if job.fail_after == Some(i) {
            return Err(format!("disk full after {i} records").into());
        }
        if job.bad_item == Some(i) {
            emit.emit(json!({ "done": "lots", "of": job.records }))
                .await?;
        } else {
            emit.emit(&Progress {
                done: i + 1,
                of: job.records,
            })
            .await?;
        }
    }
    Ok(json!({ "imported": job.records }))
}

async fn setup(happen: &Happen) -> Node {
    let node = happen
        .node_with("importer", NodeOptions::new().stream_buffer(4))
        .await
        .unwrap();
    node.on("job", job).unwrap();
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_items_then_the_outcome_after_try_collect() {
    let happen = Happen::new();
    let node = setup(&happen).await;
    let mut stream = node
        .send(&node, Event::new("job", json!({ "records": 1000 })))
        .into_stream()
        .typed::<Progress>();
    let outcome = stream.outcome();
    let items: Vec<Progress> = timeout(T, stream.try_collect()).await.unwrap().unwrap();
    assert_eq!(items.len(), 1000);
    assert!(
        items
            .iter()
            .enumerate()
            .all(|(i, p)| p.done == i as u64 + 1)
    );
    let summary = timeout(T, outcome).await.unwrap().unwrap();
    assert_eq!(summary, json!({ "imported": 1000 }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_item_is_one_error_naming_the_field_and_the_stream_goes_on() {
    let happen = Happen::new();
    let node = setup(&happen).await;
    let mut stream = node
        .send(
            &node,
            Event::new("job", json!({ "records": 5, "bad_item": 2 })),
        )
        .into_stream()
        .typed::<Progress>();
    let mut results = Vec::new();
    while let Some(item) = timeout(T, stream.next()).await.unwrap() {
        results.push(item);
    }
    assert_eq!(results.len(), 5);
    let err = results[2].as_ref().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidPayload);
    assert!(err.message().contains("stream item 2"), "{err}");
    assert!(err.message().contains("done"), "{err}");
    assert_eq!(results[4].as_ref().unwrap().done, 5);
    // The final value is there after the end, as JSON; and through an outcome taken late.
    assert_eq!(stream.final_value(), Some(&json!({ "imported": 5 })));
    #[derive(Deserialize)]
    struct Summary {
        imported: u64,
    }
    let summary: Summary = timeout(T, stream.outcome().decode())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary.imported, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outcome_carries_the_flows_error() {
    let happen = Happen::new();
    let node = setup(&happen).await;
    let mut stream = node
        .send(
            &node,
            Event::new("job", json!({ "records": 10, "fail_after": 3 })),
        )
        .into_stream()
        .typed::<Progress>();
    let (first, second) = (stream.outcome(), stream.outcome());
    // `try_collect` stops at the flow's error (and drops the stream): the outcome keeps it.
    let err = timeout(T, stream.try_collect::<Vec<_>>())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Handler);
    for outcome in [first, second] {
        let e = timeout(T, outcome).await.unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Handler);
        assert!(e.message().contains("disk full after 3"), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_stream_early_cancels_and_the_outcome_says_so() {
    let happen = Happen::new();
    let node = setup(&happen).await;
    let mut stream = node
        .send(&node, Event::new("job", json!({ "records": 1_000_000 })))
        .into_stream()
        .typed::<Progress>();
    let outcome = stream.outcome();
    let firsts: Vec<Progress> = timeout(T, stream.take(3).try_collect())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(firsts.len(), 3);
    let err = timeout(T, outcome).await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled);
    // The producer was cancelled (not run to its millionth record), which is not a failure.
    support::wait_until("the producer to be cancelled", || {
        node.stats().cancelled == 1
    })
    .await;
    assert_eq!(node.stats().failed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_streaming_flow_has_no_items_and_an_outcome() {
    let happen = Happen::new();
    let node = happen.node("plain").await.unwrap();
    node.on("x", |_e: Event, _c: Context| async {
        json!({ "ok": true })
    })
    .unwrap();
    let mut stream = node
        .send(&node, Event::new("x", ()))
        .into_stream()
        .typed::<Progress>();
    let outcome = stream.outcome();
    let items: Vec<_> = timeout(T, stream.collect::<Vec<_>>()).await.unwrap();
    assert!(items.is_empty());
    assert_eq!(
        timeout(T, outcome).await.unwrap().unwrap(),
        json!({ "ok": true })
    );
}

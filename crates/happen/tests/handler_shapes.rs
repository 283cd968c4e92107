//! Every handler shape the `Handler` trait documents, as `async fn`s and as closures,
//! including the streaming shape with a typed payload, `(Json<T>, Context, Emitter)`.

use std::time::Duration;

use futures::StreamExt;
use happen::{Context, Emitter, ErrorKind, Event, Flow, Happen, Json};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::time::timeout;

const T: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
struct Job {
    records: u64,
}

#[derive(Serialize)]
struct Summary {
    processed: u64,
}

async fn plain(e: Event, _c: Context) -> Value {
    json!(e.event_type())
}

async fn typed(Json(job): Json<Job>, _c: Context) -> Json<Summary> {
    Json(Summary {
        processed: job.records,
    })
}

async fn streaming(e: Event, _c: Context, emit: Emitter) -> happen::Result<u64> {
    let n = e.payload()["records"].as_u64().unwrap_or(0);
    for i in 0..n {
        emit.emit(i).await?;
    }
    Ok(n)
}

async fn typed_streaming(
    Json(job): Json<Job>,
    _c: Context,
    emit: Emitter,
) -> happen::Result<Json<Summary>> {
    for i in 0..job.records {
        emit.emit(&json!({ "done": i + 1, "of": job.records }))
            .await?;
    }
    Ok(Json(Summary {
        processed: job.records,
    }))
}

/// Reads a reply as a stream: its items, then its final value.
async fn items_and_final(reply: happen::Reply) -> happen::Result<(Vec<Value>, Value)> {
    let mut stream = reply.into_stream();
    let mut items = Vec::new();
    while let Some(item) = timeout(T, stream.next()).await.unwrap() {
        items.push(item?);
    }
    Ok((items, stream.final_value().cloned().unwrap()))
}

#[tokio::test]
async fn async_fns_of_every_shape() {
    let happen = Happen::new();
    let n = happen.node("n").await.unwrap();
    n.on("plain", plain).unwrap();
    n.on("typed", typed).unwrap();
    n.on("streaming", streaming).unwrap();
    n.on("typed.streaming", typed_streaming).unwrap();
    let job = json!({ "records": 3 });

    let v = timeout(T, n.send(&n, Event::new("plain", ())))
        .await
        .unwrap();
    assert_eq!(v.unwrap(), "plain");
    let v = timeout(T, n.send(&n, Event::new("typed", job.clone())))
        .await
        .unwrap();
    assert_eq!(v.unwrap(), json!({ "processed": 3 }));
    let (items, end) = items_and_final(n.send(&n, Event::new("streaming", job.clone())))
        .await
        .unwrap();
    assert_eq!(items, [json!(0), json!(1), json!(2)]);
    assert_eq!(end, 3);
    let (items, end) = items_and_final(n.send(&n, Event::new("typed.streaming", job.clone())))
        .await
        .unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(items[2], json!({ "done": 3, "of": 3 }));
    assert_eq!(end, json!({ "processed": 3 }));
}

#[tokio::test]
async fn typed_streaming_rejects_a_bad_payload_before_streaming() {
    let happen = Happen::new();
    let n = happen.node("n").await.unwrap();
    n.on("job", typed_streaming).unwrap();
    let mut stream = n
        .send(&n, Event::new("job", json!({ "records": "many" })))
        .into_stream();
    let err = timeout(T, stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidPayload);
    assert!(err.message().contains("records"), "{err}");
    assert!(timeout(T, stream.next()).await.unwrap().is_none());
}

#[tokio::test]
async fn closures_and_steps_of_the_typed_streaming_shape() {
    let happen = Happen::new();
    let n = happen.node("n").await.unwrap();
    let label = std::sync::Arc::new(String::from("row"));
    n.on(
        "job",
        move |Json(job): Json<Job>, _c: Context, emit: Emitter| {
            let label = label.clone();
            async move {
                for i in 0..job.records {
                    emit.emit(format!("{label} {i}")).await?;
                }
                Ok::<_, happen::Error>(job.records)
            }
        },
    )
    .unwrap();
    // The typed streaming shape as a later step of a flow.
    n.on("two.steps", |_e: Event, _c: Context| async {
        Flow::next(typed_streaming)
    })
    .unwrap();

    let (items, end) = items_and_final(n.send(&n, Event::new("job", json!({ "records": 2 }))))
        .await
        .unwrap();
    assert_eq!(items, [json!("row 0"), json!("row 1")]);
    assert_eq!(end, 2);
    let (items, end) =
        items_and_final(n.send(&n, Event::new("two.steps", json!({ "records": 1 }))))
            .await
            .unwrap();
    assert_eq!(items, [json!({ "done": 1, "of": 1 })]);
    assert_eq!(end, json!({ "processed": 1 }));
}

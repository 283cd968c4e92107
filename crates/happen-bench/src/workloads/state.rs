//! Stored state (issue 21): what an update of one node's state costs, locally and on NATS
//! key-value, and what a state read adds to a flow.
//!
//! - `state` (in process, memory store):
//!   - **update**: `n` sequential `node.stored::<Counter>().update(|c| c.count += 1)`, beside
//!     the floor: a `Mutex<serde_json::Value>` read-modify-written (`count += 1`) `n` times
//!     with the value serialized to bytes each time, as a store keeps it.
//!   - **flow+get**: `n` sequential sends to a handler that reads its stored state
//!     (`ctx.stored::<Counter>().get()`) and answers it, beside the same flow without the
//!     read (`flow`, the baseline of those two rows).
//! - `nats-state` (its own `nats-server -js` unless `--nats-url`): `n` sequential updates of
//!   one node's state in its `KV_node-<id>` bucket, beside the floor: raw async-nats doing the
//!   same compare-and-set update (a direct get of the last value, then a publish with
//!   `Nats-Expected-Last-Subject-Sequence`, awaiting the ack), and `floor(cas)`: the same
//!   publish with the revision remembered from the previous ack (one round trip, no read:
//!   what happen does while no other process writes); and `n` sequential `get`s beside raw
//!   direct gets.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use async_nats::jetstream::{self, message::PublishMessage, stream};
use bytes::Bytes;
use happen::{Context, Event, Happen};
use happen_nats::{NatsConfig, NatsTransport};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::err;
use crate::measure::{Bench, RunResult, Sample, system};
use crate::report::Row;

#[derive(Default, Serialize, Deserialize)]
struct Counter {
    count: u64,
}

/// Runs `state` (in process).
pub(crate) fn run(bench: &Bench) -> Vec<Row> {
    let n = if bench.quick { 2_000 } else { 100_000 };
    let mut rows = bench.compare(
        "state-update",
        n,
        &[
            system("happen(memory)", happen_update),
            system("floor", mutex_update),
        ],
        "floor",
    );
    rows.extend(bench.compare(
        "state-read-in-flow",
        n,
        &[
            system("flow+get", |n| flow(n, true)),
            system("flow", |n| flow(n, false)),
        ],
        "flow",
    ));
    rows
}

async fn happen_update(n: u64) -> RunResult {
    let happen = Happen::new();
    let node = happen.node("counter").await.map_err(err)?;
    let state = node.stored::<Counter>();
    state.get().await.map_err(err)?;
    let start = Instant::now();
    for _ in 0..n {
        state.update(|c| c.count += 1).await.map_err(err)?;
    }
    let elapsed = start.elapsed();
    if state.get().await.map_err(err)?.value.count != n {
        return Err("lost updates".into());
    }
    Ok(Sample::new(n, elapsed))
}

async fn mutex_update(n: u64) -> RunResult {
    let cell = Mutex::new((json!({"count": 0}), Vec::<u8>::new()));
    let start = Instant::now();
    for _ in 0..n {
        let mut g = cell.lock().map_err(err)?;
        let next = g.0["count"].as_u64().unwrap_or(0) + 1;
        g.0["count"] = next.into();
        g.1 = serde_json::to_vec(&g.0).map_err(err)?;
    }
    let elapsed = start.elapsed();
    std::hint::black_box(&cell);
    Ok(Sample::new(n, elapsed))
}

async fn flow(n: u64, read: bool) -> RunResult {
    let happen = Happen::new();
    let node = happen.node("counter").await.map_err(err)?;
    node.stored::<Counter>()
        .update(|c| c.count = 7)
        .await
        .map_err(err)?;
    if read {
        node.on("read", |_e: Event, ctx: Context| async move {
            ctx.stored::<Counter>().get().await.map(|v| v.value.count)
        })
    } else {
        node.on("read", |_e: Event, _ctx: Context| async move {
            Ok::<_, happen::Error>(7u64)
        })
    }
    .map_err(err)?;
    let start = Instant::now();
    for _ in 0..n {
        let v = node
            .send(&node, Event::new("read", ()))
            .await
            .map_err(err)?;
        if v != 7 {
            return Err(format!("read {v}"));
        }
    }
    Ok(Sample::new(n, start.elapsed()))
}

/// Runs `nats-state`; `url` is `--nats-url`, if given.
pub(crate) fn run_nats(bench: &Bench, url: Option<&str>) -> Vec<Row> {
    let n = if bench.quick { 500 } else { 10_000 };
    let w = "nats-state-update";
    let (_server, url) = match super::jetstream_server(url) {
        Ok(server) => server,
        Err(why) => {
            return vec![
                Row::unavailable(w, "floor", n, why),
                Row::unavailable(w, "happen", n, why),
                Row::unavailable("nats-state-get", "floor", n, why),
                Row::unavailable("nats-state-get", "happen", n, why),
            ];
        }
    };
    let (h, f, c) = (url.clone(), url.clone(), url.clone());
    let mut rows = bench.compare(
        w,
        n,
        &[
            system("happen", move |n| nats_update(h.clone(), n)),
            system("floor", move |n| raw_update(f.clone(), n)),
            system("floor(cas)", move |n| raw_cas(c.clone(), n)),
        ],
        "floor",
    );
    let (h, f) = (url.clone(), url);
    rows.extend(bench.compare(
        "nats-state-get",
        n,
        &[
            system("happen", move |n| nats_get(h.clone(), n)),
            system("floor", move |n| raw_get(f.clone(), n)),
        ],
        "floor",
    ));
    rows
}

/// A fresh node id (and so bucket) per run.
fn fresh() -> String {
    static RUN: AtomicU64 = AtomicU64::new(0);
    format!(
        "bench{}x{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    )
}

async fn nats_instance(url: String) -> Result<Happen, String> {
    let t = NatsTransport::connect(NatsConfig::with_server(url))
        .await
        .map_err(err)?;
    Happen::builder().transport(t).build().map_err(err)
}

async fn nats_update(url: String, n: u64) -> RunResult {
    let happen = nats_instance(url).await?;
    let node = happen.node(fresh()).await.map_err(err)?;
    let state = node.stored::<Counter>();
    state.update(|c| c.count = 0).await.map_err(err)?;
    let start = Instant::now();
    for _ in 0..n {
        state.update(|c| c.count += 1).await.map_err(err)?;
    }
    let elapsed = start.elapsed();
    if state.get().await.map_err(err)?.value.count != n {
        return Err("lost updates".into());
    }
    happen.shutdown(std::time::Duration::from_secs(2)).await;
    Ok(Sample::new(n, elapsed))
}

async fn nats_get(url: String, n: u64) -> RunResult {
    let happen = nats_instance(url).await?;
    let node = happen.node(fresh()).await.map_err(err)?;
    let state = node.stored::<Counter>();
    state.update(|c| c.count = 3).await.map_err(err)?;
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(state.get().await.map_err(err)?);
    }
    let elapsed = start.elapsed();
    happen.shutdown(std::time::Duration::from_secs(2)).await;
    Ok(Sample::new(n, elapsed))
}

/// A bucket laid out as NATS key-value, with one value.
async fn raw_bucket(url: &str) -> Result<(jetstream::Context, stream::Stream, String), String> {
    let js = jetstream::new(async_nats::connect(url).await.map_err(err)?);
    let bucket = format!("raw-{}", fresh());
    let s = js
        .create_stream(stream::Config {
            name: format!("KV_{bucket}"),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 64,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .map_err(err)?;
    let subject = format!("$KV.{bucket}.state");
    js.publish(subject.clone(), Bytes::from_static(br#"{"count":0}"#))
        .await
        .map_err(err)?
        .await
        .map_err(err)?;
    Ok((js, s, subject))
}

async fn raw_update(url: String, n: u64) -> RunResult {
    let (js, s, subject) = raw_bucket(&url).await?;
    let start = Instant::now();
    for _ in 0..n {
        let last = s
            .direct_get_last_for_subject(subject.clone())
            .await
            .map_err(err)?;
        let mut v: Value = serde_json::from_slice(&last.payload).map_err(err)?;
        v["count"] = (v["count"].as_u64().unwrap_or(0) + 1).into();
        let body = Bytes::from(serde_json::to_vec(&v).map_err(err)?);
        let m = PublishMessage::build()
            .payload(body)
            .expected_last_subject_sequence(last.sequence);
        js.send_publish(subject.clone(), m)
            .await
            .map_err(err)?
            .await
            .map_err(err)?;
    }
    let elapsed = start.elapsed();
    Ok(Sample::new(n, elapsed))
}

async fn raw_cas(url: String, n: u64) -> RunResult {
    let (js, s, subject) = raw_bucket(&url).await?;
    let last = s
        .direct_get_last_for_subject(subject.clone())
        .await
        .map_err(err)?;
    let mut revision = last.sequence;
    let mut v: Value = serde_json::from_slice(&last.payload).map_err(err)?;
    let start = Instant::now();
    for _ in 0..n {
        v["count"] = (v["count"].as_u64().unwrap_or(0) + 1).into();
        let body = Bytes::from(serde_json::to_vec(&v).map_err(err)?);
        let m = PublishMessage::build()
            .payload(body)
            .expected_last_subject_sequence(revision);
        revision = js
            .send_publish(subject.clone(), m)
            .await
            .map_err(err)?
            .await
            .map_err(err)?
            .sequence;
    }
    Ok(Sample::new(n, start.elapsed()))
}

async fn raw_get(url: String, n: u64) -> RunResult {
    let (_js, s, subject) = raw_bucket(&url).await?;
    let start = Instant::now();
    for _ in 0..n {
        let m = s
            .direct_get_last_for_subject(subject.clone())
            .await
            .map_err(err)?;
        let v: Value = serde_json::from_slice(&m.payload).map_err(err)?;
        std::hint::black_box(v);
    }
    Ok(Sample::new(n, start.elapsed()))
}

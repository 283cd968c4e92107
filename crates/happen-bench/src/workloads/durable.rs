//! `nats-durable`: durable tells through JetStream, happen against raw async-nats JetStream.
//!
//! The tool starts its own `nats-server -js` on a free loopback port (a second server, apart
//! from the plain one of the other NATS workloads) unless `--nats-url` is given (it must have
//! JetStream). Every run uses fresh streams (a fresh subject prefix), deleted afterwards.
//!
//! - **floor**: raw async-nats on two connections. One publishes `n` 128-byte messages to a
//!   work-queue stream (file storage, `Nats-Msg-Id` set as happen sets it), up to 4,096
//!   awaiting their acknowledgement at once; the other consumes with a durable pull consumer
//!   (`Consumer::stream`, batches of 1,000) and acknowledges each message. Timed from the first
//!   publish until the last message was received and its ack sent.
//! - **happen**: two `Happen` instances (two connections, as two processes), both configured
//!   with `[transport.nats.durable]` for the node `sink` (at-least-once, default limits). The
//!   client node `tell`s `n` events with a 128-character payload to `sink`; when the durable
//!   outgoing buffer is full the producer waits until it has drained to half
//!   (`NatsTransport::ready`) and retries (the waits are noted). Timed until the sink's
//!   handler ran for all `n` (each acknowledged after its flow).
//!
//! `HAPPEN_BENCH_OUTBOUND` and `HAPPEN_BENCH_CLIENT_CAP`, when set, are the happen side's
//! `transport.nats.outbound_buffer` and `client_capacity` (as in the other NATS workloads).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use happen::{Context, ErrorKind, Event, Happen};
use happen_nats::{DeliveryMode, DurableNode, NatsConfig, NatsTransport};
use serde_json::Value;

use super::err;
use crate::measure::{Bench, Countdown, RunResult, Sample, system};
use crate::report::Row;

/// Payload size of every message.
const PAYLOAD: usize = 128;
/// Publishes awaiting their acknowledgement at once (as happen's default `publish_window`).
const WINDOW: usize = 4096;
/// How long to wait for the last message before giving up on a run.
const IDLE: Duration = Duration::from_secs(10);

/// Runs `nats-durable`; `url` is `--nats-url`, if given.
pub(crate) fn run(bench: &Bench, url: Option<&str>) -> Vec<Row> {
    let n = if bench.quick { 5_000 } else { 100_000 };
    let w = "nats-durable";
    let (_server, url) = match super::jetstream_server(url) {
        Ok(server) => server,
        Err(why) => {
            return vec![
                Row::unavailable(w, "floor", n, why),
                Row::unavailable(w, "happen", n, why),
            ];
        }
    };
    let (h, f) = (url.clone(), url);
    let systems = [
        system("happen", move |n| happen_durable(h.clone(), n)),
        system("floor", move |n| floor_durable(f.clone(), n)),
    ];
    bench.compare(w, n, &systems, "floor")
}

/// A fresh subject prefix per run.
fn prefix() -> String {
    static RUN: AtomicU64 = AtomicU64::new(0);
    format!(
        "durable{}x{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    )
}

pub(crate) async fn floor_durable(url: String, n: u64) -> RunResult {
    let p = prefix();
    let publisher = async_nats::connect(&url).await.map_err(err)?;
    let consumer_conn = async_nats::connect(&url).await.map_err(err)?;
    let js = jetstream::new(publisher);
    let name = format!("{}_FLOOR", p.to_ascii_uppercase());
    let subject = format!("{p}.floor.sink");
    let s = js
        .create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(300),
            ..Default::default()
        })
        .await
        .map_err(err)?;
    s.create_consumer(consumer::pull::Config {
        durable_name: Some("sink".to_owned()),
        ack_policy: consumer::AckPolicy::Explicit,
        max_ack_pending: -1,
        ..Default::default()
    })
    .await
    .map_err(err)?;
    // the consumer on its own connection, as a separate process would be
    let consumer: consumer::Consumer<consumer::pull::Config> = jetstream::new(consumer_conn)
        .get_stream(&name)
        .await
        .map_err(err)?
        .get_consumer("sink")
        .await
        .map_err(err)?;
    drop(s);
    let body = Bytes::from(vec![0xa5u8; PAYLOAD]);

    let start = Instant::now();
    let receiver = tokio::spawn(async move {
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(1000)
            .messages()
            .await
            .map_err(err)?;
        let mut got = 0u64;
        while got < n {
            match tokio::time::timeout(IDLE, messages.next()).await {
                Ok(Some(Ok(m))) => {
                    black_box(&m.payload);
                    m.ack().await.map_err(err)?;
                    got += 1;
                }
                Ok(Some(Err(e))) => return Err(err(e)),
                Ok(None) | Err(_) => break,
            }
        }
        Ok::<_, String>((got, Instant::now()))
    });
    let mut flying = FuturesUnordered::new();
    for i in 0..n {
        while flying.len() >= WINDOW {
            if let Some(r) = flying.next().await {
                r?;
            }
        }
        let msg = jetstream::message::PublishMessage::build()
            .payload(body.clone())
            .message_id(format!("evt-{p}-{i}"));
        let ack = js.send_publish(subject.clone(), msg).await.map_err(err)?;
        flying.push(async move { ack.await.map(|_| ()).map_err(err) });
    }
    while let Some(r) = flying.next().await {
        r?;
    }
    let (got, end) = receiver.await.map_err(err)??;
    let elapsed = end.duration_since(start);
    let _ = js.delete_stream(&name).await;
    let sample = Sample::new(got, elapsed);
    Ok(if got < n {
        sample.with_note(format!("lost {} of {n}", n - got))
    } else {
        sample
    })
}

async fn instance(url: &str, prefix: &str) -> Result<(Happen, NatsTransport), String> {
    let mut config = NatsConfig::with_server(url)
        .with_durable("sink", DurableNode::new(DeliveryMode::AtLeastOnce));
    config.prefix = prefix.to_owned();
    super::nats::buffer_sizes(&mut config)?;
    let transport = NatsTransport::connect(config).await.map_err(err)?;
    let happen = Happen::builder()
        .transport(transport.clone())
        .build()
        .map_err(err)?;
    Ok((happen, transport))
}

pub(crate) async fn happen_durable(url: String, n: u64) -> RunResult {
    let p = prefix();
    let (server_side, server_t) = instance(&url, &p).await?;
    let sink = server_side.node("sink").await.map_err(err)?;
    let done = Countdown::leaked(n);
    sink.on("job", move |event: Event, _ctx: Context| async move {
        black_box(&event);
        done.hit();
    })
    .map_err(err)?;
    let (client_side, client_t) = instance(&url, &p).await?;
    let client = client_side.node("client").await.map_err(err)?;
    let body = Value::String("a".repeat(PAYLOAD));
    let mut waits = 0u64;

    let start = Instant::now();
    for _ in 0..n {
        loop {
            match client.tell("sink", Event::new("job", body.clone())) {
                Ok(()) => break,
                // the durable outgoing buffer is full: the server has not acknowledged enough;
                // wait until it has drained to half
                Err(e) if e.kind() == ErrorKind::Transport && client_t.is_backlogged() => {
                    waits += 1;
                    client_t.ready().await.map_err(err)?;
                }
                Err(e) => return Err(err(e)),
            }
        }
    }
    let end = done.wait_or_idle(IDLE).await;
    let elapsed = end.duration_since(start);
    let got = done.count();
    let stats = server_t.stats();

    client_side.shutdown(Duration::from_secs(5)).await;
    server_side.shutdown(Duration::from_secs(5)).await;
    if let Some((stream, dlq)) = server_t.durable_streams() {
        let js = jetstream::new(server_t.client().clone());
        let _ = js.delete_stream(stream).await;
        let _ = js.delete_stream(dlq).await;
    }
    let mut notes = Vec::new();
    if got < n {
        notes.push(format!("lost {} of {n} ({stats:?})", n - got));
    }
    if waits > 0 {
        notes.push(format!("durable buffer full: waited {waits} times"));
    }
    let sample = Sample::new(got, elapsed);
    Ok(if notes.is_empty() {
        sample
    } else {
        sample.with_note(notes.join(", "))
    })
}

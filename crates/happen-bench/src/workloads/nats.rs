//! NATS workloads: `nats-ask-seq`, `nats-ask-par`, `nats-broadcast`, `nats-tell`.
//!
//! The tool starts its own `nats-server` on a free loopback port (`test_support::NatsServer`)
//! unless `--nats-url` is given. Floors are raw async-nats:
//! - `nats-ask-seq`: sequential `Client::request` (128-byte payload) to a responder task on
//!   its own connection, latency per round trip;
//! - `nats-ask-par`: the same with 64 tasks, one request in flight each;
//! - `nats-broadcast`: one publisher publishes 128-byte messages, one subscriber (own
//!   connection, subscription capacity raised to 2^20 so nothing is dropped) receives them all;
//!   timed until the last one arrives, losses noted.
//!
//! A second floor, `floor(json)`, is what a user would write by hand to send happen's events
//! over raw async-nats: each message is an event in the reference's wire JSON (type, a
//! 128-character payload, the causal context with ids, sender, correlation, path and
//! timestamp) serialized with serde_json per message, and the receiver (the responder, for
//! the ask workloads, which answers with the payload) decodes it with serde_json. happen's
//! ratio to it is its framework overhead apart from the format's.
//!
//! The happen side runs over `happen-nats`: two `Happen` instances (a "server side" hosting
//! the receiving node and a "client side" hosting the sender), each with its own
//! `NatsTransport` connection, as two processes would be; a fresh subject prefix per run.
//! - `nats-ask-seq` / `nats-ask-par`: `client.send("echo", event)` awaited; the handler
//!   returns the event's payload (a 128-character string);
//! - `nats-broadcast`: `Node::broadcast` of events with that payload to one subscribing node
//!   (default limits); timed until the node has handled them all, losses noted. The
//!   publishing node takes broadcasts too (the default), so its process receives a copy of
//!   each and skips it; `happen(publish-only)` makes it with
//!   `NodeOptions::receive_broadcasts(false)`, not subscribed, as the floors' publisher. When the
//!   transport's outgoing buffer is full the producer waits for room
//!   (`NatsTransport::ready`) and retries (the waits are noted).
//! - `nats-tell`: the same with `Node::tell` to the subscribing node (its node subject)
//!   instead of a broadcast, a publisher that takes no broadcasts; the floors are
//!   `nats-broadcast`'s (one publisher, one subscriber).
//!
//! `HAPPEN_BENCH_OUTBOUND` and `HAPPEN_BENCH_CLIENT_CAP`, when set, are both happen sides'
//! `transport.nats.outbound_buffer` and `client_capacity` (to measure what the buffer sizes
//! cost in time and memory; the defaults otherwise).

use std::hint::black_box;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use happen::{Context, ErrorKind, Event, Happen, Node, NodeOptions};
use happen_nats::{NatsConfig, NatsTransport};
use serde_json::Value;

use super::{err, split_clients};
use crate::measure::{Bench, Countdown, RunResult, Sample, system};
use crate::report::Row;

/// Requests in flight in `nats-ask-par`.
const PARALLEL: u64 = 64;
/// Payload size of every NATS message.
const PAYLOAD: usize = 128;
/// Subscription buffer of the broadcast subscriber (the default, 65,536, drops messages).
const SUB_CAPACITY: usize = 1 << 20;

/// How long the broadcast subscriber waits for a next message before counting the rest lost.
const IDLE: Duration = Duration::from_secs(5);

const ASK_SUBJECT: &str = "bench.ask";
const BCAST_SUBJECT: &str = "bench.broadcast";

/// Runs the requested NATS workloads; `url` is `--nats-url`, if given.
pub(crate) fn run(bench: &Bench, workloads: &[&str], url: Option<&str>) -> Vec<Row> {
    let counts = |w: &str| -> u64 {
        match (w, bench.quick) {
            ("nats-ask-seq", false) => 20_000,
            ("nats-ask-seq", true) => 500,
            ("nats-ask-par", false) => 200_000,
            ("nats-ask-par", true) => 2_000,
            ("nats-broadcast" | "nats-tell", false) => 1_000_000,
            (_, _) => 10_000,
        }
    };
    // Keep the guard alive for the whole run: dropping it kills the server.
    let (_server, url) = match url {
        Some(u) => (None, u.to_owned()),
        None => {
            if !test_support::nats_server_available() {
                return unavailable_all(workloads, &counts, "nats-server not found");
            }
            match std::panic::catch_unwind(AssertUnwindSafe(test_support::NatsServer::start)) {
                Ok(s) => {
                    let url = s.url();
                    (Some(s), url)
                }
                Err(_) => return unavailable_all(workloads, &counts, "nats-server did not start"),
            }
        }
    };

    let mut rows = Vec::new();
    for &w in workloads {
        let n = counts(w);
        let u = url.clone();
        let h = url.clone();
        let j = url.clone();
        let p = url.clone();
        let systems = match w {
            "nats-ask-seq" => vec![
                system("happen", move |n| happen_ask(h.clone(), n, 1)),
                system("floor", move |n| floor_ask(u.clone(), n, 1, Format::Raw)),
                system("floor(json)", move |n| {
                    floor_ask(j.clone(), n, 1, Format::Json)
                }),
            ],
            "nats-ask-par" => vec![
                system("happen", move |n| happen_ask(h.clone(), n, PARALLEL)),
                system("floor", move |n| {
                    floor_ask(u.clone(), n, PARALLEL, Format::Raw)
                }),
                system("floor(json)", move |n| {
                    floor_ask(j.clone(), n, PARALLEL, Format::Json)
                }),
            ],
            "nats-broadcast" => vec![
                system("happen", move |n| {
                    happen_broadcast(h.clone(), n, Sending::Broadcast)
                }),
                system("happen(publish-only)", move |n| {
                    happen_broadcast(p.clone(), n, Sending::PublishOnly)
                }),
                system("floor", move |n| floor_broadcast(u.clone(), n, Format::Raw)),
                system("floor(json)", move |n| {
                    floor_broadcast(j.clone(), n, Format::Json)
                }),
            ],
            "nats-tell" => vec![
                system("happen", move |n| {
                    happen_broadcast(h.clone(), n, Sending::Tell)
                }),
                system("floor", move |n| floor_broadcast(u.clone(), n, Format::Raw)),
                system("floor(json)", move |n| {
                    floor_broadcast(j.clone(), n, Format::Json)
                }),
            ],
            _ => continue,
        };
        rows.extend(bench.compare(w, n, &systems, "floor"));
    }
    rows
}

/// Child mode (`--child nats-... SYSTEM COUNT`, see `main.rs`): one system alone, against
/// the NATS server at `$HAPPEN_BENCH_NATS_URL` (default `nats://127.0.0.1:4222`), which this
/// process does not start — so `valgrind --tool=callgrind` counts the client side only:
/// `happen-bench --child nats-broadcast 'floor(json)' 30000`.
pub(crate) async fn child(workload: &str, system: &str, n: u64) -> RunResult {
    let url = std::env::var("HAPPEN_BENCH_NATS_URL")
        .unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    match (workload, system) {
        ("nats-ask-seq", "happen") => happen_ask(url, n, 1).await,
        ("nats-ask-seq", "floor") => floor_ask(url, n, 1, Format::Raw).await,
        ("nats-ask-seq", "floor(json)") => floor_ask(url, n, 1, Format::Json).await,
        ("nats-ask-par", "happen") => happen_ask(url, n, PARALLEL).await,
        ("nats-ask-par", "floor") => floor_ask(url, n, PARALLEL, Format::Raw).await,
        ("nats-ask-par", "floor(json)") => floor_ask(url, n, PARALLEL, Format::Json).await,
        ("nats-broadcast", "happen") => happen_broadcast(url, n, Sending::Broadcast).await,
        ("nats-broadcast", "happen(publish-only)") => {
            happen_broadcast(url, n, Sending::PublishOnly).await
        }
        ("nats-tell", "happen") => happen_broadcast(url, n, Sending::Tell).await,
        ("nats-tell", "floor") => floor_broadcast(url, n, Format::Raw).await,
        ("nats-tell", "floor(json)") => floor_broadcast(url, n, Format::Json).await,
        ("nats-broadcast", "floor") => floor_broadcast(url, n, Format::Raw).await,
        ("nats-broadcast", "floor(json)") => floor_broadcast(url, n, Format::Json).await,
        // the server must have JetStream (`nats-server -js`)
        ("nats-durable", "happen") => super::durable::happen_durable(url, n).await,
        ("nats-durable", "floor") => super::durable::floor_durable(url, n).await,
        (w, s) => Err(format!("no child mode for `{w}` `{s}`")),
    }
}

fn unavailable_all(workloads: &[&str], counts: &dyn Fn(&str) -> u64, why: &str) -> Vec<Row> {
    workloads
        .iter()
        .flat_map(|&w| {
            [
                Row::unavailable(w, "floor", counts(w), why),
                Row::unavailable(w, "floor(json)", counts(w), why),
                Row::unavailable(w, "happen", counts(w), why),
            ]
        })
        .collect()
}

fn payload() -> Bytes {
    Bytes::from(vec![0xa5u8; PAYLOAD])
}

/// What the floors put on the wire.
#[derive(Clone, Copy)]
enum Format {
    /// The same 128 bytes every time.
    Raw,
    /// An event in the reference's wire JSON, encoded per message and decoded on receipt.
    Json,
}

/// An event in the reference's wire shape, as a user would write it by hand.
#[derive(serde::Serialize, serde::Deserialize)]
struct WireEvent {
    #[serde(rename = "type")]
    event_type: String,
    payload: Value,
    context: WireContext,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct WireContext {
    causal: WireCausal,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireCausal {
    id: String,
    sender: String,
    correlation_id: String,
    path: Vec<String>,
    timestamp: u64,
}

impl Format {
    /// Message `i`'s body.
    fn body(self, raw: &Bytes, i: u64) -> Result<Bytes, String> {
        match self {
            Format::Raw => Ok(raw.clone()),
            Format::Json => {
                let id = format!("evt-00000000-0000-4000-8000-{i:012x}");
                let event = WireEvent {
                    event_type: "tick".to_owned(),
                    payload: happen_payload(),
                    context: WireContext {
                        causal: WireCausal {
                            correlation_id: id.replacen("evt", "txn", 1),
                            id,
                            sender: "pub".to_owned(),
                            path: vec!["pub".to_owned()],
                            timestamp: 1_765_000_000_000 + i,
                        },
                    },
                };
                serde_json::to_vec(&event).map(Bytes::from).map_err(err)
            }
        }
    }

    /// Reads a received body as this format would; for JSON, the decoded event's payload (what
    /// the responder answers with, encoded).
    fn receive(self, body: Bytes) -> Result<Bytes, String> {
        match self {
            Format::Raw => Ok(body),
            Format::Json => {
                let event: WireEvent = serde_json::from_slice(&body).map_err(err)?;
                serde_json::to_vec(&event.payload)
                    .map(Bytes::from)
                    .map_err(err)
            }
        }
    }
}

async fn floor_ask(url: String, n: u64, tasks: u64, format: Format) -> RunResult {
    let server = async_nats::connect(&url).await.map_err(err)?;
    let mut sub = server.subscribe(ASK_SUBJECT).await.map_err(err)?;
    server.flush().await.map_err(err)?;
    let responder = {
        let server = server.clone();
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                if let Some(reply) = msg.reply {
                    let Ok(answer) = format.receive(msg.payload) else {
                        continue; // the requester times out and reports it
                    };
                    let _ = server.publish(reply, answer).await;
                }
            }
        })
    };
    let client = async_nats::connect(&url).await.map_err(err)?;
    let body = payload();

    let start = Instant::now();
    let (ops, latencies) = split_clients(n, tasks, |count, record| {
        ask_client(client.clone(), body.clone(), format, count, record)
    })
    .await?;
    let elapsed = start.elapsed();

    responder.abort();
    drop(client);
    drop(server);
    Ok(Sample::new(ops, elapsed).with_latencies(latencies))
}

async fn ask_client(
    client: async_nats::Client,
    body: Bytes,
    format: Format,
    n: u64,
    record: bool,
) -> Result<(u64, Vec<u64>), String> {
    let mut latencies = Vec::with_capacity(if record { n as usize } else { 0 });
    for i in 0..n {
        let t = Instant::now();
        let reply = client
            .request(ASK_SUBJECT, format.body(&body, i)?)
            .await
            .map_err(err)?;
        if let Format::Json = format {
            black_box(serde_json::from_slice::<Value>(&reply.payload).map_err(err)?);
        }
        if record {
            latencies.push(t.elapsed().as_nanos() as u64);
        }
        black_box(reply);
    }
    Ok((n, latencies))
}

async fn floor_broadcast(url: String, n: u64, format: Format) -> RunResult {
    let subscriber = async_nats::ConnectOptions::new()
        .subscription_capacity(SUB_CAPACITY)
        .connect(&url)
        .await
        .map_err(err)?;
    let mut sub = subscriber.subscribe(BCAST_SUBJECT).await.map_err(err)?;
    subscriber.flush().await.map_err(err)?;
    let publisher = async_nats::connect(&url).await.map_err(err)?;
    let body = payload();
    let receiver = tokio::spawn(async move {
        let mut got = 0u64;
        while got < n {
            match tokio::time::timeout(IDLE, sub.next()).await {
                Ok(Some(msg)) => {
                    if let Format::Json = format {
                        let event = serde_json::from_slice::<WireEvent>(&msg.payload);
                        black_box(event.is_ok());
                    }
                    black_box(msg);
                    got += 1;
                }
                // Lost messages: the last one arrived (at most) `IDLE` ago.
                Err(_) => return (got, Instant::now() - IDLE),
                Ok(None) => break,
            }
        }
        (got, Instant::now())
    });

    let start = Instant::now();
    for i in 0..n {
        publisher
            .publish(BCAST_SUBJECT, format.body(&body, i)?)
            .await
            .map_err(err)?;
    }
    publisher.flush().await.map_err(err)?;
    let (got, last) = receiver.await.map_err(err)?;
    let elapsed = last.duration_since(start);

    let sample = Sample::new(got, elapsed);
    Ok(if got < n {
        sample.with_note(format!("lost {} of {n} messages", n - got))
    } else {
        sample
    })
}

// ---- happen over happen-nats -------------------------------------------------------------------

/// A fresh subject prefix per run, so runs never see each other's messages; or every run on
/// `HAPPEN_BENCH_PREFIX` when set, so that a watcher (`happen web --prefix P`, `happen tap`)
/// can follow the workload (how `happen web`'s overhead is measured; see DESIGN.md).
fn prefix() -> String {
    if let Some(p) = std::env::var("HAPPEN_BENCH_PREFIX")
        .ok()
        .filter(|p| !p.is_empty())
    {
        return p;
    }
    static RUN: AtomicU64 = AtomicU64::new(0);
    format!(
        "bench{}x{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    )
}

/// `transport.nats.completion_records` of both sides: `HAPPEN_BENCH_COMPLETION_RECORDS`
/// (`off`, `watched` or `always`; default off), to measure what the records cost.
fn completion_records() -> Result<happen_nats::CompletionRecords, String> {
    match std::env::var("HAPPEN_BENCH_COMPLETION_RECORDS") {
        Err(_) => Ok(happen_nats::CompletionRecords::Off),
        Ok(v) => serde_json::from_value(Value::String(v.clone())).map_err(|_| {
            format!("HAPPEN_BENCH_COMPLETION_RECORDS is `{v}`: say off, watched or always")
        }),
    }
}

/// `HAPPEN_BENCH_OUTBOUND` and `HAPPEN_BENCH_CLIENT_CAP`, when set, as `config`'s
/// `outbound_buffer` and `client_capacity` (see the module docs).
pub(crate) fn buffer_sizes(config: &mut NatsConfig) -> Result<(), String> {
    for (var, field) in [
        ("HAPPEN_BENCH_OUTBOUND", &mut config.outbound_buffer),
        ("HAPPEN_BENCH_CLIENT_CAP", &mut config.client_capacity),
    ] {
        if let Ok(v) = std::env::var(var) {
            *field = v
                .parse()
                .map_err(|_| format!("{var} is `{v}`: say a number of messages"))?;
        }
    }
    Ok(())
}

async fn instance(url: &str, prefix: &str) -> Result<Happen, String> {
    Ok(instance_with_transport(url, prefix).await?.0)
}

async fn instance_with_transport(
    url: &str,
    prefix: &str,
) -> Result<(Happen, NatsTransport), String> {
    let mut config = NatsConfig::with_server(url);
    config.prefix = prefix.to_owned();
    config.completion_records = completion_records()?;
    buffer_sizes(&mut config)?;
    let transport = NatsTransport::connect(config).await.map_err(err)?;
    let happen = Happen::builder()
        .transport(transport.clone())
        .build()
        .map_err(err)?;
    Ok((happen, transport))
}

fn happen_payload() -> Value {
    Value::String("a".repeat(PAYLOAD))
}

async fn happen_ask(url: String, n: u64, tasks: u64) -> RunResult {
    let p = prefix();
    let server_side = instance(&url, &p).await?;
    let echo = server_side.node("echo").await.map_err(err)?;
    echo.on("ask", |event: Event, _ctx: Context| async move {
        event.payload().clone()
    })
    .map_err(err)?;
    let client_side = instance(&url, &p).await?;
    let client = client_side.node("client").await.map_err(err)?;
    let body = happen_payload();
    // One round trip outside the timing: both sides are connected and subscribed.
    client
        .send("echo", Event::new("ask", body.clone()))
        .await
        .map_err(err)?;

    let start = Instant::now();
    let (ops, latencies) = split_clients(n, tasks, |count, record| {
        happen_client(client.clone(), body.clone(), count, record)
    })
    .await?;
    let elapsed = start.elapsed();

    client_side.shutdown(Duration::from_secs(5)).await;
    server_side.shutdown(Duration::from_secs(5)).await;
    Ok(Sample::new(ops, elapsed).with_latencies(latencies))
}

async fn happen_client(
    client: Node,
    body: Value,
    n: u64,
    record: bool,
) -> Result<(u64, Vec<u64>), String> {
    let mut latencies = Vec::with_capacity(if record { n as usize } else { 0 });
    for _ in 0..n {
        let t = Instant::now();
        let reply = client
            .send("echo", Event::new("ask", body.clone()))
            .await
            .map_err(err)?;
        if record {
            latencies.push(t.elapsed().as_nanos() as u64);
        }
        black_box(reply);
    }
    Ok((n, latencies))
}

/// How `happen_broadcast` sends its events.
#[derive(Clone, Copy)]
enum Sending {
    /// Broadcasts from a node that takes broadcasts too (it receives its own and skips them).
    Broadcast,
    /// Broadcasts from a node made with `NodeOptions::receive_broadcasts(false)`: not
    /// subscribed to them, it receives none, like the floors' publisher
    /// (`happen(publish-only)`).
    PublishOnly,
    /// Tells to the subscribing node, from a node that takes no broadcasts.
    Tell,
}

async fn happen_broadcast(url: String, n: u64, how: Sending) -> RunResult {
    let p = prefix();
    let server_side = instance(&url, &p).await?;
    let sub = server_side.node("sub").await.map_err(err)?;
    let done = Countdown::leaked(n);
    sub.on("tick", move |event: Event, _ctx: Context| async move {
        black_box(&event);
        done.hit();
    })
    .map_err(err)?;
    sub.on("ping", |_event: Event, _ctx: Context| async move {})
        .map_err(err)?;
    let (client_side, transport) = instance_with_transport(&url, &p).await?;
    let options = NodeOptions::new().receive_broadcasts(matches!(how, Sending::Broadcast));
    let publisher = client_side.node_with("pub", options).await.map_err(err)?;
    publisher
        .send("sub", Event::new("ping", ()))
        .await
        .map_err(err)?;
    let body = happen_payload();
    let mut waits = 0u64;

    let start = Instant::now();
    for _ in 0..n {
        loop {
            let event = Event::new("tick", body.clone());
            let sent = match how {
                Sending::Tell => publisher.tell("sub", event),
                Sending::Broadcast | Sending::PublishOnly => publisher.broadcast(event),
            };
            match sent {
                Ok(()) => break,
                // The transport's outgoing buffer is full: wait until it has drained to half.
                Err(e) if e.kind() == ErrorKind::Transport && transport.is_backlogged() => {
                    waits += 1;
                    transport.ready().await.map_err(err)?;
                }
                Err(e) => return Err(err(e)),
            }
        }
    }
    // Wait for the last delivery; give up once nothing arrived for `IDLE`.
    let end = done.wait_or_idle(IDLE).await;
    let elapsed = end.duration_since(start);
    let got = done.count();
    let rejected = sub.stats().rejected;

    client_side.shutdown(Duration::from_secs(5)).await;
    server_side.shutdown(Duration::from_secs(5)).await;
    let mut notes = Vec::new();
    if got < n {
        notes.push(format!("lost {} of {n} ({rejected} QueueFull)", n - got));
    }
    if waits > 0 {
        notes.push(format!("outgoing buffer full: waited {waits} times"));
    }
    let sample = Sample::new(got, elapsed);
    Ok(if notes.is_empty() {
        sample
    } else {
        sample.with_note(notes.join(", "))
    })
}

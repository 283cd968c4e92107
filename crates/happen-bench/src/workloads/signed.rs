//! `signed` and `nats-signed`: what signing costs. The same sequential request (a 128-character
//! payload, answered with itself) unsigned and signed, in one run, the ratio of signed to
//! unsigned.
//!
//! - `signed` (in process): the client node has a signing key, so every event is hashed
//!   (RFC 8785 canonical JSON + SHA-256) and signed (Ed25519) when sent; the receiver in the
//!   same process does not verify (its sender is a node of the process).
//! - `nats-signed` (two instances over happen-nats, as `nats-ask-seq`): the client signs,
//!   the receiver enforces signatures: it re-canonicalises the received body, hashes it,
//!   verifies the signature with its trust ring's key and checks the replay window.

use std::hint::black_box;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use happen::security::{Security, SecurityMode, SigningKey, TrustRing};
use happen::{Context, Event, Happen, Node, NodeOptions};
use happen_nats::{NatsConfig, NatsTransport};
use serde_json::Value;

use super::err;
use crate::measure::{Bench, RunResult, Sample, system};
use crate::report::Row;

fn payload() -> Value {
    Value::String("a".repeat(128))
}

/// The in-process rows.
pub(crate) fn run_local(bench: &Bench) -> Vec<Row> {
    let n = if bench.quick { 500 } else { 20_000 };
    let systems = vec![
        system("happen(signed)", |n| local(n, true)),
        system("happen(unsigned)", |n| local(n, false)),
    ];
    bench.compare("signed", n, &systems, "happen(unsigned)")
}

/// One run of `system` alone (child mode).
pub(crate) async fn child(system: &str, n: u64) -> RunResult {
    match system {
        "happen(signed)" => local(n, true).await,
        "happen(unsigned)" => local(n, false).await,
        other => Err(format!("unknown signed system `{other}`")),
    }
}

fn options(signed: bool, key: &SigningKey) -> NodeOptions {
    if signed {
        NodeOptions::new().security(Security::new().signing_key(key.clone()))
    } else {
        NodeOptions::new()
    }
}

async fn local(n: u64, signed: bool) -> RunResult {
    let happen = Happen::new();
    let key = SigningKey::generate();
    let echo = happen.node("echo").await.map_err(err)?;
    echo.on(
        "ask",
        |e: Event, _c: Context| async move { e.payload().clone() },
    )
    .map_err(err)?;
    let client = happen
        .node_with("client", options(signed, &key))
        .await
        .map_err(err)?;
    let sample = asks(&client, n).await?;
    happen.shutdown(Duration::from_secs(5)).await;
    Ok(sample)
}

async fn asks(client: &Node, n: u64) -> RunResult {
    let body = payload();
    client
        .send("echo", Event::new("ask", body.clone()))
        .await
        .map_err(err)?;
    let mut latencies = Vec::with_capacity(n as usize);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let reply = client
            .send("echo", Event::new("ask", body.clone()))
            .await
            .map_err(err)?;
        latencies.push(t.elapsed().as_nanos() as u64);
        black_box(reply);
    }
    Ok(Sample::new(n, start.elapsed()).with_latencies(latencies))
}

/// The NATS rows; their own server unless `url` is given.
pub(crate) fn run_nats(bench: &Bench, url: Option<&str>) -> Vec<Row> {
    let n = if bench.quick { 300 } else { 5_000 };
    let (_server, url) = match url {
        Some(u) => (None, u.to_owned()),
        None => {
            let started = test_support::nats_server_available()
                .then(|| {
                    std::panic::catch_unwind(AssertUnwindSafe(test_support::NatsServer::start)).ok()
                })
                .flatten();
            match started {
                Some(s) => {
                    let url = s.url();
                    (Some(s), url)
                }
                None => {
                    return ["happen(signed)", "happen(unsigned)"]
                        .map(|s| Row::unavailable("nats-signed", s, n, "nats-server not available"))
                        .to_vec();
                }
            }
        }
    };
    let (a, b) = (url.clone(), url);
    let systems = vec![
        system("happen(signed)", move |n| over_nats(a.clone(), n, true)),
        system("happen(unsigned)", move |n| over_nats(b.clone(), n, false)),
    ];
    bench.compare("nats-signed", n, &systems, "happen(unsigned)")
}

async fn instance(url: &str, prefix: &str) -> Result<Happen, String> {
    let mut config = NatsConfig::with_server(url);
    config.prefix = prefix.to_owned();
    let transport = NatsTransport::connect(config).await.map_err(err)?;
    Happen::builder().transport(transport).build().map_err(err)
}

async fn over_nats(url: String, n: u64, signed: bool) -> RunResult {
    static RUN: AtomicU64 = AtomicU64::new(0);
    let prefix = format!(
        "signed{}x{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    );
    let key = SigningKey::generate();
    let server_side = instance(&url, &prefix).await?;
    let receiver = if signed {
        let ring = TrustRing::new()
            .trust("client", key.public_key())
            .map_err(err)?;
        NodeOptions::new().security(Security::new().trust(ring).mode(SecurityMode::Enforce))
    } else {
        NodeOptions::new()
    };
    let echo = server_side.node_with("echo", receiver).await.map_err(err)?;
    echo.on(
        "ask",
        |e: Event, _c: Context| async move { e.payload().clone() },
    )
    .map_err(err)?;
    let client_side = instance(&url, &prefix).await?;
    let client = client_side
        .node_with("client", options(signed, &key))
        .await
        .map_err(err)?;
    let sample = asks(&client, n).await?;
    client_side.shutdown(Duration::from_secs(5)).await;
    server_side.shutdown(Duration::from_secs(5)).await;
    Ok(sample)
}

//! CPU-bound work off the async workers: a `hasher` node hashes 64 MB of data in 4 MB chunks
//! through `ctx.cpu`, while a `pinger` node keeps answering pings promptly.
//!
//! Run from the workspace root: `cargo run --release --example cpu_work`
//!
//! Compare with the hashing done inline in the handler (pass `inline`):
//! `cargo run --release --example cpu_work -- inline` -- the pings then wait for the hashing.

use std::time::{Duration, Instant};

use happen::prelude::*;
use serde_json::json;

const TOTAL: usize = 64 << 20;
const CHUNK: usize = 4 << 20;
/// Chunks hashed at once (each its own flow, so they queue under the node's limits).
const PARALLEL: usize = 4;

/// 64-bit FNV-1a: simple, and slow enough per byte to be real CPU work.
fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Deterministic pseudo-random bytes for chunk `i` (xorshift), built where they are hashed.
fn chunk(i: u64) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15 ^ (i + 1);
    (0..CHUNK)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::main]
async fn main() -> happen::Result<()> {
    let inline = std::env::args().nth(1).as_deref() == Some("inline");
    let happen = Happen::new();

    let hasher = happen.node("hasher").await?;
    hasher.on("hash-chunk", move |event: Event, ctx: Context| async move {
        let i = event.payload().as_u64().unwrap_or(0);
        let work = move || fnv1a(&chunk(i));
        let started = Instant::now();
        let h = if inline {
            work() // blocks an async worker thread: do not do this
        } else {
            ctx.cpu(work).await?
        };
        Ok::<_, happen::Error>(
            json!({ "chunk": i, "hash": h, "ms": started.elapsed().as_millis() as u64 }),
        )
    })?;

    let pinger = happen.node("pinger").await?;
    pinger.on("ping", |_e: Event, _c: Context| async { json!("pong") })?;
    let client = happen.node("client").await?;

    // Pings alone first, for a baseline.
    let baseline = ping_latencies(&client, &pinger, Duration::from_millis(300)).await?;
    println!("pings without load:  {}", summary(&baseline));

    println!(
        "hashing {} MB in {} chunks of {} MB ({})...",
        TOTAL >> 20,
        TOTAL / CHUNK,
        CHUNK >> 20,
        if inline {
            "inline on the async workers"
        } else {
            "on the CPU pool via ctx.cpu"
        }
    );
    let started = Instant::now();
    let hashing = {
        let client = client.clone();
        let hasher = hasher.clone();
        tokio::spawn(async move {
            let mut combined = 0u64;
            let chunks = (TOTAL / CHUNK) as u64;
            let mut next = 0u64;
            while next < chunks {
                let batch: Vec<_> = (next..(next + PARALLEL as u64).min(chunks))
                    .map(|i| client.send(&hasher, Event::new("hash-chunk", i)))
                    .collect();
                next += batch.len() as u64;
                for reply in batch {
                    let v = reply.await?;
                    println!(
                        "  chunk {:>2}: {:016x} in {} ms",
                        v["chunk"].as_u64().unwrap_or(0),
                        v["hash"].as_u64().unwrap_or(0),
                        v["ms"]
                    );
                    combined ^= v["hash"].as_u64().unwrap_or(0);
                }
            }
            Ok::<_, happen::Error>(combined)
        })
    };

    // Meanwhile, keep pinging the other node until the hashing is done.
    let mut under_load = Vec::new();
    while !hashing.is_finished() {
        under_load.extend(ping_latencies(&client, &pinger, Duration::from_millis(100)).await?);
    }
    let combined = hashing.await.expect("the hashing task did not panic")?;
    println!(
        "hashed {} MB in {:?} (combined hash {combined:016x})",
        TOTAL >> 20,
        started.elapsed()
    );
    println!("pings during hashing: {}", summary(&under_load));

    happen.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

/// Sequential pings for `span`; their latencies.
async fn ping_latencies(
    client: &Node,
    pinger: &Node,
    span: Duration,
) -> happen::Result<Vec<Duration>> {
    let mut out = Vec::new();
    let start = Instant::now();
    while start.elapsed() < span {
        let t = Instant::now();
        client.send(pinger, Event::new("ping", ())).await?;
        out.push(t.elapsed());
    }
    Ok(out)
}

fn summary(latencies: &[Duration]) -> String {
    let mut v = latencies.to_vec();
    v.sort_unstable();
    if v.is_empty() {
        return "no pings".to_owned();
    }
    let at = |q: f64| v[((v.len() - 1) as f64 * q) as usize];
    format!(
        "{} pings, p50 {:?}, p99 {:?}, max {:?}",
        v.len(),
        at(0.5),
        at(0.99),
        v[v.len() - 1]
    )
}

//! The worker half of the two-process demo: hosts the node `worker` on NATS.
//!
//! ```text
//! nats-server -p 4333 &
//! cargo run -p happen-nats --example worker -- nats://127.0.0.1:4333
//! cargo run -p happen-nats --example client -- nats://127.0.0.1:4333
//! ```
//!
//! Prints `ready` once the node is reachable; runs until stdin closes or Ctrl-C.

use happen::{Context, Emitter, Event, Flow, Happen};
use happen_nats::{NatsConfig, NatsTransport};
use serde_json::json;
use tokio::io::AsyncReadExt;

#[tokio::main]
async fn main() -> happen::Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "nats://127.0.0.1:4222".to_owned());
    let transport = NatsTransport::connect(NatsConfig::with_server(url)).await?;
    let happen = Happen::builder().transport(transport.clone()).build()?;
    let worker = happen.node("worker").await?;

    // send/return
    worker.on("greet", |event: Event, _ctx: Context| async move {
        json!({"hello": event.payload(), "from": std::process::id()})
    })?;
    // a multi-step flow that sends onward to `pricing` (wherever it lives)
    worker.on("order", |_event: Event, _ctx: Context| async move {
        Flow::next(|event: Event, ctx: Context| async move {
            let price = ctx
                .send("pricing", Event::new("price", event.payload().clone()))
                .await?;
            Ok::<_, happen::Error>(json!({"order": event.payload(), "price": price}))
        })
    })?;
    // a stream of `n` items
    worker.on(
        "count",
        |event: Event, _ctx: Context, emit: Emitter| async move {
            let n = event.payload().as_u64().unwrap_or(10);
            for i in 0..n {
                emit.emit(i).await?;
            }
            Ok::<_, happen::Error>(json!({"total": n}))
        },
    )?;
    // broadcasts: acknowledge to the sender
    worker.on("announce", |event: Event, ctx: Context| async move {
        let sender = event.sender().clone();
        ctx.send(sender, Event::new("ack", event.payload().clone()))
            .await
            .map(|_| ())
    })?;
    // the transport's counters, for the demo and the tests
    let t = transport.clone();
    worker.on("stats", move |_e: Event, _c: Context| {
        let s = t.stats();
        async move {
            json!({"max_stream_in_flight": s.max_stream_in_flight, "malformed": s.malformed})
        }
    })?;

    println!("ready");
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { while stdin.read(&mut buf).await.map(|n| n > 0).unwrap_or(false) {} } => {}
    }
    happen.shutdown(std::time::Duration::from_secs(2)).await;
    Ok(())
}

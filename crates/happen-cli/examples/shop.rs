//! A small shop on NATS to try the `happen` command line against (README, "Command line").
//!
//! ```text
//! nats-server -p 14222 &
//! cargo run -p happen-cli --example shop -- nats://127.0.0.1:14222
//! ```
//!
//! Nodes:
//! - `orders` (2 flows at once, 50 queued): `order.place` charges the order at `payments`
//!   (20 ms of work first); `order.export` streams three rows, then a total.
//! - `payments`: `payment.charge` records the charge at `ledger`; amounts over 1000 fail
//!   with the code `limit_exceeded`.
//! - `ledger`: `ledger.record` answers with an entry number.
//! - `audit`: sees every `order.*` broadcast.
//!
//! Prints `ready` once the nodes are reachable; runs until Ctrl-C or stdin closes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use happen::{Context, Emitter, Error, ErrorKind, Event, Happen, NodeOptions};
use happen_nats::{NatsConfig, NatsTransport};
use serde_json::json;
use tokio::io::AsyncReadExt;

#[tokio::main]
async fn main() -> happen::Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "nats://127.0.0.1:4222".to_owned());
    let transport = NatsTransport::connect(NatsConfig::with_server(url)).await?;
    let happen = Happen::builder().transport(transport).build()?;

    let orders = happen
        .node_with(
            "orders",
            NodeOptions::new().max_concurrent(2).queue_limit(50),
        )
        .await?;
    orders.on("order.place", |event: Event, ctx: Context| async move {
        tokio::time::sleep(Duration::from_millis(20)).await; // check the stock
        let amount = event.payload()["amount"].clone();
        let charge = ctx
            .send(
                "payments",
                Event::new("payment.charge", json!({"amount": amount})),
            )
            .await?;
        Ok::<_, Error>(json!({"order": event.payload()["id"], "charge": charge}))
    })?;
    orders.on(
        "order.export",
        |_event: Event, _ctx: Context, emit: Emitter| async move {
            for id in 1..=3 {
                emit.emit(json!({"id": id, "amount": id * 10})).await?;
            }
            Ok::<_, Error>(json!({"rows": 3, "total": 60}))
        },
    )?;

    let payments = happen.node("payments").await?;
    payments.on("payment.charge", |event: Event, ctx: Context| async move {
        let amount = event.payload()["amount"].as_u64().unwrap_or(0);
        if amount > 1000 {
            return Err(Error::new(
                ErrorKind::Handler,
                format!("amount {amount} is over the limit of 1000"),
            )
            .with_code("limit_exceeded"));
        }
        let entry = ctx
            .send(
                "ledger",
                Event::new("ledger.record", json!({"amount": amount})),
            )
            .await?;
        Ok(json!({"charged": amount, "entry": entry}))
    })?;

    let ledger = happen.node("ledger").await?;
    let entries = Arc::new(AtomicU64::new(0));
    ledger.on("ledger.record", move |_event: Event, _ctx: Context| {
        let n = entries.fetch_add(1, Ordering::Relaxed) + 1;
        async move { n }
    })?;

    let audit = happen.node("audit").await?;
    audit.on("order.*", |_event: Event, _ctx: Context| async move {})?;

    println!("ready");
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { while stdin.read(&mut buf).await.map(|n| n > 0).unwrap_or(false) {} } => {}
    }
    happen.shutdown(Duration::from_secs(2)).await;
    Ok(())
}

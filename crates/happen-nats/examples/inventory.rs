//! Node state that survives a restart: the `inventory` node keeps its stock in a JetStream
//! key-value bucket (`node-inventory`, key `state`, raw JSON); the `orders` node reads it
//! through a view before it reserves. Run it twice: the count goes on where it stopped.
//!
//! ```text
//! nats-server -js -p 4333 &
//! cargo run -p happen-nats --example inventory -- nats://127.0.0.1:4333   # stock 5 → 3
//! cargo run -p happen-nats --example inventory -- nats://127.0.0.1:4333   # stock 8 → 6
//! nats kv get node-inventory state                                        # {"count":6,...}
//! ```

use std::time::Duration;

use happen::{Context, Error, Event, Happen, Json};
use happen_nats::{NatsConfig, NatsTransport};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize)]
struct Stock {
    count: i64,
    reserved: i64,
}

#[tokio::main]
async fn main() -> happen::Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "nats://127.0.0.1:4222".to_owned());
    let transport = NatsTransport::connect(NatsConfig::with_server(url)).await?;
    let happen = Happen::builder().transport(transport).build()?;

    let inventory = happen.node("inventory").await?;
    inventory.on("restock", |Json(n): Json<i64>, ctx: Context| async move {
        // compare-and-set on the bucket's revision: safe with replicas in other processes
        let stock = ctx.stored::<Stock>().update(|s| s.count += n).await?;
        Ok::<_, Error>(stock.value.count)
    })?;
    inventory.on("reserve", |Json(n): Json<i64>, ctx: Context| async move {
        let mut short = false;
        let stock = ctx
            .stored::<Stock>()
            .update(|s| {
                short = s.count < n; // may run again after a conflict: only plain assignments
                if !short {
                    s.count -= n;
                    s.reserved += n;
                }
            })
            .await?;
        if short {
            return Err(Error::handler(format!(
                "only {} in stock",
                stock.value.count
            )));
        }
        Ok(stock.value.count)
    })?;

    let orders = happen.node("orders").await?;
    orders.on("place", |Json(n): Json<i64>, ctx: Context| async move {
        // a view: the inventory's state, read wherever the inventory runs
        let seen = ctx
            .view::<Stock>("inventory")
            .await?
            .map_or(0, |v| v.value.count);
        if seen < n {
            return Err(Error::handler(format!(
                "the inventory shows {seen}, {n} wanted"
            )));
        }
        ctx.send("inventory", Event::new("reserve", n)).await
    })?;

    let before = inventory.stored::<Stock>().get().await?;
    println!(
        "stock at start: {} (revision {})",
        before.value.count, before.revision
    );
    let count = inventory.send(&inventory, Event::new("restock", 5)).await?;
    println!("restocked 5: {count}");
    let left = orders.send(&orders, Event::new("place", 2)).await?;
    println!("ordered 2: {left} left");
    for snapshot in inventory
        .stored::<Stock>()
        .history()
        .await?
        .iter()
        .rev()
        .take(3)
    {
        let cause = snapshot
            .change
            .as_ref()
            .map_or("-", |c| c.event_type.as_str());
        println!(
            "  revision {:>3}: {:?} (by `{cause}`)",
            snapshot.revision, snapshot.state
        );
    }
    println!("run me again: the stock goes on from {left}");
    happen.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

//! The client half of the two-process demo (start `--example worker` first).
//!
//! ```text
//! cargo run -p happen-nats --example client -- nats://127.0.0.1:4333
//! ```

use futures::StreamExt;
use happen::{Context, Event, Happen};
use happen_nats::{NatsConfig, NatsTransport};
use serde_json::json;

#[tokio::main]
async fn main() -> happen::Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "nats://127.0.0.1:4222".to_owned());
    let transport = NatsTransport::connect(NatsConfig::with_server(url)).await?;
    let happen = Happen::builder().transport(transport).build()?;
    let client = happen.node("client").await?;
    let pricing = happen.node("pricing").await?;
    pricing.on("price", |event: Event, _ctx: Context| async move {
        json!(event.payload()["qty"].as_u64().unwrap_or(0) * 10)
    })?;

    let hello = client.send("worker", Event::new("greet", "ada")).await?;
    println!("greet -> {hello}");

    let order = client
        .send("worker", Event::new("order", json!({"qty": 3})))
        .await?;
    println!("order -> {order}");

    let mut stream = client.send("worker", Event::new("count", 5)).into_stream();
    while let Some(item) = stream.next().await {
        println!("count item {}", item?);
    }
    println!("count final {:?}", stream.final_value());

    match client.send("nobody", Event::new("greet", ())).await {
        Err(e) => println!("nobody -> {:?}: {e}", e.kind()),
        Ok(v) => println!("nobody -> unexpected {v}"),
    }
    happen.shutdown(std::time::Duration::from_secs(1)).await;
    Ok(())
}

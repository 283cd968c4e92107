//! The smallest happen program: two nodes, one broadcast and one send.
//!
//! Run from the workspace root: `cargo run --release --example hello`

use happen::prelude::*;
use serde_json::json;

#[tokio::main]
async fn main() -> happen::Result<()> {
    let happen = Happen::new();

    // A greeter answers `greet` events with a value: that value is the sender's reply.
    let greeter = happen.node("greeter").await?;
    greeter.on("greet", |event: Event, _ctx: Context| async move {
        let name = event.payload()["name"].as_str().unwrap_or("stranger");
        json!(format!("hello, {name}!"))
    })?;

    // A logger hears every `user.*` broadcast.
    let logger = happen.node("logger").await?;
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel::<()>();
    let seen_tx = std::sync::Mutex::new(Some(seen_tx));
    logger.on("user.*", move |event: Event, ctx: Context| {
        println!(
            "[{}] heard {} from {}: {}",
            ctx.node_id(),
            event.event_type(),
            event.sender(),
            event.payload()
        );
        if let Some(tx) = seen_tx.lock().expect("not poisoned").take() {
            let _ = tx.send(());
        }
        async {}
    })?;

    // Broadcast: every node with a matching handler gets its own copy.
    greeter.broadcast(Event::new("user.joined", json!({"name": "ada"})))?;
    seen_rx.await.expect("the logger heard the broadcast");

    // Send: one target, and the reply is the handler's value.
    let reply = logger
        .send(&greeter, Event::new("greet", json!({"name": "ada"})))
        .await?;
    println!("[logger] greeter replied: {reply}");

    happen.shutdown(std::time::Duration::from_secs(1)).await;
    Ok(())
}

//! Request/reply: `send` returns a `Reply`; await it (optionally with `.timeout(..)`) for the
//! handler's value, or for an error whose `kind()` says what went wrong.
//!
//! This example provokes every error a caller of `send` can meet in a single process:
//! unknown node, no handler, handler error, panic, timeout (and, at the end, `QueueFull`).
//!
//! Run from the workspace root: `cargo run --release --example request_reply`

use std::time::Duration;

use happen::Reply;
use happen::prelude::*;
use serde_json::json;

/// Awaits `reply` and prints either the value or the error, classified by its kind.
async fn show(label: &str, reply: Reply) {
    match reply.await {
        Ok(value) => println!("{label:<28} ok: {value}"),
        Err(err) => {
            let explanation = match err.kind() {
                ErrorKind::UnknownNode => "no node has that id",
                ErrorKind::NoHandler => "the node exists but has no matching handler",
                ErrorKind::Handler => "the handler returned an error",
                ErrorKind::Panic => "the handler panicked (the node keeps serving)",
                ErrorKind::Timeout => "no reply within the timeout",
                ErrorKind::QueueFull => "the target's queue was full",
                ErrorKind::InvalidPayload => "the payload did not fit the handler's type",
                ErrorKind::ShutDown => "the target is shutting down",
                other => other.as_str(),
            };
            println!(
                "{label:<28} error kind = {:<13} -> {explanation}",
                err.kind().as_str()
            );
            println!("{:<28}   message: {err}", "");
        }
    }
}

#[tokio::main]
async fn main() -> happen::Result<()> {
    // Panics inside handlers are caught by happen and returned as `ErrorKind::Panic`;
    // silence the default panic printout so the demo output stays readable.
    std::panic::set_hook(Box::new(|_| {}));

    let happen = Happen::new();
    let client = happen.node("client").await?;
    let calc = happen.node("calculator").await?;

    // A handler's return value is the reply. `Result` values work too: `Err` becomes
    // `ErrorKind::Handler` with the error's message.
    calc.on("divide", |event: Event, _ctx: Context| async move {
        let a = event.payload()["a"].as_f64().unwrap_or(0.0);
        let b = event.payload()["b"].as_f64().unwrap_or(0.0);
        if b == 0.0 {
            return Err("division by zero".into());
        }
        Ok::<_, happen::BoxError>(json!(a / b))
    })?;
    calc.on("crash", |_event: Event, _ctx: Context| async move {
        let v: Vec<u32> = Vec::new();
        json!(v[3]) // index out of bounds: panics
    })?;
    calc.on("slow", |_event: Event, _ctx: Context| async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        json!("finally")
    })?;

    let t = Duration::from_millis(100);

    println!("--- success ---");
    show(
        "divide 10 / 4",
        client
            .send(&calc, Event::new("divide", json!({"a": 10, "b": 4})))
            .timeout(t),
    )
    .await;
    // Targets can be node handles or node ids.
    show(
        "divide by id \"calculator\"",
        client
            .send("calculator", Event::new("divide", json!({"a": 1, "b": 8})))
            .timeout(t),
    )
    .await;

    println!("\n--- errors ---");
    show(
        "unknown node",
        client
            .send("nobody-home", Event::new("divide", json!({})))
            .timeout(t),
    )
    .await;
    show(
        "no handler",
        client
            .send(&calc, Event::new("multiply", json!({"a": 2, "b": 3})))
            .timeout(t),
    )
    .await;
    show(
        "handler error",
        client
            .send(&calc, Event::new("divide", json!({"a": 1, "b": 0})))
            .timeout(t),
    )
    .await;
    show(
        "panic",
        client.send(&calc, Event::new("crash", ())).timeout(t),
    )
    .await;
    show(
        "timeout (100ms)",
        client.send(&calc, Event::new("slow", ())).timeout(t),
    )
    .await;

    // The calculator survived the panic and still answers.
    show(
        "after the panic",
        client
            .send(&calc, Event::new("divide", json!({"a": 9, "b": 3})))
            .timeout(t),
    )
    .await;

    // QueueFull: a node admitting 1 running + 1 queued event rejects a third at once.
    println!("\n--- admission ---");
    let tiny = happen
        .node_with("tiny", NodeOptions::new().max_concurrent(1).queue_limit(1))
        .await?;
    tiny.on("work", |_event: Event, _ctx: Context| async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        json!("worked")
    })?;
    let first = client.send(&tiny, Event::new("work", ()));
    let second = client.send(&tiny, Event::new("work", ()));
    let third = client.send(&tiny, Event::new("work", ()));
    show("work #3 (queue full)", third).await;
    show("work #1", first).await;
    show("work #2", second).await;

    // Wait for the slow flow left over from the timeout demo, then stop.
    happen.shutdown(Duration::from_secs(1)).await;
    Ok(())
}

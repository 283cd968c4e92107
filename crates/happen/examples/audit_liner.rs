//! An audit liner: every flow of the `accounts` node is recorded (who asked, what, how it
//! ended, how long it took) without touching the handlers, and destructive requests wait in
//! shadow mode unless an approval liner lets them through.
//!
//! Run with `cargo run -p happen --example audit_liner`.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use happen::liner::{Approved, Liner, Next, shadow_mode};
use happen::{Context, Event, Happen};
use serde_json::json;

/// One line of the audit trail.
#[derive(Debug)]
struct Entry {
    sender: String,
    event_type: String,
    outcome: String,
    micros: u128,
}

/// Records every flow it wraps into `trail`.
fn audit(trail: Arc<Mutex<Vec<Entry>>>) -> Liner {
    Liner::new(move |event: Event, ctx: Context, next: Next| {
        let trail = trail.clone();
        async move {
            let started = Instant::now();
            let (sender, event_type) = (event.sender().to_string(), event.event_type().to_owned());
            let outcome = next.run(event, ctx).await;
            trail.lock().unwrap().push(Entry {
                sender,
                event_type,
                outcome: match &outcome {
                    Ok(v) => v.to_string(),
                    Err(e) => format!("error {}: {}", e.kind(), e.message()),
                },
                micros: started.elapsed().as_micros(),
            });
            outcome
        }
    })
}

/// Approves the flows sent by the `admin` node.
fn approve_admin() -> Liner {
    Liner::new(|event: Event, ctx: Context, next: Next| async move {
        if event.sender() == "admin" {
            ctx.insert(Approved);
        }
        next.run(event, ctx).await
    })
}

#[tokio::main]
async fn main() -> happen::Result<()> {
    let happen = Happen::new();
    let accounts = happen.node("accounts").await?;
    let trail = Arc::new(Mutex::new(Vec::new()));

    // Node liners wrap every handler, registered before or after; the last added is outermost:
    // audit sees everything, approval runs before shadow mode.
    accounts.line(shadow_mode());
    accounts.line(approve_admin());
    accounts.line(audit(trail.clone()));

    accounts.on("account.get", |event: Event, _c: Context| async move {
        json!({"id": event.payload(), "balance": 120})
    })?;
    accounts.on("account.delete", |event: Event, _c: Context| async move {
        json!({"deleted": event.payload()})
    })?;
    accounts.on("account.freeze", |_e: Event, _c: Context| async {
        Err::<(), _>(happen::Error::handler("freezing is not allowed today"))
    })?;

    let web = happen.node("web").await?;
    let admin = happen.node("admin").await?;
    println!(
        "{}",
        web.send(&accounts, Event::new("account.get", 7)).await?
    );
    println!(
        "{}",
        web.send(&accounts, Event::new("account.delete", 7)).await?
    ); // paused
    println!(
        "{}",
        admin
            .send(&accounts, Event::new("account.delete", 7))
            .await?
    ); // approved
    let _ = web.send(&accounts, Event::new("account.freeze", 7)).await;

    println!("\naudit trail:");
    for e in trail.lock().unwrap().iter() {
        println!(
            "  {:<6} {:<15} {:>5} µs  {}",
            e.sender, e.event_type, e.micros, e.outcome
        );
    }
    assert_eq!(trail.lock().unwrap().len(), 4);
    happen.shutdown(std::time::Duration::from_secs(1)).await;
    Ok(())
}

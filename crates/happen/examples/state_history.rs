//! Rebuilding state from its history: a ledger node keeps its balance as stored state; each
//! change remembers the event that made it. A wrong event slips in; the ledger finds the
//! state just before it (`when`), restores it, and replays the events that came after.
//!
//! Run with `cargo run -p happen --example state_history` (in memory; with `happen-nats` the
//! same code keeps the history in the node's JetStream key-value bucket).

use happen::{Context, Error, Event, EventId, Happen, Json};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Ledger {
    balance: i64,
    entries: u32,
}

#[tokio::main]
async fn main() -> happen::Result<()> {
    let happen = Happen::new();
    let ledger = happen.node("ledger").await?;
    ledger.on("post", |Json(amount): Json<i64>, ctx: Context| async move {
        ctx.stored::<Ledger>()
            .update(|l| {
                l.balance += amount;
                l.entries += 1;
            })
            .await?;
        Ok::<_, Error>(ctx.event().id().to_string()) // the event's id, for the example
    })?;

    let bank = happen.node("bank").await?;
    let mut ids = Vec::new();
    for amount in [100, -30, 2_000_000, 45, -10] {
        let id = bank.send(&ledger, Event::new("post", amount)).await?;
        ids.push((EventId::parse(id.as_str().unwrap_or_default()), amount));
    }
    let state = ledger.stored::<Ledger>();
    println!("balance now: {:?}", state.get().await?.value);

    // the third posting was wrong: the state right before it is the one after the second
    let (bad, _) = &ids[2];
    let (before_bad, _) = &ids[1];
    let snapshot = state
        .when(before_bad)
        .await?
        .expect("within the kept history");
    println!(
        "before {bad}: {:?} (revision {})",
        snapshot.state, snapshot.revision
    );
    state.restore(&snapshot).await?;
    for (_, amount) in &ids[3..] {
        bank.send(&ledger, Event::new("post", *amount)).await?;
    }
    let rebuilt = state.get().await?;
    println!(
        "rebuilt without it: {:?} (revision {})",
        rebuilt.value, rebuilt.revision
    );
    assert_eq!(rebuilt.value.balance, 100 - 30 + 45 - 10);

    // every kept revision, with the event that made it
    for s in state.history().await? {
        let by = s
            .change
            .map(|c| format!("{} from {}", c.event_type, c.sender));
        println!(
            "  revision {}: {:?} by {}",
            s.revision,
            s.state,
            by.as_deref().unwrap_or("restore")
        );
    }
    Ok(())
}

//! A sensor sends 50 readings as one batch: the store's batch handler gets them in one call,
//! each reading with its own causal context; a node with only a single-event handler runs
//! it per reading and answers with the array.
//!
//! Run with `cargo run -p happen --example sensor_batch`.

use happen::{Batch, Context, Event, Happen};
use serde_json::json;

#[tokio::main]
async fn main() -> happen::Result<()> {
    let happen = Happen::new();

    let store = happen.node("store").await?;
    store.on_batch("sensor.reading", |batch: Batch, _ctx: Context| async move {
        let temps: Vec<f64> = batch.iter().filter_map(|e| e.payload()["celsius"].as_f64()).collect();
        let mean = temps.iter().sum::<f64>() / temps.len() as f64;
        let first = batch.first().map(|e| e.id().to_string());
        json!({"count": batch.len(), "mean": mean, "first_event": first, "received_at": batch.received_at()})
    })?;

    let alarm = happen.node("alarm").await?; // no batch handler: one call per reading
    alarm.on("sensor.reading", |event: Event, _ctx: Context| async move {
        event.payload()["celsius"].as_f64().unwrap_or(0.0) > 24.0
    })?;

    let sensor = happen.node("sensor").await?;
    let readings: Vec<Event> = (0..50)
        .map(|i| {
            Event::new(
                "sensor.reading",
                json!({"seq": i, "celsius": 20.0 + f64::from(i % 10) * 0.5}),
            )
        })
        .collect();

    let summary = sensor.send_batch(&store, readings.clone()).await?;
    println!("store: {summary}");
    assert_eq!(summary["count"], 50);
    assert_eq!(store.stats().accepted, 1); // one flow for the whole batch

    let alarms = sensor.send_batch(&alarm, readings).await?;
    let raised = alarms
        .as_array()
        .map_or(0, |a| a.iter().filter(|v| **v == true).count());
    println!("alarm: {raised} of 50 readings over 24 °C");
    assert_eq!(raised, 5); // 24.5 °C, once in every ten readings
    Ok(())
}

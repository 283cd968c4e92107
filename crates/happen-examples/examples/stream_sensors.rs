//! Streaming use case 3: continuous sensor monitoring, and cleanup when the consumer stops.
//!
//! The `monitor-sensors` handler "connects" to the sensors named in the payload, then streams
//! one batch of readings (with a small analysis) every 100 ms until the duration in the
//! payload has passed. The sensors are disconnected by a `Drop` guard — Rust's equivalent of
//! the seed's `finally` block — so cleanup runs both when the stream ends normally and when
//! the consumer stops early: dropping the stream cancels the handler at its current `.await`,
//! which drops the guard.
//!
//! The guard reports its cleanup through a channel, so the program can wait for it
//! deterministically instead of sleeping.
//!
//! Run from the workspace root: `cargo run --release --example stream_sensors`

use std::time::Duration;

use futures::StreamExt;
use happen::prelude::*;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A (simulated) sensor connection.
struct Sensor {
    id: String,
    seed: u64,
}

impl Sensor {
    fn connect(id: &str) -> Sensor {
        println!("  [sensors]  connected {id}");
        Sensor {
            id: id.to_owned(),
            seed: id.bytes().map(u64::from).sum(),
        }
    }

    /// A pseudo-random temperature between 18 and 26 °C (no RNG crate needed).
    async fn reading(&mut self) -> f64 {
        tokio::time::sleep(Duration::from_millis(2)).await; // talk to the device
        self.seed = self
            .seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        18.0 + (self.seed >> 33) as f64 / (1u64 << 31) as f64 * 8.0
    }
}

/// Owns the connected sensors; disconnects them when dropped, however the handler ends.
struct Connected {
    sensors: Vec<Sensor>,
    disconnected: mpsc::UnboundedSender<usize>,
}

impl Drop for Connected {
    fn drop(&mut self) {
        let ids: Vec<&str> = self.sensors.iter().map(|s| s.id.as_str()).collect();
        println!(
            "  [sensors]  disconnecting {} (cleanup ran)",
            ids.join(", ")
        );
        let _ = self.disconnected.send(self.sensors.len());
    }
}

/// `monitorSensors` in the seed.
async fn monitor_sensors(
    event: Event,
    emit: Emitter,
    disconnected: mpsc::UnboundedSender<usize>,
) -> happen::Result<Value> {
    let ids: Vec<String> = event.payload()["sensorIds"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let duration = Duration::from_millis(event.payload()["durationMs"].as_u64().unwrap_or(1_000));
    let end = Instant::now() + duration;

    let mut conn = Connected {
        sensors: ids.iter().map(|id| Sensor::connect(id)).collect(),
        disconnected,
    };
    let mut batches = 0u64;
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    loop {
        ticker.tick().await; // the first tick is immediate
        if Instant::now() >= end {
            break;
        }
        let mut readings = Vec::new();
        for sensor in &mut conn.sensors {
            readings.push(json!({"sensor": sensor.id, "celsius": round1(sensor.reading().await)}));
        }
        let values: Vec<f64> = readings
            .iter()
            .filter_map(|r| r["celsius"].as_f64())
            .collect();
        let avg = values.iter().sum::<f64>() / values.len().max(1) as f64;
        let max = values.iter().copied().fold(f64::MIN, f64::max);
        batches += 1;
        emit.emit(json!({
            "batch": batches,
            "readings": readings,
            "analysis": {"avg": round1(avg), "max": round1(max), "alert": max > 25.0},
        }))
        .await?;
    }
    // Normal end: `conn` is dropped on return, disconnecting the sensors.
    Ok(json!({"status": "duration elapsed", "batches": batches}))
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn print_batch(item: &Value) {
    let readings: Vec<String> = item["readings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| format!("{}={}", r["sensor"].as_str().unwrap_or("?"), r["celsius"]))
        .collect();
    println!(
        "  [consumer] batch {:>2}: {}  avg {} max {}{}",
        item["batch"],
        readings.join(" "),
        item["analysis"]["avg"],
        item["analysis"]["max"],
        if item["analysis"]["alert"] == true {
            "  ALERT"
        } else {
            ""
        }
    );
}

#[tokio::main]
async fn main() -> happen::Result<()> {
    let happen = Happen::new();
    let sensor_node = happen.node("sensor-hub").await?;
    let dashboard = happen.node("dashboard").await?;

    // The guard reports each cleanup here.
    let (disconnected_tx, mut disconnected_rx) = mpsc::unbounded_channel::<usize>();
    sensor_node.on(
        "monitor-sensors",
        move |event: Event, _ctx: Context, emit: Emitter| {
            monitor_sensors(event, emit, disconnected_tx.clone())
        },
    )?;

    println!("--- 1. monitor for 350 ms and read the stream to its end ---");
    let mut stream = dashboard
        .send(
            &sensor_node,
            Event::new(
                "monitor-sensors",
                json!({"sensorIds": ["t1", "t2"], "durationMs": 350}),
            ),
        )
        .into_stream();
    while let Some(item) = stream.next().await {
        print_batch(&item?);
    }
    println!(
        "  final value: {}",
        stream.final_value().unwrap_or(&Value::Null)
    );
    wait_for_cleanup(&mut disconnected_rx).await;

    println!("\n--- 2. monitor for 60 s, but stop after 5 batches ---");
    let started = Instant::now();
    let mut stream = dashboard
        .send(
            &sensor_node,
            Event::new(
                "monitor-sensors",
                json!({"sensorIds": ["t1", "t2", "t3"], "durationMs": 60_000}),
            ),
        )
        .into_stream();
    let mut seen = 0;
    while let Some(item) = stream.next().await {
        print_batch(&item?);
        seen += 1;
        if seen == 5 {
            break;
        }
    }
    println!("  [consumer] enough: dropping the stream");
    drop(stream); // cancels the handler; its guard disconnects the sensors
    wait_for_cleanup(&mut disconnected_rx).await;
    println!("  stopped after {:?} instead of 60 s", started.elapsed());

    happen.shutdown(Duration::from_secs(1)).await;
    Ok(())
}

/// Waits until the handler's guard reports that the sensors are disconnected.
async fn wait_for_cleanup(rx: &mut mpsc::UnboundedReceiver<usize>) {
    let n = tokio::time::timeout(Duration::from_secs(2), rx.recv())
        .await
        .expect("the guard runs within 2 s")
        .expect("channel open");
    println!("  [main]     confirmed: {n} sensor(s) disconnected");
}

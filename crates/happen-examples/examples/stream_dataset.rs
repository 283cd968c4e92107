//! Streaming use case 1: a large dataset processed in chunks of 100, with progress items.
//!
//! Mirrors the seed: a processor node streams `{progress, results}` for every chunk of
//! `process-large-dataset`; a client node's `process-dataset` handler sends the dataset to the
//! processor, reads that stream item by item, and streams its own progress on to the user.
//! A streaming handler is an `async fn(Event, Context, Emitter)`: `emit.emit(item).await?`
//! yields an item (the seed's `yield`), the return value ends the stream (the seed's `return`).
//!
//! Run from the workspace root: `cargo run --release --example stream_dataset`

use std::time::Duration;

use futures::StreamExt;
use happen::prelude::*;
use serde_json::{Value, json};

const CHUNK: usize = 100;

/// Simulated asynchronous work on one chunk: returns the squares of the numbers.
async fn process_chunk(chunk: &[Value]) -> Vec<u64> {
    tokio::time::sleep(Duration::from_millis(3)).await;
    chunk
        .iter()
        .filter_map(Value::as_u64)
        .map(|n| n * n)
        .collect()
}

/// `processLargeDataset` in the seed: streams one progress item per chunk.
async fn process_large_dataset(
    event: Event,
    _ctx: Context,
    emit: Emitter,
) -> happen::Result<Value> {
    let dataset = event.payload()["dataset"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (i, chunk) in dataset.chunks(CHUNK).enumerate() {
        let results = process_chunk(chunk).await;
        let done = i * CHUNK + chunk.len();
        emit.emit(json!({
            "progress": (done * 100).div_ceil(dataset.len().max(1)).min(100),
            "results": results,
        }))
        .await?; // `Cancelled` if the consumer went away: stop here
    }
    Ok(json!({"status": "complete"}))
}

/// `handleDatasetProcessing` in the seed: forwards the work and relays progress.
async fn handle_dataset_processing(
    event: Event,
    ctx: Context,
    emit: Emitter,
) -> happen::Result<Value> {
    // ctx.send continues this flow's causal chain; `into_stream` reads the items as they come.
    let mut processing = ctx
        .send(
            "processor",
            Event::new(
                "process-large-dataset",
                json!({"dataset": event.payload()["dataset"]}),
            ),
        )
        .into_stream();
    let mut total_results = 0;
    while let Some(update) = processing.next().await {
        let update = update?;
        let count = update["results"].as_array().map_or(0, Vec::len);
        total_results += count;
        println!(
            "  [client]    processor progress {:>3}% (+{count} results)",
            update["progress"]
        );
        emit.emit(json!({
            "status": "processing",
            "progress": update["progress"],
            "resultsCount": count,
        }))
        .await?;
    }
    // After the items, the processor's final value.
    let processor_says = processing.final_value().cloned().unwrap_or(Value::Null);
    Ok(json!({
        "status": "complete",
        "message": "Dataset processing complete",
        "processor": processor_says,
        "totalResults": total_results,
    }))
}

#[tokio::main]
async fn main() -> happen::Result<()> {
    let happen = Happen::new();
    let processor = happen.node("processor").await?;
    processor.on("process-large-dataset", process_large_dataset)?;
    let client = happen.node("client").await?;
    client.on("process-dataset", handle_dataset_processing)?;
    let user = happen.node("user").await?;

    let dataset: Vec<u64> = (1..=1_050).collect();
    println!(
        "processing a dataset of {} numbers in chunks of {CHUNK}",
        dataset.len()
    );

    let mut stream = user
        .send(
            &client,
            Event::new("process-dataset", json!({"dataset": dataset})),
        )
        .into_stream();
    let mut items = 0;
    while let Some(item) = stream.next().await {
        let item = item?;
        items += 1;
        println!(
            "  [user]      {} {:>3}%  ({} results in this chunk)",
            item["status"].as_str().unwrap_or("?"),
            item["progress"],
            item["resultsCount"]
        );
    }
    println!(
        "{items} progress items; final value: {}",
        stream.final_value().unwrap_or(&Value::Null)
    );

    // Awaiting a streaming reply directly skips the items and gives the final value.
    let direct = user
        .send(
            &processor,
            Event::new("process-large-dataset", json!({"dataset": [1, 2, 3]})),
        )
        .await?;
    println!("awaited without streaming: {direct}");

    happen.shutdown(Duration::from_secs(1)).await;
    Ok(())
}

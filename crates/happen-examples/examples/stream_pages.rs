//! Streaming use case 4: fetching every page of a paginated HTTP API.
//!
//! The example starts a small local API with `axum` on 127.0.0.1 (a free port), serving 250
//! records 100 per page. The `fetch-all-records` handler fetches the pages one after the other
//! with `reqwest` and streams each page as it arrives, pausing between requests to respect
//! rate limits, like the seed.
//!
//! Run from the workspace root: `cargo run --release --example stream_pages`

use std::time::{Duration, Instant};

use axum::extract::Query;
use axum::routing::get;
use axum::{Json, Router};
use futures::StreamExt;
use happen::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};

const TOTAL_RECORDS: u64 = 250;

// ---- the local API server ----------------------------------------------------------------------

#[derive(Deserialize)]
struct PageQuery {
    page: u64,
    size: u64,
}

/// `GET /records?page=N&size=M` → `{"records": [...], "hasMore": bool}` (pages start at 1).
async fn records(Query(q): Query<PageQuery>) -> Json<Value> {
    let start = (q.page.max(1) - 1) * q.size;
    let end = (start + q.size).min(TOTAL_RECORDS);
    let records: Vec<Value> = (start..end)
        .map(|i| json!({"id": i + 1, "name": format!("record-{}", i + 1)}))
        .collect();
    Json(json!({"records": records, "hasMore": end < TOTAL_RECORDS}))
}

// ---- the handler ---------------------------------------------------------------------------------

/// `fetchAllRecords` in the seed.
async fn fetch_all_records(
    event: Event,
    _ctx: Context,
    emit: Emitter,
) -> Result<Value, happen::BoxError> {
    let endpoint = event.payload()["endpoint"]
        .as_str()
        .ok_or("payload needs `endpoint`")?
        .to_owned();
    let page_size = event.payload()["pageSize"].as_u64().unwrap_or(100);
    let client = reqwest::Client::new();

    let mut page = 1;
    let mut has_more = true;
    let mut total_records = 0;
    while has_more {
        let data: Value = client
            .get(format!("{endpoint}?page={page}&size={page_size}"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let records = data["records"].as_array().cloned().unwrap_or_default();
        total_records += records.len();
        has_more = data["hasMore"].as_bool().unwrap_or(false);
        emit.emit(json!({
            "page": page,
            "records": records,
            "totalRecords": total_records,
            "hasMore": has_more,
        }))
        .await?;
        page += 1;
        if has_more {
            tokio::time::sleep(Duration::from_millis(200)).await; // respect rate limits
        }
    }
    Ok(json!({"status": "complete", "pages": page - 1, "totalRecords": total_records}))
}

#[tokio::main]
async fn main() -> Result<(), happen::BoxError> {
    // Start the API on a free local port.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let app = Router::new().route("/records", get(records));
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await
    });
    let endpoint = format!("http://{addr}/records");
    println!("local API listening at {endpoint}");

    let happen = Happen::new();
    let api = happen.node("api").await?;
    api.on("fetch-all-records", fetch_all_records)?;
    let importer = happen.node("importer").await?;

    let started = Instant::now();
    let mut pages = importer
        .send(
            &api,
            Event::new(
                "fetch-all-records",
                json!({"endpoint": endpoint, "pageSize": 100}),
            ),
        )
        .into_stream();
    while let Some(page) = pages.next().await {
        let page = page?;
        let records = page["records"].as_array().map_or(&[][..], Vec::as_slice);
        println!(
            "[{:>6.0?}] page {}: {} records (ids {}..={}), {} so far, more: {}",
            started.elapsed(),
            page["page"],
            records.len(),
            records.first().map_or(Value::Null, |r| r["id"].clone()),
            records.last().map_or(Value::Null, |r| r["id"].clone()),
            page["totalRecords"],
            page["hasMore"],
        );
    }
    println!(
        "final value: {}",
        pages.final_value().unwrap_or(&Value::Null)
    );

    happen.shutdown(Duration::from_secs(1)).await;
    let _ = stop_tx.send(());
    server.await??;
    println!("local API stopped");
    Ok(())
}

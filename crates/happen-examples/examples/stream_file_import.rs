//! Streaming use case 2: real-time progress while importing a large file.
//!
//! The example writes a ~20 MB CSV file to the temp directory, then an `import-file` handler
//! reads it in 1 MB chunks with `tokio::fs`, counts the records, and streams a progress item
//! per chunk. The consumer drives an `indicatif` progress bar from those items. The file is
//! deleted at the end (also if the import fails).
//!
//! Run from the workspace root: `cargo run --release --example stream_file_import`

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use happen::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

const CHUNK_BYTES: usize = 1024 * 1024;
const TARGET_BYTES: u64 = 20 * 1024 * 1024;

/// `importFile` in the seed.
async fn import_file(
    event: Event,
    _ctx: Context,
    emit: Emitter,
) -> Result<Value, happen::BoxError> {
    let path = event.payload()["filePath"]
        .as_str()
        .ok_or("payload needs `filePath`")?
        .to_owned();
    let file_size = tokio::fs::metadata(&path).await?.len();
    let mut file = tokio::fs::File::open(&path).await?;

    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut bytes_processed: u64 = 0;
    let mut total_records: u64 = 0;
    let mut total_cents: u64 = 0;
    // A record can straddle two chunks: keep the unfinished tail for the next round.
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        bytes_processed += n as u64;
        carry.extend_from_slice(&buf[..n]);
        let complete = carry.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let (records, cents) = parse_records(&carry[..complete]);
        carry.drain(..complete);
        total_records += records;
        total_cents += cents;
        save_records(records).await;
        emit.emit(json!({
            "progress": bytes_processed * 100 / file_size.max(1),
            "bytesProcessed": bytes_processed,
            "recordsProcessed": records,
        }))
        .await?;
    }
    if !carry.is_empty() {
        let (records, cents) = parse_records(&carry);
        total_records += records;
        total_cents += cents;
    }
    Ok(json!({
        "status": "complete",
        "totalRecords": total_records,
        "totalAmountCents": total_cents,
    }))
}

/// Simulated asynchronous storage of a batch of records (the seed's `saveRecords`); it also
/// slows the import down enough to watch the progress bar move.
async fn save_records(_records: u64) {
    tokio::time::sleep(Duration::from_millis(25)).await;
}

/// Counts the data records in complete CSV lines and sums their `amount_cents` column
/// (the header line is skipped).
fn parse_records(bytes: &[u8]) -> (u64, u64) {
    let mut records = 0;
    let mut cents = 0;
    for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        if line.starts_with(b"id,") {
            continue; // header
        }
        records += 1;
        if let Some(amount) = line.rsplit(|&b| b == b',').next() {
            cents += std::str::from_utf8(amount)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    (records, cents)
}

/// Writes about `TARGET_BYTES` of CSV records; returns the number of records.
fn write_sample_file(path: &Path) -> std::io::Result<u64> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "id,customer,email,amount_cents")?;
    let mut written = 0u64;
    let mut records = 0u64;
    while written < TARGET_BYTES {
        let line = format!(
            "{records},customer-{:05},customer{:05}@example.com,{}\n",
            records % 50_000,
            records % 50_000,
            (records * 37) % 10_000
        );
        out.write_all(line.as_bytes())?;
        written += line.len() as u64;
        records += 1;
    }
    out.flush()?;
    Ok(records)
}

/// Deletes the file when dropped, so it is removed even if the import fails.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        match std::fs::remove_file(&self.0) {
            Ok(()) => println!("deleted {}", self.0.display()),
            Err(e) => eprintln!("could not delete {}: {e}", self.0.display()),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), happen::BoxError> {
    let path = std::env::temp_dir().join(format!("happen-import-{}.csv", std::process::id()));
    let started = Instant::now();
    let file = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || write_sample_file(&path)).await??
    };
    let guard = TempFile(path.clone());
    let size = std::fs::metadata(&path)?.len();
    println!(
        "wrote {} ({:.1} MB, {file} records) in {:?}",
        path.display(),
        size as f64 / 1e6,
        started.elapsed()
    );

    let happen = Happen::new();
    let importer = happen.node("importer").await?;
    importer.on("import-file", import_file)?;
    let ui = happen.node("ui").await?;

    let bar = ProgressBar::new(size);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:40}] {bytes}/{total_bytes} {msg}")?
            .progress_chars("=> "),
    );
    let started = Instant::now();
    let mut stream = ui
        .send(
            &importer,
            Event::new(
                "import-file",
                json!({"filePath": path.display().to_string()}),
            ),
        )
        .into_stream();
    let mut updates = 0;
    let mut records_seen = 0;
    while let Some(update) = stream.next().await {
        let update = update?;
        updates += 1;
        records_seen += update["recordsProcessed"].as_u64().unwrap_or(0);
        bar.set_position(update["bytesProcessed"].as_u64().unwrap_or(0));
        bar.set_message(format!("{}% · {records_seen} records", update["progress"]));
        if bar.is_hidden() {
            // No terminal (output piped to a file or CI log): print plain lines instead.
            println!(
                "progress {:>3}% · {} bytes · {records_seen} records",
                update["progress"], update["bytesProcessed"]
            );
        }
    }
    bar.finish();
    let result = stream.final_value().cloned().unwrap_or(Value::Null);
    println!("{updates} progress updates in {:?}", started.elapsed());
    println!("final value: {result}");
    assert_eq!(result["totalRecords"], file, "every record was counted");

    happen.shutdown(Duration::from_secs(1)).await;
    drop(guard);
    Ok(())
}

//! `happen web` in a real browser: headless Debian `chromium` renders the page against a live
//! system (the shop's nodes over a real nats-server), and the test reads the DOM it built.
//! Also saves `target/web.png` for a person to look at.
//!
//! chromium is found as `CHROMIUM_BIN`, `chromium` or `chromium-browser` on `PATH`, or
//! `/usr/bin/chromium`; `cargo xtask test` installs Debian's package when none is there. A
//! machine without it fails this test (as one without nats-server fails the NATS tests): it is
//! never skipped silently.

mod web_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use test_support::{NatsServer, NatsServerOptions};
use tokio::process::Command;
use web_support::{SseClient, Web, shop, within};

fn chromium() -> PathBuf {
    if let Some(bin) = std::env::var_os("CHROMIUM_BIN") {
        return PathBuf::from(bin);
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .flat_map(|d| [d.join("chromium"), d.join("chromium-browser")])
            .find(|p| p.is_file())
    });
    on_path
        .or_else(|| Some(PathBuf::from("/usr/bin/chromium")).filter(|p| p.is_file()))
        .unwrap_or_else(|| {
            panic!(
                "chromium not found: install Debian's `chromium` (`cargo xtask test` does), or set CHROMIUM_BIN"
            )
        })
}

/// Runs headless chromium with a fresh profile on `url` with `what` (`--dump-dom`,
/// `--screenshot=…`); returns its stdout. Virtual time lets the page's scripts and requests
/// finish before the DOM is taken.
async fn chromium_run(url: &str, what: &[&str]) -> String {
    static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let profile =
        std::env::temp_dir().join(format!("happen-web-chromium-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profile);
    let output = within(
        120,
        "chromium",
        Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--no-first-run",
                "--hide-scrollbars",
                "--window-size=1400,1000",
                "--virtual-time-budget=10000",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(what)
            .arg(url)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("run chromium");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        output.status.success(),
        "chromium failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The start tags holding `marker`, in document order.
fn tags<'a>(dom: &'a str, marker: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = dom;
    while let Some(i) = rest.find(marker) {
        let start = rest[..i].rfind('<').unwrap_or(0);
        let end = i + rest[i..].find('>').unwrap_or(rest.len() - i);
        out.push(&rest[start..end]);
        rest = &rest[end..];
    }
    out
}

fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    let i = tag.find(&key)? + key.len();
    Some(&tag[i..i + tag[i..].find('"')?])
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_nodes_a_waterfall_a_filtered_tail_and_errors() {
    let chromium = chromium(); // before anything else: fail at once without a browser
    eprintln!("using {}", chromium.display());
    let server = NatsServer::start_with(NatsServerOptions::new().with_jetstream());
    let (h, client) = shop(&server.url()).await;
    let web = Web::start(&server.url(), &[]).await;

    // a page watches while the shop works (the browser then renders what it saw)
    let mut page = SseClient::open(&web.url("/api/stream"), None).await;
    page.until(|f| f.event == "nodes").await;
    let corr = happen::CorrelationId::new();
    client
        .send(
            "orders",
            happen::Event::new("order.place", json!({"id": 7, "amount": 70}))
                .with_correlation_id(corr.clone()),
        )
        .await
        .unwrap();
    let failed = client
        .send(
            "orders",
            happen::Event::new("order.place", json!({"id": 8, "amount": 8000})),
        )
        .await;
    assert!(failed.is_err());
    let mut errors = 0;
    page.until(|f| {
        errors += usize::from(f.event == "reply" && f.data["reply"]["status"] == "error");
        errors == 2
    })
    .await;
    page.until(|f| f.event == "nodes").await;

    let dom = chromium_run(
        &web.page(&format!("once&txn={corr}&filter=order.*&node=ledger")),
        &["--dump-dom"],
    )
    .await;
    assert!(dom.contains("data-ready=\"1\""), "the page finished: {dom}");

    // nodes with their pressure
    let rows = tags(&dom, "class=\"node");
    let nodes: Vec<&str> = rows.iter().filter_map(|t| attr(t, "data-node")).collect();
    for id in ["orders", "payments", "ledger"] {
        assert!(nodes.contains(&id), "{id} in {nodes:?}");
    }
    for row in &rows {
        let p: f64 = attr(row, "data-pressure").unwrap().parse().unwrap();
        assert!((0.0..=1.0).contains(&p), "{row}");
        assert!(attr(row, "data-under-pressure").is_some(), "{row}");
    }
    assert!(
        !tags(&dom, "class=\"map-node\"").is_empty(),
        "the map is drawn"
    );

    // the selected node's handler times as a heatmap over time
    let heat = tags(&dom, "class=\"heatmap\"");
    assert!(
        heat.iter()
            .any(|t| attr(t, "data-kind") == Some("handler-time")
                && attr(t, "data-total").is_some_and(|n| n != "0")),
        "{heat:?}"
    );

    // the waterfall: three steps in causal order
    let steps = tags(&dom, "class=\"step\"");
    let steps: Vec<(&str, &str, &str)> = steps
        .iter()
        .map(|t| {
            (
                attr(t, "data-type").unwrap(),
                attr(t, "data-depth").unwrap(),
                attr(t, "data-status").unwrap(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("order.place", "0", "ok"),
            ("payment.charge", "1", "ok"),
            ("ledger.record", "2", "ok")
        ]
    );

    // the tail shows `order.*` only
    let tail: Vec<&str> = tags(&dom, "<li data-type=")
        .iter()
        .filter_map(|t| attr(t, "data-type"))
        .collect();
    assert!(tail.contains(&"order.place"), "{tail:?}");
    assert!(tail.iter().all(|t| t.starts_with("order.")), "{tail:?}");

    // an error shows its node and code
    let groups = tags(&dom, "class=\"error-group\"");
    assert!(
        groups
            .iter()
            .any(|g| attr(g, "data-node") == Some("payments")
                && attr(g, "data-code") == Some("limit_exceeded")),
        "{groups:?}"
    );

    // a picture for people
    let png = target_dir().join("web.png");
    let _ = std::fs::remove_file(&png);
    chromium_run(
        &web.page(&format!("once&txn={corr}&node=ledger")),
        &[&format!("--screenshot={}", png.display())],
    )
    .await;
    let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
    assert!(size > 10_000, "a screenshot at {}", png.display());
    eprintln!("screenshot: {}", png.display());
    drop(page);
    h.shutdown(Duration::from_secs(2)).await;
}

/// A tell's step shows its duration and outcome, and a broadcast's receivers each theirs,
/// from the nodes' completion records (published while the page watches); the selected
/// node's process shows its transport counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_waterfall_shows_a_tells_duration_and_a_broadcasts_receivers() {
    let chromium = chromium();
    eprintln!("using {}", chromium.display());
    let server = NatsServer::start_with(NatsServerOptions::new().with_jetstream());
    let (workers, senders, client) =
        web_support::recording_workers(&server.url(), happen_nats::CompletionRecords::Watched)
            .await;
    let web = Web::start(&server.url(), &[]).await;
    let page = SseClient::open(&web.url("/api/stream"), None).await;
    let (corr, mut page) = web_support::completions_on_the_page(&client, page).await;
    page.until(|f| f.event == "nodes").await;

    let dom = chromium_run(
        &web.page(&format!("once&txn={corr}&node=audit")),
        &["--dump-dom"],
    )
    .await;
    assert!(dom.contains("data-ready=\"1\""), "the page finished: {dom}");
    let steps = tags(&dom, "class=\"step\"");
    let tells: Vec<(&str, f64)> = steps
        .iter()
        .filter(|t| attr(t, "data-kind") == Some("tell"))
        .map(|t| {
            (
                attr(t, "data-status").unwrap(),
                attr(t, "data-duration-ms")
                    .unwrap_or_else(|| panic!("no duration: {t}"))
                    .parse()
                    .unwrap(),
            )
        })
        .collect();
    assert_eq!(tells.len(), 2, "{steps:?}");
    assert!(tells.iter().all(|(_, ms)| *ms >= 30.0), "{tells:?}");
    let mut outcomes: Vec<&str> = tells.iter().map(|(s, _)| *s).collect();
    outcomes.sort();
    assert_eq!(outcomes, ["error", "ok"]);
    // the duration is written beside the bar
    let ok_ms = tells.iter().find(|(s, _)| *s == "ok").unwrap().1;
    assert!(
        dom.contains(&format!("{ok_ms:.1} ms")),
        "the tell's duration shown"
    );
    let receivers: Vec<&str> = tags(&dom, "class=\"receiver\"")
        .iter()
        .filter(|t| attr(t, "data-status") == Some("ok"))
        .filter_map(|t| attr(t, "data-node"))
        .collect();
    assert_eq!(receivers.len(), 2, "{receivers:?}");
    assert!(receivers.contains(&"mirror-a") && receivers.contains(&"mirror-b"));
    // the process behind the selected node, with its transport counters
    let transport = tags(&dom, "class=\"transport\"");
    assert!(
        !transport.is_empty(),
        "transport counters in the node's detail"
    );

    let png = target_dir().join("web-completions.png");
    let _ = std::fs::remove_file(&png);
    chromium_run(
        &web.page(&format!("once&txn={corr}&node=audit")),
        &[&format!("--screenshot={}", png.display())],
    )
    .await;
    assert!(std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0) > 10_000);
    drop(page);
    workers.shutdown(Duration::from_secs(2)).await;
    senders.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_replays_a_recording_at_the_scrubber_time() {
    let chromium = chromium();
    eprintln!("using {}", chromium.display());
    let server = NatsServer::start();
    let (h, client) = shop(&server.url()).await;
    let rec = web_support::record_two_orders(&server.url(), &client, "replay-page").await;
    h.shutdown(Duration::from_secs(2)).await;
    let web = Web::start(
        "nats://127.0.0.1:1",
        &["--replay", rec.path.to_str().unwrap()],
    )
    .await;

    // between the orders: the scrubber there, the first order only, its waterfall complete
    let dom = chromium_run(
        &web.page(&format!("at={}&txn={}", rec.mid_us, rec.first)),
        &["--dump-dom"],
    )
    .await;
    assert!(dom.contains("data-ready=\"1\""), "the page finished: {dom}");
    let scrubber = tags(&dom, "id=\"scrubber\"");
    assert_eq!(
        scrubber.first().and_then(|t| attr(t, "data-at")),
        Some(rec.mid_us.to_string().as_str()),
        "{scrubber:?}"
    );
    let tail: Vec<&str> = tags(&dom, "<li data-type=")
        .iter()
        .filter_map(|t| attr(t, "data-corr"))
        .collect();
    assert_eq!(tail.len(), 3, "{tail:?}");
    assert!(tail.iter().all(|c| *c == rec.first), "{tail:?}");
    let nodes: Vec<&str> = tags(&dom, "class=\"node")
        .iter()
        .filter_map(|t| attr(t, "data-node"))
        .collect();
    assert!(nodes.contains(&"orders"), "{nodes:?}");
    let steps: Vec<&str> = tags(&dom, "class=\"step\"")
        .iter()
        .filter_map(|t| attr(t, "data-status"))
        .collect();
    assert_eq!(steps, ["ok", "ok", "ok"]);
    assert!(
        tags(&dom, "class=\"error-group\"").is_empty(),
        "no error yet"
    );

    // the selected node's heatmap as of the scrubber's time (the end: a snapshot between the
    // orders may have been asked for before `ledger` finished), from the recorded snapshots
    let dom = chromium_run(&web.page("node=ledger"), &["--dump-dom"]).await;
    let heat = tags(&dom, "class=\"heatmap\"");
    assert!(
        heat.iter()
            .any(|t| attr(t, "data-kind") == Some("handler-time")
                && attr(t, "data-total").is_some_and(|n| n != "0")),
        "{heat:?}"
    );
    let cells = dom.matches("fill-opacity").count();
    assert!(cells > 0, "the replayed heatmap has cells");

    // at the end: the second order and its error
    let dom = chromium_run(&web.page("x=1"), &["--dump-dom"]).await;
    let tail: Vec<&str> = tags(&dom, "<li data-type=")
        .iter()
        .filter_map(|t| attr(t, "data-corr"))
        .collect();
    assert!(tail.contains(&rec.second.as_str()), "{tail:?}");
    let groups = tags(&dom, "class=\"error-group\"");
    assert!(
        groups
            .iter()
            .any(|g| attr(g, "data-node") == Some("payments")),
        "{groups:?}"
    );
    let png = target_dir().join("web-replay.png");
    let _ = std::fs::remove_file(&png);
    chromium_run(
        &web.page(&format!("at={}&txn={}", rec.mid_us, rec.first)),
        &[&format!("--screenshot={}", png.display())],
    )
    .await;
    assert!(std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0) > 10_000);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_is_a_warning_linking_to_its_transaction() {
    use futures::StreamExt;

    let chromium = chromium();
    eprintln!("using {}", chromium.display());
    let server = NatsServer::start();
    let (h, senders, client, gate) = web_support::stalling_producer(&server.url()).await;
    let web = Web::start(&server.url(), &["--stream-stall", "1s"]).await;
    let mut page = SseClient::open(&web.url("/api/stream"), None).await;
    web_support::until_replies_seen(&mut page, &client).await;
    let (corr, mut stream) = web_support::stalled_stream(&client).await;
    page.until(|f| {
        f.event == "nodes"
            && f.data["warnings"]
                .as_array()
                .is_some_and(|w| w.iter().any(|w| w["kind"] == "stream-stalled"))
    })
    .await;

    let dom = chromium_run(&web.page("once"), &["--dump-dom"]).await;
    assert!(dom.contains("data-ready=\"1\""), "the page finished: {dom}");
    let warnings = tags(&dom, "class=\"warning\"");
    assert!(
        warnings
            .iter()
            .any(|w| attr(w, "data-kind") == Some("stream-stalled")
                && attr(w, "data-node") == Some("producer")),
        "{warnings:?}"
    );
    let links = tags(&dom, "class=\"txn-link\"");
    assert!(
        links
            .iter()
            .any(|l| attr(l, "data-corr") == Some(corr.as_str())),
        "{links:?}"
    );
    gate.notify_one();
    while within(10, "the stream to end", stream.next())
        .await
        .is_some()
    {}
    senders.shutdown(Duration::from_secs(2)).await;
    h.shutdown(Duration::from_secs(2)).await;
}

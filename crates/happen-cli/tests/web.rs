//! `happen web`'s JSON and event-stream API against a real nats-server, with the shop's nodes
//! (orders → payments → ledger) in this test process.

mod web_support;

use std::time::Duration;

use serde_json::{Value, json};
use test_support::{NatsServer, NatsServerOptions};
use web_support::{Frame, SseClient, Web, eventually, shop, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_shows_nodes_a_waterfall_and_errors_while_a_page_is_open() {
    let server = NatsServer::start_with(NatsServerOptions::new().with_jetstream());
    let (h, client) = shop(&server.url()).await;
    let web = Web::start(&server.url(), &[]).await;

    // no page: nothing watched, but the nodes are discovered on demand
    let status = web.get_json("/api/status").await;
    assert_eq!(status["pages"], 0, "{status}");
    let nodes = web.get_json("/api/nodes").await;
    let ids: Vec<&str> = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["id"].as_str())
        .collect();
    for id in ["ledger", "orders", "payments"] {
        assert!(ids.contains(&id), "{id} in {nodes}");
    }

    let mut page = SseClient::open(&web.url("/api/stream"), None).await;
    let first = page.next().await;
    assert_eq!(first.event, "status", "{first:?}");
    eventually("the page to count", || async {
        web.get_json("/api/status").await["pages"] == 1
    })
    .await;

    // a nodes frame with the limits and pressure of every node
    let frames = page
        .until(|f| f.event == "nodes" && f.data["nodes"].as_array().is_some_and(|n| n.len() >= 3))
        .await;
    let nodes = &frames.last().unwrap().data;
    let orders = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "orders")
        .unwrap();
    assert_eq!(orders["maxConcurrent"], 2, "{orders}");
    assert_eq!(orders["queueLimit"], 50, "{orders}");
    assert!(orders["pressure"].is_number(), "{orders}");
    assert!(orders["rates"]["accepted"].is_number(), "{orders}");
    // discovery's newer counters reach the page
    for key in ["displaced", "cancelled", "engineFaults"] {
        assert_eq!(orders[key], 0, "{key} in {orders}");
    }

    // one order: three events, three replies on the stream
    let corr = happen::CorrelationId::new();
    let reply = within(
        10,
        "the order",
        client.send(
            "orders",
            happen::Event::new("order.place", json!({"id": 1, "amount": 30}))
                .with_correlation_id(corr.clone()),
        ),
    )
    .await
    .unwrap();
    assert_eq!(reply["charge"]["charged"], 30);
    let corr = corr.to_string();
    let mut replies = 0;
    let frames = page
        .until(|f| {
            if f.event == "reply" && f.data["correlationId"] == corr.as_str() {
                replies += 1;
            }
            replies == 3
        })
        .await;
    let events: Vec<&Frame> = frames
        .iter()
        .filter(|f| f.event == "event" && f.data["correlationId"] == corr.as_str())
        .collect();
    let types: Vec<&str> = events
        .iter()
        .map(|f| f.data["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["order.place", "payment.charge", "ledger.record"]);
    let ids: Vec<u64> = frames.iter().map(|f| f.id.unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");

    // the waterfall: three steps in causal order, each paired with its reply
    let t = web.get_json(&format!("/api/transactions/{corr}")).await;
    assert_eq!(t["events"], 3, "{t}");
    let place = &t["roots"][0];
    let charge = &place["children"][0];
    let record = &charge["children"][0];
    assert_eq!(place["type"], "order.place");
    assert_eq!(charge["type"], "payment.charge");
    assert_eq!(record["type"], "ledger.record");
    for step in [place, charge, record] {
        assert_eq!(step["reply"]["status"], "ok", "{step}");
    }
    let d = |s: &Value| s["durationMs"].as_f64().unwrap();
    // a request ends after what it caused
    assert!(d(place) >= d(charge) && d(charge) >= d(record), "{t}");
    assert!(d(place) >= 20.0, "orders works 20 ms: {t}");

    // an error: grouped by kind, node and code, with its downstream chain
    let failed = client
        .send(
            "orders",
            happen::Event::new("order.place", json!({"id": 2, "amount": 5000})),
        )
        .await
        .unwrap_err();
    assert_eq!(failed.kind(), happen::ErrorKind::Downstream);
    page.until(|f| {
        f.event == "reply"
            && f.data["reply"]["status"] == "error"
            && f.data["type"] == "order.place"
    })
    .await;
    let errors = web.get_json("/api/errors").await;
    let groups = errors["groups"].as_array().unwrap();
    let at = |kind: &str, node: &str| {
        groups
            .iter()
            .find(|g| g["kind"] == kind && g["node"] == node)
            .unwrap_or_else(|| panic!("no {kind} group at {node}: {errors}"))
    };
    let handler = at("handler", "payments");
    assert_eq!(handler["code"], "limit_exceeded");
    assert_eq!(handler["count"], 1);
    assert_eq!(handler["latest"][0]["eventType"], "payment.charge");
    let downstream = at("downstream", "orders");
    assert_eq!(
        downstream["latest"][0]["error"]["chain"][0]["code"], "limit_exceeded",
        "{downstream}"
    );

    // handler times of the node that times them: a histogram per snapshot interval
    let frames = page
        .until(|f| {
            f.event == "nodes"
                && f.data["nodes"].as_array().is_some_and(|n| {
                    n.iter()
                        .any(|n| n["id"] == "ledger" && n["handlerTime"]["total"] == 1)
                })
        })
        .await;
    let nodes = &frames.last().unwrap().data["nodes"];
    let node = |id: &str| {
        nodes
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == id)
            .unwrap()
    };
    let ledger = &node("ledger")["handlerTime"];
    assert!(
        ledger["buckets"].is_array() && ledger["p99Us"].is_u64(),
        "{ledger}"
    );
    // a node that does not time its handlers reports none
    assert!(node("payments")["handlerTime"].is_null(), "{nodes}");

    // the page goes: so does the watch
    drop(page);
    eventually("the page to be gone", || async {
        web.get_json("/api/status").await["pages"] == 0
    })
    .await;
    h.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_resumes_after_its_last_event_id_and_filters_by_pattern() {
    let server = NatsServer::start_with(NatsServerOptions::new().with_jetstream());
    let (h, client) = shop(&server.url()).await;
    let web = Web::start(&server.url(), &[]).await;

    let mut page = SseClient::open(&web.url("/api/stream"), None).await;
    page.until(|f| f.event == "nodes").await;
    client
        .send(
            "orders",
            happen::Event::new("order.place", json!({"amount": 1})),
        )
        .await
        .unwrap();
    let frames = page
        .until(|f| f.event == "reply" && f.data["type"] == "order.place")
        .await;
    let last = frames.last().unwrap().id.unwrap();
    // a second page keeps the watch on while the first reconnects
    let mut other = SseClient::open(&web.url("/api/stream"), None).await;
    drop(page);
    client
        .send(
            "orders",
            happen::Event::new("order.place", json!({"amount": 2})),
        )
        .await
        .unwrap();
    other
        .until(|f| f.event == "reply" && f.data["type"] == "order.place" && f.id > Some(last))
        .await;
    let mut resumed = SseClient::open(&web.url("/api/stream"), Some(last)).await;
    let frames = resumed
        .until(|f| f.event == "reply" && f.data["type"] == "order.place")
        .await;
    let ids: Vec<u64> = frames.iter().filter_map(|f| f.id).collect();
    assert_eq!(
        ids.first(),
        Some(&(last + 1)),
        "resumes right after {last}: {ids:?}"
    );
    assert!(
        ids.windows(2).all(|w| w[0] + 1 == w[1]),
        "no gap, no repeat: {ids:?}"
    );
    let amounts: Vec<&Value> = frames
        .iter()
        .filter(|f| f.event == "event" && f.data["type"] == "order.place")
        .map(|f| &f.data["payload"]["amount"])
        .collect();
    assert_eq!(amounts, [&json!(2)]);

    // a pattern keeps the matching events only (other frames pass)
    let mut filtered = SseClient::open(&web.url("/api/stream?pattern=payment.*"), None).await;
    client
        .send(
            "orders",
            happen::Event::new("order.place", json!({"amount": 3})),
        )
        .await
        .unwrap();
    let frames = filtered
        .until(|f| {
            f.event == "reply" && f.data["type"] == "order.place" && f.data["sender"] != "orders"
        })
        .await;
    let types: Vec<&str> = frames
        .iter()
        .filter(|f| f.event == "event")
        .map(|f| f.data["type"].as_str().unwrap())
        .collect();
    assert!(
        !types.is_empty() && types.iter().all(|t| *t == "payment.charge"),
        "{types:?}"
    );
    h.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_http_errors_and_sending_is_opt_in() {
    let server = NatsServer::start_with(NatsServerOptions::new().with_jetstream());
    let (h, _client) = shop(&server.url()).await;
    let web = Web::start(&server.url(), &[]).await;

    // without a token, only loopback names: no DNS rebinding onto the API
    let r = reqwest::Client::new()
        .get(web.url("/api/status"))
        .header("host", "evil.example:4280")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let (code, body) = web.get("/api/stream?pattern=order.cre*").await;
    assert_eq!(code, 400);
    assert!(
        body["error"].as_str().unwrap().contains("order.cre*"),
        "{body}"
    );
    let (code, body) = web.get("/api/pattern?pattern={order").await;
    assert_eq!(code, 400, "{body}");
    let (code, body) = web.get("/api/transactions/txn-unknown").await;
    assert_eq!(code, 404);
    assert!(
        body["error"].as_str().unwrap().contains("txn-unknown"),
        "{body}"
    );
    let (code, body) = web
        .post("/api/send", r#"{"node": "orders", "type": "order.place"}"#)
        .await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("--allow-send"),
        "{body}"
    );

    let sending = Web::start(&server.url(), &["--allow-send"]).await;
    let (code, _) = sending.post("/api/send", "{not json").await;
    assert_eq!(code, 400);
    let (code, _) = sending.post("/api/send", r#"{"type": 7}"#).await;
    assert_eq!(code, 400);
    let (code, body) = sending
        .post(
            "/api/send",
            r#"{"node": "orders", "type": "order.place", "payload": {"amount": 4}}"#,
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["reply"]["charge"]["charged"], 4, "{body}");
    assert!(body["correlationId"].as_str().unwrap().starts_with("txn-"));
    h.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_loopback_address_needs_a_token() {
    let server = NatsServer::start();
    let o = web_support::run(&server.url(), &["web", "--listen", "0.0.0.0:0"]).await;
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(23), "{err}");
    assert!(err.contains("token"), "{err}");

    let web = Web::start(
        &server.url(),
        &["--listen", "0.0.0.0:0", "--token", "s3cret"],
    )
    .await;
    let (code, _) = web.get("/api/status").await;
    assert_eq!(code, 401);
    let (code, _) = web.get("/api/status?token=wrong").await;
    assert_eq!(code, 401);
    let (code, body) = web.get("/api/status?token=s3cret").await;
    assert_eq!(code, 200, "{body}");
    // the page itself is public; it holds no data
    let page = reqwest::get(web.url("/")).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("<title>happen web</title>")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tap_and_the_page_say_when_the_connection_drops_and_returns() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let mut server = NatsServer::start();
    let web = Web::start(&server.url(), &[]).await;
    let mut page = SseClient::open(&web.url("/api/stream"), None).await;
    let hello = page.next().await;
    assert_eq!(
        (hello.event.as_str(), &hello.data["nats"]),
        ("status", &json!("connected"))
    );
    let mut tap = web_support::command(&server.url(), &["tap"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut tap_err = BufReader::new(tap.stderr.take().unwrap()).lines();
    let first = within(30, "tap to listen", tap_err.next_line())
        .await
        .unwrap()
        .unwrap();
    assert!(first.starts_with("listening"), "{first}");

    server.stop();
    let line = within(30, "tap to see the drop", tap_err.next_line())
        .await
        .unwrap()
        .unwrap();
    assert!(
        line.contains("lost the connection to the nats server"),
        "{line}"
    );
    page.until(|f| f.event == "status" && f.data["nats"] == "disconnected")
        .await;

    server.restart();
    let line = within(30, "tap to see the return", tap_err.next_line())
        .await
        .unwrap()
        .unwrap();
    assert!(line.contains("reconnected to the nats server"), "{line}");
    page.until(|f| f.event == "status" && f.data["nats"] == "connected")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_gone_from_discovery_is_a_warning() {
    let server = NatsServer::start_with(NatsServerOptions::new().with_jetstream());
    let (h, _client) = shop(&server.url()).await;
    let (second, _c2) = shop(&server.url()).await;
    let web = Web::start(&server.url(), &[]).await;
    let mut page = SseClient::open(&web.url("/api/stream"), None).await;
    let two_replicas = |f: &Frame| {
        f.event == "nodes"
            && f.data["nodes"].as_array().is_some_and(|n| {
                n.iter().any(|n| {
                    n["id"] == "orders" && n["replicas"].as_array().map(Vec::len) == Some(2)
                })
            })
    };
    page.until(two_replicas).await;
    second.shutdown(Duration::from_secs(2)).await;
    let frames = page
        .until(|f| {
            f.event == "nodes"
                && f.data["warnings"].as_array().is_some_and(|w| {
                    w.iter()
                        .any(|w| w["kind"] == "replica-gone" && w["node"] == "orders")
                })
        })
        .await;
    let warnings = &frames.last().unwrap().data["warnings"];
    let orders = warnings
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["node"] == "orders")
        .unwrap();
    assert_eq!(
        orders["level"], "warning",
        "one replica is left: {warnings}"
    );
    h.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_counts_and_dead_letters_with_their_errors() {
    use happen::{Context, Error, ErrorKind, Event};

    let server = NatsServer::start_with(NatsServerOptions::new().with_jetstream());
    let (h, worker) = web_support::durable_worker(&server).await;
    worker
        .on("job", |e: Event, _c: Context| async move {
            if e.payload()["fail"] == true {
                return Err(
                    Error::new(ErrorKind::Handler, "cannot do this job").with_code("bad_job")
                );
            }
            Ok(json!("done"))
        })
        .unwrap();
    let client = h.node("client").await.unwrap();
    let web = Web::start(&server.url(), &[]).await;
    let mut page = SseClient::open(&web.url("/api/stream"), None).await;
    client
        .tell("worker", Event::new("job", json!({"fail": true})))
        .unwrap();
    client
        .tell("worker", Event::new("job", json!({"fail": false})))
        .unwrap();
    let frames = page
        .until(|f| f.event == "durable" && f.data["deadLetters"]["worker"] == 1)
        .await;
    let d = &frames.last().unwrap().data;
    assert_eq!(d["stream"], "HAPPEN_DURABLE", "{d}");
    let consumer = d["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["node"] == "worker")
        .unwrap_or_else(|| panic!("the worker's consumer in {d}"));
    assert!(
        consumer["pending"].is_number() && consumer["redelivered"].is_number(),
        "{consumer}"
    );
    let dead = &d["latestDeadLetters"][0];
    assert_eq!(dead["node"], "worker", "{d}");
    assert_eq!(dead["type"], "job");
    assert_eq!(dead["errorKind"], "handler");
    assert_eq!(dead["errorCode"], "bad_job");
    assert_eq!(dead["deliveries"], "2");
    assert_eq!(
        web.get_json("/api/durable").await["deadLetters"]["worker"],
        1
    );
    h.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_replays_as_of_the_scrubber_time() {
    let server = NatsServer::start();
    let (h, client) = shop(&server.url()).await;
    let rec = web_support::record_two_orders(&server.url(), &client, "replay-api").await;
    h.shutdown(Duration::from_secs(2)).await;
    drop(server);

    // the replay needs no NATS server: the one recorded is gone
    let file = rec.path.to_str().unwrap();
    let web = Web::start("nats://127.0.0.1:1", &["--replay", file]).await;
    let status = web.get_json("/api/status").await;
    let summary = &status["replay"];
    assert_eq!(summary["events"], 5, "{status}");
    assert_eq!(summary["replies"], 5, "{status}");
    assert!(summary["snapshots"].as_u64().unwrap() >= 2, "{status}");
    let (start, end) = (
        summary["startUs"].as_u64().unwrap(),
        summary["endUs"].as_u64().unwrap(),
    );
    assert!(start < rec.mid_us && rec.mid_us < end, "{status}");

    let orders = |at: &Value| -> Value {
        at["nodes"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == "orders")
            .cloned()
            .unwrap_or_else(|| panic!("orders in {}", at["nodes"]))
    };
    let types = |at: &Value| -> Vec<(String, String)> {
        at["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["type"].as_str().unwrap().to_owned(),
                    e["correlationId"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };

    // between the orders: the first one's three events, replied; one order accepted; no error
    let mid = web
        .get_json(&format!("/api/replay?at={}", rec.mid_us))
        .await;
    let first = rec.first.clone();
    assert_eq!(
        types(&mid),
        [
            ("order.place".to_owned(), first.clone()),
            ("payment.charge".to_owned(), first.clone()),
            ("ledger.record".to_owned(), first.clone())
        ]
    );
    assert_eq!(mid["replies"].as_array().unwrap().len(), 3, "{mid}");
    assert_eq!(orders(&mid)["accepted"], 1, "{mid}");
    assert_eq!(mid["errors"]["groups"], json!([]), "{mid}");
    assert!(mid["history"]["orders"].is_array(), "{mid}");
    let t = web
        .get_json(&format!("/api/transactions/{first}?at={}", rec.mid_us))
        .await;
    assert_eq!(t["events"], 3, "{t}");
    assert_eq!(t["roots"][0]["reply"]["status"], "ok", "{t}");
    assert!(t["roots"][0]["durationMs"].as_f64().unwrap() >= 20.0, "{t}");
    let (code, body) = web
        .get(&format!(
            "/api/transactions/{}?at={}",
            rec.second, rec.mid_us
        ))
        .await;
    assert_eq!(code, 404, "the second order came later: {body}");

    // at the end: both orders, the second failed at payments
    let end_state = web.get_json("/api/replay").await;
    assert_eq!(end_state["atUs"], end);
    assert_eq!(types(&end_state).len(), 5, "{end_state}");
    assert_eq!(orders(&end_state)["accepted"], 2, "{end_state}");
    let groups = end_state["errors"]["groups"].as_array().unwrap();
    assert!(
        groups
            .iter()
            .any(|g| g["node"] == "payments" && g["code"] == "limit_exceeded"),
        "{groups:?}"
    );
    let t = web
        .get_json(&format!("/api/transactions/{}", rec.second))
        .await;
    assert_eq!(t["roots"][0]["reply"]["status"], "error", "{t}");
    assert_eq!(
        t["roots"][0]["children"][0]["reply"]["error"]["code"], "limit_exceeded",
        "{t}"
    );
    // a pattern filters the tail as it does live
    let charges = web.get_json("/api/replay?pattern=payment.*").await;
    assert!(
        types(&charges).iter().all(|(t, _)| t == "payment.charge") && types(&charges).len() == 2,
        "{charges}"
    );
    let (code, _) = web.get("/api/replay?pattern={bad").await;
    assert_eq!(code, 400);

    // the heatmaps as of the scrubber's time, from the recorded snapshots' histograms:
    // `ledger` times its handlers
    let columns = |at: &Value, node: &str, kind: &str| -> Vec<Value> {
        at["heat"][node][kind]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let counted = |cols: &[Value]| -> u64 {
        cols.iter()
            .flat_map(|c| c.as_array().cloned().unwrap_or_default())
            .filter_map(|n| n.as_u64())
            .sum()
    };
    let at_end = columns(&end_state, "ledger", "handlerTime");
    assert!(!at_end.is_empty(), "{end_state}");
    if summary["snapshots"].as_u64() <= Some(60) {
        // every snapshot's interval is a column (the page keeps 60)
        assert_eq!(
            counted(&at_end),
            1,
            "one ledger.record was timed: {at_end:?}"
        );
    }
    // one column per snapshot so far (events that started at once waited for nothing)
    assert_eq!(
        columns(&end_state, "orders", "queueWait").len(),
        at_end.len(),
        "{end_state}"
    );
    assert!(
        columns(&mid, "ledger", "handlerTime").len() < at_end.len(),
        "fewer snapshots by the middle"
    );
    // and the processes' transport counters in the snapshots
    assert!(
        end_state["nodes"]["transports"]
            .as_object()
            .is_some_and(|t| t
                .values()
                .any(|p| p["counters"]["replies"].as_u64() > Some(0))),
        "{end_state}"
    );

    // `trace --from` still reads the file (it skips what is not an event)
    let o = web_support::run("nats://127.0.0.1:1", &["trace", &first, "--from", file]).await;
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("(3 events)"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_replay_file_is_a_clear_error() {
    let path = std::env::temp_dir().join(format!("happen-web-bad-{}.jsonl", std::process::id()));
    std::fs::write(
        &path,
        "{\"record\": \"header\", \"format\": \"happen-record\", \"version\": 2}\nnot json\n",
    )
    .unwrap();
    let o = web_support::run(
        "nats://127.0.0.1:1",
        &[
            "web",
            "--listen",
            "127.0.0.1:0",
            "--replay",
            path.to_str().unwrap(),
        ],
    )
    .await;
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(23), "{err}");
    assert!(err.contains("line 2") && err.contains("not JSON"), "{err}");
    let _ = std::fs::remove_file(&path);
    let o = web_support::run(
        "nats://127.0.0.1:1",
        &["web", "--replay", "/nonexistent/happen-recording.jsonl"],
    )
    .await;
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(23), "{err}");
    assert!(err.contains("cannot open"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warnings_reach_a_plain_node_as_flow_balance_events_with_no_page_open() {
    use happen::{Context, Event, Happen, NodeOptions};
    use happen_nats::{NatsConfig, NatsTransport};

    let server = NatsServer::start();
    let connect = || async {
        NatsTransport::connect(NatsConfig::with_server(server.url()))
            .await
            .unwrap()
    };
    // a listener as a reference client would be: a plain node with handlers for the types
    let listening = Happen::builder()
        .transport(connect().await)
        .build()
        .unwrap();
    let listener = listening.node("listener").await.unwrap();
    let (tx, mut heard) = tokio::sync::mpsc::unbounded_channel::<(String, Value)>();
    for t in ["node.down", "system.down"] {
        let tx = tx.clone();
        listener
            .on(t, move |e: Event, _c: Context| {
                let _ = tx.send((e.event_type().to_owned(), e.payload().clone()));
                async { Ok::<_, happen::Error>(Value::Null) }
            })
            .unwrap();
    }
    // a node held under pressure: one at a time, the rest queued until released
    let slow_side = Happen::builder()
        .transport(connect().await)
        .build()
        .unwrap();
    let slow = slow_side
        .node_with(
            "slow",
            NodeOptions::new()
                .max_concurrent(1)
                .queue_limit(4)
                .backpressure_threshold(0.5),
        )
        .await
        .unwrap();
    let release = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let gate = release.clone();
    slow.on("work", move |_e: Event, _c: Context| {
        let gate = gate.clone();
        async move {
            let _permit = gate.acquire().await;
            Ok::<_, happen::Error>(Value::Null)
        }
    })
    .unwrap();
    let (h, _client) = shop(&server.url()).await;
    let (second, _c2) = shop(&server.url()).await;

    let web = Web::start(&server.url(), &["--flow-events", "--pressure-held", "1s"]).await;
    let sender = listening.node("sender").await.unwrap();
    for i in 0..4 {
        sender.tell("slow", Event::new("work", json!(i))).unwrap();
    }
    // pressure held over a second: a bottleneck, published with no page open
    let down = within(30, "node.down bottleneck", async {
        loop {
            let (t, p) = heard.recv().await.expect("the listener is open");
            if t == "node.down" {
                return p;
            }
        }
    })
    .await;
    assert_eq!(down["nodeId"], "slow", "{down}");
    assert_eq!(down["pattern"], "bottleneck", "{down}");
    assert!(
        down["lagMetrics"]["messagesWaiting"].as_u64().unwrap() >= 2,
        "{down}"
    );
    assert_eq!(web.get_json("/api/status").await["pages"], 0);
    release.add_permits(100);

    // a process with a replica of every shop node goes: node failures, and the system is down
    second.shutdown(Duration::from_secs(2)).await;
    let mut failed = Vec::new();
    let system = within(30, "system.down", async {
        loop {
            let (t, p) = heard.recv().await.expect("the listener is open");
            match t.as_str() {
                "node.down" if p["pattern"] == "node-failure" => {
                    failed.push(p["nodeId"].as_str().unwrap().to_owned());
                }
                "system.down" => return p,
                _ => {}
            }
        }
    })
    .await;
    failed.sort();
    for n in ["ledger", "orders", "payments"] {
        assert!(failed.contains(&n.to_owned()), "{n} in {failed:?}");
    }
    assert_eq!(system["pattern"], "partition", "{system}");
    assert!(
        ["warning", "critical"].contains(&system["level"].as_str().unwrap()),
        "{system}"
    );
    assert!(
        system["affectedNodes"]
            .as_array()
            .unwrap()
            .contains(&json!("orders")),
        "{system}"
    );
    h.shutdown(Duration::from_secs(2)).await;
    slow_side.shutdown(Duration::from_secs(2)).await;
    listening.shutdown(Duration::from_secs(2)).await;
}

/// Tells and broadcasts in the waterfall with their end, duration and outcome, from the
/// completion records of nodes that publish them while watched: the page's watch beats, and
/// so does `happen tap --record`, which records them for the replay. The discovery snapshot
/// carries each process's transport counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tells_and_broadcasts_end_in_the_waterfall_live_and_replayed() {
    let server = NatsServer::start();
    let url = server.url();
    let (workers, senders, client) =
        web_support::recording_workers(&url, happen_nats::CompletionRecords::Watched).await;
    let path = std::env::temp_dir().join(format!(
        "happen-web-completions-{}.jsonl",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    let file = path.to_str().unwrap().to_owned();
    let mut tap = web_support::command(
        &url,
        &["tap", "--record", &file, "--snapshot-every", "200ms"],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .expect("spawn happen tap");
    let web = Web::start(&url, &[]).await;
    let mut page = SseClient::open(&web.url("/api/stream"), None).await;
    page.until(|f| f.event == "nodes").await;

    // records start with the watch: the page's first completion frame says so
    let (corr, mut page) = web_support::completions_on_the_page(&client, page).await;

    let check = |t: &Value| {
        let roots = t["roots"].as_array().unwrap();
        assert_eq!(roots.len(), 3, "{t}");
        let (mut ok, mut failed, mut broadcast) = (None, None, None);
        for r in roots {
            match (r["kind"].as_str(), r["outcome"].as_str()) {
                (Some("tell"), Some("ok")) => ok = Some(r),
                (Some("tell"), Some("error")) => failed = Some(r),
                (Some("broadcast"), Some("ok")) => broadcast = Some(r),
                _ => panic!("a step without its outcome: {r}"),
            }
        }
        let (ok, failed, broadcast) = (ok.unwrap(), failed.unwrap(), broadcast.unwrap());
        for step in [ok, failed] {
            assert!(step["durationMs"].as_f64().unwrap() >= 30.0, "{step}");
            assert!(
                step["endUs"].as_u64().unwrap() > step["receivedUs"].as_u64().unwrap(),
                "{step}"
            );
        }
        assert_eq!(
            failed["completions"][0]["error"]["code"], "nope",
            "{failed}"
        );
        let mut receivers: Vec<&str> = broadcast["completions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                assert_eq!(c["outcome"], "ok", "{c}");
                assert!(c["durationMs"].as_f64().unwrap() >= 5.0, "{c}");
                c["node"].as_str().unwrap()
            })
            .collect();
        receivers.sort();
        assert_eq!(receivers, ["mirror-a", "mirror-b"], "{broadcast}");
    };
    check(&web.get_json(&format!("/api/transactions/{corr}")).await);
    let errors = web.get_json("/api/errors").await;
    assert!(
        errors["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["node"] == "audit" && g["code"] == "nope"),
        "{errors}"
    );

    // the node snapshot has each process's transport counters
    let nodes = page.until(|f| f.event == "nodes").await.pop().unwrap().data;
    let transports = nodes["transports"].as_object().unwrap();
    assert!(
        transports
            .values()
            .any(|t| t["counters"]["completionsPublished"].as_u64() >= Some(4)),
        "{transports:?}"
    );
    assert!(
        transports
            .values()
            .any(|t| t["counters"]["sent"].as_u64() >= Some(3)),
        "the sender's tells: {transports:?}"
    );

    // the recording has them too, and replays them
    eventually("the recorded completion records", || {
        let n = web_support::lines_of(&path)
            .iter()
            .filter(|l| l["record"] == "completed" && l["correlationId"] == corr.as_str())
            .count();
        std::future::ready(n == 4)
    })
    .await;
    tap.kill().await.expect("stop happen tap");
    drop(page);
    let replay = Web::start("nats://127.0.0.1:1", &["--replay", &file]).await;
    check(&replay.get_json(&format!("/api/transactions/{corr}")).await);
    let header = &web_support::lines_of(&path)[0];
    assert_eq!(header["version"], 3, "{header}");
    workers.shutdown(Duration::from_secs(2)).await;
    senders.shutdown(Duration::from_secs(2)).await;
    let _ = std::fs::remove_file(&path);
}

/// The warnings of a nodes frame of `kind` about `node`.
fn warnings_of<'a>(f: &'a Frame, kind: &str, node: &str) -> Vec<&'a Value> {
    if f.event != "nodes" {
        return Vec::new();
    }
    f.data["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|w| w["kind"] == kind && w["node"] == node)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_growing_are_a_warning_until_they_stop() {
    use happen::{Context, Error, ErrorKind, Event};

    let server = NatsServer::start_with(NatsServerOptions::new().with_jetstream());
    let (h, worker) = web_support::durable_worker(&server).await;
    worker
        .on("job", |_e: Event, _c: Context| async move {
            Err::<(), _>(Error::new(ErrorKind::Handler, "never works").with_code("broken"))
        })
        .unwrap();
    let client = h.node("client").await.unwrap();
    // grown in two checks in a row (a few per check, under the jump of 10)
    let web = Web::start(&server.url(), &["--dead-letters-for", "2"]).await;
    let mut page = SseClient::open(&web.url("/api/stream"), None).await;
    // a job every 300 ms: the pace of the failures, not a synchronisation
    let failing = tokio::spawn(async move {
        loop {
            client.tell("worker", Event::new("job", json!({}))).unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let frames = within(
        60,
        "the dead-letters warning",
        page.until(|f| !warnings_of(f, "dead-letters-growing", "worker").is_empty()),
    )
    .await;
    let w = warnings_of(frames.last().unwrap(), "dead-letters-growing", "worker")[0].clone();
    assert_eq!(w["level"], "warning", "{w}");
    assert!(w["message"].as_str().unwrap().contains("in a row"), "{w}");
    assert!(w["sinceUs"].as_u64().unwrap() > 0, "{w}");
    // the API has it too while they keep growing
    let mut in_api = false;
    for _ in 0..20 {
        let nodes = web.get_json("/api/nodes").await;
        in_api = nodes["warnings"].as_array().is_some_and(|ws| {
            ws.iter()
                .any(|w| w["kind"] == "dead-letters-growing" && w["node"] == "worker")
        });
        if in_api {
            break;
        }
        page.until(|f| f.event == "nodes").await;
    }
    assert!(in_api, "GET /api/nodes shows the warning");
    // no more failures: the next check finds no growth and the warning clears
    failing.abort();
    within(
        60,
        "the warning to clear",
        page.until(|f| {
            f.event == "nodes" && warnings_of(f, "dead-letters-growing", "worker").is_empty()
        }),
    )
    .await;
    h.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_without_frames_is_stalled_until_it_ends() {
    use futures::StreamExt;

    let server = NatsServer::start();
    let (h, senders, client, gate) = web_support::stalling_producer(&server.url()).await;
    let web = Web::start(&server.url(), &["--stream-stall", "1s"]).await;
    let mut page = SseClient::open(&web.url("/api/stream"), None).await;
    web_support::until_replies_seen(&mut page, &client).await;

    let (corr, mut stream) = web_support::stalled_stream(&client).await;
    let frames = within(
        30,
        "the stalled-stream warning",
        page.until(|f| !warnings_of(f, "stream-stalled", "producer").is_empty()),
    )
    .await;
    let w = warnings_of(frames.last().unwrap(), "stream-stalled", "producer")[0].clone();
    assert_eq!(w["correlationId"], corr.as_str(), "{w}");
    assert_eq!(w["level"], "warning", "{w}");
    assert!(w["message"].as_str().unwrap().contains(&corr), "{w}");
    let nodes = web.get_json("/api/nodes").await;
    assert!(
        nodes["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["kind"] == "stream-stalled" && w["correlationId"] == corr.as_str()),
        "{nodes}"
    );

    // the stream goes on and ends: no longer stalled
    gate.notify_one();
    let second = within(10, "the second item", stream.next()).await;
    assert_eq!(second.unwrap().unwrap(), json!(2));
    assert!(within(10, "the end", stream.next()).await.is_none());
    assert_eq!(stream.final_value(), Some(&json!("fed")));
    within(
        30,
        "the warning to clear",
        page.until(|f| {
            f.event == "nodes" && warnings_of(f, "stream-stalled", "producer").is_empty()
        }),
    )
    .await;
    senders.shutdown(Duration::from_secs(2)).await;
    h.shutdown(Duration::from_secs(2)).await;
}

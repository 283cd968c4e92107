//! Invalid input gives a clear error of the right kind, never a panic.

use std::time::Duration;

use happen::config::{Config, QueueStrategy};
use happen::{Context, ErrorKind, Event, Happen, Json, Limits, NodeOptions};
use serde_json::json;
use tokio::time::timeout;

const T: Duration = Duration::from_secs(10);

fn invalid_config(r: happen::Result<Config>, key: &str) -> happen::Error {
    let err = r.expect_err(&format!("expected an error naming `{key}`"));
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err:?}");
    assert!(err.message().contains(key), "`{key}` not named in: {err}");
    err
}

#[tokio::test(start_paused = true)]
async fn duplicate_node_id() {
    let happen = Happen::new();
    let _a = happen.node("orders").await.unwrap();
    let err = happen.node("orders").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DuplicateNode);
    assert_eq!(err.node().map(|n| n.as_str()), Some("orders"));
    assert!(err.message().contains("orders"), "{err}");
    // The first node is untouched.
    assert!(happen.find_node("orders").is_some());
}

#[tokio::test(start_paused = true)]
async fn invalid_node_ids() {
    let happen = Happen::new();
    for id in ["", "has space", "star*", "gt>"] {
        let err = happen.node(id.to_string()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig, "id {id:?}: {err:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn invalid_patterns() {
    let happen = Happen::new();
    let node = happen.node("n").await.unwrap();
    for p in [
        "",
        "order..created",
        ".order",
        "order.",
        "ord*",
        "{order,payment",
        "{a,{b,c}}",
        "{a,}.x",
        "has space",
    ] {
        let err = node
            .on(p, |_e: Event, _c: Context| async move {})
            .unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::InvalidPattern,
            "pattern {p:?}: {err:?}"
        );
        assert!(err.message().contains(p), "{err}");
    }
}

#[tokio::test(start_paused = true)]
async fn invalid_config_rejected_by_init_naming_the_key() {
    let mut c = Config::default();
    c.concurrency.default.max_concurrent = 0;
    let err = Happen::with_config(c).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    assert!(
        err.message().contains("concurrency.default.max_concurrent"),
        "{err}"
    );

    let mut c = Config::default();
    c.concurrency.default.backpressure_threshold = 1.5;
    let err = Happen::builder().config(c).build().unwrap_err();
    assert!(
        err.message()
            .contains("concurrency.default.backpressure_threshold"),
        "{err}"
    );

    let mut c = Config::default();
    c.flow.max_chain_depth = 0;
    let err = Happen::with_config(c).unwrap_err();
    assert!(err.message().contains("flow.max_chain_depth"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn invalid_node_options() {
    let happen = Happen::new();
    let err = happen
        .node_with("a", NodeOptions::new().max_concurrent(0))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    assert!(err.message().contains("max_concurrent"), "{err}");
    let err = happen
        .node_with("b", NodeOptions::new().backpressure_threshold(0.0))
        .await
        .unwrap_err();
    assert!(err.message().contains("backpressure_threshold"), "{err}");
    let err = happen
        .node_with("c", NodeOptions::new().stream_buffer(0))
        .await
        .unwrap_err();
    assert!(err.message().contains("stream_buffer"), "{err}");
    // A failed creation does not reserve the id.
    happen.node("a").await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn empty_event_type() {
    let happen = Happen::new();
    let node = happen.node("n").await.unwrap();
    node.on("*", |_e: Event, _c: Context| async move {})
        .unwrap();
    let err = timeout(T, node.send(&node, Event::new(String::new(), ())))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidEvent);
    let err = node.tell(&node, Event::new(String::new(), ())).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidEvent);
    let err = node.broadcast(Event::new(String::new(), ())).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidEvent);
    assert_eq!(node.stats().accepted, 0);
}

#[tokio::test(start_paused = true)]
async fn typed_payload_mismatch_names_the_field() {
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Order {
        id: u64,
        qty: u32,
        customer: Customer,
    }
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Customer {
        email: String,
    }
    let happen = Happen::new();
    let node = happen.node("shop").await.unwrap();
    node.on("order", |Json(o): Json<Order>, _c: Context| async move {
        json!(o.qty)
    })
    .unwrap();
    let cases = [
        (
            json!({"id": 1, "qty": "three", "customer": {"email": "a@b"}}),
            "qty",
        ),
        (json!({"id": 1, "customer": {"email": "a@b"}}), "qty"),
        (
            json!({"id": 1, "qty": 2, "customer": {"email": 5}}),
            "customer.email",
        ),
        (
            json!({"id": -1, "qty": 2, "customer": {"email": "a@b"}}),
            "id",
        ),
    ];
    for (payload, field) in cases {
        let err = timeout(T, node.send(&node, Event::new("order", payload.clone())))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidPayload, "{payload}: {err:?}");
        assert!(
            err.message().contains(field),
            "`{field}` not named in: {err}"
        );
    }
    // A good payload still works on the same node.
    let v = timeout(
        T,
        node.send(
            &node,
            Event::new(
                "order",
                json!({"id": 1, "qty": 2, "customer": {"email": "a@b"}}),
            ),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(v, json!(2));
}

#[test]
fn threshold_outside_zero_one() {
    for t in ["0", "0.0", "-0.1", "1.5", "nan"] {
        let toml = format!("[concurrency.default]\nbackpressure_threshold = {t}\n");
        invalid_config(
            Config::from_toml_str(&toml),
            "concurrency.default.backpressure_threshold",
        );
    }
    // 1.0 is inside (0, 1].
    Config::from_toml_str("[concurrency.default]\nbackpressure_threshold = 1.0\n").unwrap();
    invalid_config(
        Config::from_toml_str("[concurrency.patterns.\"api-*\"]\nbackpressure_threshold = 2.0\n"),
        "concurrency.patterns.\"api-*\".backpressure_threshold",
    );
    invalid_config(
        Config::from_json_str(r#"{"concurrency": {"default": {"backpressureThreshold": 0}}}"#),
        "backpressure_threshold",
    );
}

#[test]
fn zero_limits() {
    invalid_config(
        Config::from_toml_str("[concurrency.default]\nmax_concurrent = 0\n"),
        "concurrency.default.max_concurrent",
    );
    invalid_config(
        Config::from_toml_str("[concurrency.default]\nqueue_limit = 0\n"),
        "concurrency.default.queue_limit",
    );
    invalid_config(
        Config::from_toml_str("[concurrency.patterns.\"w-*\"]\nmax_concurrent = 0\n"),
        "concurrency.patterns.\"w-*\".max_concurrent",
    );
    invalid_config(
        Config::from_toml_str("[concurrency.patterns.\"w-*\"]\nqueue_limit = 0\n"),
        "concurrency.patterns.\"w-*\".queue_limit",
    );
    invalid_config(
        Config::from_toml_str("[flow]\nrequest_timeout_ms = 0\n"),
        "flow.request_timeout_ms",
    );
    invalid_config(
        Config::from_toml_str("[streams]\nbuffer = 0\n"),
        "streams.buffer",
    );
    invalid_config(Config::from_toml_str("[cpu]\nthreads = 0\n"), "cpu.threads");
    // Negative numbers do not fit an unsigned limit.
    invalid_config(
        Config::from_toml_str("[concurrency.default]\nmax_concurrent = -1\n"),
        "max_concurrent",
    );
}

#[test]
fn bad_globs() {
    for glob in ["api-?", "a**", "", "x[1]", "{a,b}-*", "has space"] {
        let toml = format!("[concurrency.patterns.\"{glob}\"]\nmax_concurrent = 4\n");
        let err = invalid_config(Config::from_toml_str(&toml), "concurrency.patterns");
        assert!(err.message().contains(&format!("\"{glob}\"")), "{err}");
    }
}

#[test]
fn unknown_strategy() {
    let err = invalid_config(
        Config::from_toml_str("[concurrency.default]\nqueue_strategy = \"lifo\"\n"),
        "queue_strategy",
    );
    assert!(err.message().contains("lifo"), "{err}");
    invalid_config(
        Config::from_json_str(r#"{"concurrency":{"patterns":{"w-*":{"queueStrategy":"random"}}}}"#),
        "queueStrategy",
    );
}

#[test]
fn unknown_keys() {
    let err = invalid_config(
        Config::from_toml_str("[concurrency.default]\nmax_concurent = 4\n"),
        "max_concurent",
    );
    assert!(err.message().contains("concurrency.default"), "{err}");
    invalid_config(
        Config::from_toml_str("[concurrency.patterns.\"a-*\"]\nqueue_limt = 4\n"),
        "queue_limt",
    );
    invalid_config(Config::from_toml_str("[concurency]\n"), "concurency");
    invalid_config(Config::from_json_str(r#"{"flow":{"depth":3}}"#), "depth");
    // No security settings exist yet: the section itself is unknown.
    invalid_config(
        Config::from_toml_str("[security]\ntls = true\n"),
        "security",
    );
}

#[test]
fn duplicate_pattern_in_json() {
    let err = Config::from_json_str(
        r#"{"concurrency":{"patterns":{"a-*":{"maxConcurrent":1},"a-*":{"maxConcurrent":2}}}}"#,
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    assert!(err.message().contains("a-*"), "{err}");
}

#[test]
fn camel_case_aliases_from_the_seed() {
    let json = r#"{
        "concurrency": {
            "default": {
                "maxConcurrent": 100,
                "queueLimit": 10000,
                "queueStrategy": "fifo",
                "backpressureThreshold": 0.8
            },
            "patterns": {
                "api-*": { "maxConcurrent": 200, "queueLimit": 20000 },
                "worker-*": { "maxConcurrent": 50, "queueStrategy": "priority" },
                "realtime-*": { "maxConcurrent": 300, "queueLimit": 5000, "backpressureThreshold": 0.6 }
            }
        }
    }"#;
    let c = Config::from_json_str(json).unwrap();
    let l = c.concurrency.limits_for("api-gateway");
    assert_eq!((l.max_concurrent, l.queue_limit), (200, 20000));
    let l = c.concurrency.limits_for("worker-7");
    assert_eq!(l.max_concurrent, 50);
    assert_eq!(l.queue_strategy, QueueStrategy::Priority);
    assert_eq!(l.queue_limit, 10000);
    let l = c.concurrency.limits_for("realtime-feed");
    assert_eq!(
        l,
        Limits::default()
            .with_max_concurrent(300)
            .with_queue_limit(5000)
            .with_backpressure_threshold(0.6)
    );
    // The same in TOML, mixing both spellings.
    let c = Config::from_toml_str(
        "[concurrency.default]\nmaxConcurrent = 7\nqueue_limit = 70\n[flow]\nmaxChainDepth = 9\nrequestTimeoutMs = 1234\n",
    )
    .unwrap();
    assert_eq!(c.concurrency.default.max_concurrent, 7);
    assert_eq!(c.concurrency.default.queue_limit, 70);
    assert_eq!(c.flow.max_chain_depth, 9);
    assert_eq!(c.flow.request_timeout, Duration::from_millis(1234));
}

/// Stream buffers have an upper bound: a broadcast stream's buffer is allocated whole, so a
/// huge value would be a memory bound in name only (and panicked deep inside a send before).
#[tokio::test]
async fn stream_buffers_are_bounded() {
    invalid_config(
        Config::from_toml_str("[streams]\nbroadcast_buffer = 4294967296\n"),
        "streams.broadcast_buffer",
    );
    invalid_config(
        Config::from_toml_str("[streams]\nbuffer = 2097152\n"),
        "streams.buffer",
    );
    assert!(Config::from_toml_str("[streams]\nbuffer = 1048576\n").is_ok());
    let happen = Happen::new();
    let err = happen
        .node_with("n", NodeOptions::new().stream_buffer(usize::MAX))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    assert!(err.message().contains("stream_buffer"), "{err}");
}

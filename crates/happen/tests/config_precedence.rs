//! Configuration precedence: exact id over globs, more literal characters, declaration order;
//! partial merges; node options on top; loading from files.

use happen::config::{ConcurrencyConfig, Config, QueueStrategy};
use happen::{Happen, Limits, NodeOptions, PartialLimits};

fn partial(max: usize) -> PartialLimits {
    PartialLimits::default().with_max_concurrent(max)
}

fn max_for(c: &ConcurrencyConfig, id: &str) -> usize {
    c.limits_for(id).max_concurrent
}

#[test]
fn exact_id_beats_every_glob_whatever_the_order() {
    let c = ConcurrencyConfig::default()
        .with_pattern("api-gateway*", partial(1))
        .with_pattern("api-*", partial(2))
        .with_pattern("api-gateway", partial(3));
    assert_eq!(max_for(&c, "api-gateway"), 3);
    assert_eq!(max_for(&c, "api-gateway-2"), 1);
    assert_eq!(max_for(&c, "api-x"), 2);
    assert_eq!(max_for(&c, "web"), Limits::default().max_concurrent);
}

#[test]
fn more_literal_characters_win_then_declaration_order() {
    let c = ConcurrencyConfig::default()
        .with_pattern("*", partial(1))
        .with_pattern("api-*", partial(2))
        .with_pattern("api-*-eu", partial(3));
    assert_eq!(max_for(&c, "api-gw-eu"), 3);
    assert_eq!(max_for(&c, "api-gw-us"), 2);
    assert_eq!(max_for(&c, "db"), 1);

    // "ap*" and "*ay" both have two literal characters: the first declared wins.
    let first = ConcurrencyConfig::default()
        .with_pattern("ap*", partial(10))
        .with_pattern("*ay", partial(20));
    assert_eq!(max_for(&first, "api-gateway"), 10);
    let second = ConcurrencyConfig::default()
        .with_pattern("*ay", partial(20))
        .with_pattern("ap*", partial(10));
    assert_eq!(max_for(&second, "api-gateway"), 20);
}

#[test]
fn declaration_order_survives_toml_and_json() {
    let toml_a = "[concurrency.patterns.\"ap*\"]\nmax_concurrent = 10\n[concurrency.patterns.\"*ay\"]\nmax_concurrent = 20\n";
    let toml_b = "[concurrency.patterns.\"*ay\"]\nmax_concurrent = 20\n[concurrency.patterns.\"ap*\"]\nmax_concurrent = 10\n";
    assert_eq!(
        max_for(
            &Config::from_toml_str(toml_a).unwrap().concurrency,
            "api-gateway"
        ),
        10
    );
    assert_eq!(
        max_for(
            &Config::from_toml_str(toml_b).unwrap().concurrency,
            "api-gateway"
        ),
        20
    );
    let json_a =
        r#"{"concurrency":{"patterns":{"ap*":{"maxConcurrent":10},"*ay":{"maxConcurrent":20}}}}"#;
    let json_b =
        r#"{"concurrency":{"patterns":{"*ay":{"maxConcurrent":20},"ap*":{"maxConcurrent":10}}}}"#;
    assert_eq!(
        max_for(
            &Config::from_json_str(json_a).unwrap().concurrency,
            "api-gateway"
        ),
        10
    );
    assert_eq!(
        max_for(
            &Config::from_json_str(json_b).unwrap().concurrency,
            "api-gateway"
        ),
        20
    );
}

#[test]
fn one_entry_merges_only_its_keys_over_the_default() {
    let c = Config::from_toml_str(
        r#"
        [concurrency.default]
        max_concurrent = 100
        queue_limit = 10000
        queue_strategy = "fifo"
        backpressure_threshold = 0.8

        [concurrency.patterns."worker-*"]
        max_concurrent = 50
        queue_strategy = "priority"

        [concurrency.patterns."worker-big*"]
        queue_limit = 99
        "#,
    )
    .unwrap();
    let w = c.concurrency.limits_for("worker-1");
    assert_eq!(w.max_concurrent, 50);
    assert_eq!(w.queue_strategy, QueueStrategy::Priority);
    assert_eq!(w.queue_limit, 10000);
    assert_eq!(w.backpressure_threshold, 0.8);
    // At most one entry applies: the more specific one, merged over the default only.
    let big = c.concurrency.limits_for("worker-big-1");
    assert_eq!(big.queue_limit, 99);
    assert_eq!(big.max_concurrent, 100);
    assert_eq!(big.queue_strategy, QueueStrategy::Fifo);
}

#[tokio::test(start_paused = true)]
async fn nodes_get_config_limits_and_node_options_override_them() {
    let mut config = Config::default();
    config.concurrency.default = Limits::default().with_queue_limit(500);
    config.concurrency = config.concurrency.with_pattern(
        "api-*",
        PartialLimits::default()
            .with_max_concurrent(7)
            .with_backpressure_threshold(0.5),
    );
    let happen = Happen::with_config(config).unwrap();
    let api = happen.node("api-1").await.unwrap();
    assert_eq!(
        *api.limits(),
        Limits::default()
            .with_queue_limit(500)
            .with_max_concurrent(7)
            .with_backpressure_threshold(0.5)
    );
    let tuned = happen
        .node_with(
            "api-2",
            NodeOptions::new()
                .queue_limit(20)
                .queue_strategy(QueueStrategy::Priority),
        )
        .await
        .unwrap();
    let l = tuned.limits();
    assert_eq!(l.max_concurrent, 7, "from the pattern");
    assert_eq!(l.backpressure_threshold, 0.5, "from the pattern");
    assert_eq!(l.queue_limit, 20, "from the options");
    assert_eq!(
        l.queue_strategy,
        QueueStrategy::Priority,
        "from the options"
    );
    let other = happen.node("db").await.unwrap();
    assert_eq!(*other.limits(), Limits::default().with_queue_limit(500));
}

fn temp_path(ext: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "happen-config-test-{}-{}.{ext}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ))
}

struct TempFile(std::path::PathBuf);
impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn write(ext: &str, text: &str) -> TempFile {
    let p = temp_path(ext);
    std::fs::write(&p, text).unwrap();
    TempFile(p)
}

#[test]
fn loads_toml_and_json_files() {
    let toml = write(
        "toml",
        "[concurrency.default]\nmaxConcurrent = 12\n[concurrency.patterns.\"rt-*\"]\nqueue_limit = 5\n[flow]\nmax_chain_depth = 3\n",
    );
    let c = Config::from_file(&toml.0).unwrap();
    assert_eq!(c.concurrency.default.max_concurrent, 12);
    assert_eq!(c.concurrency.limits_for("rt-1").queue_limit, 5);
    assert_eq!(c.flow.max_chain_depth, 3);

    let json = write(
        "json",
        r#"{"concurrency":{"default":{"queue_limit":64},"patterns":{"rt-*":{"backpressureThreshold":0.25}}}}"#,
    );
    let c = Config::from_file(&json.0).unwrap();
    assert_eq!(c.concurrency.default.queue_limit, 64);
    assert_eq!(
        c.concurrency.limits_for("rt-x").backpressure_threshold,
        0.25
    );

    // Invalid values in files name the key.
    let bad = write("toml", "[concurrency.default]\nqueue_limit = 0\n");
    let err = Config::from_file(&bad.0).unwrap_err();
    assert_eq!(err.kind(), happen::ErrorKind::InvalidConfig);
    assert!(
        err.message().contains("concurrency.default.queue_limit"),
        "{err}"
    );
    let bad = write(
        "json",
        r#"{"concurrency":{"default":{"queueStrategy":"lifo"}}}"#,
    );
    let err = Config::from_file(&bad.0).unwrap_err();
    assert!(err.message().contains("queueStrategy"), "{err}");

    // Unknown extension and missing file.
    let yaml = write("yaml", "concurrency: {}\n");
    let err = Config::from_file(&yaml.0).unwrap_err();
    assert_eq!(err.kind(), happen::ErrorKind::InvalidConfig);
    assert!(err.message().contains(".toml"), "{err}");
    let missing = temp_path("toml");
    let err = Config::from_file(&missing).unwrap_err();
    assert_eq!(err.kind(), happen::ErrorKind::InvalidConfig);
    assert!(
        err.message().contains(&missing.display().to_string()),
        "{err}"
    );
}

#[test]
fn empty_documents_are_the_defaults() {
    assert_eq!(Config::from_toml_str("").unwrap(), Config::default());
    assert_eq!(Config::from_json_str("{}").unwrap(), Config::default());
    assert_eq!(Config::default().concurrency.default, Limits::default());
    let d = Limits::default();
    assert_eq!(
        (
            d.max_concurrent,
            d.queue_limit,
            d.queue_strategy,
            d.backpressure_threshold
        ),
        (100, 10_000, QueueStrategy::Fifo, 0.8)
    );
}

#[test]
fn handler_timing_is_off_unless_a_node_s_entry_turns_it_on() {
    let c = Config::from_toml_str(
        r#"
        [concurrency.patterns."timed-*"]
        handler_timing = true
        "#,
    )
    .unwrap();
    assert!(c.concurrency.limits_for("timed-1").handler_timing);
    assert!(!c.concurrency.limits_for("other").handler_timing);
}

//! Smoke test: `happen-bench --quick` runs every workload and writes a row per system.
//! It checks that the tool works, never how fast anything is.

use std::process::Command;

#[test]
fn quick_run_writes_rows_for_every_workload() {
    let json = std::env::temp_dir().join(format!("happen-bench-quick-{}.json", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_happen-bench"))
        .args(["--quick", "--json"])
        .arg(&json)
        .output()
        .expect("the bench binary starts");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "happen-bench --quick failed:\n{stderr}"
    );

    let text = std::fs::read_to_string(&json).expect("--json wrote a file");
    let _ = std::fs::remove_file(&json);
    let report: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let rows = report["rows"].as_array().expect("rows");
    let has = |workload: &str, system: &str| {
        rows.iter()
            .any(|r| r["workload"] == workload && r["system"] == system)
    };
    for w in ["tell", "ask-seq", "ask-par", "flow", "broadcast", "stream"] {
        assert!(has(w, "happen") && has(w, "floor"), "rows for {w} missing");
        let measured = rows.iter().any(|r| {
            r["workload"] == w
                && r["system"] == "happen"
                && r["median_ops_per_sec"].as_f64() > Some(0.0)
        });
        assert!(measured, "{w}: happen row has no throughput");
    }
    // Built with `--features peers` (`cargo test -p happen-bench --features peers`).
    #[cfg(feature = "peers")]
    for w in ["tell", "ask-seq", "ask-par", "flow", "broadcast", "stream"] {
        for p in ["kameo", "ractor", "actix"] {
            let ok = rows.iter().any(|r| {
                r["workload"] == w
                    && r["system"] == p
                    && r["median_ops_per_sec"].as_f64() > Some(0.0)
                    && r["ratio_to"] == "floor"
            });
            assert!(ok, "{w}: no measured {p} row");
        }
    }
    assert!(has("admission", "happen(limits)") && has("admission", "happen(unlimited)"));
    assert!(has("state-update", "happen(memory)") && has("state-update", "floor"));
    assert!(has("state-read-in-flow", "flow+get") && has("state-read-in-flow", "flow"));
    assert!(has("admission-overload", "happen(limits)"));
    for s in [
        "happen(2 workers)",
        "happen(1 worker)",
        "floor(2 workers)",
        "floor(1 worker)",
    ] {
        let row = rows
            .iter()
            .find(|r| r["workload"] == "node-scale" && r["system"] == s);
        let row = row.unwrap_or_else(|| panic!("node-scale row {s} missing"));
        assert!(
            row["median_ops_per_sec"].as_f64() > Some(0.0),
            "node-scale {s} has no throughput"
        );
    }
    let scale = rows
        .iter()
        .find(|r| r["workload"] == "node-scale" && r["system"] == "happen(2 workers)");
    assert_eq!(
        scale.map(|r| &r["ratio_to"]),
        Some(&serde_json::json!("happen(1 worker)")),
        "node-scale: the 2-worker ratio is taken against the 1-worker row"
    );
    for w in [
        "nats-ask-seq",
        "nats-ask-par",
        "nats-broadcast",
        "nats-durable",
        "nats-state-update",
        "nats-state-get",
    ] {
        // Measured when nats-server is installed, marked "not available" otherwise.
        assert!(has(w, "floor") && has(w, "happen"), "rows for {w} missing");
    }
}

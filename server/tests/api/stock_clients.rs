//! The server as callers in other languages meet it: ghz (grpc-go) one call at a time.
//! Without TCP_NODELAY on accepted sockets every small response waited for the caller's
//! delayed ACK, 20-40 ms a call from grpc-go; the bound here sits far from both.
use std::process::Command;

use crate::helpers::{database_url, go_tool, start_server};

#[tokio::test]
async fn grpc_go_callers_get_answers_without_waiting_for_delayed_acks() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&database_url(dir.path()));
    let output = Command::new(go_tool("ghz"))
        .args(["--insecure", "--call", "grpc.health.v1.Health/Check"])
        .args(["--concurrency", "1", "--connections", "1", "--total", "300"])
        .args(["--format", "json"])
        .arg(server.addr.to_string())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "ghz failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let ok = report["statusCodeDistribution"]["OK"].as_u64().unwrap_or(0);
    assert_eq!(ok, 300, "not every call answered OK: {report}");
    let p99_ms = report["latencyDistribution"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["percentage"] == 99)
        .and_then(|entry| entry["latency"].as_u64())
        .unwrap() as f64
        / 1e6;
    let average_ms = report["average"].as_u64().unwrap() as f64 / 1e6;
    eprintln!("ghz Health/Check, one caller: average {average_ms:.3} ms, p99 {p99_ms:.3} ms");
    // Nagle plus delayed ACK put the average near 20 ms and the p99 near 40 ms.
    assert!(average_ms < 5.0, "average {average_ms} ms");
    assert!(p99_ms < 15.0, "p99 {p99_ms} ms");
}

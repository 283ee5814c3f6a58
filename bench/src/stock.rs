//! Stock load tools the project did not write: ghz (grpc-go) and h2load (nghttp2). They take
//! paths a same-language generator never hits (Nagle on small writes, delayed ACKs), so
//! their figures sit beside the Rust generator's.
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::load::Stats;

/// The load shape of one stock run.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub callers: usize,
    pub connections: usize,
    pub duration: Duration,
}

/// The two calls both tools make: the gRPC floor and a token verification.
#[derive(Debug, Clone)]
pub enum Call {
    Health,
    VerifyToken(String),
}

impl Call {
    fn method(&self) -> &'static str {
        match self {
            Call::Health => "grpc.health.v1.Health/Check",
            Call::VerifyToken(_) => "st_peter.auth.v1.AuthService/VerifyToken",
        }
    }

    fn json(&self) -> String {
        match self {
            Call::Health => "{}".into(),
            Call::VerifyToken(token) => serde_json::json!({ "token": token }).to_string(),
        }
    }

    /// The request as one gRPC length-prefixed message (flag byte, big-endian length).
    fn grpc_frame(&self) -> Vec<u8> {
        let message = match self {
            // HealthCheckRequest { service: "" } encodes to no bytes at all.
            Call::Health => Vec::new(),
            // VerifyTokenRequest { token = 1 }: tag (1 << 3 | 2), varint length, bytes.
            Call::VerifyToken(token) => {
                let mut message = vec![0x0a];
                let mut len = token.len();
                while len >= 0x80 {
                    message.push((len as u8 & 0x7f) | 0x80);
                    len >>= 7;
                }
                message.push(len as u8);
                message.extend_from_slice(token.as_bytes());
                message
            }
        };
        let mut frame = vec![0u8];
        frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
        frame.extend_from_slice(&message);
        frame
    }
}

/// The parts of ghz's JSON report the suite reads (durations are nanoseconds).
#[derive(Debug, serde::Deserialize)]
struct GhzReport {
    count: u64,
    total: u64,
    #[serde(rename = "latencyDistribution", default)]
    latency_distribution: Option<Vec<GhzLatency>>,
    #[serde(rename = "statusCodeDistribution", default)]
    status_codes: std::collections::BTreeMap<String, u64>,
    #[serde(rename = "errorDistribution", default)]
    errors: Option<std::collections::BTreeMap<String, u64>>,
}

#[derive(Debug, serde::Deserialize)]
struct GhzLatency {
    percentage: u32,
    latency: u64,
}

/// Runs ghz against `addr` with server reflection (st-peter serves it), and reads its report.
pub fn ghz(ghz: &Path, addr: SocketAddr, call: &Call, shape: Shape) -> anyhow::Result<Stats> {
    let output = Command::new(ghz)
        .args(["--insecure", "--format", "json", "--call", call.method()])
        .args(["--data", &call.json()])
        .args(["--concurrency", &shape.callers.to_string()])
        .args(["--connections", &shape.connections.to_string()])
        .args(["--duration", &format!("{}ms", shape.duration.as_millis())])
        // Calls still in flight when the time is up are neither errors nor latencies; the
        // first calls (connection set-up, reflection) are warm-up.
        .args(["--duration-stop", "ignore", "--skipFirst", "20"])
        .args(["--timeout", "5s"])
        .arg(addr.to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", ghz.display()))?;
    let report: GhzReport = serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "ghz printed no JSON report (exit {}): {}",
            output.status,
            String::from_utf8_lossy(&output.stdout)
                .chars()
                .take(500)
                .collect::<String>()
        )
    })?;
    if let Some(errors) = report.errors.as_ref().filter(|e| !e.is_empty()) {
        eprintln!("  (ghz {}: errors {errors:?})", call.method());
    }
    let ok = report.status_codes.get("OK").copied().unwrap_or(0);
    let seconds = report.total as f64 / 1e9;
    let pick = |percentage: u32| {
        report
            .latency_distribution
            .iter()
            .flatten()
            .find(|point| point.percentage == percentage)
            .map_or(0, |point| (point.latency / 1000) as u32)
    };
    Ok(Stats {
        requests: ok,
        errors: report.count.saturating_sub(ok),
        seconds,
        per_second: if seconds > 0.0 {
            ok as f64 / seconds
        } else {
            0.0
        },
        p50_us: pick(50),
        p99_us: pick(99),
    })
}

/// Runs h2load POSTing the gRPC-framed request, with one line per request in a log file
/// (h2load prints no percentiles itself). h2load does not read grpc-status; a successful
/// HTTP/2 exchange with status 200 counts as a success.
pub fn h2load(h2load: &Path, addr: SocketAddr, call: &Call, shape: Shape) -> anyhow::Result<Stats> {
    let dir = tempfile::tempdir()?;
    let body = dir.path().join("request.bin");
    let log = dir.path().join("requests.tsv");
    std::fs::write(&body, call.grpc_frame())?;
    let streams = shape.callers.div_ceil(shape.connections);
    let output = Command::new(h2load)
        .args(["--clients", &shape.connections.to_string()])
        .args(["--max-concurrent-streams", &streams.to_string()])
        .args(["--duration", &format!("{}ms", shape.duration.as_millis())])
        .args(["--warm-up-time", "1"])
        .arg("--data")
        .arg(&body)
        .args(["--header", "content-type: application/grpc"])
        .args(["--header", "te: trailers"])
        .arg("--log-file")
        .arg(&log)
        .arg(format!("http://{addr}/{}", call.method()))
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", h2load.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "h2load exited with {}: {stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let failed = h2load_count(&stdout, "failed") + h2load_count(&stdout, "errored");
    let mut latencies = Vec::new();
    let mut not_ok = 0u64;
    for line in std::fs::read_to_string(&log)?.lines() {
        let mut columns = line.split('\t');
        let (_, status, micros) = (columns.next(), columns.next(), columns.next());
        match (status, micros.and_then(|m| m.trim().parse::<u32>().ok())) {
            (Some("200"), Some(micros)) => latencies.push(micros),
            _ => not_ok += 1,
        }
    }
    if latencies.is_empty() {
        bail!("h2load logged no successful request: {stdout}");
    }
    // The log holds the main duration only (not the warm-up), so the rate is over that.
    Ok(Stats::from_latencies(
        latencies,
        failed.max(not_ok),
        shape.duration,
    ))
}

/// A count from h2load's `requests:` line, e.g. `N failed`.
fn h2load_count(stdout: &str, what: &str) -> u64 {
    stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("requests:"))
        .and_then(|rest| {
            rest.split(',')
                .find_map(|part| part.trim().strip_suffix(what)?.trim().parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_framed_as_grpc_messages() {
        assert_eq!(Call::Health.grpc_frame(), [0, 0, 0, 0, 0]);
        let frame = Call::VerifyToken("stp_abc".into()).grpc_frame();
        assert_eq!(
            frame,
            [
                0, 0, 0, 0, 9, 0x0a, 7, b's', b't', b'p', b'_', b'a', b'b', b'c'
            ]
        );
        let long = Call::VerifyToken("x".repeat(300)).grpc_frame();
        assert_eq!(&long[..8], [0, 0, 0, 1, 47, 0x0a, 0xac, 0x02]);
    }

    #[test]
    fn h2load_counts_are_read_from_its_summary() {
        let out = "finished in 3.00s, 100.00 req/s, 1KB/s\n\
                   requests: 300 total, 300 started, 300 done, 297 succeeded, 3 failed, 1 errored, 0 timeout\n";
        assert_eq!(h2load_count(out, "failed"), 3);
        assert_eq!(h2load_count(out, "errored"), 1);
        assert_eq!(h2load_count(out, "succeeded"), 297);
    }
}

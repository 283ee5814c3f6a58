//! A closed-loop load generator: `concurrency` callers, each sending its next request as
//! soon as the last one answered, for a fixed time. Latencies are kept whole (one `u32` of
//! microseconds per request) so percentiles are exact.
use std::future::Future;
use std::time::{Duration, Instant};

/// What one load run measured.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stats {
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub per_second: f64,
    pub p50_us: u32,
    pub p99_us: u32,
}

impl Stats {
    pub fn from_latencies(mut latencies: Vec<u32>, errors: u64, elapsed: Duration) -> Self {
        latencies.sort_unstable();
        let pick = |q: f64| {
            if latencies.is_empty() {
                return 0;
            }
            let index = ((latencies.len() as f64 - 1.0) * q).round() as usize;
            latencies[index]
        };
        let requests = latencies.len() as u64;
        Self {
            requests,
            errors,
            seconds: elapsed.as_secs_f64(),
            per_second: requests as f64 / elapsed.as_secs_f64(),
            p50_us: pick(0.50),
            p99_us: pick(0.99),
        }
    }
}

/// Runs `call(caller_index)` from `concurrency` callers for `duration`. A failed call counts
/// as an error and not as a latency.
pub async fn run<F, Fut, E>(concurrency: usize, duration: Duration, call: F) -> Stats
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: std::fmt::Debug,
{
    let start = Instant::now();
    let deadline = start + duration;
    let callers: Vec<_> = (0..concurrency)
        .map(|index| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(64 * 1024);
                let mut errors = 0u64;
                let mut first_error = None;
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    match call(index).await {
                        Ok(()) => latencies.push(sent.elapsed().as_micros() as u32),
                        Err(error) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| format!("{error:?}"));
                        }
                    }
                }
                (latencies, errors, first_error)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for caller in callers {
        let (mut mine, my_errors, first_error) = caller.await.expect("load caller panicked");
        if let Some(error) = first_error {
            eprintln!("  (a caller saw {my_errors} errors, first: {error})");
        }
        latencies.append(&mut mine);
        errors += my_errors;
    }
    Stats::from_latencies(latencies, errors, start.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_picked_from_sorted_latencies() {
        let stats = Stats::from_latencies((1..=100).rev().collect(), 3, Duration::from_secs(2));
        assert_eq!(stats.requests, 100);
        assert_eq!(stats.errors, 3);
        assert_eq!(stats.p50_us, 51);
        assert_eq!(stats.p99_us, 99);
        assert!((stats.per_second - 50.0).abs() < 1e-9);
    }
}

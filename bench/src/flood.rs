//! The login flood: many more callers than the hashing threads can serve, each call with a
//! short deadline, as a front end under a credential-stuffing wave or a thundering herd of
//! re-logins sends them. A server that hashes for callers who already gave up serves almost
//! nobody, and is still busy with them after the flood ends.
use std::sync::Arc;
use std::time::{Duration, Instant};

use st_peter_proto::auth::v1 as pb;
use st_peter_proto::auth::v1::auth_service_client::AuthServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use crate::load::Stats;

/// The deadline every flood call carries (sent as `grpc-timeout`).
pub const DEADLINE: Duration = Duration::from_secs(1);
/// Pushback when a shed answer carries no hint, and the longest a caller honours.
const DEFAULT_PUSHBACK: Duration = Duration::from_millis(50);
const MAX_PUSHBACK: Duration = Duration::from_secs(1);
/// How long the login after the flood may take before the bench stops waiting.
const AFTER_BUDGET: Duration = Duration::from_secs(30);

/// What the flood callers saw, summed.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Counts {
    pub seconds: f64,
    /// Logins that authenticated: the goodput.
    pub ok: u64,
    /// `DEADLINE_EXCEEDED` from the server, or the client's own deadline firing first.
    pub deadline_exceeded: u64,
    /// `UNAVAILABLE` answers (shed by admission control).
    pub shed: u64,
    /// Of those, how many carried a retry hint (metadata or message).
    pub shed_with_hint: u64,
    /// Any other error, and logins that answered without authenticating.
    pub other: u64,
    pub first_other: Option<String>,
    /// Latency of the logins that authenticated.
    pub ok_p50_us: u32,
    pub ok_p99_us: u32,
    /// Latency of the shed answers (how "at once" they come), and the median hint.
    pub shed_p50_us: u32,
    pub shed_p99_us: u32,
    pub hint_p50_ms: u32,
}

impl Counts {
    pub fn goodput(&self) -> f64 {
        self.ok as f64 / self.seconds.max(1e-9)
    }
}

#[derive(Default)]
struct Caller {
    ok: Vec<u32>,
    shed: Vec<u32>,
    hints_ms: Vec<u32>,
    deadline_exceeded: u64,
    shed_with_hint: u64,
    other: u64,
    first_other: Option<String>,
}

enum Outcome {
    Ok,
    DeadlineExceeded,
    Shed(Option<Duration>),
    Other(String),
}

/// Runs `callers` closed-loop login callers over `channels` for `duration`, caller i as
/// `identifiers[i % identifiers.len()]`. A shed caller waits the server's hint (capped), as
/// grpc-go's retry pushback does, before its next call.
pub async fn flood(
    channels: &[Channel],
    identifiers: &[String],
    password: &str,
    callers: usize,
    duration: Duration,
) -> Counts {
    let start = Instant::now();
    let end = start + duration;
    let clients: Arc<Vec<_>> = Arc::new(
        channels
            .iter()
            .cloned()
            .map(AuthServiceClient::new)
            .collect(),
    );
    let tasks: Vec<_> = (0..callers)
        .map(|index| {
            let mut client = clients[index % clients.len()].clone();
            let identifier = identifiers[index % identifiers.len()].clone();
            let password = password.to_owned();
            tokio::spawn(async move {
                let mut me = Caller::default();
                while Instant::now() < end {
                    let sent = Instant::now();
                    let outcome = login_once(&mut client, &identifier, &password, DEADLINE).await;
                    let micros = sent.elapsed().as_micros() as u32;
                    match outcome {
                        Outcome::Ok => me.ok.push(micros),
                        Outcome::DeadlineExceeded => me.deadline_exceeded += 1,
                        Outcome::Shed(hint) => {
                            me.shed.push(micros);
                            me.shed_with_hint += u64::from(hint.is_some());
                            if let Some(hint) = hint {
                                me.hints_ms.push(hint.as_millis() as u32);
                            }
                            let wait = hint.unwrap_or(DEFAULT_PUSHBACK).min(MAX_PUSHBACK);
                            let wake = (Instant::now() + wait).min(end);
                            tokio::time::sleep_until(wake.into()).await;
                        }
                        Outcome::Other(error) => {
                            me.other += 1;
                            me.first_other.get_or_insert(error);
                            // Not a flood of errors: an unexpected answer is not retried hot.
                            tokio::time::sleep(DEFAULT_PUSHBACK).await;
                        }
                    }
                }
                me
            })
        })
        .collect();
    let mut ok = Vec::new();
    let mut shed = Vec::new();
    let mut hints = Vec::new();
    let mut counts = Counts::default();
    for task in tasks {
        let Ok(mut me) = task.await else {
            counts.other += 1;
            continue;
        };
        ok.append(&mut me.ok);
        shed.append(&mut me.shed);
        hints.append(&mut me.hints_ms);
        counts.deadline_exceeded += me.deadline_exceeded;
        counts.shed_with_hint += me.shed_with_hint;
        counts.other += me.other;
        if counts.first_other.is_none() {
            counts.first_other = me.first_other;
        }
    }
    // Goodput is counted over the flood itself, not the tail of calls still in flight.
    counts.seconds = duration.as_secs_f64();
    counts.ok = ok.len() as u64;
    counts.shed = shed.len() as u64;
    let ok_stats = Stats::from_latencies(ok, 0, duration);
    counts.ok_p50_us = ok_stats.p50_us;
    counts.ok_p99_us = ok_stats.p99_us;
    let shed_stats = Stats::from_latencies(shed, 0, duration);
    counts.shed_p50_us = shed_stats.p50_us;
    counts.shed_p99_us = shed_stats.p99_us;
    counts.hint_p50_ms = Stats::from_latencies(hints, 0, duration).p50_us;
    counts
}

/// VerifyToken latency at a steady pace (one caller per channel, `per_second` each), the
/// way a service verifies the tokens of its own traffic. Paced rather than closed-loop so
/// the probe does not itself take the cores the flood's hashing needs.
pub async fn paced_verify(
    channels: &[Channel],
    token: &str,
    per_second: u32,
    duration: Duration,
) -> Stats {
    let start = Instant::now();
    let end = start + duration;
    let period = Duration::from_secs(1) / per_second.max(1);
    let tasks: Vec<_> = channels
        .iter()
        .enumerate()
        .map(|(index, channel)| {
            let mut client = AuthServiceClient::new(channel.clone());
            let token = token.to_owned();
            // Callers staggered across the period, so their calls do not arrive in bursts.
            let first = start + period * index as u32 / channels.len().max(1) as u32;
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval_at(first.into(), period);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let (mut latencies, mut errors) = (Vec::new(), 0u64);
                while Instant::now() < end {
                    ticks.tick().await;
                    let sent = Instant::now();
                    let request = pb::VerifyTokenRequest {
                        token: token.clone(),
                    };
                    match client.verify_token(request).await {
                        Ok(_) => latencies.push(sent.elapsed().as_micros() as u32),
                        Err(_) => errors += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let (mut latencies, mut errors) = (Vec::new(), 0);
    for task in tasks {
        if let Ok((mut mine, my_errors)) = task.await {
            latencies.append(&mut mine);
            errors += my_errors;
        } else {
            errors += 1;
        }
    }
    Stats::from_latencies(latencies, errors, start.elapsed())
}

/// One login attempt right after the flood, retried on a shed answer after its hint, until
/// it authenticates. `None` when it did not within 30 s.
pub async fn login_after(
    channel: &Channel,
    identifier: &str,
    password: &str,
) -> (Option<Duration>, u32) {
    let mut client = AuthServiceClient::new(channel.clone());
    let start = Instant::now();
    let mut attempts = 0;
    while start.elapsed() < AFTER_BUDGET {
        attempts += 1;
        let left = AFTER_BUDGET.saturating_sub(start.elapsed());
        match login_once(&mut client, identifier, password, left).await {
            Outcome::Ok => return (Some(start.elapsed()), attempts),
            Outcome::Shed(hint) => {
                tokio::time::sleep(hint.unwrap_or(DEFAULT_PUSHBACK).min(MAX_PUSHBACK)).await;
            }
            Outcome::DeadlineExceeded => {}
            Outcome::Other(error) => {
                eprintln!("  (login after the flood: {error})");
                tokio::time::sleep(DEFAULT_PUSHBACK).await;
            }
        }
    }
    (None, attempts)
}

async fn login_once(
    client: &mut AuthServiceClient<Channel>,
    identifier: &str,
    password: &str,
    deadline: Duration,
) -> Outcome {
    let mut request = Request::new(pb::LoginRequest {
        identifier: identifier.into(),
        password: password.into(),
    });
    request.set_timeout(deadline);
    // tonic enforces the deadline on the client too; this only guards against a hang.
    let call = tokio::time::timeout(deadline + Duration::from_secs(1), client.login(request));
    match call.await {
        Err(_) => Outcome::DeadlineExceeded,
        Ok(Ok(reply)) => match reply.into_inner().result {
            Some(pb::login_response::Result::Authenticated(_)) => Outcome::Ok,
            other => Outcome::Other(format!("login answered {other:?}")),
        },
        Ok(Err(status)) => classify(&status),
    }
}

fn classify(status: &Status) -> Outcome {
    match status.code() {
        Code::DeadlineExceeded => Outcome::DeadlineExceeded,
        // tonic's own client-side timer answers CANCELLED "Timeout expired".
        Code::Cancelled if status.message().contains("Timeout expired") => {
            Outcome::DeadlineExceeded
        }
        Code::Unavailable => Outcome::Shed(retry_hint(status)),
        _ => Outcome::Other(format!("{:?}: {}", status.code(), status.message())),
    }
}

/// The server's retry hint: `grpc-retry-pushback-ms` metadata, else "retry after N ms" in
/// the message.
fn retry_hint(status: &Status) -> Option<Duration> {
    let from_metadata = status
        .metadata()
        .get("grpc-retry-pushback-ms")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    let from_message = || {
        let message = status.message().to_ascii_lowercase();
        let rest = &message[message.find("retry after ")? + "retry after ".len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let unit = rest[digits.len()..].trim_start();
        let value: u64 = digits.parse().ok()?;
        if unit.starts_with("ms") {
            Some(value)
        } else if unit.starts_with('s') {
            Some(value * 1000)
        } else {
            None
        }
    };
    from_metadata
        .or_else(from_message)
        .map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hint(status: &Status) -> Option<u64> {
        match classify(status) {
            Outcome::Shed(hint) => hint.map(|d| d.as_millis() as u64),
            _ => panic!("not classified as shed"),
        }
    }

    #[test]
    fn retry_hints_come_from_metadata_or_the_message() {
        let mut status = Status::unavailable("busy");
        status
            .metadata_mut()
            .insert("grpc-retry-pushback-ms", "120".parse().unwrap());
        assert_eq!(hint(&status), Some(120));
        assert_eq!(
            hint(&Status::unavailable(
                "password checks are full; retry after 250 ms"
            )),
            Some(250)
        );
        assert_eq!(hint(&Status::unavailable("Retry after 2 s")), Some(2000));
        assert_eq!(hint(&Status::unavailable("connection refused")), None);
    }

    #[test]
    fn both_deadline_answers_count_as_deadline_exceeded() {
        assert!(matches!(
            classify(&Status::deadline_exceeded("late")),
            Outcome::DeadlineExceeded
        ));
        assert!(matches!(
            classify(&Status::cancelled("Timeout expired")),
            Outcome::DeadlineExceeded
        ));
        assert!(matches!(
            classify(&Status::cancelled("gone")),
            Outcome::Other(_)
        ));
    }
}

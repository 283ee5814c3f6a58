//! One client, created before the first restart, while the real `st-peter` process is
//! stopped with SIGTERM and started again on the same port and database several times.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use st_peter_client::{Client, Error, LoginOutcome};

use st_peter_testkit::{ServerProcess, st_peter_binary};

use crate::helpers::add_user;

const RESTARTS: usize = 3;
/// How long each outage lasts, so calls land in it.
const OUTAGE: Duration = Duration::from_millis(400);
/// How long the client may take to reach a server that is back.
const RECOVERY: Duration = Duration::from_secs(20);

/// Every call an RPC: the cache would hide the outage.
fn uncached_client(server: &ServerProcess) -> Client {
    Client::builder(server.target())
        .cache_ttl(Duration::ZERO)
        .invalid_token_ttl(Duration::ZERO)
        .request_timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_secs(1))
        .build()
        .unwrap()
}

async fn login(client: &Client) -> String {
    match client
        .login("cashier", "knock knock, who goes there")
        .await
        .unwrap()
    {
        LoginOutcome::Authenticated(session) => session.token,
        other => panic!("expected authenticated, got {other:?}"),
    }
}

/// The real binary on a free port with a fresh SQLite file; stopped with SIGTERM and
/// started again on the same port and file, as an operator restarting it would.
async fn start() -> ServerProcess {
    ServerProcess::builder(st_peter_binary())
        .start_async()
        .await
        .unwrap()
}

#[derive(Default)]
struct Tally {
    answered: AtomicU64,
    unavailable: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_across_restarts_are_unavailable_or_right_and_succeed_once_back() {
    let mut server = start().await;
    add_user(&server, "cashier", "knock knock, who goes there");
    let client = uncached_client(&server);
    let token = login(&client).await;
    let bogus = format!("stp_{}", "A".repeat(43));

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let caller = tokio::spawn({
        let (client, tally, stop) = (client.clone(), tally.clone(), stop.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut wrong = Vec::new();
            for _ in 0..100_000 {
                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                // A valid token is valid or unanswerable; a bogus one is invalid or
                // unanswerable. Any other answer is a wrong verdict.
                for (which, outcome) in [
                    ("valid", client.verify_token(&token).await.map(|_| ())),
                    ("bogus", client.verify_token(&bogus).await.map(|_| ())),
                ] {
                    match (which, outcome) {
                        ("valid", Ok(())) | ("bogus", Err(Error::InvalidToken)) => {
                            tally.answered.fetch_add(1, Ordering::Relaxed);
                        }
                        (_, Err(Error::Unavailable(_))) => {
                            tally.unavailable.fetch_add(1, Ordering::Relaxed);
                        }
                        (which, outcome) => wrong.push(format!("{which} token: {outcome:?}")),
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            wrong
        }
    });

    let answered_since = |since: u64| {
        let tally = tally.clone();
        async move {
            let deadline = Instant::now() + RECOVERY;
            while tally.answered.load(Ordering::Relaxed) <= since {
                assert!(
                    Instant::now() < deadline,
                    "no call succeeded within {RECOVERY:?} of st-peter being back"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    answered_since(0).await;
    for _ in 0..RESTARTS {
        let status = server.terminate().await;
        assert!(status.success(), "st-peter on SIGTERM: {status}");
        tokio::time::sleep(OUTAGE).await;
        server.restart().await;
        answered_since(tally.answered.load(Ordering::Relaxed)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let wrong = caller.await.expect("the calling task panicked");
    assert!(wrong.is_empty(), "wrong verdicts: {wrong:#?}");
    assert!(
        tally.unavailable.load(Ordering::Relaxed) > 0,
        "no call landed in an outage"
    );
    assert_eq!(
        client
            .verify_token(&login(&client).await)
            .await
            .unwrap()
            .user
            .handle,
        "cashier"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_call_on_an_idle_connection_after_a_restart_succeeds() {
    let mut server = start().await;
    add_user(&server, "cashier", "knock knock, who goes there");
    let client = uncached_client(&server);
    let token = login(&client).await;
    client.verify_token(&token).await.unwrap();

    for restart in 1..=RESTARTS {
        // A graceful stop sends GOAWAY on the idle connection, then closes it.
        server.terminate().await;
        server.restart().await;
        match client.verify_token(&token).await {
            Ok(verified) => assert_eq!(verified.user.handle, "cashier"),
            Err(err) => panic!("first call after restart {restart}: {err:?}"),
        }
    }
}

//! Churn: many concurrent verifies through one subscribed client (cache on, long TTLs),
//! while tokens are revoked at random through another path (Logout through a second client
//! with its cache off, on the same server). The contract: a revocation is refused by every
//! subscribed client cache within 1 s. So every "valid" this client gives for a revoked
//! token must come from a verify started before its Logout was acknowledged + 1 s.
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use st_peter_client::{Client, Error};

use crate::helpers::{TestServer, login, subscribe};

const TOKENS: usize = 60;
const REVOCATIONS: usize = 40;
const VERIFIERS: usize = 16;
const CONTRACT: Duration = Duration::from_secs(1);
/// Between two revocations.
const REVOKE_EVERY: Duration = Duration::from_millis(40);
/// Verifying goes on this long after the last revocation, so each is checked past its bound.
const AFTER: Duration = Duration::from_millis(1500);

#[derive(Default)]
struct Watched {
    /// When its Logout returned.
    ack: OnceLock<Instant>,
    /// When a verify first answered it invalid (its completion).
    first_refusal: Mutex<Option<Instant>>,
}

#[derive(Default)]
struct Tally {
    verifies: AtomicU64,
    stale: AtomicU64,
    /// The latest start, after its token's ack, of a verify that answered valid (ns).
    latest_valid_after_ack: AtomicU64,
}

/// A cheap random index: tests need no seeded sequence, only spread.
fn random_below(n: usize) -> usize {
    (RandomState::new().hash_one(0u8) % n as u64) as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_under_churn_are_never_served_past_the_contract() {
    let server = TestServer::start().await;
    server
        .add_user("cashier", "knock knock, who goes there")
        .await;
    let long = Duration::from_secs(10 * 60);
    let caching = Client::builder(server.target())
        .cache_ttl(long)
        .fallback_ttl(long)
        .build()
        .unwrap();
    let revoker = Client::builder(server.target())
        .cache_ttl(Duration::ZERO)
        .build()
        .unwrap();
    let mut tokens = Vec::new();
    for _ in 0..TOKENS {
        tokens.push(login(&revoker, "cashier", "knock knock, who goes there").await);
    }
    let tokens = Arc::new(tokens);
    let watched: Arc<Vec<Watched>> = Arc::new((0..TOKENS).map(|_| Watched::default()).collect());
    subscribe(&caching).await;
    for token in tokens.iter() {
        caching.verify_token(token).await.unwrap();
    }
    let streams = caching.feed_status().subscriptions;

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let verifiers: Vec<_> = (0..VERIFIERS)
        .map(|_| {
            let (caching, tokens, watched) = (caching.clone(), tokens.clone(), watched.clone());
            let (tally, stop) = (tally.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let i = random_below(TOKENS);
                    let started = Instant::now();
                    let answer = caching.verify_token(&tokens[i]).await;
                    let done = Instant::now();
                    tally.verifies.fetch_add(1, Ordering::Relaxed);
                    let token = &watched[i];
                    match answer {
                        Ok(_) => {
                            if let Some(&ack) = token.ack.get() {
                                let after = started.saturating_duration_since(ack);
                                tally
                                    .latest_valid_after_ack
                                    .fetch_max(after.as_nanos() as u64, Ordering::Relaxed);
                                if after >= CONTRACT {
                                    tally.stale.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        Err(Error::InvalidToken) => {
                            token.first_refusal.lock().unwrap().get_or_insert(done);
                        }
                        Err(other) => panic!("verify: {other:?}"),
                    }
                    // Paced like a busy service rather than a spin loop, so the machine
                    // still has time for the server and the feed.
                    n += 1;
                    if n % 8 == 0 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            })
        })
        .collect();

    let mut order: Vec<usize> = (0..TOKENS).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, random_below(i + 1));
    }
    for &i in &order[..REVOCATIONS] {
        tokio::time::sleep(REVOKE_EVERY).await;
        revoker.logout(&tokens[i]).await.unwrap();
        watched[i].ack.set(Instant::now()).unwrap();
    }
    tokio::time::sleep(AFTER).await;
    stop.store(true, Ordering::Relaxed);
    for verifier in verifiers {
        verifier.await.unwrap();
    }

    let mut unchecked = 0;
    let mut max_lag = Duration::ZERO;
    for token in watched.iter() {
        let Some(&ack) = token.ack.get() else {
            continue;
        };
        match *token.first_refusal.lock().unwrap() {
            Some(refused) => max_lag = max_lag.max(refused.saturating_duration_since(ack)),
            None => unchecked += 1,
        }
    }
    let verifies = tally.verifies.load(Ordering::Relaxed);
    let stale = tally.stale.load(Ordering::Relaxed);
    let latest_valid = Duration::from_nanos(tally.latest_valid_after_ack.load(Ordering::Relaxed));
    let resubscribed = caching.feed_status().subscriptions - streams;
    println!(
        "churn: {verifies} verifies, {REVOCATIONS} revocations, {stale} stale answers, \
         max lag from Logout ack to first refusal {max_lag:?}, latest start of a valid \
         answer after its ack {latest_valid:?}, {resubscribed} resubscriptions"
    );
    assert_eq!(
        stale, 0,
        "valid answers for revoked tokens from verifies started past ack + {CONTRACT:?}"
    );
    assert_eq!(unchecked, 0, "revoked tokens this client never refused");
}

//! The service token's refresh, with a 3 s token life: exchanged again by the first call
//! after two thirds of its life (never later, never sooner), by one exchange however many
//! callers need it then; a refresh throttled or unable to reach st-peter leaves the old
//! token in use until it expires; on the server's manual clock, and in real time against
//! the binary, whose feed streams end with their token. Exchanges are counted at the
//! server (its `Calls` layer, or its audit log).
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use st_peter_client::{Client, Error};
use st_peter_server::domain::throttle::BackoffPolicy;
use st_peter_testkit::{Hold, HoldPoint, ServerProcess, st_peter_binary};

use crate::helpers::{
    CASHIER_PASSWORD, PATIENCE, add_user, admin, eventually, login, refused, service_server,
    service_settings, subscribe, uncached,
};

/// Until the held call has reached the server; a failure, not a hang, if it never does.
async fn reached(hold: &Hold, what: &str) {
    if tokio::time::timeout(PATIENCE, hold.reached())
        .await
        .is_err()
    {
        panic!("{what}: not within {PATIENCE:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_exchanged_again_once_a_third_of_its_life_is_left() {
    let (server, key) = service_server(service_settings(), false).await;
    let client = uncached(server.client_builder().api_key(&*key.api_key))
        .build()
        .unwrap();
    let token = login(&client, "cashier", CASHIER_PASSWORD).await;

    // A call every 300 ms of both clocks for 10 s: the token (3 s) is due at 2 s of age,
    // so the exchanges fall at 0, 2.1, 4.2, 6.3 and 8.4 s, away from any boundary.
    let calls = 34;
    for call in 0..calls {
        if let Err(error) = client.verify_token(&token).await {
            panic!("call {call} failed: {error:?}");
        }
        server.advance(Duration::from_millis(300));
    }
    assert_eq!(server.exchanges(), 5);
    assert_eq!(server.verifies(), calls, "no call was refused and retried");
}

/// On a current-thread runtime every spawned caller runs up to its wait before the
/// server even reads the held exchange, so all of them are at the refresh together. Each
/// verifies a token of its own: the cache would make one call of verifies of one token.
#[tokio::test]
async fn concurrent_callers_at_a_refresh_share_one_exchange() {
    let (server, key) = service_server(service_settings(), false).await;
    let client = uncached(server.client_builder().api_key(&*key.api_key))
        .build()
        .unwrap();
    let mut tokens = Vec::new();
    for _ in 0..20 {
        tokens.push(login(&client, "cashier", CASHIER_PASSWORD).await);
    }
    client.verify_token(&tokens[0]).await.unwrap();
    assert_eq!(server.exchanges(), 1);

    // Due for refresh, still valid.
    server.advance(Duration::from_millis(2500));
    let hold = server.hold_next("ExchangeApiKey", HoldPoint::BeforeHandling);
    let callers: Vec<_> = tokens
        .into_iter()
        .map(|token| {
            let client = client.clone();
            tokio::spawn(async move { client.verify_token(&token).await })
        })
        .collect();
    reached(&hold, "a caller exchanged the due token").await;
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(server.exchanges(), 2, "the callers wait for one exchange");
    assert_eq!(server.verifies(), 1, "nobody went ahead meanwhile");

    hold.release();
    for caller in callers {
        caller.await.unwrap().unwrap();
    }
    assert_eq!(server.exchanges(), 2);
    assert_eq!(server.verifies(), 21);
}

#[tokio::test]
async fn a_caller_that_gives_up_mid_exchange_hands_it_over() {
    let (server, key) = service_server(service_settings(), false).await;
    let client = uncached(server.client_builder().api_key(&*key.api_key))
        .build()
        .unwrap();
    let token = login(&client, "cashier", CASHIER_PASSWORD).await;

    let hold = server.hold_next("ExchangeApiKey", HoldPoint::BeforeHandling);
    let leader = tokio::spawn({
        let (client, token) = (client.clone(), token.clone());
        async move { client.verify_token(&token).await }
    });
    reached(&hold, "the first caller exchanged").await;
    let follower = tokio::spawn({
        let (client, token) = (client.clone(), token.clone());
        async move { client.verify_token(&token).await }
    });
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(server.exchanges(), 1, "the follower waits");
    leader.abort();
    assert_eq!(
        follower.await.unwrap().unwrap().user.handle,
        "cashier",
        "the follower exchanged itself"
    );
    assert_eq!(server.exchanges(), 2);
    hold.release();
}

/// St-peter throttles the address (a neighbour's made-up key): the refresh due at 2 s is
/// RESOURCE_EXHAUSTED, which says nothing about the key, so calls go on with the old token
/// until its expiry at 3 s; then they fail as throttled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_refresh_keeps_the_still_valid_token_in_use() {
    let mut settings = service_settings();
    // One refused key from an address locks the address out for a minute.
    settings.throttle.api_key_address = BackoffPolicy {
        free_failures: 0,
        base: Duration::from_secs(60),
        ..settings.throttle.api_key_address
    };
    let (server, key) = service_server(settings, true).await;
    let client = uncached(server.client_builder().api_key(&*key.api_key))
        .build()
        .unwrap();
    let token = login(&client, "cashier", CASHIER_PASSWORD).await;
    client.verify_token(&token).await.unwrap();
    let neighbour = server.client();
    let made_up = format!("stk_{}", "N".repeat(43));
    let refused = neighbour.exchange_api_key(&made_up).await.unwrap_err();
    assert!(matches!(refused, Error::ApiKeyRejected(_)), "{refused:?}");
    let throttled = neighbour.exchange_api_key(&key.api_key).await.unwrap_err();
    assert!(matches!(throttled, Error::RateLimited(_)), "{throttled:?}");
    assert_eq!((server.exchanges(), server.verifies()), (3, 1));

    // Due for refresh at 2 s: each call tries, is throttled, and verifies with the old token.
    server.advance(Duration::from_millis(2100));
    client.verify_token(&token).await.unwrap();
    client.lookup_user_as_service("cashier").await.unwrap();
    assert_eq!(
        client.service_account().await.unwrap().handle,
        "shift-board"
    );
    assert_eq!((server.exchanges(), server.verifies()), (6, 2));
    server.advance(Duration::from_millis(800));
    client.verify_token(&token).await.unwrap();
    assert_eq!((server.exchanges(), server.verifies()), (7, 3));

    // Expired at 3 s (both clocks): no token to fall back on.
    server.advance(Duration::from_millis(100));
    let error = client.verify_token(&token).await.unwrap_err();
    assert!(matches!(error, Error::RateLimited(_)), "{error:?}");
    assert_eq!((server.exchanges(), server.verifies()), (8, 3));
}

/// St-peter does not answer the refresh within the client's deadline (held at the server,
/// as an unreachable st-peter would be): Unavailable, no verdict on the key, so the call
/// goes on with the token, which has not expired. Past its expiry the same is an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_that_cannot_reach_st_peter_keeps_the_still_valid_token_in_use() {
    let (server, key) = service_server(service_settings(), true).await;
    let client = uncached(
        server
            .client_builder()
            .api_key(&*key.api_key)
            .request_timeout(Duration::from_millis(300)),
    )
    .build()
    .unwrap();
    let token = login(&client, "cashier", CASHIER_PASSWORD).await;
    client.verify_token(&token).await.unwrap();
    let me = client.service_account().await.unwrap();
    assert_eq!((server.exchanges(), server.verifies()), (1, 1));

    server.advance(Duration::from_millis(2500));
    let hold = server.hold_next("ExchangeApiKey", HoldPoint::BeforeHandling);
    client.verify_token(&token).await.unwrap();
    assert_eq!((server.exchanges(), server.verifies()), (2, 2));
    hold.release();

    // Past the expiry, an exchange that cannot be made is the caller's error.
    let hold = server.hold_next("ExchangeApiKey", HoldPoint::BeforeHandling);
    server.advance(Duration::from_millis(600));
    let error = client.verify_token(&token).await.unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");
    assert_eq!((server.exchanges(), server.verifies()), (3, 2));
    hold.release();
    // Reachable again: a fresh token, the same account.
    client.verify_token(&token).await.unwrap();
    assert_eq!(client.service_account().await.unwrap(), me);
    assert_eq!((server.exchanges(), server.verifies()), (4, 3));
}

/// St-peter stopped (connection refused) at the refresh: the service still knows who it
/// is, from the token that has not expired; st-peter back, the next call refreshes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_st_peter_stopped_at_the_refresh_the_old_token_still_serves() {
    let (mut server, key) = service_server(service_settings(), true).await;
    let client = uncached(server.client_builder().api_key(&*key.api_key))
        .build()
        .unwrap();
    let me = client.service_account().await.unwrap();
    server.advance(Duration::from_millis(2500));
    server.stop().await;
    assert_eq!(client.service_account().await.unwrap(), me);
    let error = client.lookup_user_as_service("cashier").await.unwrap_err();
    assert!(error.is_unavailable(), "the lookup itself: {error:?}");
    server.advance(Duration::from_millis(600));
    let error = client.service_account().await.unwrap_err();
    assert!(error.is_unavailable(), "expired: {error:?}");
    server.resume().await;
    assert_eq!(client.service_account().await.unwrap(), me);
    assert_eq!(server.exchanges(), 2);
}

/// Counts the binary's audit lines (JSON logs) for exchanged keys and refused callers.
#[derive(Default)]
struct Audit {
    exchanged: AtomicUsize,
    callers_refused: AtomicUsize,
}

impl Audit {
    fn read(&self, line: &str) {
        let Ok(line) = serde_json::from_str::<serde_json::Value>(line) else {
            return;
        };
        if line["target"] != "audit" {
            return;
        }
        let fields = &line["fields"];
        match (fields["event"].as_str(), fields["outcome"].as_str()) {
            (Some("api_key"), Some("exchanged")) => {
                self.exchanged.fetch_add(1, Ordering::SeqCst);
            }
            (Some("caller"), Some("refused")) => {
                self.callers_refused.fetch_add(1, Ordering::SeqCst);
            }
            _ => {}
        }
    }
}

/// The binary with `--api-token-ttl 3s --require-caller-credentials`, JSON logs read by
/// `audit`, a person `cashier` and a service account `shift-board` with `st-peter:lookup`;
/// answers the server and the service's API key.
async fn binary_with_service(audit: &Arc<Audit>) -> (ServerProcess, String) {
    let server = ServerProcess::builder(st_peter_binary())
        .args(["--api-token-ttl", "3s", "--require-caller-credentials"])
        .env("ST_PETER_LOG_FORMAT", "json")
        .on_stderr_line({
            let audit = audit.clone();
            move |line| audit.read(line)
        })
        .start_async()
        .await
        .unwrap();
    add_user(&server, "cashier", CASHIER_PASSWORD);
    admin(&server, &["service", "add", "shift-board"], "");
    admin(
        &server,
        &["user", "role", "grant", "shift-board", "st-peter:lookup"],
        "",
    );
    let key: serde_json::Value = serde_json::from_str(&admin(
        &server,
        &["--json", "service", "key", "create", "shift-board"],
        "",
    ))
    .unwrap();
    let api_key = key["api_key"].as_str().unwrap().to_owned();
    (server, api_key)
}

/// Ten seconds of calls, in real time, against the binary with `--api-token-ttl 3s`: every
/// call succeeds, and no call reaches st-peter with a dead token (no caller refused), so
/// each refresh came before the expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_seconds_of_calls_against_the_binary_refresh_the_token_in_time() {
    let audit = Arc::new(Audit::default());
    let (server, api_key) = binary_with_service(&audit).await;
    let client = uncached(Client::builder(server.target()).api_key(api_key))
        .build()
        .unwrap();
    let token = login(&client, "cashier", CASHIER_PASSWORD).await;

    let start = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_millis(50));
    let mut calls = 0;
    while start.elapsed() < Duration::from_secs(10) {
        ticks.tick().await;
        // A lookup now and then (they are throttled per actor), verifies otherwise.
        let outcome = if calls % 20 == 0 {
            client.lookup_user_as_service("cashier").await.map(|_| ())
        } else {
            client.verify_token(&token).await.map(|_| ())
        };
        if let Err(error) = outcome {
            panic!("call {calls} after {:?} failed: {error:?}", start.elapsed());
        }
        calls += 1;
    }
    eventually("the exchanges in the audit log", || async {
        audit.exchanged.load(Ordering::SeqCst) >= 3
    })
    .await;
    let exchanged = audit.exchanged.load(Ordering::SeqCst);
    println!(
        "{calls} calls in {:?}: {exchanged} exchanges",
        start.elapsed()
    );
    // One at the start and one per 2 s at most: at most 6 in 10 s.
    assert!((3..=6).contains(&exchanged), "{exchanged} exchanges");
    assert_eq!(audit.callers_refused.load(Ordering::SeqCst), 0);
}

/// St-peter ends a feed stream when the service token it was opened with expires; the
/// client resubscribes with a fresh token (exchanged first: by then it is due), so no
/// subscription is refused, and the new stream evicts as the first did. In real time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_outlives_its_token_by_resubscribing_with_a_fresh_one() {
    let audit = Arc::new(Audit::default());
    let (server, api_key) = binary_with_service(&audit).await;
    // Answers kept ten minutes, subscribed or not: only the feed can evict them.
    let caching = Client::builder(server.target())
        .api_key(api_key)
        .cache_ttl(Duration::from_secs(600))
        .fallback_ttl(Duration::from_secs(600))
        .build()
        .unwrap();
    let elsewhere = uncached(Client::builder(server.target())).build().unwrap();
    subscribe(&caching).await;
    // Counted from here: a first subscription that had to be retried opened more than one.
    let subscribed = caching.feed_status().subscriptions;
    let token = login(&elsewhere, "cashier", CASHIER_PASSWORD).await;
    caching.verify_token(&token).await.unwrap();

    let took = eventually("the feed resubscribed past its token's life", || async {
        let status = caching.feed_status();
        status.subscribed && status.subscriptions > subscribed
    })
    .await;
    println!("the feed resubscribed {took:?} into a 3 s token's life");
    // The audit lines come through the server's standard error, read on another thread.
    eventually("the second exchange is in the audit log", || async {
        audit.exchanged.load(Ordering::SeqCst) >= 2
    })
    .await;
    assert_eq!(
        audit.callers_refused.load(Ordering::SeqCst),
        0,
        "no subscription was opened with the expired token"
    );

    elsewhere.logout(&token).await.unwrap();
    let took = refused(&caching, &token).await;
    println!("then a logout elsewhere was refused through the new stream after {took:?}");
}

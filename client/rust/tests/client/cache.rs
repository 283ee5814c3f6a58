use std::time::Duration;

use st_peter_client::Error;

use crate::helpers::{TestServer, settings, subscribe};

// A subscribed client: its feed's first checkpoint clears the cache, so tests that count
// RPCs fill it only after that.

#[tokio::test]
async fn a_second_verify_is_served_from_the_cache() {
    let server = TestServer::start().await;
    server
        .add_user("cashier", "knock knock, who goes there")
        .await;
    let client = server.client();
    let token = server
        .token(&client, "cashier", "knock knock, who goes there")
        .await;
    subscribe(&client).await;
    let before = server.verifies();

    let first = client.verify_token(&token).await.unwrap();
    let second = client.verify_token(&token).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(server.verifies() - before, 1);

    // Clones share the cache.
    client.clone().verify_token(&token).await.unwrap();
    assert_eq!(server.verifies() - before, 1);
}

#[tokio::test]
async fn a_hundred_concurrent_verifies_of_one_token_make_one_rpc() {
    let server = TestServer::start().await;
    server
        .add_user("cashier", "knock knock, who goes there")
        .await;
    let client = server.client();
    let token = server
        .token(&client, "cashier", "knock knock, who goes there")
        .await;
    subscribe(&client).await;
    let before = server.verifies();

    let verifies = (0..100).map(|_| {
        let client = client.clone();
        let token = token.clone();
        tokio::spawn(async move { client.verify_token(&token).await })
    });
    for verify in verifies.collect::<Vec<_>>() {
        assert_eq!(verify.await.unwrap().unwrap().user.handle, "cashier");
    }
    assert_eq!(server.verifies() - before, 1);
}

#[tokio::test]
async fn while_subscribed_entries_expire_after_the_ttl() {
    let server = TestServer::start().await;
    server
        .add_user("cashier", "knock knock, who goes there")
        .await;
    let client = server.client();
    let token = server
        .token(&client, "cashier", "knock knock, who goes there")
        .await;
    subscribe(&client).await;
    let before = server.verifies();

    client.verify_token(&token).await.unwrap();
    // Far past the fallback TTL (5 s), which applies only while not subscribed.
    server.advance(Duration::from_secs(5 * 60 - 1));
    client.verify_token(&token).await.unwrap();
    assert_eq!(server.verifies() - before, 1);
    server.advance(Duration::from_secs(1));
    client.verify_token(&token).await.unwrap();
    assert_eq!(server.verifies() - before, 2);
}

#[tokio::test]
async fn an_entry_expires_with_its_token_even_before_the_ttl() {
    // Sessions live 30 s; the cache would keep answers 5 minutes.
    let server = TestServer::start_with(settings(Duration::from_secs(30))).await;
    server
        .add_user("cashier", "knock knock, who goes there")
        .await;
    let client = server.client();
    let token = server
        .token(&client, "cashier", "knock knock, who goes there")
        .await;
    subscribe(&client).await;
    let before = server.verifies();

    client.verify_token(&token).await.unwrap();
    server.advance(Duration::from_secs(29));
    client.verify_token(&token).await.unwrap();
    assert_eq!(server.verifies() - before, 1);
    server.advance(Duration::from_secs(1));
    assert_eq!(
        client.verify_token(&token).await.unwrap_err(),
        Error::InvalidToken
    );
    assert_eq!(server.verifies() - before, 2);
}

#[tokio::test]
async fn logout_evicts_the_entry() {
    let server = TestServer::start().await;
    server
        .add_user("cashier", "knock knock, who goes there")
        .await;
    let client = server.client();
    let token = server
        .token(&client, "cashier", "knock knock, who goes there")
        .await;
    client.verify_token(&token).await.unwrap();
    client.logout(&token).await.unwrap();
    assert_eq!(
        client.verify_token(&token).await.unwrap_err(),
        Error::InvalidToken
    );
    assert_eq!(server.counts.get("VerifyToken"), 2);
}

#[tokio::test]
async fn with_the_feed_off_a_revoked_token_passes_until_the_fallback_ttl() {
    // The documented trade-off of a cache nothing keeps honest, shown rather than hidden.
    let server = TestServer::start().await;
    server
        .add_user("cashier", "knock knock, who goes there")
        .await;
    let default = server
        .client_builder()
        .revocation_feed(false)
        .build()
        .unwrap();
    let longer = server
        .client_builder()
        .revocation_feed(false)
        .fallback_ttl(Duration::from_secs(60))
        .build()
        .unwrap();
    let token = server
        .token(&default, "cashier", "knock knock, who goes there")
        .await;
    default.verify_token(&token).await.unwrap();
    longer.verify_token(&token).await.unwrap();

    server
        .app
        .logout(&st_peter_server::Caller::CLI, &token)
        .await
        .unwrap();
    default.verify_token(&token).await.unwrap();
    longer.verify_token(&token).await.unwrap();
    server.advance(Duration::from_secs(5));
    assert_eq!(
        default.verify_token(&token).await.unwrap_err(),
        Error::InvalidToken
    );
    longer.verify_token(&token).await.unwrap();
    server.advance(Duration::from_secs(55));
    assert_eq!(
        longer.verify_token(&token).await.unwrap_err(),
        Error::InvalidToken
    );
    assert_eq!(
        default.feed_status(),
        st_peter_client::FeedStatus::default()
    );
    assert_eq!(server.counts.get("WatchRevocations"), 0);
}

#[tokio::test]
async fn invalid_tokens_are_cached_only_briefly() {
    let server = TestServer::start().await;
    let client = server.client();
    subscribe(&client).await;
    let before = server.verifies();
    let bogus = format!("stp_{}", "A".repeat(43));
    for _ in 0..3 {
        assert_eq!(
            client.verify_token(&bogus).await.unwrap_err(),
            Error::InvalidToken
        );
    }
    assert_eq!(server.verifies() - before, 1);
    server.advance(Duration::from_secs(5));
    assert_eq!(
        client.verify_token(&bogus).await.unwrap_err(),
        Error::InvalidToken
    );
    assert_eq!(server.verifies() - before, 2);

    let uncached = server
        .client_builder()
        .invalid_token_ttl(Duration::ZERO)
        .revocation_feed(false)
        .build()
        .unwrap();
    uncached.verify_token(&bogus).await.unwrap_err();
    uncached.verify_token(&bogus).await.unwrap_err();
    assert_eq!(server.verifies() - before, 4);
}

#[tokio::test]
async fn capacity_bounds_the_cache() {
    let server = TestServer::start().await;
    server
        .add_user("cashier", "knock knock, who goes there")
        .await;
    let client = server.client_builder().cache_capacity(10).build().unwrap();
    for _ in 0..40 {
        let token = server
            .token(&client, "cashier", "knock knock, who goes there")
            .await;
        client.verify_token(&token).await.unwrap();
    }
    let held = client.cached_answers().await;
    assert!(
        (1..=10).contains(&held),
        "cache holds {held} answers with capacity 10"
    );
}

use std::time::Duration;

use st_peter_client::Error;

use crate::helpers::{TestServer, settings};

#[tokio::test]
async fn a_second_verify_is_served_from_the_cache() {
    let server = TestServer::start().await;
    server.add_user("cashier", "knockknock").await;
    let client = server.client();
    let token = server.token(&client, "cashier", "knockknock").await;

    let first = client.verify_token(&token).await.unwrap();
    let second = client.verify_token(&token).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(server.counts.get("VerifyToken"), 1);

    // Clones share the cache.
    client.clone().verify_token(&token).await.unwrap();
    assert_eq!(server.counts.get("VerifyToken"), 1);
}

#[tokio::test]
async fn a_hundred_concurrent_verifies_of_one_token_make_one_rpc() {
    let server = TestServer::start().await;
    server.add_user("cashier", "knockknock").await;
    let client = server.client();
    let token = server.token(&client, "cashier", "knockknock").await;

    let verifies = (0..100).map(|_| {
        let client = client.clone();
        let token = token.clone();
        tokio::spawn(async move { client.verify_token(&token).await })
    });
    for verify in verifies.collect::<Vec<_>>() {
        assert_eq!(verify.await.unwrap().unwrap().user.handle, "cashier");
    }
    assert_eq!(server.counts.get("VerifyToken"), 1);
}

#[tokio::test]
async fn entries_expire_after_the_ttl() {
    let server = TestServer::start().await;
    server.add_user("cashier", "knockknock").await;
    let client = server.client();
    let token = server.token(&client, "cashier", "knockknock").await;

    client.verify_token(&token).await.unwrap();
    server.advance(Duration::from_secs(59));
    client.verify_token(&token).await.unwrap();
    assert_eq!(server.counts.get("VerifyToken"), 1);
    server.advance(Duration::from_secs(1));
    client.verify_token(&token).await.unwrap();
    assert_eq!(server.counts.get("VerifyToken"), 2);
}

#[tokio::test]
async fn an_entry_expires_with_its_token_even_before_the_ttl() {
    // Sessions live 30 s; the cache would keep answers 60 s.
    let server = TestServer::start_with(settings(Duration::from_secs(30))).await;
    server.add_user("cashier", "knockknock").await;
    let client = server.client();
    let token = server.token(&client, "cashier", "knockknock").await;

    client.verify_token(&token).await.unwrap();
    server.advance(Duration::from_secs(29));
    client.verify_token(&token).await.unwrap();
    assert_eq!(server.counts.get("VerifyToken"), 1);
    server.advance(Duration::from_secs(1));
    assert_eq!(
        client.verify_token(&token).await.unwrap_err(),
        Error::InvalidToken
    );
    assert_eq!(server.counts.get("VerifyToken"), 2);
}

#[tokio::test]
async fn logout_evicts_the_entry() {
    let server = TestServer::start().await;
    server.add_user("cashier", "knockknock").await;
    let client = server.client();
    let token = server.token(&client, "cashier", "knockknock").await;
    client.verify_token(&token).await.unwrap();
    client.logout(&token).await.unwrap();
    assert_eq!(
        client.verify_token(&token).await.unwrap_err(),
        Error::InvalidToken
    );
    assert_eq!(server.counts.get("VerifyToken"), 2);
}

#[tokio::test]
async fn a_revoked_token_passes_on_another_client_until_its_ttl() {
    // The documented trade-off of the cache, shown rather than hidden.
    let server = TestServer::start().await;
    server.add_user("cashier", "knockknock").await;
    let other = server.client();
    let short = server
        .client_builder()
        .cache_ttl(Duration::from_secs(5))
        .build()
        .unwrap();
    let token = server.token(&other, "cashier", "knockknock").await;
    other.verify_token(&token).await.unwrap();
    short.verify_token(&token).await.unwrap();

    server
        .app
        .logout(&st_peter_server::Caller::CLI, &token)
        .await
        .unwrap();
    other.verify_token(&token).await.unwrap();
    short.verify_token(&token).await.unwrap();
    server.advance(Duration::from_secs(5));
    assert_eq!(
        short.verify_token(&token).await.unwrap_err(),
        Error::InvalidToken
    );
    other.verify_token(&token).await.unwrap();
    server.advance(Duration::from_secs(55));
    assert_eq!(
        other.verify_token(&token).await.unwrap_err(),
        Error::InvalidToken
    );
}

#[tokio::test]
async fn invalid_tokens_are_cached_only_briefly() {
    let server = TestServer::start().await;
    let client = server.client();
    let bogus = format!("stp_{}", "A".repeat(43));
    for _ in 0..3 {
        assert_eq!(
            client.verify_token(&bogus).await.unwrap_err(),
            Error::InvalidToken
        );
    }
    assert_eq!(server.counts.get("VerifyToken"), 1);
    server.advance(Duration::from_secs(5));
    assert_eq!(
        client.verify_token(&bogus).await.unwrap_err(),
        Error::InvalidToken
    );
    assert_eq!(server.counts.get("VerifyToken"), 2);

    let uncached = server
        .client_builder()
        .invalid_token_ttl(Duration::ZERO)
        .build()
        .unwrap();
    uncached.verify_token(&bogus).await.unwrap_err();
    uncached.verify_token(&bogus).await.unwrap_err();
    assert_eq!(server.counts.get("VerifyToken"), 4);
}

#[tokio::test]
async fn capacity_bounds_the_cache() {
    let server = TestServer::start().await;
    server.add_user("cashier", "knockknock").await;
    let client = server.client_builder().cache_capacity(10).build().unwrap();
    for _ in 0..40 {
        let token = server.token(&client, "cashier", "knockknock").await;
        client.verify_token(&token).await.unwrap();
    }
    let held = client.cached_answers().await;
    assert!(
        (1..=10).contains(&held),
        "cache holds {held} answers with capacity 10"
    );
}

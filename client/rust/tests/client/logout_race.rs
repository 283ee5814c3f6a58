//! `logout(T)` racing an in-flight `verify_token(T)` on the same client: once logout has
//! returned, no answer from before the revocation may be served from this client's cache.
//! Three interleavings, each many times; the first two are pinned by holding one call at
//! the server (a slow network at a chosen moment), the third runs free.
use std::time::Duration;

use st_peter_client::{Client, Error};

use crate::helpers::{HoldPoint, TestServer};

const ROUNDS: usize = 70;
/// Bounds every await, so a defect shows as a failure rather than a hang.
const PATIENCE: Duration = Duration::from_secs(10);

async fn bounded<F: std::future::Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {PATIENCE:?}"))
}

/// After logout has returned, the token must read as invalid through this client.
async fn stale_after_logout(client: &Client, token: &str) -> bool {
    match bounded("verify after logout", client.verify_token(token)).await {
        Err(Error::InvalidToken) => false,
        Ok(_) => true,
        Err(other) => panic!("verify after logout: {other:?}"),
    }
}

#[derive(Default, Debug)]
struct Stale {
    answered_before_logout: usize,
    joined_after_logout: usize,
    sent_between_evictions: usize,
    free_running: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_racing_an_in_flight_verify_leaves_no_stale_answer() {
    let server = TestServer::start().await;
    server
        .add_user("cashier", "knock knock, who goes there")
        .await;
    let client = server.client();
    let mut stale = Stale::default();

    for _ in 0..ROUNDS {
        // 1. The verify was answered "valid" before the logout began; its response arrives
        // only after logout returned. A verify started after logout returned must not join
        // that old fetch.
        let token = server
            .token(&client, "cashier", "knock knock, who goes there")
            .await;
        let hold = server.hold_next("VerifyToken", HoldPoint::AfterAnswer);
        let early = tokio::spawn({
            let (client, token) = (client.clone(), token.clone());
            async move { client.verify_token(&token).await }
        });
        bounded("the held verify", hold.reached()).await;
        bounded("logout", client.logout(&token)).await.unwrap();
        let late = tokio::spawn({
            let (client, token) = (client.clone(), token.clone());
            async move { client.verify_token(&token).await }
        });
        // Give the late verify the chance to find the old fetch before it completes.
        tokio::time::sleep(Duration::from_millis(5)).await;
        hold.release();
        // Concurrent with the logout, so either answer is right for the early verify.
        bounded("the early verify", early).await.unwrap().ok();
        match bounded("the late verify", late).await.unwrap() {
            Err(Error::InvalidToken) => {}
            Ok(_) => stale.joined_after_logout += 1,
            Err(other) => panic!("late verify: {other:?}"),
        }
        if stale_after_logout(&client, &token).await {
            stale.answered_before_logout += 1;
        }

        // 2. The verify is sent after logout's first eviction and answered before the
        // revocation; its response arrives after logout's second eviction.
        let token = server
            .token(&client, "cashier", "knock knock, who goes there")
            .await;
        client.verify_token(&token).await.unwrap();
        let logout_hold = server.hold_next("Logout", HoldPoint::BeforeHandling);
        let verify_hold = server.hold_next("VerifyToken", HoldPoint::AfterAnswer);
        let logout = tokio::spawn({
            let (client, token) = (client.clone(), token.clone());
            async move { client.logout(&token).await }
        });
        bounded("the held logout", logout_hold.reached()).await;
        let verify = tokio::spawn({
            let (client, token) = (client.clone(), token.clone());
            async move { client.verify_token(&token).await }
        });
        bounded("the held verify", verify_hold.reached()).await;
        logout_hold.release();
        bounded("logout", logout).await.unwrap().unwrap();
        verify_hold.release();
        bounded("the verify", verify).await.unwrap().ok();
        if stale_after_logout(&client, &token).await {
            stale.sent_between_evictions += 1;
        }

        // 3. Nothing held: the verify is started just before the logout.
        let token = server
            .token(&client, "cashier", "knock knock, who goes there")
            .await;
        let verify = tokio::spawn({
            let (client, token) = (client.clone(), token.clone());
            async move { client.verify_token(&token).await }
        });
        tokio::task::yield_now().await;
        bounded("logout", client.logout(&token)).await.unwrap();
        bounded("the verify", verify).await.unwrap().ok();
        if stale_after_logout(&client, &token).await {
            stale.free_running += 1;
        }
    }

    let total = stale.answered_before_logout
        + stale.joined_after_logout
        + stale.sent_between_evictions
        + stale.free_running;
    assert_eq!(
        total, 0,
        "stale answers after logout in {ROUNDS} rounds of each case: {stale:?}"
    );
}

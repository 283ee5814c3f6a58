//! Tests that attack: each defence is shown holding against the attack it is for.
use std::time::Duration;
use tonic::Code;

use st_peter_proto::auth::v1 as pb;
use st_peter_proto::auth::v1::login_response::Result as Outcome;

use crate::helpers::{TestApp, failed_reason, retry_after, spawn_app};

#[tokio::test]
async fn fifty_wrong_passwords_then_the_right_one() {
    let app = spawn_app().await;
    app.add_user("lead-baker", "open sesame, said Ali Baba")
        .await;
    let mut throttled = 0;
    for attempt in 0..50 {
        let reply = app.login("lead-baker", &format!("guess-{attempt}")).await;
        match failed_reason(&reply) {
            pb::FailureReason::InvalidCredentials => {}
            pb::FailureReason::RateLimited => throttled += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        throttled,
        50 - 6,
        "five free failures, the sixth starts the backoff"
    );

    // The right password during the backoff does not log in.
    let reply = app.login("lead-baker", "open sesame, said Ali Baba").await;
    let wait = retry_after(&reply);
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_secs(5 * 60),
        "{wait:?}"
    );

    // Once the backoff has passed, the owner gets in.
    app.clock.advance(wait);
    assert!(matches!(
        app.login("lead-baker", "open sesame, said Ali Baba").await,
        Outcome::Authenticated(_)
    ));
    app.stop().await;
}

#[tokio::test]
async fn the_backoff_is_bounded_so_an_owner_is_never_locked_out_for_long() {
    let app = spawn_app().await;
    app.add_user("lead-baker", "open sesame, said Ali Baba")
        .await;
    // An attacker keeps failing, waiting out each backoff, for a long time.
    for attempt in 0..40 {
        let reply = app.login("lead-baker", &format!("guess-{attempt}")).await;
        if let Outcome::Failed(failed) = &reply {
            if failed.reason() == pb::FailureReason::RateLimited {
                let wait = retry_after(&reply);
                assert!(
                    wait <= Duration::from_secs(5 * 60),
                    "backoff grew past the cap: {wait:?}"
                );
                app.clock.advance(wait);
            }
        }
    }
    let reply = app.login("lead-baker", "open sesame, said Ali Baba").await;
    let wait = match reply {
        Outcome::Authenticated(_) => Duration::ZERO,
        ref other => retry_after(other),
    };
    assert!(wait <= Duration::from_secs(5 * 60));
    app.clock.advance(wait);
    assert!(matches!(
        app.login("lead-baker", "open sesame, said Ali Baba").await,
        Outcome::Authenticated(_)
    ));
    app.stop().await;
}

#[tokio::test]
async fn one_address_spraying_many_identifiers_is_throttled() {
    let app = spawn_app().await;
    app.add_user("lead-baker", "open sesame, said Ali Baba")
        .await;
    let mut replies = Vec::new();
    for n in 0..25 {
        replies.push(failed_reason(
            &app.login(&format!("user-{n}"), "password1").await,
        ));
    }
    assert!(
        replies[..20]
            .iter()
            .all(|r| *r == pb::FailureReason::InvalidCredentials)
    );
    assert!(
        replies[21..]
            .iter()
            .all(|r| *r == pb::FailureReason::RateLimited),
        "{replies:?}"
    );
    // The throttle is on the address: even a good login from it waits.
    assert_eq!(
        failed_reason(&app.login("lead-baker", "open sesame, said Ali Baba").await),
        pb::FailureReason::RateLimited
    );
    app.stop().await;
}

/// A web app relays all its users' logins from one address: many good logins in flight
/// at once from it are ordinary load, not guesses, and never lock the address (only
/// failures count against an address).
#[tokio::test]
async fn many_good_logins_at_once_from_one_address_are_not_throttled() {
    let app = spawn_app().await;
    const USERS: usize = 60;
    for n in 0..USERS {
        app.add_user(&format!("clerk-{n}"), "open sesame, said Ali Baba")
            .await;
    }
    for _round in 0..2 {
        let logins = (0..USERS).map(|n| {
            let app = &app;
            async move {
                app.login(&format!("clerk-{n}"), "open sesame, said Ali Baba")
                    .await
            }
        });
        let replies = futures_util::future::join_all(logins).await;
        let refused: Vec<_> = replies
            .iter()
            .filter(|reply| !matches!(reply, Outcome::Authenticated(_)))
            .collect();
        assert!(refused.is_empty(), "{} refused: {refused:?}", refused.len());
    }
    // The address throttle still holds against failures from that address.
    for n in 0..21 {
        app.login(&format!("clerk-{n}"), "a wrong guess").await;
    }
    assert_eq!(
        failed_reason(&app.login("clerk-59", "open sesame, said Ali Baba").await),
        pb::FailureReason::RateLimited
    );
    app.stop().await;
}

async fn two_factor_challenge(app: &TestApp) -> String {
    match app.login("lead-baker", "open sesame, said Ali Baba").await {
        Outcome::TwoFactor(two_factor) => two_factor.two_factor_id,
        other => panic!("expected two_factor, got {other:?}"),
    }
}

#[tokio::test]
async fn brute_forcing_a_challenge_is_throttled_then_the_challenge_dies() {
    let app = spawn_app().await;
    app.add_user("lead-baker", "open sesame, said Ali Baba")
        .await;
    let uri = app.app.enroll_totp("lead-baker").await.unwrap().otpauth_uri;
    let id = two_factor_challenge(&app).await;
    let window: Vec<String> = (-1..=1).map(|s| app.totp_code(&uri, s)).collect();
    let guesses = (0..1_000_000)
        .map(|n| format!("{n:06}"))
        .filter(|c| !window.contains(c));

    // Guessing as fast as possible: two free failures, the third starts the backoff.
    let mut reasons = Vec::new();
    for guess in guesses.clone().take(10) {
        reasons.push(failed_reason(&app.second_factor(&id, &guess).await));
    }
    assert_eq!(reasons[..3], [pb::FailureReason::InvalidCode; 3]);
    assert!(
        reasons[3..]
            .iter()
            .all(|r| *r != pb::FailureReason::InvalidCode),
        "{reasons:?}"
    );

    // Waiting out every backoff does not help: the challenge dies after five attempts.
    let mut last = pb::FailureReason::InvalidCode;
    for guess in guesses.skip(10).take(20) {
        app.clock.advance(Duration::from_secs(5 * 60 / 20 - 1));
        last = failed_reason(&app.second_factor(&id, &guess).await);
    }
    assert_eq!(last, pb::FailureReason::ChallengeExpired);
    let reply = app.second_factor(&id, &app.totp_code(&uri, 0)).await;
    assert_eq!(failed_reason(&reply), pb::FailureReason::ChallengeExpired);
    app.stop().await;
}

#[tokio::test]
async fn a_replayed_totp_code_is_refused() {
    let app = spawn_app().await;
    app.add_user("lead-baker", "open sesame, said Ali Baba")
        .await;
    let uri = app.app.enroll_totp("lead-baker").await.unwrap().otpauth_uri;
    let code = app.totp_code(&uri, 0);
    let first = two_factor_challenge(&app).await;
    assert!(matches!(
        app.second_factor(&first, &code).await,
        Outcome::Authenticated(_)
    ));
    // An attacker who saw the code uses it on a challenge of their own.
    let stolen = two_factor_challenge(&app).await;
    assert_eq!(
        failed_reason(&app.second_factor(&stolen, &code).await),
        pb::FailureReason::InvalidCode
    );
    app.stop().await;
}

#[tokio::test]
async fn a_lookup_flood_by_one_actor_is_rate_limited() {
    let app = spawn_app().await;
    let flooder = app.add_user("scraper", "scraping every page it can").await;
    let honest = app
        .add_user("shift-manager", "clipboard and a pencil stub")
        .await;
    app.add_user("lead-baker", "open sesame, said Ali Baba")
        .await;
    let flooder_token = app.token_for("scraper", "scraping every page it can").await;
    let honest_token = app
        .token_for("shift-manager", "clipboard and a pencil stub")
        .await;
    let lookup = |actor_id: String, token: String| {
        let mut client = app.client.clone();
        async move {
            client
                .lookup_user(pb::LookupUserRequest {
                    actor_id,
                    actor_token: token,
                    identifier: "lead-baker".into(),
                })
                .await
        }
    };

    let mut answered = 0;
    let mut refused = Vec::new();
    for _ in 0..100 {
        match lookup(flooder.user_id.clone(), flooder_token.clone()).await {
            Ok(_) => answered += 1,
            Err(status) => refused.push(status),
        }
    }
    assert_eq!(answered, 20, "a burst of 20 is allowed");
    assert!(refused.iter().all(|s| s.code() == Code::ResourceExhausted));
    assert!(
        refused[0].message().contains("retry after"),
        "{}",
        refused[0].message()
    );

    // Other actors are not slowed by the flooder, and the flooder recovers with time.
    lookup(honest.user_id.clone(), honest_token).await.unwrap();
    app.clock.advance(Duration::from_secs(1));
    lookup(flooder.user_id.clone(), flooder_token)
        .await
        .unwrap();
    app.stop().await;
}

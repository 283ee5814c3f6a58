use std::time::Duration;
use tonic::Code;

use st_peter_proto::auth::v1 as pb;
use st_peter_proto::auth::v1::login_response::Result as Outcome;

use st_peter_server::domain::two_factor::TotpEnrollment;

use crate::helpers::{TestApp, failed_reason, remember_secret, spawn_app};

async fn enrolled_app() -> (TestApp, String) {
    let (app, enrollment) = enrolled_app_with_codes().await;
    (app, enrollment.otpauth_uri)
}

async fn enrolled_app_with_codes() -> (TestApp, TotpEnrollment) {
    let app = spawn_app().await;
    app.add_user("lead-baker", "open sesame, said Ali Baba")
        .await;
    let enrollment = app.app.enroll_totp("lead-baker").await.unwrap();
    enrollment
        .recovery_codes
        .iter()
        .for_each(|c| remember_secret(c));
    (app, enrollment)
}

async fn challenge(app: &TestApp) -> String {
    match app.login("lead-baker", "open sesame, said Ali Baba").await {
        Outcome::TwoFactor(two_factor) => {
            assert_eq!(
                two_factor.methods().collect::<Vec<_>>(),
                vec![pb::TwoFactorMethod::Totp, pb::TwoFactorMethod::RecoveryCode]
            );
            let lifetime = two_factor.expires_at.unwrap().seconds - app.app_now() / 1000;
            assert!(
                (299..=300).contains(&lifetime),
                "challenge lifetime {lifetime}s"
            );
            two_factor.two_factor_id
        }
        other => panic!("expected two_factor, got {other:?}"),
    }
}

#[tokio::test]
async fn a_code_computed_from_the_enrollment_uri_completes_the_login() {
    let (app, uri) = enrolled_app().await;
    let id = challenge(&app).await;
    let code = app.totp_code(&uri, 0);
    let Outcome::Authenticated(auth) = app.second_factor(&id, &code).await else {
        panic!("expected authenticated");
    };
    assert_eq!(auth.user.unwrap().handle, "lead-baker");
    app.verify(&auth.token).await.unwrap();

    // The challenge is spent: it cannot mint a second session.
    let again = app.second_factor(&id, &app.totp_code(&uri, 1)).await;
    assert_eq!(failed_reason(&again), pb::FailureReason::ChallengeExpired);
    app.stop().await;
}

#[tokio::test]
async fn a_code_is_never_accepted_twice() {
    let (app, uri) = enrolled_app().await;
    let code = app.totp_code(&uri, 0);
    let first = challenge(&app).await;
    assert!(matches!(
        app.second_factor(&first, &code).await,
        Outcome::Authenticated(_)
    ));

    let second = challenge(&app).await;
    let replay = app.second_factor(&second, &code).await;
    assert_eq!(failed_reason(&replay), pb::FailureReason::InvalidCode);
    // An older code from inside the skew window is refused too once a newer one was used.
    let older = app.second_factor(&second, &app.totp_code(&uri, -1)).await;
    assert_eq!(failed_reason(&older), pb::FailureReason::InvalidCode);
    // The next step's code is fresh and still works on the same challenge.
    app.clock.advance(Duration::from_secs(30));
    let next = app.second_factor(&second, &app.totp_code(&uri, 0)).await;
    assert!(matches!(next, Outcome::Authenticated(_)), "{next:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_wrong_code_is_rejected_and_attempts_run_out() {
    let (app, uri) = enrolled_app().await;
    let id = challenge(&app).await;
    for _ in 0..5 {
        let wrong = wrong_code(&app, &uri);
        let reply = app.second_factor(&id, &wrong).await;
        assert_eq!(failed_reason(&reply), pb::FailureReason::InvalidCode);
        // Step past the per-challenge backoff: this test is about the attempt limit.
        app.clock.advance(Duration::from_secs(10));
    }
    // Five attempts spent: even the right code cannot revive the challenge.
    let reply = app.second_factor(&id, &app.totp_code(&uri, 0)).await;
    assert_eq!(failed_reason(&reply), pb::FailureReason::ChallengeExpired);
    app.stop().await;
}

/// A code that matches no step of the skew window.
fn wrong_code(app: &TestApp, uri: &str) -> String {
    let window: Vec<String> = (-1..=1).map(|step| app.totp_code(uri, step)).collect();
    (0..1_000_000)
        .map(|n| format!("{n:06}"))
        .find(|code| !window.contains(code))
        .unwrap()
}

#[tokio::test]
async fn an_expired_challenge_is_rejected() {
    let (app, uri) = enrolled_app().await;
    let id = challenge(&app).await;
    app.clock.advance(Duration::from_secs(5 * 60));
    let reply = app.second_factor(&id, &app.totp_code(&uri, 0)).await;
    assert_eq!(failed_reason(&reply), pb::FailureReason::ChallengeExpired);
    app.stop().await;
}

#[tokio::test]
async fn codes_outside_the_skew_window_are_rejected() {
    let (app, uri) = enrolled_app().await;
    let id = challenge(&app).await;
    for offset in [-2, 2] {
        let reply = app.second_factor(&id, &app.totp_code(&uri, offset)).await;
        assert_eq!(
            failed_reason(&reply),
            pb::FailureReason::InvalidCode,
            "offset {offset}"
        );
    }
    let reply = app.second_factor(&id, &app.totp_code(&uri, 1)).await;
    assert!(matches!(reply, Outcome::Authenticated(_)), "{reply:?}");
    app.stop().await;
}

#[tokio::test]
async fn removing_totp_voids_open_challenges_and_restores_password_login() {
    let (app, uri) = enrolled_app().await;
    let id = challenge(&app).await;
    app.app.disable_totp("lead-baker").await.unwrap();
    let reply = app.second_factor(&id, &app.totp_code(&uri, 0)).await;
    assert_eq!(failed_reason(&reply), pb::FailureReason::ChallengeExpired);
    app.token_for("lead-baker", "open sesame, said Ali Baba")
        .await;
    app.stop().await;
}

#[tokio::test]
async fn a_malformed_code_is_invalid_argument() {
    let (app, _uri) = enrolled_app().await;
    let id = challenge(&app).await;
    for (code, message) in [
        ("", "code: must not be empty"),
        (
            "12ab56",
            "code: must be 6 digits, or a recovery code (xxxx-xxxx-xxxx-xxxx)",
        ),
        (
            "abcd-efgh-ijkl-mno1",
            "code: must be 6 digits, or a recovery code (xxxx-xxxx-xxxx-xxxx)",
        ),
    ] {
        let status = app
            .client
            .clone()
            .verify_two_factor(pb::VerifyTwoFactorRequest {
                two_factor_id: id.clone(),
                code: code.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), message);
    }
    app.stop().await;
}

#[tokio::test]
async fn a_recovery_code_completes_a_login_once() {
    let (app, enrollment) = enrolled_app_with_codes().await;
    assert_eq!(enrollment.recovery_codes.len(), 10);
    let code = enrollment.recovery_codes[3].clone();

    // Typed in capitals and without dashes, it still counts.
    let id = challenge(&app).await;
    let typed = code.replace('-', "").to_uppercase();
    let Outcome::Authenticated(auth) = app.second_factor(&id, &typed).await else {
        panic!("expected authenticated");
    };
    app.verify(&auth.token).await.unwrap();

    // Used once, it is refused on a fresh challenge, which stays alive for another code.
    let id = challenge(&app).await;
    let reply = app.second_factor(&id, &code).await;
    assert_eq!(failed_reason(&reply), pb::FailureReason::InvalidCode);
    let other = &enrollment.recovery_codes[4];
    assert!(matches!(
        app.second_factor(&id, other).await,
        Outcome::Authenticated(_)
    ));
    assert_eq!(
        app.store
            .unused_recovery_codes(&enrollment.user_id)
            .await
            .unwrap(),
        8
    );
    app.stop().await;
}

#[tokio::test]
async fn re_enrolling_replaces_the_recovery_codes_and_removing_totp_drops_them() {
    let (app, first) = enrolled_app_with_codes().await;
    let second = app.app.enroll_totp("lead-baker").await.unwrap();
    second
        .recovery_codes
        .iter()
        .for_each(|c| remember_secret(c));

    let id = challenge(&app).await;
    let reply = app.second_factor(&id, &first.recovery_codes[0]).await;
    assert_eq!(failed_reason(&reply), pb::FailureReason::InvalidCode);
    assert!(matches!(
        app.second_factor(&id, &second.recovery_codes[0]).await,
        Outcome::Authenticated(_)
    ));

    app.app.disable_totp("lead-baker").await.unwrap();
    assert_eq!(
        app.store
            .unused_recovery_codes(&first.user_id)
            .await
            .unwrap(),
        0
    );
    app.stop().await;
}

#[tokio::test]
async fn a_recovery_code_of_another_user_is_refused() {
    let (app, baker) = enrolled_app_with_codes().await;
    app.add_user("cashier", "knock knock, who goes there").await;
    let cashier = app.app.enroll_totp("cashier").await.unwrap();
    cashier
        .recovery_codes
        .iter()
        .for_each(|c| remember_secret(c));

    let id = challenge(&app).await;
    let reply = app.second_factor(&id, &cashier.recovery_codes[0]).await;
    assert_eq!(failed_reason(&reply), pb::FailureReason::InvalidCode);
    assert!(matches!(
        app.second_factor(&id, &baker.recovery_codes[0]).await,
        Outcome::Authenticated(_)
    ));
    app.stop().await;
}

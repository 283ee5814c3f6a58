use st_peter_client::{Error, FailureReason, LoginOutcome, TwoFactorMethod};

use crate::helpers::TestServer;

#[tokio::test]
async fn login_verify_lookup_and_logout() {
    let server = TestServer::start().await;
    let baker_id = server
        .add_user("lead-baker", "open sesame, said Ali Baba")
        .await
        .user_id;
    server.app.grant_role("lead-baker", "admin").await.unwrap();
    let client = server.client();

    let LoginOutcome::Authenticated(session) = client
        .login("LEAD-BAKER@bakery.example", "open sesame, said Ali Baba")
        .await
        .unwrap()
    else {
        panic!("expected authenticated");
    };
    assert_eq!(session.user.user_id, baker_id);
    assert_eq!(
        session.user.email.as_deref(),
        Some("lead-baker@bakery.example")
    );
    assert_eq!(session.user.phone, None);
    assert!(
        !format!("{session:?}").contains(&session.token),
        "Debug must not print the token"
    );

    let verified = client.verify_token(&session.token).await.unwrap();
    assert_eq!(verified.user, session.user);
    assert_eq!(verified.roles, vec!["admin"]);
    assert!(verified.has_role("admin"));
    assert_eq!(verified.expires_at, session.expires_at);

    let cashier_id = server
        .add_user("cashier", "knock knock, who goes there")
        .await
        .user_id;
    let found = client
        .lookup_user(&baker_id, &session.token, "cashier@bakery.example")
        .await
        .unwrap();
    assert_eq!(found.user_id, cashier_id);
    assert_eq!(
        client
            .lookup_user(&baker_id, &session.token, "ghost")
            .await
            .unwrap_err(),
        Error::NotFound("user not found".into())
    );
    assert_eq!(
        client
            .lookup_user(&cashier_id, &session.token, "cashier")
            .await
            .unwrap_err(),
        Error::InvalidToken
    );

    client.logout(&session.token).await.unwrap();
    assert_eq!(
        client.verify_token(&session.token).await.unwrap_err(),
        Error::InvalidToken
    );
}

#[tokio::test]
async fn failed_logins_are_outcomes_not_errors() {
    let server = TestServer::start().await;
    server
        .add_user("cashier", "knock knock, who goes there")
        .await;
    let client = server.client();
    let wrong = client.login("cashier", "wrong-password").await.unwrap();
    let unknown = client
        .login("nobody", "knock knock, who goes there")
        .await
        .unwrap();
    assert_eq!(wrong, unknown);
    let LoginOutcome::Failed(failure) = wrong else {
        panic!("expected failed")
    };
    assert_eq!(failure.reason, FailureReason::InvalidCredentials);
    assert_eq!(failure.retry_after, None);
}

#[tokio::test]
async fn two_factor_login() {
    let server = TestServer::start().await;
    server
        .add_user("lead-baker", "open sesame, said Ali Baba")
        .await;
    let uri = server
        .app
        .enroll_totp("lead-baker")
        .await
        .unwrap()
        .otpauth_uri;
    let client = server.client();

    let LoginOutcome::TwoFactor(challenge) = client
        .login("lead-baker", "open sesame, said Ali Baba")
        .await
        .unwrap()
    else {
        panic!("expected two_factor");
    };
    assert_eq!(
        challenge.methods,
        vec![TwoFactorMethod::Totp, TwoFactorMethod::RecoveryCode]
    );
    let wrong = client
        .verify_two_factor(&challenge.two_factor_id, "000000")
        .await
        .unwrap();
    let right_code = code(&server, &uri);
    if right_code != "000000" {
        assert!(
            matches!(wrong, LoginOutcome::Failed(ref f) if f.reason == FailureReason::InvalidCode)
        );
    }
    let LoginOutcome::Authenticated(session) = client
        .verify_two_factor(&challenge.two_factor_id, &right_code)
        .await
        .unwrap()
    else {
        panic!("expected authenticated");
    };
    assert_eq!(
        client
            .verify_token(&session.token)
            .await
            .unwrap()
            .user
            .handle,
        "lead-baker"
    );
}

fn code(server: &TestServer, uri: &str) -> String {
    use st_peter_server::clock::Clock;
    let totp = totp_rs::TOTP::from_url(uri).unwrap();
    totp.generate((server.clock.now_millis() / 1000) as u64)
}

#[tokio::test]
async fn malformed_input_is_invalid_argument_naming_the_field() {
    let server = TestServer::start().await;
    let client = server.client();
    assert_eq!(
        client.login("", "x").await.unwrap_err(),
        Error::InvalidArgument("identifier: must not be empty".into())
    );
    assert_eq!(
        client.verify_token("").await.unwrap_err(),
        Error::InvalidArgument("token: must not be empty".into())
    );
}

#[tokio::test]
async fn invalid_targets_are_refused_at_construction() {
    let err = st_peter_client::Client::connect("not a uri").unwrap_err();
    assert!(matches!(err, Error::InvalidTarget { .. }), "{err:?}");
}

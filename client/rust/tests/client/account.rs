//! `Client::account`: AccountService against the real server, and what its session-ending
//! calls do to this client's cache (checked with the revocation feed off, so that only the
//! client's own eviction can explain a refetch).
use std::time::Duration;

use st_peter_client::{Client, Error, FailureReason, LoginOutcome, TwoFactorMethod};

use crate::helpers::{TestServer, login};

const PASSWORD: &str = "open sesame, said Ali Baba";
const NEW_PASSWORD: &str = "correct horse battery staple";

/// A client that never subscribes and serves cached answers for ten minutes: a cached
/// answer is then dropped only by the client's own eviction.
fn unsubscribed(server: &TestServer) -> Client {
    server
        .client_builder()
        .revocation_feed(false)
        .fallback_ttl(Duration::from_secs(600))
        .build()
        .unwrap()
}

/// `token` is answered valid from the cache: a second verify makes no RPC.
async fn cached_valid(server: &TestServer, client: &Client, token: &str) {
    client.verify_token(token).await.unwrap();
    let before = server.verifies();
    client.verify_token(token).await.unwrap();
    assert_eq!(server.verifies(), before, "expected a cached answer");
}

/// `token` is refused, by an RPC (not from the cache).
async fn refused_by_server(server: &TestServer, client: &Client, token: &str) {
    let before = server.verifies();
    assert_eq!(
        client.verify_token(token).await.unwrap_err(),
        Error::InvalidToken
    );
    assert_eq!(
        server.verifies(),
        before + 1,
        "expected a fresh VerifyToken"
    );
}

fn totp_at(uri: &str, unix_seconds: u64) -> String {
    totp_rs::TOTP::from_url(uri).unwrap().generate(unix_seconds)
}

fn server_seconds(server: &TestServer) -> u64 {
    use st_peter_server::clock::Clock;
    (server.clock.now_millis() / 1000) as u64
}

/// The code the authenticator shows now, by the server's clock.
fn code_now(server: &TestServer, uri: &str) -> String {
    totp_at(uri, server_seconds(server))
}

/// A code that is wrong for the steps around now (the server may accept a step of skew).
fn wrong_code(server: &TestServer, uri: &str) -> String {
    let now = server_seconds(server);
    let near: Vec<String> = [now - 60, now - 30, now, now + 30, now + 60]
        .iter()
        .map(|&t| totp_at(uri, t))
        .collect();
    (0..10)
        .map(|d| d.to_string().repeat(6))
        .find(|c| !near.contains(c))
        .unwrap()
}

#[tokio::test]
async fn change_password_checks_the_current_one_and_the_strength_of_the_new_one() {
    let server = TestServer::start().await;
    server.add_user("lead-baker", PASSWORD).await;
    let client = server.client();
    let token = login(&client, "lead-baker", PASSWORD).await;
    let account = client.account(token.clone());
    assert!(
        !format!("{account:?}").contains(&token),
        "Debug must not print the token"
    );

    let wrong = account
        .change_password("knock knock, who goes there", NEW_PASSWORD, false)
        .await
        .unwrap_err();
    assert!(
        matches!(&wrong, Error::PermissionDenied(m) if m.contains("current_password")),
        "{wrong:?}"
    );
    for weak in ["password1", "knockknock", "short"] {
        let refused = account
            .change_password(PASSWORD, weak, false)
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, Error::InvalidArgument(m) if m.starts_with("new_password")),
            "{weak}: {refused:?}"
        );
    }
    // Nothing changed so far.
    assert!(matches!(
        client.login("lead-baker", PASSWORD).await.unwrap(),
        LoginOutcome::Authenticated(_)
    ));

    assert_eq!(
        account
            .change_password(PASSWORD, NEW_PASSWORD, false)
            .await
            .unwrap(),
        0
    );
    let LoginOutcome::Failed(old) = client.login("lead-baker", PASSWORD).await.unwrap() else {
        panic!("the old password still logs in");
    };
    assert_eq!(old.reason, FailureReason::InvalidCredentials);
    login(&client, "lead-baker", NEW_PASSWORD).await;
    // The caller's own session stays valid.
    client.verify_token(&token).await.unwrap();
}

#[tokio::test]
async fn change_password_can_end_the_other_sessions_and_this_client_forgets_them_at_once() {
    let server = TestServer::start().await;
    server.add_user("lead-baker", PASSWORD).await;
    let client = unsubscribed(&server);
    let mine = login(&client, "lead-baker", PASSWORD).await;
    let other = login(&client, "lead-baker", PASSWORD).await;
    cached_valid(&server, &client, &mine).await;
    cached_valid(&server, &client, &other).await;

    let revoked = client
        .account(mine.clone())
        .change_password(PASSWORD, NEW_PASSWORD, true)
        .await
        .unwrap();
    assert_eq!(revoked, 1);
    refused_by_server(&server, &client, &other).await;
    client.verify_token(&mine).await.unwrap();
}

#[tokio::test]
async fn wrong_current_passwords_are_throttled_like_failed_logins() {
    let server = TestServer::start().await;
    server.add_user("lead-baker", PASSWORD).await;
    let client = server.client();
    let account = client.account(login(&client, "lead-baker", PASSWORD).await);
    let mut denied = 0;
    let limited = loop {
        match account
            .change_password("knock knock, who goes there", NEW_PASSWORD, false)
            .await
        {
            Err(Error::PermissionDenied(_)) => denied += 1,
            Err(Error::RateLimited(message)) => break message,
            other => panic!("after {denied} denials: {other:?}"),
        }
        assert!(denied <= 20, "never rate limited");
    };
    assert!(denied >= 1, "rate limited before any denial");
    assert!(!limited.is_empty());
}

#[tokio::test]
async fn totp_enrollment_recovery_codes_and_removal_as_get_reports_them() {
    let server = TestServer::start().await;
    server.add_user("lead-baker", PASSWORD).await;
    let client = server.client();
    let account = client.account(login(&client, "lead-baker", PASSWORD).await);

    let before = account.get().await.unwrap();
    assert_eq!(before.user.handle, "lead-baker");
    assert_eq!(
        (before.totp_enabled, before.recovery_codes_left),
        (false, 0)
    );
    // Without TOTP there is nothing to disable or regenerate.
    assert!(matches!(
        account.disable_totp(PASSWORD).await.unwrap_err(),
        Error::FailedPrecondition(_)
    ));
    assert!(matches!(
        account
            .regenerate_recovery_codes(PASSWORD)
            .await
            .unwrap_err(),
        Error::FailedPrecondition(_)
    ));

    let enrollment = account.begin_totp_enrollment().await.unwrap();
    let uri = enrollment.otpauth_uri().to_owned();
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    assert!(enrollment.enrollment_id().starts_with("ste_"));
    assert!(enrollment.expires_at() > std::time::SystemTime::UNIX_EPOCH);
    let debug = format!("{enrollment:?}");
    assert!(
        !debug.contains(&uri) && !debug.contains("otpauth:"),
        "{debug}"
    );
    // Not on until confirmed.
    assert!(matches!(
        client.login("lead-baker", PASSWORD).await.unwrap(),
        LoginOutcome::Authenticated(_)
    ));

    let wrong = account
        .confirm_totp_enrollment(
            enrollment.enrollment_id(),
            &wrong_code(&server, &uri),
            false,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&wrong, Error::InvalidArgument(m) if m.starts_with("code")),
        "{wrong:?}"
    );
    let unknown = account
        .confirm_totp_enrollment(
            &format!("ste_{}", "A".repeat(43)),
            &code_now(&server, &uri),
            false,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&unknown, Error::FailedPrecondition(m) if m.starts_with("enrollment_id")),
        "{unknown:?}"
    );

    let malformed = account
        .confirm_totp_enrollment("not-an-enrollment", &code_now(&server, &uri), false)
        .await
        .unwrap_err();
    assert!(
        matches!(&malformed, Error::InvalidArgument(m) if m.starts_with("enrollment_id")),
        "{malformed:?}"
    );

    let code = code_now(&server, &uri);
    let enabled = account
        .confirm_totp_enrollment(enrollment.enrollment_id(), &code, false)
        .await
        .unwrap();
    assert_eq!(enabled.revoked_sessions, 0);
    assert!(!enabled.recovery_codes.is_empty());
    let debug = format!("{enabled:?}");
    assert!(
        enabled.recovery_codes.iter().all(|c| !debug.contains(c)),
        "{debug}"
    );
    assert_eq!(
        totp_state(&account).await,
        (true, enabled.recovery_codes.len() as u32)
    );
    // Confirmed once only.
    assert!(matches!(
        account
            .confirm_totp_enrollment(enrollment.enrollment_id(), &code, false)
            .await
            .unwrap_err(),
        Error::FailedPrecondition(_)
    ));
    assert!(matches!(
        account.begin_totp_enrollment().await.unwrap_err(),
        Error::FailedPrecondition(_)
    ));

    // The login now asks for a second factor; the confirming code is spent.
    let challenge = two_factor(&client).await;
    assert_eq!(
        challenge.methods,
        vec![TwoFactorMethod::Totp, TwoFactorMethod::RecoveryCode]
    );
    let LoginOutcome::Failed(replay) = client
        .verify_two_factor(&challenge.two_factor_id, &code)
        .await
        .unwrap()
    else {
        panic!("the confirming code was accepted again");
    };
    assert_eq!(replay.reason, FailureReason::InvalidCode);
    let recovery = &enabled.recovery_codes[0];
    assert!(matches!(
        client
            .verify_two_factor(&challenge.two_factor_id, recovery)
            .await
            .unwrap(),
        LoginOutcome::Authenticated(_)
    ));

    assert_eq!(
        totp_state(&account).await,
        (true, enabled.recovery_codes.len() as u32 - 1)
    );

    // New recovery codes replace the old ones.
    assert!(matches!(
        account
            .regenerate_recovery_codes("knock knock, who goes there")
            .await
            .unwrap_err(),
        Error::PermissionDenied(_)
    ));
    let fresh = account.regenerate_recovery_codes(PASSWORD).await.unwrap();
    assert!(!fresh.is_empty());
    assert_eq!(totp_state(&account).await, (true, fresh.len() as u32));
    assert!(fresh.iter().all(|c| !enabled.recovery_codes.contains(c)));
    let challenge = two_factor(&client).await;
    assert!(matches!(
        client
            .verify_two_factor(&challenge.two_factor_id, &enabled.recovery_codes[1])
            .await
            .unwrap(),
        LoginOutcome::Failed(_)
    ));
    assert!(matches!(
        client
            .verify_two_factor(&challenge.two_factor_id, &fresh[0])
            .await
            .unwrap(),
        LoginOutcome::Authenticated(_)
    ));

    // Removed, the password alone logs in again.
    assert!(matches!(
        account
            .disable_totp("knock knock, who goes there")
            .await
            .unwrap_err(),
        Error::PermissionDenied(_)
    ));
    account.disable_totp(PASSWORD).await.unwrap();
    assert_eq!(totp_state(&account).await, (false, 0));
    assert!(matches!(
        client.login("lead-baker", PASSWORD).await.unwrap(),
        LoginOutcome::Authenticated(_)
    ));
    assert!(matches!(
        account.disable_totp(PASSWORD).await.unwrap_err(),
        Error::FailedPrecondition(_)
    ));
}

/// What `Account::get` says of TOTP: on or off, and the recovery codes left.
async fn totp_state(account: &st_peter_client::Account) -> (bool, u32) {
    let info = account.get().await.unwrap();
    (info.totp_enabled, info.recovery_codes_left)
}

async fn two_factor(client: &Client) -> st_peter_client::TwoFactorChallenge {
    match client.login("lead-baker", PASSWORD).await.unwrap() {
        LoginOutcome::TwoFactor(challenge) => challenge,
        other => panic!("expected two_factor, got {other:?}"),
    }
}

#[tokio::test]
async fn confirming_totp_can_end_the_sessions_opened_with_the_password_alone() {
    let server = TestServer::start().await;
    server.add_user("lead-baker", PASSWORD).await;
    let client = unsubscribed(&server);
    let mine = login(&client, "lead-baker", PASSWORD).await;
    let other = login(&client, "lead-baker", PASSWORD).await;
    cached_valid(&server, &client, &mine).await;
    cached_valid(&server, &client, &other).await;

    let account = client.account(mine.clone());
    let enrollment = account.begin_totp_enrollment().await.unwrap();
    let code = code_now(&server, enrollment.otpauth_uri());
    let enabled = account
        .confirm_totp_enrollment(enrollment.enrollment_id(), &code, true)
        .await
        .unwrap();
    assert_eq!(enabled.revoked_sessions, 1);
    refused_by_server(&server, &client, &other).await;
    client.verify_token(&mine).await.unwrap();
}

#[tokio::test]
async fn the_qr_code_is_an_svg_of_the_enrollment() {
    let server = TestServer::start().await;
    server.add_user("lead-baker", PASSWORD).await;
    let client = server.client();
    let account = client.account(login(&client, "lead-baker", PASSWORD).await);

    let first = account.begin_totp_enrollment().await.unwrap();
    let svg = first.qr_svg();
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
    assert!(svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("<path"), "no modules drawn");
    assert!(!svg.contains(first.otpauth_uri()));
    assert_eq!(first.qr_svg(), svg, "rendering is deterministic");
    // A new begin replaces the enrollment with a new secret, so another picture.
    let second = account.begin_totp_enrollment().await.unwrap();
    assert_ne!(second.otpauth_uri(), first.otpauth_uri());
    assert_ne!(second.qr_svg(), svg);
}

#[tokio::test]
async fn sessions_are_listed_newest_first_and_revoked_by_id() {
    let server = TestServer::start().await;
    server.add_user("lead-baker", PASSWORD).await;
    server
        .add_user("cashier", "knock knock, who goes there")
        .await;
    let client = unsubscribed(&server);
    let mine = login(&client, "lead-baker", PASSWORD).await;
    server.advance(Duration::from_secs(2));
    let other = login(&client, "lead-baker", PASSWORD).await;
    let account = client.account(mine.clone());

    let sessions = account.list_sessions().await.unwrap();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    assert!(
        sessions[0].created_at > sessions[1].created_at,
        "{sessions:?}"
    );
    assert_eq!(
        sessions.iter().map(|s| s.current).collect::<Vec<_>>(),
        vec![false, true],
        "the older one is this handle's"
    );
    assert!(sessions.iter().all(|s| s.expires_at > s.created_at));
    for session in &sessions {
        assert!(!session.session_id.starts_with("stp_"));
        assert_ne!(session.session_id, mine);
        assert_ne!(session.session_id, other);
    }
    // A session id is not a token.
    assert_eq!(
        client
            .verify_token(&sessions[0].session_id)
            .await
            .unwrap_err(),
        Error::InvalidToken
    );

    // Another user's session, and one that never was, are not found.
    let cashier = client.account(login(&client, "cashier", "knock knock, who goes there").await);
    let cashiers = cashier.list_sessions().await.unwrap();
    assert_eq!(cashiers.len(), 1);
    assert!(cashiers[0].current);
    for id in [
        cashiers[0].session_id.as_str(),
        "00000000-0000-4000-8000-000000000000",
    ] {
        assert!(
            matches!(
                account.revoke_session(id).await.unwrap_err(),
                Error::NotFound(_)
            ),
            "{id}"
        );
    }
    assert_eq!(cashier.list_sessions().await.unwrap().len(), 1);
    let malformed = account.revoke_session("not-a-uuid").await.unwrap_err();
    assert!(
        matches!(&malformed, Error::InvalidArgument(m) if m.starts_with("session_id")),
        "{malformed:?}"
    );

    cached_valid(&server, &client, &mine).await;
    cached_valid(&server, &client, &other).await;
    account
        .revoke_session(&sessions[0].session_id)
        .await
        .unwrap();
    refused_by_server(&server, &client, &other).await;
    client.verify_token(&mine).await.unwrap();
    let left = account.list_sessions().await.unwrap();
    assert_eq!(left.len(), 1);
    assert!(left[0].current);
    // Gone already.
    assert!(matches!(
        account
            .revoke_session(&sessions[0].session_id)
            .await
            .unwrap_err(),
        Error::NotFound(_)
    ));

    // Revoking its own session is a logout, and this client forgets the token at once.
    cached_valid(&server, &client, &mine).await;
    account.revoke_session(&left[0].session_id).await.unwrap();
    refused_by_server(&server, &client, &mine).await;
    assert_eq!(
        account.list_sessions().await.unwrap_err(),
        Error::InvalidToken
    );
}

#[tokio::test]
async fn revoke_other_sessions_keeps_only_the_callers() {
    let server = TestServer::start().await;
    server.add_user("lead-baker", PASSWORD).await;
    let client = unsubscribed(&server);
    let mine = login(&client, "lead-baker", PASSWORD).await;
    let others = [
        login(&client, "lead-baker", PASSWORD).await,
        login(&client, "lead-baker", PASSWORD).await,
    ];
    cached_valid(&server, &client, &mine).await;
    for token in &others {
        cached_valid(&server, &client, token).await;
    }
    let account = client.account(mine.clone());

    assert_eq!(account.revoke_other_sessions().await.unwrap(), 2);
    for token in &others {
        refused_by_server(&server, &client, token).await;
    }
    client.verify_token(&mine).await.unwrap();
    let sessions = account.list_sessions().await.unwrap();
    assert_eq!(sessions.len(), 1);
    assert!(sessions[0].current);
    assert_eq!(account.revoke_other_sessions().await.unwrap(), 0);
}

#[tokio::test]
async fn a_bad_token_is_invalid_token_for_every_call() {
    let server = TestServer::start().await;
    server.add_user("lead-baker", PASSWORD).await;
    let client = server.client();
    let token = login(&client, "lead-baker", PASSWORD).await;
    client.logout(&token).await.unwrap();
    for account in [
        client.account(token),
        client.account(format!("stp_{}", "N".repeat(43))),
        client.account(""),
        // Not even a header value: refused here.
        client.account("stp_\nbad"),
    ] {
        assert_eq!(
            account.list_sessions().await.unwrap_err(),
            Error::InvalidToken,
            "{account:?}"
        );
        assert_eq!(
            account.revoke_other_sessions().await.unwrap_err(),
            Error::InvalidToken
        );
        assert_eq!(account.get().await.unwrap_err(), Error::InvalidToken);
        assert_eq!(
            account
                .change_password(PASSWORD, NEW_PASSWORD, true)
                .await
                .unwrap_err(),
            Error::InvalidToken
        );
    }
    // Still the old password: nothing was changed.
    login(&client, "lead-baker", PASSWORD).await;
}

//! AccountService against the real server: the caller is the bearer session, sensitive
//! changes need the current password, TOTP enrollment is inert until confirmed, and every
//! session-ending change is refused at VerifyToken at once and reaches the revocation log.
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use st_peter_proto::auth::v1 as pb;
use st_peter_proto::auth::v1::account_service_client::AccountServiceClient;
use st_peter_proto::auth::v1::login_response::Result as Outcome;
use st_peter_server::store::Change;

use crate::helpers::{TestApp, admin, failed_reason, remember_secret, spawn_app};

const PASSWORD: &str = "open sesame, said Ali Baba";
const NEW_PASSWORD: &str = "knock knock, who goes there";

/// The generated AccountService client, every call carrying one bearer token.
pub(crate) struct Account {
    client: AccountServiceClient<Channel>,
    token: String,
}

impl Account {
    pub(crate) async fn new(app: &TestApp, token: &str) -> Self {
        let client = AccountServiceClient::connect(format!("http://{}", app.addr))
            .await
            .unwrap();
        Self {
            client,
            token: token.to_owned(),
        }
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.token).parse().unwrap(),
        );
        request
    }

    pub(crate) async fn get(&self) -> Result<pb::GetAccountResponse, Status> {
        let request = self.request(pb::GetAccountRequest {});
        Ok(self.client.clone().get_account(request).await?.into_inner())
    }

    pub(crate) async fn change_password(
        &self,
        current: &str,
        new: &str,
        revoke_others: bool,
    ) -> Result<u32, Status> {
        remember_secret(new);
        let request = self.request(pb::ChangePasswordRequest {
            current_password: current.into(),
            new_password: new.into(),
            revoke_other_sessions: revoke_others,
        });
        Ok(self
            .client
            .clone()
            .change_password(request)
            .await?
            .into_inner()
            .revoked_sessions)
    }

    pub(crate) async fn begin_totp(&self) -> Result<pb::BeginTotpEnrollmentResponse, Status> {
        let request = self.request(pb::BeginTotpEnrollmentRequest {});
        let begun = self
            .client
            .clone()
            .begin_totp_enrollment(request)
            .await?
            .into_inner();
        remember_secret(&begun.enrollment_id);
        remember_secret(&begun.otpauth_uri);
        Ok(begun)
    }

    pub(crate) async fn confirm_totp(
        &self,
        enrollment_id: &str,
        code: &str,
        revoke_others: bool,
    ) -> Result<pb::ConfirmTotpEnrollmentResponse, Status> {
        let request = self.request(pb::ConfirmTotpEnrollmentRequest {
            enrollment_id: enrollment_id.into(),
            code: code.into(),
            revoke_other_sessions: revoke_others,
        });
        let confirmed = self
            .client
            .clone()
            .confirm_totp_enrollment(request)
            .await?
            .into_inner();
        confirmed
            .recovery_codes
            .iter()
            .for_each(|code| remember_secret(code));
        Ok(confirmed)
    }

    pub(crate) async fn disable_totp(&self, current: &str) -> Result<(), Status> {
        let request = self.request(pb::DisableTotpRequest {
            current_password: current.into(),
        });
        self.client.clone().disable_totp(request).await?;
        Ok(())
    }

    pub(crate) async fn regenerate_codes(&self, current: &str) -> Result<Vec<String>, Status> {
        let request = self.request(pb::RegenerateRecoveryCodesRequest {
            current_password: current.into(),
        });
        let codes = self
            .client
            .clone()
            .regenerate_recovery_codes(request)
            .await?
            .into_inner()
            .recovery_codes;
        codes.iter().for_each(|code| remember_secret(code));
        Ok(codes)
    }

    pub(crate) async fn sessions(&self) -> Result<Vec<pb::Session>, Status> {
        let request = self.request(pb::ListSessionsRequest {});
        Ok(self
            .client
            .clone()
            .list_sessions(request)
            .await?
            .into_inner()
            .sessions)
    }

    pub(crate) async fn revoke_session(&self, session_id: &str) -> Result<(), Status> {
        let request = self.request(pb::RevokeSessionRequest {
            session_id: session_id.into(),
        });
        self.client.clone().revoke_session(request).await?;
        Ok(())
    }

    pub(crate) async fn revoke_others(&self) -> Result<u32, Status> {
        let request = self.request(pb::RevokeOtherSessionsRequest {});
        Ok(self
            .client
            .clone()
            .revoke_other_sessions(request)
            .await?
            .into_inner()
            .revoked_sessions)
    }
}

/// An app with `lead-baker` (PASSWORD) and `apprentice`, and an account handle for a fresh
/// session of `lead-baker`.
async fn app_with_baker() -> (TestApp, Account) {
    let app = spawn_app().await;
    app.add_user("lead-baker", PASSWORD).await;
    app.add_user("apprentice", "flour, water and patience")
        .await;
    let token = app.token_for("lead-baker", PASSWORD).await;
    let account = Account::new(&app, &token).await;
    (app, account)
}

fn assert_code(result: Result<impl std::fmt::Debug, Status>, code: Code, says: &str) -> String {
    let status = result.expect_err("expected an error status");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(says),
        "{:?} does not say {says:?}",
        status.message()
    );
    status.message().to_owned()
}

/// The newest revocation log rows, oldest first.
async fn logged_changes(app: &TestApp) -> Vec<Change> {
    app.app_store()
        .revocations_after(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.change)
        .collect()
}

#[tokio::test]
async fn only_a_valid_bearer_session_is_a_caller() {
    let (app, account) = app_with_baker().await;
    let mut client = account.client.clone();

    let bare = client.list_sessions(pb::ListSessionsRequest {}).await;
    assert_code(bare, Code::Unauthenticated, "authorization: missing");

    for header in [
        format!("Basic {}", account.token),
        "Bearer".to_owned(),
        "Bearer    ".to_owned(),
        "Bearer stp_not-a-real-token".to_owned(),
        format!("Bearer {}x", account.token),
    ] {
        let mut request = Request::new(pb::ListSessionsRequest {});
        request
            .metadata_mut()
            .insert("authorization", header.parse().unwrap());
        let status = client.list_sessions(request).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "{header:?}: {status:?}"
        );
    }

    // The scheme in any case, as RFC 7235 has it.
    let mut request = Request::new(pb::ListSessionsRequest {});
    request.metadata_mut().insert(
        "authorization",
        format!("bearer {}", account.token).parse().unwrap(),
    );
    assert_eq!(
        client
            .list_sessions(request)
            .await
            .unwrap()
            .into_inner()
            .sessions
            .len(),
        1
    );

    // A session id names a session; it is no token, here or at VerifyToken.
    let session_id = account.sessions().await.unwrap()[0].session_id.clone();
    let by_id = Account::new(&app, &session_id).await;
    assert_code(
        by_id.sessions().await,
        Code::Unauthenticated,
        "not a valid session",
    );
    assert_eq!(
        app.verify(&session_id).await.unwrap_err().code(),
        Code::Unauthenticated
    );

    // A logged-out token is no caller for any call, sensitive or not.
    app.client
        .clone()
        .logout(pb::LogoutRequest {
            token: account.token.clone(),
        })
        .await
        .unwrap();
    assert_code(
        account.sessions().await,
        Code::Unauthenticated,
        "not a valid session",
    );
    assert_code(
        account.change_password(PASSWORD, NEW_PASSWORD, false).await,
        Code::Unauthenticated,
        "not a valid session",
    );
    assert_code(
        account.begin_totp().await,
        Code::Unauthenticated,
        "not a valid session",
    );
    assert_code(
        account.revoke_others().await,
        Code::Unauthenticated,
        "not a valid session",
    );
    app.stop().await;
}

#[tokio::test]
async fn a_password_change_needs_the_current_password_and_a_strong_new_one() {
    let (app, account) = app_with_baker().await;
    let other = app.token_for("lead-baker", PASSWORD).await;

    assert_code(
        account
            .change_password("not my password", NEW_PASSWORD, false)
            .await,
        Code::PermissionDenied,
        "current_password: is wrong",
    );
    let weak = assert_code(
        account.change_password(PASSWORD, "password1", false).await,
        Code::InvalidArgument,
        "new_password: is too easy to guess",
    );
    assert!(weak.contains("common password"), "{weak}");
    // Built from the user's own handle: weak for them.
    assert_code(
        account
            .change_password(PASSWORD, "lead-baker-2024", false)
            .await,
        Code::InvalidArgument,
        "new_password: is too easy to guess",
    );
    assert_code(
        account.change_password(PASSWORD, "kx7$q", false).await,
        Code::InvalidArgument,
        "new_password: must be at least 8 characters",
    );
    assert_code(
        account.change_password(PASSWORD, PASSWORD, false).await,
        Code::InvalidArgument,
        "new_password: must differ",
    );
    assert_code(
        account.change_password("", NEW_PASSWORD, false).await,
        Code::InvalidArgument,
        "current_password: must not be empty",
    );
    // Nothing was changed by any refusal.
    assert!(matches!(
        app.login("lead-baker", PASSWORD).await,
        Outcome::Authenticated(_)
    ));

    assert_eq!(
        account
            .change_password(PASSWORD, NEW_PASSWORD, false)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        failed_reason(&app.login("lead-baker", PASSWORD).await),
        pb::FailureReason::InvalidCredentials
    );
    assert!(matches!(
        app.login("lead-baker", NEW_PASSWORD).await,
        Outcome::Authenticated(_)
    ));
    // Without revoke_other_sessions every session lives on.
    app.verify(&account.token).await.unwrap();
    app.verify(&other).await.unwrap();

    // With it, every session but the caller's ends, through the revocation log.
    let before = logged_changes(&app).await.len();
    let revoked = account
        .change_password(NEW_PASSWORD, "flour, water, salt and time", true)
        .await
        .unwrap();
    assert_eq!(
        revoked, 3,
        "the other session and the two logins just above"
    );
    assert_eq!(
        app.verify(&other).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    app.verify(&account.token).await.unwrap();
    let user_id = app.app.find_user("lead-baker").await.unwrap().owner.id;
    assert_eq!(
        logged_changes(&app).await[before..],
        [Change::User(user_id)]
    );
    app.stop().await;
}

#[tokio::test]
async fn wrong_current_passwords_count_towards_the_login_throttle() {
    let (app, account) = app_with_baker().await;
    // Five failures are free for an identifier, as at Login; the sixth blocks it.
    for _ in 0..6 {
        assert_code(
            account
                .change_password("not my password", NEW_PASSWORD, false)
                .await,
            Code::PermissionDenied,
            "is wrong",
        );
    }
    assert_code(
        account.change_password(PASSWORD, NEW_PASSWORD, false).await,
        Code::ResourceExhausted,
        "retry after",
    );
    // The same throttle holds at Login, for every identifier of the user.
    assert_eq!(
        failed_reason(&app.login("lead-baker", PASSWORD).await),
        pb::FailureReason::RateLimited
    );
    app.clock.advance(Duration::from_secs(60));
    assert_eq!(
        account
            .change_password(PASSWORD, NEW_PASSWORD, false)
            .await
            .unwrap(),
        0
    );
    app.stop().await;
}

#[tokio::test]
async fn totp_is_inactive_until_confirmed_and_the_confirming_code_is_spent() {
    let (app, account) = app_with_baker().await;
    let begun = account.begin_totp().await.unwrap();
    assert!(begun.enrollment_id.starts_with("ste_"));
    assert!(begun.otpauth_uri.starts_with("otpauth://totp/"));
    assert!(begun.otpauth_uri.contains("lead-baker"));
    let lifetime = begun.expires_at.unwrap().seconds - app.app_now() / 1000;
    assert_eq!(lifetime, 600);
    // Pending: logins still need the password alone.
    assert!(matches!(
        app.login("lead-baker", PASSWORD).await,
        Outcome::Authenticated(_)
    ));

    assert_code(
        account
            .confirm_totp(&begun.enrollment_id, "000000", false)
            .await,
        Code::InvalidArgument,
        "code: does not match",
    );
    assert_code(
        account
            .confirm_totp(&begun.enrollment_id, "12345", false)
            .await,
        Code::InvalidArgument,
        "code: must be 6 digits",
    );
    assert_code(
        account.confirm_totp("ste_nope", "123456", false).await,
        Code::InvalidArgument,
        "enrollment_id: is not an enrollment id",
    );
    let code = app.totp_code(&begun.otpauth_uri, 0);
    let confirmed = account
        .confirm_totp(&begun.enrollment_id, &code, false)
        .await
        .unwrap();
    assert_eq!(confirmed.recovery_codes.len(), 10);
    assert_eq!(confirmed.revoked_sessions, 0);

    // Replayed confirmation: the enrollment is spent.
    assert_code(
        account
            .confirm_totp(&begun.enrollment_id, &code, false)
            .await,
        Code::FailedPrecondition,
        "enrollment_id: unknown, expired",
    );
    assert_code(
        account.begin_totp().await,
        Code::FailedPrecondition,
        "already enrolled",
    );

    // Active now, and the code that confirmed cannot be replayed at login.
    let Outcome::TwoFactor(challenge) = app.login("lead-baker", PASSWORD).await else {
        panic!("expected a two-factor challenge");
    };
    let replay = app.second_factor(&challenge.two_factor_id, &code).await;
    assert_eq!(failed_reason(&replay), pb::FailureReason::InvalidCode);
    app.clock.advance(Duration::from_secs(30));
    let fresh = app.totp_code(&begun.otpauth_uri, 0);
    let done = app.second_factor(&challenge.two_factor_id, &fresh).await;
    assert!(matches!(done, Outcome::Authenticated(_)), "{done:?}");
    // A recovery code from the confirmation works once.
    let Outcome::TwoFactor(challenge) = app.login("lead-baker", PASSWORD).await else {
        panic!("expected a two-factor challenge");
    };
    let by_code = app
        .second_factor(&challenge.two_factor_id, &confirmed.recovery_codes[0])
        .await;
    assert!(matches!(by_code, Outcome::Authenticated(_)), "{by_code:?}");
    app.stop().await;
}

#[tokio::test]
async fn an_enrollment_expires_runs_out_of_attempts_and_is_replaced_by_a_new_one() {
    let (app, account) = app_with_baker().await;

    // Expired: a right code for now is too late.
    let expired = account.begin_totp().await.unwrap();
    app.clock.advance(Duration::from_secs(601));
    let code = app.totp_code(&expired.otpauth_uri, 0);
    assert_code(
        account
            .confirm_totp(&expired.enrollment_id, &code, false)
            .await,
        Code::FailedPrecondition,
        "expired",
    );

    // Replaced: the first enrollment's id dies with it.
    let first = account.begin_totp().await.unwrap();
    let second = account.begin_totp().await.unwrap();
    let code = app.totp_code(&first.otpauth_uri, 0);
    assert_code(
        account
            .confirm_totp(&first.enrollment_id, &code, false)
            .await,
        Code::FailedPrecondition,
        "unknown",
    );

    // Another user cannot confirm it.
    let apprentice = app
        .token_for("apprentice", "flour, water and patience")
        .await;
    let apprentice = Account::new(&app, &apprentice).await;
    let code = app.totp_code(&second.otpauth_uri, 0);
    assert_code(
        apprentice
            .confirm_totp(&second.enrollment_id, &code, false)
            .await,
        Code::FailedPrecondition,
        "unknown",
    );

    // Out of attempts: after five wrong codes even the right one is too late.
    for _ in 0..5 {
        assert_code(
            account
                .confirm_totp(&second.enrollment_id, "000000", false)
                .await,
            Code::InvalidArgument,
            "does not match",
        );
    }
    assert_code(
        account
            .confirm_totp(&second.enrollment_id, &code, false)
            .await,
        Code::FailedPrecondition,
        "out of attempts",
    );
    // None of it switched TOTP on.
    assert!(matches!(
        app.login("lead-baker", PASSWORD).await,
        Outcome::Authenticated(_)
    ));
    app.stop().await;
}

#[tokio::test]
async fn confirming_totp_can_end_the_sessions_opened_with_the_password_alone() {
    let (app, account) = app_with_baker().await;
    let other = app.token_for("lead-baker", PASSWORD).await;
    let begun = account.begin_totp().await.unwrap();
    let code = app.totp_code(&begun.otpauth_uri, 0);
    let confirmed = account
        .confirm_totp(&begun.enrollment_id, &code, true)
        .await
        .unwrap();
    assert_eq!(confirmed.revoked_sessions, 1);
    assert_eq!(
        app.verify(&other).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    app.verify(&account.token).await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn disabling_totp_and_new_recovery_codes_need_the_current_password() {
    let (app, account) = app_with_baker().await;
    let before = account.get().await.unwrap();
    assert_eq!(before.user.as_ref().unwrap().handle, "lead-baker");
    assert!(!before.totp_enabled);
    assert_eq!(before.recovery_codes_left, 0);
    assert_code(
        account.disable_totp(PASSWORD).await,
        Code::FailedPrecondition,
        "not enrolled",
    );
    assert_code(
        account.regenerate_codes(PASSWORD).await,
        Code::FailedPrecondition,
        "not enrolled",
    );
    let begun = account.begin_totp().await.unwrap();
    let first = account
        .confirm_totp(
            &begun.enrollment_id,
            &app.totp_code(&begun.otpauth_uri, 0),
            false,
        )
        .await
        .unwrap()
        .recovery_codes;

    assert_code(
        account.regenerate_codes("wrong password").await,
        Code::PermissionDenied,
        "is wrong",
    );
    let second = account.regenerate_codes(PASSWORD).await.unwrap();
    assert_eq!(second.len(), 10);
    assert!(second.iter().all(|code| !first.contains(code)));
    let Outcome::TwoFactor(challenge) = app.login("lead-baker", PASSWORD).await else {
        panic!("expected a two-factor challenge");
    };
    let old = app.second_factor(&challenge.two_factor_id, &first[0]).await;
    assert_eq!(failed_reason(&old), pb::FailureReason::InvalidCode);
    let new = app
        .second_factor(&challenge.two_factor_id, &second[0])
        .await;
    assert!(matches!(new, Outcome::Authenticated(_)), "{new:?}");
    let enrolled = account.get().await.unwrap();
    assert!(enrolled.totp_enabled);
    assert_eq!(enrolled.recovery_codes_left, 9, "one of ten was just used");

    assert_code(
        account.disable_totp("wrong password").await,
        Code::PermissionDenied,
        "is wrong",
    );
    assert!(matches!(
        app.login("lead-baker", PASSWORD).await,
        Outcome::TwoFactor(_)
    ));
    account.disable_totp(PASSWORD).await.unwrap();
    assert!(matches!(
        app.login("lead-baker", PASSWORD).await,
        Outcome::Authenticated(_)
    ));
    assert!(!account.get().await.unwrap().totp_enabled);
    // TOTP can be enrolled again from scratch.
    account.begin_totp().await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn sessions_are_listed_with_the_callers_marked_and_revoked_by_id() {
    let (app, account) = app_with_baker().await;
    app.clock.advance(Duration::from_secs(10));
    let second = app.token_for("lead-baker", PASSWORD).await;
    app.clock.advance(Duration::from_secs(10));
    let third = app.token_for("lead-baker", PASSWORD).await;
    let apprentice_token = app
        .token_for("apprentice", "flour, water and patience")
        .await;
    let apprentice = Account::new(&app, &apprentice_token).await;

    // Seen: the second session's token is verified a minute later.
    app.clock.advance(Duration::from_secs(60));
    app.verify(&second).await.unwrap();
    let seen_at = app.app_now() / 1000;

    let listed = Account::new(&app, &third).await.sessions().await.unwrap();
    assert_eq!(listed.len(), 3, "{listed:?}");
    let created: Vec<i64> = listed
        .iter()
        .map(|s| s.created_at.unwrap().seconds)
        .collect();
    assert!(
        created.windows(2).all(|pair| pair[0] > pair[1]),
        "newest first: {created:?}"
    );
    assert_eq!(
        listed.iter().map(|s| s.current).collect::<Vec<_>>(),
        [true, false, false]
    );
    assert_eq!(listed[1].last_seen_at.unwrap().seconds, seen_at);
    assert!(
        listed[0].last_seen_at.is_some(),
        "the caller's own session was just seen"
    );
    let ttl = listed[0].expires_at.unwrap().seconds - listed[0].created_at.unwrap().seconds;
    assert_eq!(ttl, 24 * 60 * 60);
    let (second_id, first_id) = (listed[1].session_id.clone(), listed[2].session_id.clone());

    // Another user's session is not found, and lives on.
    let apprentice_id = apprentice.sessions().await.unwrap()[0].session_id.clone();
    assert_code(
        account.revoke_session(&apprentice_id).await,
        Code::NotFound,
        "session not found",
    );
    app.verify(&apprentice_token).await.unwrap();
    assert_code(
        account.revoke_session("not-a-uuid").await,
        Code::InvalidArgument,
        "session_id:",
    );
    assert_code(
        account.revoke_session("").await,
        Code::InvalidArgument,
        "must not be empty",
    );

    // Revoked by id: refused at once, through the log, and gone from the list.
    let before = logged_changes(&app).await.len();
    account.revoke_session(&second_id).await.unwrap();
    assert_eq!(
        app.verify(&second).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let logged = logged_changes(&app).await;
    assert!(
        matches!(logged[before..], [Change::Token(hash)] if hash == st_peter_server::secrets::token::hash(&second)),
        "{logged:?}"
    );
    assert_code(
        account.revoke_session(&second_id).await,
        Code::NotFound,
        "session not found",
    );
    let left: Vec<String> = account
        .sessions()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.session_id)
        .collect();
    assert_eq!(left.len(), 2);
    assert!(!left.contains(&second_id));

    // Revoking one's own session by id is a logout.
    assert_eq!(listed[2].session_id, first_id);
    account.revoke_session(&first_id).await.unwrap();
    assert_eq!(
        app.verify(&account.token).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    app.stop().await;
}

#[tokio::test]
async fn revoking_the_other_sessions_keeps_only_the_callers() {
    let (app, account) = app_with_baker().await;
    let others = [
        app.token_for("lead-baker", PASSWORD).await,
        app.token_for("lead-baker", PASSWORD).await,
    ];
    let apprentice = app
        .token_for("apprentice", "flour, water and patience")
        .await;
    assert_eq!(account.revoke_others().await.unwrap(), 2);
    for token in &others {
        assert_eq!(
            app.verify(token).await.unwrap_err().code(),
            Code::Unauthenticated
        );
    }
    app.verify(&account.token).await.unwrap();
    app.verify(&apprentice).await.unwrap();
    let listed = account.sessions().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].current);
    // Nothing left to end: nothing logged.
    let before = logged_changes(&app).await.len();
    assert_eq!(account.revoke_others().await.unwrap(), 0);
    assert_eq!(logged_changes(&app).await.len(), before);
    app.stop().await;
}

#[tokio::test]
async fn every_account_change_is_an_audit_event() {
    let (app, account) = app_with_baker().await;
    let user_id = app.app.find_user("lead-baker").await.unwrap().owner.id;
    let _ = account
        .change_password("wrong password", NEW_PASSWORD, false)
        .await;
    account
        .change_password(PASSWORD, NEW_PASSWORD, false)
        .await
        .unwrap();
    let begun = account.begin_totp().await.unwrap();
    account
        .confirm_totp(
            &begun.enrollment_id,
            &app.totp_code(&begun.otpauth_uri, 0),
            false,
        )
        .await
        .unwrap();
    account.regenerate_codes(NEW_PASSWORD).await.unwrap();
    account.disable_totp(NEW_PASSWORD).await.unwrap();
    account.revoke_others().await.unwrap();
    let logs = crate::helpers::logs();
    for (event, outcome) in [
        ("password_change", "wrong_password"),
        ("password_change", "changed"),
        ("totp_enrollment", "begun"),
        ("totp_enrollment", "confirmed"),
        ("recovery_codes", "regenerated"),
        ("totp_disable", "disabled"),
        ("revoke", "revoked_others"),
    ] {
        assert!(
            logs.lines().any(|line| line.contains("audit")
                && line.contains(&format!("event=\"{event}\""))
                && line.contains(&format!("outcome=\"{outcome}\""))
                && line.contains(&user_id)),
            "no audit line for {event}/{outcome}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn the_admin_cli_applies_the_strength_rule_and_manages_passwords_codes_and_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let url = crate::helpers::database_url(dir.path());
    let weak = std::process::Command::new(crate::helpers::binary())
        .args([
            "--database-url",
            &url,
            "user",
            "add",
            "--handle",
            "cashier",
            "--password-env",
            "CASHIER_PASSWORD",
        ])
        .envs(crate::helpers::backend_env(&url))
        .env("CASHIER_PASSWORD", "cashier1")
        .output()
        .unwrap();
    assert!(!weak.status.success());
    let stderr = String::from_utf8_lossy(&weak.stderr);
    assert!(
        stderr.contains("password: is too easy to guess"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("cashier1"),
        "the password must not be echoed: {stderr}"
    );

    admin(
        &url,
        &["user", "add", "--handle", "cashier", "--password-stdin"],
        "till roll and a pencil\n",
    );
    remember_secret("till roll and a pencil");
    let refused = std::process::Command::new(crate::helpers::binary())
        .args([
            "--database-url",
            &url,
            "user",
            "password",
            "cashier",
            "--password-stdin",
        ])
        .envs(crate::helpers::backend_env(&url))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!refused.status.success(), "an empty password is refused");

    let server = crate::helpers::start_server(&url);
    let mut client = server.grpc_client().await;
    let token = crate::helpers::token(&mut client, "cashier", "till roll and a pencil").await;
    let listed: serde_json::Value = serde_json::from_str(&admin(
        &url,
        &["--json", "session", "list", "--user", "cashier"],
        "",
    ))
    .unwrap();
    let session_id = listed[0]["session_id"].as_str().unwrap().to_owned();
    assert!(listed[0]["current"] == false);
    admin(&url, &["session", "revoke", "--id", &session_id], "");
    crate::helpers::refused_within(&mut client, &token, crate::helpers::REVOCATION_BOUND).await;

    admin(
        &url,
        &[
            "user",
            "password",
            "cashier",
            "--password-stdin",
            "--revoke-sessions",
        ],
        "paper bags for the rye loaves\n",
    );
    remember_secret("paper bags for the rye loaves");
    crate::helpers::token(&mut client, "cashier", "paper bags for the rye loaves").await;

    let enrolled: serde_json::Value = serde_json::from_str(&admin(
        &url,
        &["--json", "user", "totp", "enroll", "cashier"],
        "",
    ))
    .unwrap();
    let first: Vec<String> = serde_json::from_value(enrolled["recovery_codes"].clone()).unwrap();
    let again: serde_json::Value = serde_json::from_str(&admin(
        &url,
        &["--json", "user", "totp", "recovery-codes", "cashier"],
        "",
    ))
    .unwrap();
    let second: Vec<String> = serde_json::from_value(again["recovery_codes"].clone()).unwrap();
    first
        .iter()
        .chain(&second)
        .for_each(|code| remember_secret(code));
    assert_eq!(second.len(), 10);
    assert!(second.iter().all(|code| !first.contains(code)));
    drop(server);
}

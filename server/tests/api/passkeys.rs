//! Passkeys (WebAuthn) against the real server, with `st_peter_testkit::SoftAuthenticator`
//! in the browser's place: registration, discoverable and named sign-in, a passkey as the
//! second factor of a password login, and each way an assertion is refused (replay, wrong
//! origin, cloned counter, no user verification, removed passkey, disabled user, expired
//! or spent ceremonies, throttles). In-process (on PostgreSQL too when the suite runs there),
//! through the real binary with its flags, and across two replicas on PostgreSQL.
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value as Json;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use st_peter_proto::auth::v1 as pb;
use st_peter_proto::auth::v1::account_service_client::AccountServiceClient;
use st_peter_proto::auth::v1::login_response::Result as Outcome;
use st_peter_server::domain::app::Settings;
use st_peter_server::domain::passkeys::WebauthnSettings;
use st_peter_testkit::SoftAuthenticator;

use crate::helpers::{
    Client, TestApp, add_user_with_cli, admin, failed_reason, login, remember_secret, retry_after,
    secret_appears, spawn_app, spawn_app_with, start_server_with, test_settings, verify,
};

const PASSWORD: &str = "open sesame, said Ali Baba";
/// The page the in-process server's passkeys are for (RP id `localhost`).
const ORIGIN: &str = "https://localhost";
/// A subdomain page: the browser lets it claim the RP id, the server does not know it.
const EVIL_ORIGIN: &str = "https://evil.localhost";

fn passkey_settings() -> Settings {
    Settings {
        webauthn: Some(WebauthnSettings {
            rp_id: "localhost".into(),
            origins: vec![ORIGIN.into()],
        }),
        ..test_settings()
    }
}

async fn passkey_app() -> TestApp {
    spawn_app_with(passkey_settings()).await
}

/// A signed-in user's AccountService: the generated client, every call with the bearer.
struct Me {
    client: AccountServiceClient<Channel>,
    token: String,
}

impl Me {
    async fn connect(target: String, token: &str) -> Self {
        let client = AccountServiceClient::connect(target).await.unwrap();
        Self {
            client,
            token: token.to_owned(),
        }
    }

    /// Logs `handle` in with the password alone (no passkey yet) on the in-process server.
    async fn signed_in(app: &TestApp, handle: &str) -> Self {
        let token = app.token_for(handle, PASSWORD).await;
        Self::connect(app.target(), &token).await
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.token).parse().unwrap(),
        );
        request
    }

    async fn begin_registration(
        &self,
        password: &str,
    ) -> Result<pb::BeginPasskeyRegistrationResponse, Status> {
        let request = self.request(pb::BeginPasskeyRegistrationRequest {
            current_password: password.into(),
        });
        let begun = self
            .client
            .clone()
            .begin_passkey_registration(request)
            .await?
            .into_inner();
        remember_secret(&begun.registration_id);
        Ok(begun)
    }

    async fn finish_registration(
        &self,
        registration_id: &str,
        credential_json: &str,
        name: &str,
    ) -> Result<pb::Passkey, Status> {
        let request = self.request(pb::FinishPasskeyRegistrationRequest {
            registration_id: registration_id.into(),
            credential_json: credential_json.into(),
            name: name.into(),
        });
        let finished = self
            .client
            .clone()
            .finish_passkey_registration(request)
            .await?
            .into_inner();
        Ok(finished.passkey.unwrap())
    }

    /// Begin, the authenticator's `create` on a page of `origin`, Finish.
    async fn register(
        &self,
        authenticator: &mut SoftAuthenticator,
        origin: &str,
        name: &str,
    ) -> Result<pb::Passkey, Status> {
        let begun = self.begin_registration(PASSWORD).await?;
        let credential = authenticator.create(&begun.options_json, origin).unwrap();
        self.finish_registration(&begun.registration_id, &credential, name)
            .await
    }

    async fn passkeys(&self) -> Vec<pb::Passkey> {
        let request = self.request(pb::ListPasskeysRequest {});
        let listed = self.client.clone().list_passkeys(request).await.unwrap();
        listed.into_inner().passkeys
    }

    async fn remove(&self, passkey_id: &str, password: &str) -> Result<(), Status> {
        let request = self.request(pb::RemovePasskeyRequest {
            passkey_id: passkey_id.into(),
            current_password: password.into(),
        });
        self.client.clone().remove_passkey(request).await?;
        Ok(())
    }

    async fn account(&self) -> pb::GetAccountResponse {
        let request = self.request(pb::GetAccountRequest {});
        self.client
            .clone()
            .get_account(request)
            .await
            .unwrap()
            .into_inner()
    }
}

async fn begin_login(
    client: &mut Client,
    identifier: &str,
    two_factor_id: &str,
) -> Result<pb::BeginPasskeyLoginResponse, Status> {
    let begun = client
        .begin_passkey_login(pb::BeginPasskeyLoginRequest {
            identifier: identifier.into(),
            two_factor_id: two_factor_id.into(),
        })
        .await?
        .into_inner();
    remember_secret(&begun.challenge_id);
    Ok(begun)
}

async fn finish_login(
    client: &mut Client,
    challenge_id: &str,
    credential_json: &str,
) -> Result<Outcome, Status> {
    let outcome = client
        .finish_passkey_login(pb::FinishPasskeyLoginRequest {
            challenge_id: challenge_id.into(),
            credential_json: credential_json.into(),
        })
        .await?
        .into_inner()
        .result
        .unwrap();
    if let Outcome::Authenticated(session) = &outcome {
        remember_secret(&session.token);
    }
    Ok(outcome)
}

/// A whole passkey sign-in on a page of `origin`: by `identifier`, or discoverable when it
/// is empty.
async fn sign_in(
    client: &mut Client,
    authenticator: &mut SoftAuthenticator,
    identifier: &str,
    origin: &str,
) -> Outcome {
    let begun = begin_login(client, identifier, "").await.unwrap();
    let assertion = authenticator.get(&begun.options_json, origin).unwrap();
    finish_login(client, &begun.challenge_id, &assertion)
        .await
        .unwrap()
}

fn token_of(outcome: Outcome) -> String {
    match outcome {
        Outcome::Authenticated(session) => session.token,
        other => panic!("expected authenticated, got {other:?}"),
    }
}

fn public_key(options_json: &str) -> Json {
    let options: Json = serde_json::from_str(options_json).unwrap();
    options["publicKey"].clone()
}

fn assert_status(result: Result<impl std::fmt::Debug, Status>, code: Code, naming: &str) {
    let status = result.expect_err("expected an error status");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(status.message().contains(naming), "{status:?}");
}

/// A user with one passkey on `authenticator`; answers the user's id and AccountService.
async fn user_with_passkey(
    app: &TestApp,
    handle: &str,
    authenticator: &mut SoftAuthenticator,
) -> (String, Me) {
    let user = app.add_user(handle, PASSWORD).await;
    let me = Me::signed_in(app, handle).await;
    me.register(authenticator, ORIGIN, "work laptop")
        .await
        .unwrap();
    (user.user_id, me)
}

#[tokio::test]
async fn a_registered_passkey_signs_its_user_in_discoverably_and_by_identifier() {
    let app = passkey_app().await;
    let user = app.add_user("lead-baker", PASSWORD).await;
    let me = Me::signed_in(&app, "lead-baker").await;
    let mut authenticator = SoftAuthenticator::new();

    let begun = me.begin_registration(PASSWORD).await.unwrap();
    let registration_id = begun.registration_id.clone();
    assert!(begun.registration_id.starts_with("stw_"));
    assert_eq!(begun.registration_id.len(), 4 + 43);
    let options = public_key(&begun.options_json);
    assert_eq!(options["rp"]["id"], "localhost");
    assert_eq!(
        options["authenticatorSelection"]["residentKey"], "preferred",
        "{options}"
    );
    assert_eq!(
        options["authenticatorSelection"]["userVerification"],
        "required"
    );
    let user_handle = URL_SAFE_NO_PAD
        .decode(options["user"]["id"].as_str().unwrap())
        .unwrap();
    let user_uuid = uuid::Uuid::parse_str(&user.user_id).unwrap();
    assert_eq!(
        user_handle,
        user_uuid.as_bytes(),
        "the user handle is the id"
    );
    assert_eq!(options["user"]["name"], "lead-baker");
    let credential = authenticator.create(&begun.options_json, ORIGIN).unwrap();
    let registered = me
        .finish_registration(&begun.registration_id, &credential, "  work laptop ")
        .await
        .unwrap();
    assert_eq!(registered.name, "work laptop");
    assert_eq!(registered.created_at.unwrap().seconds, app.app_now() / 1000);
    assert!(registered.last_used_at.is_none());
    uuid::Uuid::parse_str(&registered.passkey_id).unwrap();
    assert_eq!(me.passkeys().await, vec![registered.clone()]);
    assert_eq!(me.account().await.passkeys, 1);

    // Discoverable: no identifier, no allowCredentials; the user handle names the user.
    // An identifier of nobody with a passkey gets the same options.
    let mut client = app.client.clone();
    app.add_user("apprentice", PASSWORD).await;
    for identifier in ["apprentice", "nobody"] {
        let begun = begin_login(&mut client, identifier, "").await.unwrap();
        let options = public_key(&begun.options_json);
        assert_eq!(
            options["allowCredentials"],
            serde_json::json!([]),
            "{options}"
        );
    }
    app.clock.advance(Duration::from_secs(60));
    let begun = begin_login(&mut client, "", "").await.unwrap();
    let challenge_id = begun.challenge_id.clone();
    assert!(begun.challenge_id.starts_with("stw_"));
    let options = public_key(&begun.options_json);
    assert_eq!(options["allowCredentials"], serde_json::json!([]));
    assert_eq!(options["userVerification"], "required");
    assert_eq!(options["rpId"], "localhost");
    let assertion = authenticator.get(&begun.options_json, ORIGIN).unwrap();
    let outcome = finish_login(&mut client, &begun.challenge_id, &assertion)
        .await
        .unwrap();
    let Outcome::Authenticated(session) = outcome else {
        panic!("expected authenticated, got {outcome:?}");
    };
    assert_eq!(session.user.unwrap().user_id, user.user_id);
    let verified = app.verify(&session.token).await.unwrap();
    assert_eq!(verified.user.unwrap().handle, "lead-baker");
    let used_at = app.app_now() / 1000;
    let listed = me.passkeys().await;
    assert_eq!(listed[0].last_used_at.unwrap().seconds, used_at);
    assert_eq!(listed[0].created_at, registered.created_at);

    // By identifier: the options name the user's passkey.
    app.clock.advance(Duration::from_secs(60));
    let begun = begin_login(&mut client, "lead-baker", "").await.unwrap();
    let options = public_key(&begun.options_json);
    let allowed = options["allowCredentials"].as_array().unwrap();
    assert_eq!(allowed.len(), 1, "{options}");
    assert_eq!(allowed[0]["id"], authenticator.credential_ids()[0].as_str());
    let assertion = authenticator.get(&begun.options_json, ORIGIN).unwrap();
    let token = token_of(
        finish_login(&mut client, &begun.challenge_id, &assertion)
            .await
            .unwrap(),
    );
    app.verify(&token).await.unwrap();
    let listed = me.passkeys().await;
    assert_eq!(listed[0].last_used_at.unwrap().seconds, used_at + 60);

    // A second registration excludes the first passkey: the same authenticator refuses
    // it, another one registers, listed oldest first.
    let begun = me.begin_registration(PASSWORD).await.unwrap();
    let excluded = &public_key(&begun.options_json)["excludeCredentials"];
    assert_eq!(
        excluded[0]["id"],
        authenticator.credential_ids()[0].as_str()
    );
    let refused = authenticator.create(&begun.options_json, ORIGIN);
    assert!(refused.is_err());
    let mut phone = SoftAuthenticator::new();
    let credential = phone.create(&begun.options_json, ORIGIN).unwrap();
    me.finish_registration(&begun.registration_id, &credential, "phone")
        .await
        .unwrap();
    let names: Vec<_> = me.passkeys().await.into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["work laptop", "phone"]);
    assert_eq!(me.account().await.passkeys, 2);
    token_of(sign_in(&mut client, &mut phone, "lead-baker", ORIGIN).await);

    // Ceremony ids and the sessions they gave are secrets: no log line holds one.
    let logs = crate::helpers::logs();
    for secret in [&registration_id, &challenge_id, &session.token, &token] {
        assert!(!secret_appears(&logs, secret), "{secret} is in the logs");
    }
    app.stop().await;
}

#[tokio::test]
async fn registration_takes_the_current_password_and_a_name() {
    let app = passkey_app().await;
    app.add_user("lead-baker", PASSWORD).await;
    let me = Me::signed_in(&app, "lead-baker").await;
    assert_status(
        me.begin_registration("not my password").await,
        Code::PermissionDenied,
        "",
    );
    let nobody = Me::connect(app.target(), "sts_not-a-token").await;
    assert_eq!(
        nobody
            .begin_registration(PASSWORD)
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );

    let mut authenticator = SoftAuthenticator::new();
    let begun = me.begin_registration(PASSWORD).await.unwrap();
    let credential = authenticator.create(&begun.options_json, ORIGIN).unwrap();
    for bad_name in ["", "   ", &"x".repeat(101), "line\nbreak"] {
        assert_status(
            me.finish_registration(&begun.registration_id, &credential, bad_name)
                .await,
            Code::InvalidArgument,
            "name",
        );
    }
    // Another user cannot finish it.
    app.add_user("apprentice", PASSWORD).await;
    let other = Me::signed_in(&app, "apprentice").await;
    assert_status(
        other
            .finish_registration(&begun.registration_id, &credential, "mine now")
            .await,
        Code::FailedPrecondition,
        "registration_id",
    );
    assert!(other.passkeys().await.is_empty());
    assert!(me.passkeys().await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_replayed_assertion_is_refused() {
    let app = passkey_app().await;
    let mut authenticator = SoftAuthenticator::new();
    user_with_passkey(&app, "lead-baker", &mut authenticator).await;
    let mut client = app.client.clone();
    let begun = begin_login(&mut client, "", "").await.unwrap();
    let assertion = authenticator.get(&begun.options_json, ORIGIN).unwrap();
    token_of(
        finish_login(&mut client, &begun.challenge_id, &assertion)
            .await
            .unwrap(),
    );

    // The same challenge again: it was spent.
    let again = finish_login(&mut client, &begun.challenge_id, &assertion)
        .await
        .unwrap();
    assert_eq!(failed_reason(&again), pb::FailureReason::ChallengeExpired);
    // The same assertion against a fresh challenge: it signs another challenge.
    for identifier in ["", "lead-baker"] {
        let fresh = begin_login(&mut client, identifier, "").await.unwrap();
        let replayed = finish_login(&mut client, &fresh.challenge_id, &assertion)
            .await
            .unwrap();
        assert_eq!(
            failed_reason(&replayed),
            pb::FailureReason::InvalidCredentials
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_page_of_another_origin_neither_registers_nor_signs_in() {
    let app = passkey_app().await;
    app.add_user("lead-baker", PASSWORD).await;
    let me = Me::signed_in(&app, "lead-baker").await;
    let mut authenticator = SoftAuthenticator::new();
    let begun = me.begin_registration(PASSWORD).await.unwrap();
    let credential = authenticator
        .create(&begun.options_json, EVIL_ORIGIN)
        .unwrap();
    assert_status(
        me.finish_registration(&begun.registration_id, &credential, "evil")
            .await,
        Code::InvalidArgument,
        "credential_json",
    );
    // The registration was spent by that answer.
    let mut other = SoftAuthenticator::new();
    let good = other.create(&begun.options_json, ORIGIN).unwrap();
    assert_status(
        me.finish_registration(&begun.registration_id, &good, "laptop")
            .await,
        Code::FailedPrecondition,
        "registration_id",
    );
    assert!(me.passkeys().await.is_empty());

    me.register(&mut authenticator, ORIGIN, "laptop")
        .await
        .unwrap();
    let mut client = app.client.clone();
    for identifier in ["", "lead-baker"] {
        let outcome = sign_in(&mut client, &mut authenticator, identifier, EVIL_ORIGIN).await;
        assert_eq!(
            failed_reason(&outcome),
            pb::FailureReason::InvalidCredentials
        );
    }
    token_of(sign_in(&mut client, &mut authenticator, "", ORIGIN).await);
    app.stop().await;
}

#[tokio::test]
async fn a_cloned_authenticator_is_caught_by_its_counter() {
    let app = passkey_app().await;
    let mut authenticator = SoftAuthenticator::new();
    user_with_passkey(&app, "lead-baker", &mut authenticator).await;
    let mut client = app.client.clone();
    token_of(sign_in(&mut client, &mut authenticator, "", ORIGIN).await);

    let mut clone = authenticator.clone();
    token_of(sign_in(&mut client, &mut authenticator, "", ORIGIN).await);
    // The clone's counter (2) did not move past the stored one (2).
    let outcome = sign_in(&mut client, &mut clone, "lead-baker", ORIGIN).await;
    assert_eq!(
        failed_reason(&outcome),
        pb::FailureReason::InvalidCredentials
    );
    // The original goes on counting.
    token_of(sign_in(&mut client, &mut authenticator, "lead-baker", ORIGIN).await);

    // A clone that began a named sign-in before the original's next one: its counter is
    // past the one the challenge's options were made with, not past the one stored since.
    let mut clone = authenticator.clone();
    let begun = begin_login(&mut client, "lead-baker", "").await.unwrap();
    token_of(sign_in(&mut client, &mut authenticator, "", ORIGIN).await);
    let assertion = clone.get(&begun.options_json, ORIGIN).unwrap();
    let outcome = finish_login(&mut client, &begun.challenge_id, &assertion)
        .await
        .unwrap();
    assert_eq!(
        failed_reason(&outcome),
        pb::FailureReason::InvalidCredentials
    );
    app.stop().await;
}

#[tokio::test]
async fn an_authenticator_that_does_not_verify_its_user_is_refused() {
    let app = passkey_app().await;
    app.add_user("lead-baker", PASSWORD).await;
    let me = Me::signed_in(&app, "lead-baker").await;
    let mut authenticator = SoftAuthenticator::new();
    authenticator.set_user_verifying(false);
    assert_status(
        me.register(&mut authenticator, ORIGIN, "no pin").await,
        Code::InvalidArgument,
        "credential_json",
    );
    assert!(me.passkeys().await.is_empty());

    authenticator.set_user_verifying(true);
    me.register(&mut authenticator, ORIGIN, "laptop")
        .await
        .unwrap();
    authenticator.set_user_verifying(false);
    let mut client = app.client.clone();
    for identifier in ["", "lead-baker"] {
        let outcome = sign_in(&mut client, &mut authenticator, identifier, ORIGIN).await;
        assert_eq!(
            failed_reason(&outcome),
            pb::FailureReason::InvalidCredentials
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_removed_passkey_signs_no_one_in_and_only_its_owner_removes_it() {
    let app = passkey_app().await;
    let mut authenticator = SoftAuthenticator::new();
    let (_, me) = user_with_passkey(&app, "lead-baker", &mut authenticator).await;
    let mut theirs = SoftAuthenticator::new();
    let (_, apprentice) = user_with_passkey(&app, "apprentice", &mut theirs).await;
    let passkey_id = me.passkeys().await[0].passkey_id.clone();
    let their_id = apprentice.passkeys().await[0].passkey_id.clone();

    assert_status(
        me.remove(&passkey_id, "not my password").await,
        Code::PermissionDenied,
        "",
    );
    assert_status(me.remove(&their_id, PASSWORD).await, Code::NotFound, "");
    assert_status(
        me.remove(&uuid::Uuid::new_v4().to_string(), PASSWORD).await,
        Code::NotFound,
        "",
    );
    assert_status(
        me.remove("not-a-uuid", PASSWORD).await,
        Code::InvalidArgument,
        "passkey_id",
    );
    assert_eq!(apprentice.passkeys().await.len(), 1);

    me.remove(&passkey_id, PASSWORD).await.unwrap();
    assert!(me.passkeys().await.is_empty());
    assert_eq!(me.account().await.passkeys, 0);
    let mut client = app.client.clone();
    let outcome = sign_in(&mut client, &mut authenticator, "", ORIGIN).await;
    assert_eq!(
        failed_reason(&outcome),
        pb::FailureReason::InvalidCredentials
    );
    // The password alone is enough again; the other user's passkey still works.
    assert!(matches!(
        app.login("lead-baker", PASSWORD).await,
        Outcome::Authenticated(_)
    ));
    token_of(sign_in(&mut client, &mut theirs, "apprentice", ORIGIN).await);
    app.stop().await;
}

#[tokio::test]
async fn a_passkey_is_the_second_factor_of_a_password_login() {
    let app = passkey_app().await;
    let mut authenticator = SoftAuthenticator::new();
    let (user_id, me) = user_with_passkey(&app, "lead-baker", &mut authenticator).await;
    let Outcome::TwoFactor(challenge) = app.login("lead-baker", PASSWORD).await else {
        panic!("a user with a passkey must be asked for a second factor");
    };
    assert_eq!(
        challenge.methods().collect::<Vec<_>>(),
        [pb::TwoFactorMethod::Passkey]
    );
    let two_factor_id = challenge.two_factor_id;
    let mut client = app.client.clone();
    assert_status(
        begin_login(&mut client, "lead-baker", &two_factor_id).await,
        Code::InvalidArgument,
        "two_factor_id",
    );

    let begun = begin_login(&mut client, "", &two_factor_id).await.unwrap();
    let options = public_key(&begun.options_json);
    assert_eq!(options["allowCredentials"].as_array().unwrap().len(), 1);
    let assertion = authenticator.get(&begun.options_json, ORIGIN).unwrap();
    let outcome = finish_login(&mut client, &begun.challenge_id, &assertion)
        .await
        .unwrap();
    let Outcome::Authenticated(session) = outcome else {
        panic!("expected authenticated, got {outcome:?}");
    };
    assert_eq!(session.user.unwrap().user_id, user_id);
    app.verify(&session.token).await.unwrap();
    assert!(me.passkeys().await[0].last_used_at.is_some());

    // The challenge is spent: no second passkey step, no code.
    assert_status(
        begin_login(&mut client, "", &two_factor_id).await,
        Code::FailedPrecondition,
        "two_factor_id",
    );
    let again = app.second_factor(&two_factor_id, "123456").await;
    assert_eq!(failed_reason(&again), pb::FailureReason::ChallengeExpired);

    // Each passkey step begun spends one of a challenge's five attempts.
    let Outcome::TwoFactor(challenge) = app.login("lead-baker", PASSWORD).await else {
        panic!("expected two_factor");
    };
    for _ in 0..5 {
        begin_login(&mut client, "", &challenge.two_factor_id)
            .await
            .unwrap();
    }
    assert_status(
        begin_login(&mut client, "", &challenge.two_factor_id).await,
        Code::FailedPrecondition,
        "out of attempts",
    );

    // With TOTP as well, every method is offered; a passkey that does not verify leaves
    // the challenge to a code.
    let enrollment = app.app.enroll_totp("lead-baker").await.unwrap();
    enrollment
        .recovery_codes
        .iter()
        .for_each(|code| remember_secret(code));
    let Outcome::TwoFactor(challenge) = app.login("lead-baker", PASSWORD).await else {
        panic!("expected two_factor");
    };
    assert_eq!(
        challenge.methods().collect::<Vec<_>>(),
        [
            pb::TwoFactorMethod::Totp,
            pb::TwoFactorMethod::RecoveryCode,
            pb::TwoFactorMethod::Passkey
        ]
    );
    let begun = begin_login(&mut client, "", &challenge.two_factor_id)
        .await
        .unwrap();
    let assertion = authenticator.get(&begun.options_json, EVIL_ORIGIN).unwrap();
    let refused = finish_login(&mut client, &begun.challenge_id, &assertion)
        .await
        .unwrap();
    assert_eq!(
        failed_reason(&refused),
        pb::FailureReason::InvalidCredentials
    );
    let code = app.totp_code(&enrollment.otpauth_uri, 0);
    let outcome = app.second_factor(&challenge.two_factor_id, &code).await;
    assert!(matches!(outcome, Outcome::Authenticated(_)), "{outcome:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_disabled_user_cannot_sign_in_with_a_passkey() {
    let app = passkey_app().await;
    let mut authenticator = SoftAuthenticator::new();
    user_with_passkey(&app, "lead-baker", &mut authenticator).await;
    let mut client = app.client.clone();
    token_of(sign_in(&mut client, &mut authenticator, "", ORIGIN).await);

    app.app.set_disabled("lead-baker", true).await.unwrap();
    for identifier in ["", "lead-baker"] {
        let outcome = sign_in(&mut client, &mut authenticator, identifier, ORIGIN).await;
        assert_eq!(
            failed_reason(&outcome),
            pb::FailureReason::InvalidCredentials
        );
    }
    app.app.set_disabled("lead-baker", false).await.unwrap();
    token_of(sign_in(&mut client, &mut authenticator, "", ORIGIN).await);
    app.stop().await;
}

#[tokio::test]
async fn without_webauthn_settings_every_passkey_call_says_what_to_set() {
    let app = spawn_app().await;
    app.add_user("lead-baker", PASSWORD).await;
    let me = Me::signed_in(&app, "lead-baker").await;
    let mut client = app.client.clone();
    assert_status(
        me.begin_registration(PASSWORD).await,
        Code::FailedPrecondition,
        "--webauthn-rp-id",
    );
    let id = format!("stw_{}", "A".repeat(43));
    assert_status(
        me.finish_registration(&id, "{}", "laptop").await,
        Code::FailedPrecondition,
        "--webauthn-rp-id",
    );
    assert_status(
        begin_login(&mut client, "", "").await,
        Code::FailedPrecondition,
        "--webauthn-rp-id",
    );
    assert_status(
        begin_login(&mut client, "lead-baker", "").await,
        Code::FailedPrecondition,
        "--webauthn-rp-id",
    );
    assert_status(
        finish_login(&mut client, &id, "{}").await,
        Code::FailedPrecondition,
        "--webauthn-rp-id",
    );
    assert_eq!(me.account().await.passkeys, 0);
    app.stop().await;
}

#[tokio::test]
async fn ceremonies_expire_on_the_server_s_clock() {
    let app = passkey_app().await;
    app.add_user("lead-baker", PASSWORD).await;
    let me = Me::signed_in(&app, "lead-baker").await;
    let mut authenticator = SoftAuthenticator::new();

    // A registration lives five minutes.
    let begun = me.begin_registration(PASSWORD).await.unwrap();
    let credential = authenticator.create(&begun.options_json, ORIGIN).unwrap();
    app.clock.advance(Duration::from_secs(5 * 60 + 1));
    assert_status(
        me.finish_registration(&begun.registration_id, &credential, "late")
            .await,
        Code::FailedPrecondition,
        "registration_id",
    );
    let begun = me.begin_registration(PASSWORD).await.unwrap();
    let credential = authenticator.create(&begun.options_json, ORIGIN).unwrap();
    app.clock.advance(Duration::from_secs(5 * 60 - 1));
    me.finish_registration(&begun.registration_id, &credential, "in time")
        .await
        .unwrap();

    // A sign-in challenge lives two minutes.
    let mut client = app.client.clone();
    let begun = begin_login(&mut client, "", "").await.unwrap();
    let assertion = authenticator.get(&begun.options_json, ORIGIN).unwrap();
    app.clock.advance(Duration::from_secs(2 * 60 + 1));
    let late = finish_login(&mut client, &begun.challenge_id, &assertion)
        .await
        .unwrap();
    assert_eq!(failed_reason(&late), pb::FailureReason::ChallengeExpired);
    let begun = begin_login(&mut client, "lead-baker", "").await.unwrap();
    let assertion = authenticator.get(&begun.options_json, ORIGIN).unwrap();
    app.clock.advance(Duration::from_secs(2 * 60 - 1));
    token_of(
        finish_login(&mut client, &begun.challenge_id, &assertion)
            .await
            .unwrap(),
    );

    // A passkey step of a two-factor login dies with its challenge (five minutes).
    let Outcome::TwoFactor(challenge) = app.login("lead-baker", PASSWORD).await else {
        panic!("expected two_factor");
    };
    app.clock.advance(Duration::from_secs(5 * 60 - 30));
    let begun = begin_login(&mut client, "", &challenge.two_factor_id)
        .await
        .unwrap();
    let assertion = authenticator.get(&begun.options_json, ORIGIN).unwrap();
    app.clock.advance(Duration::from_secs(31));
    let late = finish_login(&mut client, &begun.challenge_id, &assertion)
        .await
        .unwrap();
    assert_eq!(failed_reason(&late), pb::FailureReason::ChallengeExpired);
    app.stop().await;
}

#[tokio::test]
async fn malformed_answers_are_invalid_arguments_naming_the_field() {
    let app = passkey_app().await;
    app.add_user("lead-baker", PASSWORD).await;
    let me = Me::signed_in(&app, "lead-baker").await;
    let mut authenticator = SoftAuthenticator::new();
    let mut client = app.client.clone();
    let begun = me.begin_registration(PASSWORD).await.unwrap();
    let malformed = ["", "not json", "{}", r#"{"id":"x","rawId":"***"}"#];
    for bad in malformed {
        assert_status(
            me.finish_registration(&begun.registration_id, bad, "laptop")
                .await,
            Code::InvalidArgument,
            "credential_json",
        );
    }
    // Past the 64 KiB request limit, tonic refuses it before the server reads it.
    let too_big = format!(r#"{{"id":"{}"}}"#, "A".repeat(64 * 1024));
    assert_status(
        me.finish_registration(&begun.registration_id, &too_big, "laptop")
            .await,
        Code::OutOfRange,
        "message length too large",
    );
    assert_status(
        me.finish_registration("stw_short", "{}", "laptop").await,
        Code::InvalidArgument,
        "registration_id",
    );
    me.register(&mut authenticator, ORIGIN, "laptop")
        .await
        .unwrap();

    let begun = begin_login(&mut client, "", "").await.unwrap();
    for bad in malformed {
        assert_status(
            finish_login(&mut client, &begun.challenge_id, bad).await,
            Code::InvalidArgument,
            "credential_json",
        );
    }
    let assertion = authenticator.get(&begun.options_json, ORIGIN).unwrap();
    for bad_id in [
        "",
        "stw_short",
        "sts_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        assert_status(
            finish_login(&mut client, bad_id, &assertion).await,
            Code::InvalidArgument,
            "challenge_id",
        );
    }
    // An answer of a registration is not an assertion.
    let registration = me.begin_registration(PASSWORD).await.unwrap();
    let attestation = SoftAuthenticator::new()
        .create(&registration.options_json, ORIGIN)
        .unwrap();
    assert_status(
        finish_login(&mut client, &begun.challenge_id, &attestation).await,
        Code::InvalidArgument,
        "credential_json",
    );
    assert_status(
        begin_login(&mut client, "", "not-a-two-factor-id").await,
        Code::InvalidArgument,
        "two_factor_id",
    );
    app.stop().await;
}

#[tokio::test]
async fn failed_assertions_for_one_user_are_throttled_as_password_guesses_are() {
    let app = passkey_app().await;
    let mut authenticator = SoftAuthenticator::new();
    user_with_passkey(&app, "lead-baker", &mut authenticator).await;
    app.add_user("apprentice", PASSWORD).await;
    let mut client = app.client.clone();

    // Assertions that do not verify (signed on another origin) count against their user
    // as wrong passwords count against another: the same free failures, then the backoff.
    let (mut by_passkey, mut by_password) = (Vec::new(), Vec::new());
    for attempt in 0..8 {
        let outcome = sign_in(&mut client, &mut authenticator, "", EVIL_ORIGIN).await;
        by_passkey.push(failed_reason(&outcome));
        let outcome = app.login("apprentice", &format!("guess-{attempt}")).await;
        by_password.push(failed_reason(&outcome));
    }
    assert_eq!(by_passkey, by_password);
    use pb::FailureReason::{InvalidCredentials, RateLimited};
    assert_eq!(by_passkey[0], InvalidCredentials);
    assert_eq!(by_passkey[7], RateLimited, "{by_passkey:?}");

    // The owner's own passkey waits too, a named Begin is refused, and so is the password,
    // under every identifier of the user (the failures named none of them).
    let held = sign_in(&mut client, &mut authenticator, "", ORIGIN).await;
    let wait = retry_after(&held);
    assert!(wait > Duration::ZERO && wait <= Duration::from_secs(5 * 60));
    for identifier in ["lead-baker", "lead-baker@bakery.example"] {
        assert_status(
            begin_login(&mut client, identifier, "").await,
            Code::ResourceExhausted,
            "retry after",
        );
        assert_eq!(
            failed_reason(&app.login(identifier, PASSWORD).await),
            RateLimited,
            "{identifier}"
        );
    }

    app.clock.advance(wait);
    token_of(sign_in(&mut client, &mut authenticator, "lead-baker", ORIGIN).await);
    app.stop().await;
}

#[tokio::test]
async fn one_address_trying_unknown_passkeys_is_throttled() {
    let app = passkey_app().await;
    let mut authenticator = SoftAuthenticator::new();
    let (_, me) = user_with_passkey(&app, "lead-baker", &mut authenticator).await;
    // A credential the server never stored: the authenticator made it, the registration
    // was never finished.
    let mut stranger = SoftAuthenticator::new();
    let begun = me.begin_registration(PASSWORD).await.unwrap();
    stranger.create(&begun.options_json, ORIGIN).unwrap();

    // Challenges begun while the address is free, answered one after another.
    let mut client = app.client.clone();
    let mut answers = Vec::new();
    for _ in 0..25 {
        let begun = begin_login(&mut client, "", "").await.unwrap();
        let assertion = stranger.get(&begun.options_json, ORIGIN).unwrap();
        answers.push((begun.challenge_id, assertion));
    }
    let good = begin_login(&mut client, "", "").await.unwrap();
    let good_assertion = authenticator.get(&good.options_json, ORIGIN).unwrap();
    let mut reasons = Vec::new();
    for (challenge_id, assertion) in &answers {
        let outcome = finish_login(&mut client, challenge_id, assertion)
            .await
            .unwrap();
        reasons.push(failed_reason(&outcome));
    }
    use pb::FailureReason::{InvalidCredentials, RateLimited};
    assert_eq!(reasons[..20], [InvalidCredentials; 20], "{reasons:?}");
    assert!(
        reasons[21..].iter().all(|r| *r == RateLimited),
        "{reasons:?}"
    );
    // The throttle is on the address: a good passkey from it waits, and Begin is refused.
    let held = finish_login(&mut client, &good.challenge_id, &good_assertion)
        .await
        .unwrap();
    let wait = retry_after(&held);
    assert_status(
        begin_login(&mut client, "", "").await,
        Code::ResourceExhausted,
        "retry after",
    );
    app.clock.advance(wait);
    token_of(sign_in(&mut client, &mut authenticator, "", ORIGIN).await);
    app.stop().await;
}

#[tokio::test]
async fn one_address_may_begin_only_so_many_sign_ins_a_minute() {
    let app = passkey_app().await;
    let mut authenticator = SoftAuthenticator::new();
    user_with_passkey(&app, "lead-baker", &mut authenticator).await;
    let mut client = app.client.clone();
    // Bursts of 200 (a third of the 600 a minute by default); each stores a challenge.
    for _ in 0..200 {
        begin_login(&mut client, "", "").await.unwrap();
    }
    assert_status(
        begin_login(&mut client, "", "").await,
        Code::ResourceExhausted,
        "retry after",
    );
    assert_status(
        begin_login(&mut client, "lead-baker", "").await,
        Code::ResourceExhausted,
        "retry after",
    );
    app.clock.advance(Duration::from_secs(60));
    token_of(sign_in(&mut client, &mut authenticator, "", ORIGIN).await);
    app.stop().await;
}

/// The web app's page in the real-binary tests (RP id `localhost`).
const APP_ORIGIN: &str = "http://localhost:8080";

fn webauthn_flags() -> [&'static str; 4] {
    [
        "--webauthn-rp-id",
        "localhost",
        "--webauthn-origin",
        APP_ORIGIN,
    ]
}

#[tokio::test]
async fn the_real_binary_takes_its_relying_party_from_the_flags() {
    let dir = tempfile::tempdir().unwrap();
    let url = crate::helpers::database_url(dir.path());
    add_user_with_cli(&url, "lead-baker", PASSWORD);

    // Without the flags: FAILED_PRECONDITION naming them.
    let bare = start_server_with(&url, &[]);
    let mut client = bare.grpc_client().await;
    assert_status(
        begin_login(&mut client, "", "").await,
        Code::FailedPrecondition,
        "--webauthn-origin",
    );
    drop(bare);

    let server = start_server_with(&url, &webauthn_flags());
    let mut client = server.grpc_client().await;
    let token = crate::helpers::token(&mut client, "lead-baker", PASSWORD).await;
    let me = Me::connect(server.target(), &token).await;
    let mut authenticator = SoftAuthenticator::new();
    // The origin is the flag's, exactly: another port is another origin.
    assert_status(
        me.register(&mut authenticator, "http://localhost:8081", "laptop")
            .await,
        Code::InvalidArgument,
        "credential_json",
    );
    let registered = me
        .register(&mut authenticator, APP_ORIGIN, "laptop")
        .await
        .unwrap();
    let session = token_of(sign_in(&mut client, &mut authenticator, "", APP_ORIGIN).await);
    verify(&mut client, &session).await.unwrap();
    let Outcome::TwoFactor(challenge) = login(&mut client, "lead-baker", PASSWORD).await else {
        panic!("expected two_factor");
    };
    let begun = begin_login(&mut client, "", &challenge.two_factor_id)
        .await
        .unwrap();
    let assertion = authenticator.get(&begun.options_json, APP_ORIGIN).unwrap();
    token_of(
        finish_login(&mut client, &begun.challenge_id, &assertion)
            .await
            .unwrap(),
    );

    // The admin CLI lists it (used now) and removes it: it signs no one in any more.
    let listed: Json = serde_json::from_str(&admin(
        &url,
        &["--json", "user", "passkey", "list", "lead-baker"],
        "",
    ))
    .unwrap();
    assert_eq!(listed[0]["passkey_id"], registered.passkey_id.as_str());
    assert_eq!(listed[0]["name"], "laptop");
    assert!(listed[0]["last_used_at"].is_number(), "{listed}");
    admin(
        &url,
        &[
            "user",
            "passkey",
            "remove",
            "lead-baker",
            &registered.passkey_id,
        ],
        "",
    );
    let outcome = sign_in(&mut client, &mut authenticator, "", APP_ORIGIN).await;
    assert_eq!(
        failed_reason(&outcome),
        pb::FailureReason::InvalidCredentials
    );
    assert!(me.passkeys().await.is_empty());
    drop(server);

    // The environment variables do as the flags (several origins, comma-separated).
    let server = crate::helpers::backend_env(&url)
        .into_iter()
        .fold(
            crate::helpers::ServerProcess::builder(crate::helpers::binary())
                .database_url(&url)
                .env("ST_PETER_WEBAUTHN_RP_ID", "localhost")
                .env(
                    "ST_PETER_WEBAUTHN_ORIGIN",
                    format!("https://localhost,{APP_ORIGIN}"),
                )
                .on_stderr_line(crate::helpers::append_log),
            |builder, (key, value)| builder.env(key, value),
        )
        .start()
        .unwrap();
    let mut client = server.grpc_client().await;
    let token = crate::helpers::token(&mut client, "lead-baker", PASSWORD).await;
    let me = Me::connect(server.target(), &token).await;
    me.register(&mut authenticator, APP_ORIGIN, "laptop again")
        .await
        .unwrap();
    token_of(
        sign_in(
            &mut client,
            &mut authenticator,
            "lead-baker",
            "https://localhost",
        )
        .await,
    );
}

#[tokio::test]
#[ignore = "needs PostgreSQL: runs in the PostgreSQL pass (scripts/pg.sh run -- cargo test -p st-peter-server --test api -- --include-ignored)"]
async fn passkey_ceremonies_span_replicas_and_a_challenge_is_answered_once_across_them() {
    let url = crate::replicas::postgres_database().await;
    add_user_with_cli(&url, "lead-baker", PASSWORD);
    let (a, b) = (
        start_server_with(&url, &webauthn_flags()),
        start_server_with(&url, &webauthn_flags()),
    );
    let (mut on_a, mut on_b) = (a.grpc_client().await, b.grpc_client().await);
    let token = crate::helpers::token(&mut on_a, "lead-baker", PASSWORD).await;
    let (me_a, me_b) = (
        Me::connect(a.target(), &token).await,
        Me::connect(b.target(), &token).await,
    );
    let mut authenticator = SoftAuthenticator::new();

    // Registration begun on A finishes on B.
    let begun = me_a.begin_registration(PASSWORD).await.unwrap();
    let credential = authenticator
        .create(&begun.options_json, APP_ORIGIN)
        .unwrap();
    me_b.finish_registration(&begun.registration_id, &credential, "laptop")
        .await
        .unwrap();
    assert_eq!(me_a.passkeys().await.len(), 1);

    // A sign-in begun on B finishes on A; the spent challenge is spent on B too.
    let begun = begin_login(&mut on_b, "", "").await.unwrap();
    let assertion = authenticator.get(&begun.options_json, APP_ORIGIN).unwrap();
    let session = token_of(
        finish_login(&mut on_a, &begun.challenge_id, &assertion)
            .await
            .unwrap(),
    );
    verify(&mut on_b, &session).await.unwrap();
    let again = finish_login(&mut on_b, &begun.challenge_id, &assertion)
        .await
        .unwrap();
    assert_eq!(failed_reason(&again), pb::FailureReason::ChallengeExpired);

    // A clone is caught whichever replica the original used.
    let mut clone = authenticator.clone();
    token_of(sign_in(&mut on_a, &mut authenticator, "lead-baker", APP_ORIGIN).await);
    let outcome = sign_in(&mut on_b, &mut clone, "lead-baker", APP_ORIGIN).await;
    assert_eq!(
        failed_reason(&outcome),
        pb::FailureReason::InvalidCredentials
    );

    // Two-factor: the password on A, the passkey step begun on B, finished on A.
    let Outcome::TwoFactor(challenge) = login(&mut on_a, "lead-baker", PASSWORD).await else {
        panic!("expected two_factor");
    };
    let begun = begin_login(&mut on_b, "", &challenge.two_factor_id)
        .await
        .unwrap();
    let assertion = authenticator.get(&begun.options_json, APP_ORIGIN).unwrap();
    token_of(
        finish_login(&mut on_a, &begun.challenge_id, &assertion)
            .await
            .unwrap(),
    );
}
#[tokio::test]
async fn a_sign_in_begun_for_an_identifier_without_passkeys_signs_no_one_in() {
    let app = passkey_app().await;
    let mut authenticator = SoftAuthenticator::new();
    user_with_passkey(&app, "lead-baker", &mut authenticator).await;
    app.add_user("apprentice", PASSWORD).await;
    let mut client = app.client.clone();
    for identifier in ["apprentice", "nobody"] {
        // lead-baker's discoverable passkey answers the discoverable options...
        let outcome = sign_in(&mut client, &mut authenticator, identifier, ORIGIN).await;
        // ...but the caller asked for `identifier`, not lead-baker.
        assert_eq!(
            failed_reason(&outcome),
            pb::FailureReason::InvalidCredentials
        );
    }
    app.stop().await;
}

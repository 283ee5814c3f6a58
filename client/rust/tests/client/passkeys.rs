//! Passkeys through the client against the real server, with the testkit's software
//! authenticator playing the browser and the platform passkey.
use serde_json::Value;
use st_peter_client::{
    Error, FailureReason, LoginOutcome, PasskeyCredentialJson, PasskeyLogin, PasskeyOptionsJson,
    TwoFactorMethod,
};
use st_peter_server::domain::passkeys::WebauthnSettings;
use st_peter_testkit::SoftAuthenticator;

use crate::helpers::{TestServer, login, settings};

const PASSWORD: &str = "open sesame, said Ali Baba";
const WRONG_PASSWORD: &str = "knock knock, who goes there";
const ORIGIN: &str = "https://localhost";

/// A server that does passkeys for `https://localhost`.
async fn webauthn_server() -> TestServer {
    let mut settings = settings(std::time::Duration::from_secs(3600));
    settings.webauthn = Some(WebauthnSettings {
        rp_id: "localhost".into(),
        origins: vec![ORIGIN.into()],
    });
    TestServer::start_with(settings).await
}

/// The options as a page reads them: `JSON.parse(options).publicKey`, with a base64url
/// challenge.
fn public_key(options: &PasskeyOptionsJson) -> Value {
    let parsed: Value = serde_json::from_str(options.as_str()).unwrap();
    let public_key = parsed["publicKey"].clone();
    let challenge = public_key["challenge"].as_str().unwrap_or_default();
    assert!(
        challenge.len() >= 22
            && challenge
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "publicKey.challenge is not base64url of 16 bytes or more: {options}"
    );
    public_key
}

fn create(
    authenticator: &mut SoftAuthenticator,
    options: &PasskeyOptionsJson,
    origin: &str,
) -> PasskeyCredentialJson {
    PasskeyCredentialJson::new(authenticator.create(options.as_str(), origin).unwrap())
}

fn get(
    authenticator: &mut SoftAuthenticator,
    options: &PasskeyOptionsJson,
) -> PasskeyCredentialJson {
    PasskeyCredentialJson::new(authenticator.get(options.as_str(), ORIGIN).unwrap())
}

fn authenticated(outcome: LoginOutcome, handle: &str) -> String {
    match outcome {
        LoginOutcome::Authenticated(session) if session.user.handle == handle => session.token,
        other => panic!("expected {handle} authenticated, got {other:?}"),
    }
}

fn failed(outcome: LoginOutcome) -> FailureReason {
    match outcome {
        LoginOutcome::Failed(failure) => failure.reason,
        other => panic!("expected a failed login, got {other:?}"),
    }
}

#[tokio::test]
async fn passkey_ceremonies_without_webauthn_settings_are_failed_precondition() {
    let server = TestServer::start().await;
    server.add_user("lead-baker", PASSWORD).await;
    let client = server.client();
    let account = client.account(login(&client, "lead-baker", PASSWORD).await);

    let unknown = format!("stw_{}", "A".repeat(43));
    let refusals = [
        client
            .begin_passkey_login(PasskeyLogin::Discoverable)
            .await
            .map(drop),
        client
            .begin_passkey_login(PasskeyLogin::Identifier("lead-baker".into()))
            .await
            .map(drop),
        client
            .finish_passkey_login(&unknown, &PasskeyCredentialJson::from("{}"))
            .await
            .map(drop),
        account.begin_passkey_registration(PASSWORD).await.map(drop),
        account
            .finish_passkey_registration(&unknown, &PasskeyCredentialJson::from("{}"), "laptop")
            .await
            .map(drop),
    ];
    for refusal in refusals {
        assert!(
            matches!(&refusal, Err(Error::FailedPrecondition(m)) if m.contains("--webauthn-rp-id")),
            "{refusal:?}"
        );
    }
    // Listing and removing still work (passkeys made before the settings went).
    assert_eq!(account.list_passkeys().await.unwrap(), vec![]);
    let unknown_passkey = account
        .remove_passkey("00000000-0000-4000-8000-000000000000", PASSWORD)
        .await
        .unwrap_err();
    assert!(
        matches!(unknown_passkey, Error::NotFound(_)),
        "{unknown_passkey:?}"
    );
    assert_eq!(account.get().await.unwrap().passkeys, 0);
}

#[tokio::test]
async fn registration_options_are_the_browsers_and_refusals_have_their_kinds() {
    let server = webauthn_server().await;
    server.add_user("lead-baker", PASSWORD).await;
    let client = server.client();
    let account = client.account(login(&client, "lead-baker", PASSWORD).await);

    let wrong = account
        .begin_passkey_registration(WRONG_PASSWORD)
        .await
        .unwrap_err();
    assert!(
        matches!(&wrong, Error::PermissionDenied(m) if m.contains("current_password")),
        "{wrong:?}"
    );

    let registration = account.begin_passkey_registration(PASSWORD).await.unwrap();
    assert!(
        registration.registration_id.starts_with("stw_")
            && registration.registration_id.len() == 47,
        "{registration:?}"
    );
    let options = public_key(&registration.options_json);
    assert_eq!(options["rp"]["id"], "localhost", "{options}");
    assert_eq!(
        options["authenticatorSelection"]["userVerification"], "required",
        "{options}"
    );
    // The user handle is the user's id, as 16 bytes (22 base64url characters).
    assert_eq!(
        options["user"]["id"].as_str().map(str::len),
        Some(22),
        "{options}"
    );

    // Made on another origin: does not verify, and spends the registration.
    let mut stranger = SoftAuthenticator::new();
    let elsewhere = create(
        &mut stranger,
        &registration.options_json,
        "https://evil.localhost",
    );
    let refused = account
        .finish_passkey_registration(&registration.registration_id, &elsewhere, "evil")
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, Error::InvalidArgument(m) if m.contains("credential_json")),
        "{refused:?}"
    );
    let mut authenticator = SoftAuthenticator::new();
    let good = create(&mut authenticator, &registration.options_json, ORIGIN);
    let spent = account
        .finish_passkey_registration(&registration.registration_id, &good, "laptop")
        .await
        .unwrap_err();
    assert!(
        matches!(&spent, Error::FailedPrecondition(m) if m.contains("registration_id")),
        "{spent:?}"
    );

    // Without user verification: refused.
    let registration = account.begin_passkey_registration(PASSWORD).await.unwrap();
    let mut unverified = SoftAuthenticator::new();
    unverified.set_user_verifying(false);
    let credential = create(&mut unverified, &registration.options_json, ORIGIN);
    let refused = account
        .finish_passkey_registration(&registration.registration_id, &credential, "laptop")
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, Error::InvalidArgument(m) if m.contains("credential_json")),
        "{refused:?}"
    );

    // Malformed JSON is the caller's fault.
    let registration = account.begin_passkey_registration(PASSWORD).await.unwrap();
    let refused = account
        .finish_passkey_registration(
            &registration.registration_id,
            &PasskeyCredentialJson::from("{not json"),
            "laptop",
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, Error::InvalidArgument(m) if m.contains("credential_json")),
        "{refused:?}"
    );

    assert_eq!(account.list_passkeys().await.unwrap(), vec![]);
    assert_eq!(account.get().await.unwrap().passkeys, 0);
    assert_eq!(
        client
            .account("stp_not-a-token")
            .list_passkeys()
            .await
            .unwrap_err(),
        Error::InvalidToken
    );
}

#[tokio::test]
async fn a_passkey_registers_signs_in_discoverably_and_as_second_factor_and_is_removed() {
    let server = webauthn_server().await;
    server.add_user("lead-baker", PASSWORD).await;
    server.add_user("cashier", WRONG_PASSWORD).await;
    let client = server.client();
    let account = client.account(login(&client, "lead-baker", PASSWORD).await);
    let mut authenticator = SoftAuthenticator::new();

    // Register.
    let registration = account.begin_passkey_registration(PASSWORD).await.unwrap();
    let credential = create(&mut authenticator, &registration.options_json, ORIGIN);
    let passkey = account
        .finish_passkey_registration(&registration.registration_id, &credential, "work laptop")
        .await
        .unwrap();
    assert_eq!(passkey.name, "work laptop");
    assert_eq!(passkey.passkey_id.len(), 36, "a UUID: {passkey:?}");
    assert_eq!(passkey.last_used_at, None);
    assert_eq!(
        account.list_passkeys().await.unwrap(),
        vec![passkey.clone()]
    );
    assert_eq!(account.get().await.unwrap().passkeys, 1);
    // The next registration excludes it.
    let again = account.begin_passkey_registration(PASSWORD).await.unwrap();
    assert_eq!(
        public_key(&again.options_json)["excludeCredentials"][0]["id"],
        authenticator.credential_ids()[0].as_str()
    );

    // Sign in by identifier: the options name the passkey.
    let challenge = client
        .begin_passkey_login(PasskeyLogin::Identifier("lead-baker@bakery.example".into()))
        .await
        .unwrap();
    assert!(challenge.challenge_id.starts_with("stw_"), "{challenge:?}");
    assert_eq!(
        public_key(&challenge.options_json)["allowCredentials"][0]["id"],
        authenticator.credential_ids()[0].as_str()
    );
    let assertion = get(&mut authenticator, &challenge.options_json);
    let token = authenticated(
        client
            .finish_passkey_login(&challenge.challenge_id, &assertion)
            .await
            .unwrap(),
        "lead-baker",
    );
    assert_eq!(
        client.verify_token(&token).await.unwrap().user.handle,
        "lead-baker"
    );
    // Its challenge is spent, and the assertion answers no other.
    assert_eq!(
        failed(
            client
                .finish_passkey_login(&challenge.challenge_id, &assertion)
                .await
                .unwrap()
        ),
        FailureReason::ChallengeExpired
    );
    let challenge = client
        .begin_passkey_login(PasskeyLogin::Identifier("lead-baker".into()))
        .await
        .unwrap();
    assert_eq!(
        failed(
            client
                .finish_passkey_login(&challenge.challenge_id, &assertion)
                .await
                .unwrap()
        ),
        FailureReason::InvalidCredentials
    );

    // Discoverable: no identifier, the passkey says who.
    let challenge = client
        .begin_passkey_login(PasskeyLogin::Discoverable)
        .await
        .unwrap();
    let allowed = &public_key(&challenge.options_json)["allowCredentials"];
    assert!(allowed.as_array().is_none_or(Vec::is_empty), "{allowed}");
    let assertion = get(&mut authenticator, &challenge.options_json);
    authenticated(
        client
            .finish_passkey_login(&challenge.challenge_id, &assertion)
            .await
            .unwrap(),
        "lead-baker",
    );
    let listed = account.list_passkeys().await.unwrap();
    assert!(
        listed[0]
            .last_used_at
            .is_some_and(|at| at >= passkey.created_at),
        "{listed:?}"
    );

    // A cloned authenticator: the copy signs with counters the original used already.
    let mut clone = authenticator.clone();
    let challenge = client
        .begin_passkey_login(PasskeyLogin::Discoverable)
        .await
        .unwrap();
    let assertion = get(&mut authenticator, &challenge.options_json);
    authenticated(
        client
            .finish_passkey_login(&challenge.challenge_id, &assertion)
            .await
            .unwrap(),
        "lead-baker",
    );
    let challenge = client
        .begin_passkey_login(PasskeyLogin::Discoverable)
        .await
        .unwrap();
    let assertion = get(&mut clone, &challenge.options_json);
    assert_eq!(
        failed(
            client
                .finish_passkey_login(&challenge.challenge_id, &assertion)
                .await
                .unwrap()
        ),
        FailureReason::InvalidCredentials
    );

    // Malformed JSON is the caller's fault.
    let challenge = client
        .begin_passkey_login(PasskeyLogin::Discoverable)
        .await
        .unwrap();
    let refused = client
        .finish_passkey_login(&challenge.challenge_id, &PasskeyCredentialJson::from("[]"))
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, Error::InvalidArgument(m) if m.contains("credential_json")),
        "{refused:?}"
    );

    // A password login asks for the second factor, which the passkey gives.
    let LoginOutcome::TwoFactor(second) = client.login("lead-baker", PASSWORD).await.unwrap()
    else {
        panic!("a user with a passkey logs in with a second factor");
    };
    assert!(
        second.methods.contains(&TwoFactorMethod::Passkey),
        "{second:?}"
    );
    let challenge = client
        .begin_passkey_login(PasskeyLogin::TwoFactor(second.two_factor_id))
        .await
        .unwrap();
    let assertion = get(&mut authenticator, &challenge.options_json);
    authenticated(
        client
            .finish_passkey_login(&challenge.challenge_id, &assertion)
            .await
            .unwrap(),
        "lead-baker",
    );

    // Removal: the password, the user's own passkey only.
    let wrong = account
        .remove_passkey(&passkey.passkey_id, WRONG_PASSWORD)
        .await
        .unwrap_err();
    assert!(
        matches!(&wrong, Error::PermissionDenied(m) if m.contains("current_password")),
        "{wrong:?}"
    );
    let cashier = client.account(login(&client, "cashier", WRONG_PASSWORD).await);
    let theirs = cashier
        .remove_passkey(&passkey.passkey_id, WRONG_PASSWORD)
        .await
        .unwrap_err();
    assert!(matches!(theirs, Error::NotFound(_)), "{theirs:?}");
    account
        .remove_passkey(&passkey.passkey_id, PASSWORD)
        .await
        .unwrap();
    assert_eq!(account.list_passkeys().await.unwrap(), vec![]);
    assert_eq!(account.get().await.unwrap().passkeys, 0);
    let again = account
        .remove_passkey(&passkey.passkey_id, PASSWORD)
        .await
        .unwrap_err();
    assert!(matches!(again, Error::NotFound(_)), "{again:?}");
    let challenge = client
        .begin_passkey_login(PasskeyLogin::Discoverable)
        .await
        .unwrap();
    let assertion = get(&mut authenticator, &challenge.options_json);
    assert_eq!(
        failed(
            client
                .finish_passkey_login(&challenge.challenge_id, &assertion)
                .await
                .unwrap()
        ),
        FailureReason::InvalidCredentials
    );
    // The password alone logs in again.
    login(&client, "lead-baker", PASSWORD).await;
}

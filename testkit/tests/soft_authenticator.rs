//! The software authenticator against webauthn-rs in-process: every ceremony a relying party
//! runs with it, and the ways it can be made to fail.
use anyhow::Result;
use st_peter_testkit::SoftAuthenticator;
use webauthn_rs::prelude::*;

const ORIGIN: &str = "https://localhost";

fn relying_party() -> Webauthn {
    let origin = Url::parse(ORIGIN).unwrap();
    WebauthnBuilder::new("localhost", &origin)
        .unwrap()
        .rp_name("st-peter tests")
        .build()
        .unwrap()
}

fn register(rp: &Webauthn, authenticator: &mut SoftAuthenticator, user: Uuid) -> Result<Passkey> {
    let (options, state) = rp.start_passkey_registration(user, "alice", "Alice", None)?;
    let answer = authenticator.create(&serde_json::to_string(&options)?, ORIGIN)?;
    let credential: RegisterPublicKeyCredential = serde_json::from_str(&answer)?;
    Ok(rp.finish_passkey_registration(&credential, &state)?)
}

/// A sign-in naming the passkey, as `start_passkey_authentication` asks for it.
fn sign_in(
    rp: &Webauthn,
    authenticator: &mut SoftAuthenticator,
    passkey: &Passkey,
    origin: &str,
) -> Result<AuthenticationResult> {
    let (options, state) = rp.start_passkey_authentication(std::slice::from_ref(passkey))?;
    let answer = authenticator.get(&serde_json::to_string(&options)?, origin)?;
    let assertion: PublicKeyCredential = serde_json::from_str(&answer)?;
    Ok(rp.finish_passkey_authentication(&assertion, &state)?)
}

#[test]
fn registers_and_signs_in_with_a_counter_that_counts_up() -> Result<()> {
    let rp = relying_party();
    let mut authenticator = SoftAuthenticator::new();
    let user = Uuid::new_v4();
    let mut passkey = register(&rp, &mut authenticator, user)?;
    assert_eq!(authenticator.credential_ids().len(), 1);

    for expected in 1..=2 {
        let result = sign_in(&rp, &mut authenticator, &passkey, ORIGIN)?;
        assert_eq!(result.counter(), expected);
        assert!(result.user_verified());
        assert_eq!(passkey.update_credential(&result), Some(true));
    }
    Ok(())
}

#[test]
fn answers_a_discoverable_sign_in_with_the_user_handle() -> Result<()> {
    let rp = relying_party();
    let mut authenticator = SoftAuthenticator::new();
    let user = Uuid::new_v4();
    let passkey = register(&rp, &mut authenticator, user)?;

    let (options, state) = rp.start_discoverable_authentication()?;
    let options = serde_json::to_string(&options)?;
    assert!(options.contains(r#""allowCredentials":[]"#), "{options}");
    let answer = authenticator.get(&options, ORIGIN)?;
    let assertion: PublicKeyCredential = serde_json::from_str(&answer)?;
    let (found, credential_id) = rp.identify_discoverable_authentication(&assertion)?;
    assert_eq!(found, user);
    assert_eq!(credential_id, passkey.cred_id().as_slice());
    let result = rp.finish_discoverable_authentication(
        &assertion,
        state,
        &[DiscoverableKey::from(&passkey)],
    )?;
    assert_eq!(result.counter(), 1);
    Ok(())
}

#[test]
fn refuses_a_second_credential_for_an_excluded_one() -> Result<()> {
    let rp = relying_party();
    let mut authenticator = SoftAuthenticator::new();
    let user = Uuid::new_v4();
    let passkey = register(&rp, &mut authenticator, user)?;

    let exclude = Some(vec![passkey.cred_id().clone()]);
    let (options, _) = rp.start_passkey_registration(user, "alice", "Alice", exclude)?;
    let error = authenticator
        .create(&serde_json::to_string(&options)?, ORIGIN)
        .unwrap_err();
    assert!(
        error.to_string().starts_with("InvalidStateError"),
        "{error}"
    );
    // Another authenticator holds nothing excluded.
    let answer = SoftAuthenticator::new().create(&serde_json::to_string(&options)?, ORIGIN)?;
    assert!(answer.contains("attestationObject"));
    Ok(())
}

#[test]
fn an_origin_the_relying_party_does_not_know_is_refused() -> Result<()> {
    let rp = relying_party();
    let mut authenticator = SoftAuthenticator::new();
    let user = Uuid::new_v4();
    // A subdomain may claim the RP ID (the browser lets it), but the RP allows one origin.
    let evil = "https://evil.localhost";
    let (options, state) = rp.start_passkey_registration(user, "alice", "Alice", None)?;
    let answer = authenticator.create(&serde_json::to_string(&options)?, evil)?;
    let credential: RegisterPublicKeyCredential = serde_json::from_str(&answer)?;
    let error = rp
        .finish_passkey_registration(&credential, &state)
        .unwrap_err();
    assert!(matches!(error, WebauthnError::InvalidRPOrigin), "{error:?}");

    let passkey = register(&rp, &mut authenticator, user)?;
    let error = sign_in(&rp, &mut authenticator, &passkey, evil).unwrap_err();
    assert!(
        matches!(error.downcast_ref(), Some(WebauthnError::InvalidRPOrigin)),
        "{error:?}"
    );
    Ok(())
}

#[test]
fn plays_the_browser_s_rp_id_and_secure_context_checks() -> Result<()> {
    let rp = relying_party();
    let mut authenticator = SoftAuthenticator::new();
    let (options, _) = rp.start_passkey_registration(Uuid::new_v4(), "a", "A", None)?;
    let options = serde_json::to_string(&options)?;
    for origin in ["https://example.com", "https://notlocalhost"] {
        let error = authenticator.create(&options, origin).unwrap_err();
        assert!(error.to_string().starts_with("SecurityError"), "{error}");
    }
    let error = authenticator
        .create(&options, "http://example.com")
        .unwrap_err();
    assert!(error.to_string().contains("secure context"), "{error}");
    assert!(authenticator.credential_ids().is_empty());
    // Loopback over plain HTTP is a secure context.
    authenticator.create(&options, "http://localhost:8080")?;
    Ok(())
}

#[test]
fn without_user_verification_the_relying_party_refuses() -> Result<()> {
    let rp = relying_party();
    let mut authenticator = SoftAuthenticator::new();
    authenticator.set_user_verifying(false);
    let error = register(&rp, &mut authenticator, Uuid::new_v4()).unwrap_err();
    assert!(
        matches!(error.downcast_ref(), Some(WebauthnError::UserNotVerified)),
        "{error:?}"
    );

    authenticator.set_user_verifying(true);
    let passkey = register(&rp, &mut authenticator, Uuid::new_v4())?;
    authenticator.set_user_verifying(false);
    let error = sign_in(&rp, &mut authenticator, &passkey, ORIGIN).unwrap_err();
    assert!(
        matches!(error.downcast_ref(), Some(WebauthnError::UserNotVerified)),
        "{error:?}"
    );
    Ok(())
}

#[test]
fn a_clone_s_counter_shows_the_copy() -> Result<()> {
    let rp = relying_party();
    let mut authenticator = SoftAuthenticator::new();
    let mut passkey = register(&rp, &mut authenticator, Uuid::new_v4())?;
    let result = sign_in(&rp, &mut authenticator, &passkey, ORIGIN)?;
    passkey.update_credential(&result);

    let mut clone = authenticator.clone();
    let result = sign_in(&rp, &mut authenticator, &passkey, ORIGIN)?;
    assert_eq!(result.counter(), 2);
    passkey.update_credential(&result);
    let error = sign_in(&rp, &mut clone, &passkey, ORIGIN).unwrap_err();
    assert!(
        matches!(
            error.downcast_ref(),
            Some(WebauthnError::CredentialPossibleCompromise)
        ),
        "{error:?}"
    );
    Ok(())
}

#[test]
fn an_assertion_replayed_against_a_new_challenge_is_refused() -> Result<()> {
    let rp = relying_party();
    let mut authenticator = SoftAuthenticator::new();
    let passkey = register(&rp, &mut authenticator, Uuid::new_v4())?;
    let (options, _) = rp.start_passkey_authentication(std::slice::from_ref(&passkey))?;
    let answer = authenticator.get(&serde_json::to_string(&options)?, ORIGIN)?;
    let assertion: PublicKeyCredential = serde_json::from_str(&answer)?;

    let (_, fresh) = rp.start_passkey_authentication(std::slice::from_ref(&passkey))?;
    let error = rp
        .finish_passkey_authentication(&assertion, &fresh)
        .unwrap_err();
    assert!(
        matches!(error, WebauthnError::MismatchedChallenge),
        "{error:?}"
    );
    Ok(())
}

#[test]
fn a_sign_in_for_another_site_finds_no_credential() -> Result<()> {
    let rp = relying_party();
    let mut authenticator = SoftAuthenticator::new();
    register(&rp, &mut authenticator, Uuid::new_v4())?;
    let other_origin = Url::parse("https://other.test").unwrap();
    let other = WebauthnBuilder::new("other.test", &other_origin)?.build()?;
    let (options, _) = other.start_discoverable_authentication()?;
    let error = authenticator
        .get(&serde_json::to_string(&options)?, "https://other.test")
        .unwrap_err();
    assert!(error.to_string().starts_with("NotAllowedError"), "{error}");
    Ok(())
}

//! Passkeys (WebAuthn): registering them (self-service, with the current password),
//! signing in with one (by identifier, or discoverable with no identifier at all), and
//! finishing a password login's two-factor challenge with one.
//!
//! webauthn-rs does the ceremonies: the options, and every check of what the browser sends
//! back (origin, challenge, RP id, signature, user verification, the sign counter). Its
//! ceremony state waits in the store between Begin and Finish, so any replica can finish
//! what another began, and a Finish takes it out: each challenge is answered at most once.
use std::time::Duration;

use webauthn_rs::prelude::{
    Credential, CredentialID, DiscoverableAuthentication, DiscoverableKey, Passkey,
    PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential,
    Url, Uuid, Webauthn, WebauthnBuilder,
};
use webauthn_rs_proto::ResidentKeyRequirement;

use crate::clock::{UnixMillis, millis};
use crate::domain::accounts::check_short_name;
use crate::domain::app::{Caller, StPeter, UserKind};
use crate::domain::audit::{self, Event};
use crate::domain::identifier::{self, Identifier};
use crate::domain::self_service::{SignedIn, identifier_keys};
use crate::domain::sessions::{
    FailureReason, IssuedSession, LoginOutcome, check_listed_id, new_session_id,
};
use crate::domain::throttle::{self, Backoff, Guess, Reserved};
use crate::error::{Error, Result, invalid};
use crate::secrets::password;
use crate::secrets::token::{self, CEREMONY_PREFIX, CHALLENGE_PREFIX, SESSION_PREFIX, SecretHash};
use crate::store::{
    CeremonyPurpose, NewPasskeyCeremony, NewSession, PasskeyCeremony, PasskeyRecord, PasskeyUse,
    SecondFactor, TwoFactorCompletion, UserRecord,
};

/// How long a registration waits for the browser's credential.
pub const REGISTRATION_TTL: Duration = Duration::from_secs(5 * 60);
/// How long a sign-in challenge waits for the browser's assertion.
pub const LOGIN_TTL: Duration = Duration::from_secs(2 * 60);
/// Largest `credential_json` accepted: real ones are a few KiB (a "none" attestation is
/// under one), and the whole request must fit in the server's 64 KiB.
pub const MAX_CREDENTIAL_JSON_BYTES: usize = 32 * 1024;
/// Longest passkey name, in characters.
pub const MAX_NAME_CHARS: usize = 100;

/// The relying party: the site whose pages call `navigator.credentials`. Passkeys are bound
/// to `rp_id` (a domain); the browser reports the page's origin, which must be one of
/// `origins`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebauthnSettings {
    /// The RP id: the site's domain (`example.com`), or `localhost` for development.
    pub rp_id: String,
    /// Origins the pages may have (`https://example.com`, `https://login.example.com`):
    /// each on `rp_id` or a subdomain of it.
    pub origins: Vec<String>,
}

/// Builds the relying party from its settings; the errors name the flags.
pub(crate) fn relying_party(settings: &WebauthnSettings) -> Result<Webauthn> {
    let rp_id = settings.rp_id.trim();
    if rp_id.is_empty() {
        return Err(Error::Config("--webauthn-rp-id: must not be empty".into()));
    }
    let origins = settings
        .origins
        .iter()
        .map(|origin| {
            Url::parse(origin.trim()).map_err(|error| {
                Error::Config(format!(
                    "--webauthn-origin {origin:?}: not a URL ({error}); give the scheme, host \
                     and any port, as the browser shows it: https://login.example.com"
                ))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let Some((first, others)) = origins.split_first() else {
        return Err(Error::Config(
            "--webauthn-origin: give at least one origin with --webauthn-rp-id".into(),
        ));
    };
    let mut builder = WebauthnBuilder::new(rp_id, first).map_err(|error| {
        Error::Config(format!(
            "--webauthn-rp-id {rp_id:?} with --webauthn-origin {first}: {error} (the RP id must \
             be the origin's host or a parent domain of it)"
        ))
    })?;
    for origin in others {
        if !origin
            .host_str()
            .is_some_and(|host| host == rp_id || host.ends_with(&format!(".{rp_id}")))
        {
            return Err(Error::Config(format!(
                "--webauthn-origin {origin}: its host is not {rp_id:?} or a subdomain of it"
            )));
        }
        builder = builder.append_allowed_origin(origin);
    }
    builder
        .rp_name(rp_id)
        // What the options tell the browser: as long as a sign-in challenge lives here.
        .timeout(LOGIN_TTL)
        .build()
        .map_err(|error| Error::Config(format!("WebAuthn settings: {error}")))
}

/// A passkey as its user (or the admin) sees it listed: no key, no credential id.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PasskeyView {
    pub passkey_id: String,
    pub name: String,
    pub created_at: UnixMillis,
    pub last_used_at: Option<UnixMillis>,
}

impl From<PasskeyRecord> for PasskeyView {
    fn from(record: PasskeyRecord) -> Self {
        Self {
            passkey_id: record.id,
            name: record.name,
            created_at: record.created_at,
            last_used_at: record.last_used_at,
        }
    }
}

/// The state of a sign-in ceremony (`CeremonyPurpose::Login` and `TwoFactor`) between
/// Begin and Finish.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum SignIn {
    /// The passkeys of the user an identifier (or a two-factor challenge) named.
    Named(PasskeyAuthentication),
    /// Any discoverable passkey: the assertion's user handle says whose.
    Discoverable(DiscoverableAuthentication),
    /// An identifier of nobody with a passkey: options like a discoverable sign-in's,
    /// which no passkey answers, since the caller asked for someone else.
    Nobody(DiscoverableAuthentication),
}

/// A ceremony begun: its id (to send back with the browser's answer) and the options to
/// hand to the browser.
#[derive(Debug, Clone)]
pub struct BegunCeremony {
    pub id: String,
    pub options_json: String,
}

impl StPeter {
    /// The relying party, or `FailedPrecondition` saying what to set.
    fn webauthn(&self) -> Result<&Webauthn> {
        self.relying_party.as_ref().ok_or_else(|| {
            Error::FailedPrecondition(
                "passkeys are off on this server: start it with --webauthn-rp-id and \
                 --webauthn-origin (or ST_PETER_WEBAUTHN_RP_ID and ST_PETER_WEBAUTHN_ORIGIN)"
                    .into(),
            )
        })
    }

    /// Starts registering a passkey for the caller, after their current password.
    pub async fn begin_passkey_registration(
        &self,
        caller: &Caller,
        token: &str,
        current_password: &str,
    ) -> Result<BegunCeremony> {
        let webauthn = self.webauthn()?;
        let me = self.signed_in(token).await?;
        password::check_given("current_password", current_password)?;
        self.check_current_password(Event::Passkey, caller, &me.user, current_password)
            .await?;
        let exclude = self
            .store
            .passkeys(me.id())
            .await?
            .into_iter()
            .map(|record| CredentialID::from(record.credential_id))
            .collect();
        let owner = &me.user.owner;
        let display_name = if owner.display_name.is_empty() {
            &owner.handle
        } else {
            &owner.display_name
        };
        let (mut options, state) = webauthn
            .start_passkey_registration(
                user_handle(me.id())?,
                &owner.handle,
                display_name,
                Some(exclude),
            )
            .map_err(|error| {
                Error::Internal(format!("starting a passkey registration: {error}"))
            })?;
        // A discoverable credential where the authenticator can keep one, so the user can
        // sign in without typing who they are; webauthn-rs asks for none.
        if let Some(selection) = options.public_key.authenticator_selection.as_mut() {
            selection.resident_key = Some(ResidentKeyRequirement::Preferred);
            selection.require_resident_key = false;
        }
        options.public_key.timeout = u32::try_from(REGISTRATION_TTL.as_millis()).ok();
        let id = self
            .put_ceremony(
                CeremonyPurpose::Registration,
                Some(me.id()),
                None,
                &state_json(&state)?,
                REGISTRATION_TTL,
            )
            .await?;
        audit::record(Event::Passkey, "registration_begun", Some(me.id()), caller);
        Ok(BegunCeremony {
            id,
            options_json: options_json(&options)?,
        })
    }

    /// Stores the passkey the browser created for the caller's registration.
    pub async fn finish_passkey_registration(
        &self,
        caller: &Caller,
        token: &str,
        registration_id: &str,
        credential_json: &str,
        name: &str,
    ) -> Result<PasskeyView> {
        let webauthn = self.webauthn()?;
        let me = self.signed_in(token).await?;
        token::check_issued(
            "registration_id",
            CEREMONY_PREFIX,
            registration_id,
            "a registration id from BeginPasskeyRegistration",
        )?;
        let name = check_name(name)?;
        let credential: RegisterPublicKeyCredential = parse_credential(credential_json)?;
        // Taken whatever follows: a registration is answered once.
        let now = self.now();
        let ceremony = self
            .store
            .take_passkey_ceremony(&token::hash(registration_id))
            .await?
            .filter(|ceremony| {
                ceremony.purpose == CeremonyPurpose::Registration
                    && ceremony.user_id.as_deref() == Some(me.id())
                    && ceremony.expires_at > now
            })
            .ok_or_else(|| {
                Error::FailedPrecondition(
                    "registration_id: unknown, expired, already used or not this user's: call \
                     BeginPasskeyRegistration again"
                        .into(),
                )
            })?;
        let state: PasskeyRegistration = ceremony_state(&ceremony)?;
        let passkey = match webauthn.finish_passkey_registration(&credential, &state) {
            Ok(passkey) => passkey,
            Err(error) => {
                audit::record(
                    Event::Passkey,
                    "registration_refused",
                    Some(me.id()),
                    caller,
                );
                return Err(invalid(
                    "credential_json",
                    format!("does not verify against the registration: {error}"),
                ));
            }
        };
        let record = PasskeyRecord {
            id: Uuid::new_v4().to_string(),
            user_id: me.id().to_owned(),
            credential_id: passkey.cred_id().to_vec(),
            name,
            sign_count: i64::from(Credential::from(passkey.clone()).counter),
            credential: state_json(&passkey)?,
            created_at: now,
            last_used_at: None,
        };
        self.store.add_passkey(&record).await?;
        audit::record(Event::Passkey, "registered", Some(me.id()), caller);
        Ok(PasskeyView::from(record))
    }

    /// The caller's passkeys, oldest first.
    pub async fn list_own_passkeys(&self, token: &str) -> Result<Vec<PasskeyView>> {
        let me = self.signed_in(token).await?;
        self.passkeys_of(me.id()).await
    }

    /// Removes one of the caller's passkeys, after their current password.
    pub async fn remove_own_passkey(
        &self,
        caller: &Caller,
        token: &str,
        passkey_id: &str,
        current_password: &str,
    ) -> Result<()> {
        let me = self.signed_in(token).await?;
        let passkey_id = check_passkey_id(passkey_id)?;
        password::check_given("current_password", current_password)?;
        self.check_current_password(Event::Passkey, caller, &me.user, current_password)
            .await?;
        self.remove_passkey_of(caller, &me, &passkey_id).await
    }

    /// A user's passkeys, for the admin.
    pub async fn list_passkeys(&self, identifier: &str) -> Result<Vec<PasskeyView>> {
        let user = self.find_user(identifier).await?;
        self.passkeys_of(&user.owner.id).await
    }

    /// Removes a user's passkey on an administrator's word.
    pub async fn remove_passkey(&self, identifier: &str, passkey_id: &str) -> Result<()> {
        let user = self.find_user(identifier).await?;
        let passkey_id = check_passkey_id(passkey_id)?;
        if !self
            .store
            .remove_passkey(&user.owner.id, &passkey_id)
            .await?
        {
            return Err(Error::NotFound(format!(
                "passkey {passkey_id} of {}",
                user.owner.handle
            )));
        }
        audit::record(
            Event::Passkey,
            "removed",
            Some(&user.owner.id),
            &Caller::CLI,
        );
        Ok(())
    }

    async fn passkeys_of(&self, user_id: &str) -> Result<Vec<PasskeyView>> {
        let passkeys = self.store.passkeys(user_id).await?;
        Ok(passkeys.into_iter().map(PasskeyView::from).collect())
    }

    async fn remove_passkey_of(
        &self,
        caller: &Caller,
        me: &SignedIn,
        passkey_id: &str,
    ) -> Result<()> {
        if !self.store.remove_passkey(me.id(), passkey_id).await? {
            audit::record(Event::Passkey, "no_such_passkey", Some(me.id()), caller);
            return Err(Error::NotFound("passkey".into()));
        }
        audit::record(Event::Passkey, "removed", Some(me.id()), caller);
        Ok(())
    }

    /// Starts a passkey sign-in: for the user an identifier names, for whoever the
    /// authenticator knows (discoverable), or to finish a two-factor challenge.
    pub async fn begin_passkey_login(
        &self,
        caller: &Caller,
        identifier: &str,
        two_factor_id: &str,
    ) -> Result<BegunCeremony> {
        let webauthn = self.webauthn()?;
        match (identifier.is_empty(), two_factor_id.is_empty()) {
            (false, false) => Err(invalid(
                "two_factor_id",
                "give either an identifier or a two_factor_id, not both",
            )),
            (true, false) => {
                self.begin_passkey_two_factor(caller, webauthn, two_factor_id)
                    .await
            }
            (false, true) => {
                let identifier = identifier::parse("identifier", identifier)?;
                self.refuse_while_throttled(caller, Some(&identifier))
                    .await?;
                let user = self
                    .store
                    .find_user(&identifier)
                    .await?
                    .filter(|user| can_sign_in(user) && user.passkeys > 0);
                match user {
                    Some(user) => self.begin_known_user_login(webauthn, &user).await,
                    None => {
                        self.begin_discoverable_login(webauthn, SignIn::Nobody)
                            .await
                    }
                }
            }
            (true, true) => {
                self.refuse_while_throttled(caller, None).await?;
                self.begin_discoverable_login(webauthn, SignIn::Discoverable)
                    .await
            }
        }
    }

    async fn begin_known_user_login(
        &self,
        webauthn: &Webauthn,
        user: &UserRecord,
    ) -> Result<BegunCeremony> {
        self.begin_named_sign_in(webauthn, CeremonyPurpose::Login, user, None, LOGIN_TTL)
            .await
    }

    /// A sign-in that this user's passkeys alone answer: for a login (`Login`) or to
    /// complete the two-factor challenge `challenge_hash` (`TwoFactor`).
    async fn begin_named_sign_in(
        &self,
        webauthn: &Webauthn,
        purpose: CeremonyPurpose,
        user: &UserRecord,
        challenge_hash: Option<&SecretHash>,
        ttl: Duration,
    ) -> Result<BegunCeremony> {
        let passkeys = self.stored_passkeys(&user.owner.id).await?;
        let (options, state) = webauthn
            .start_passkey_authentication(&passkeys)
            .map_err(|error| Error::Internal(format!("starting a passkey sign-in: {error}")))?;
        let id = self
            .put_ceremony(
                purpose,
                Some(&user.owner.id),
                challenge_hash,
                &state_json(&SignIn::Named(state))?,
                ttl,
            )
            .await?;
        Ok(BegunCeremony {
            id,
            options_json: options_json(&options)?,
        })
    }

    /// A sign-in with the options of a discoverable one: `Discoverable`, or `Nobody`.
    async fn begin_discoverable_login(
        &self,
        webauthn: &Webauthn,
        sign_in: fn(DiscoverableAuthentication) -> SignIn,
    ) -> Result<BegunCeremony> {
        let (mut options, state) = webauthn
            .start_discoverable_authentication()
            .map_err(|error| Error::Internal(format!("starting a passkey sign-in: {error}")))?;
        // webauthn-rs asks for conditional mediation (autofill); a page that wants it sets
        // it itself. Without it the options suit a "sign in with a passkey" button.
        options.mediation = None;
        let id = self
            .put_ceremony(
                CeremonyPurpose::Login,
                None,
                None,
                &state_json(&sign_in(state))?,
                LOGIN_TTL,
            )
            .await?;
        Ok(BegunCeremony {
            id,
            options_json: options_json(&options)?,
        })
    }

    /// The passkey step of a two-factor login. Starting it spends one of the challenge's
    /// attempts, so a challenge cannot mint sign-in ceremonies without end.
    async fn begin_passkey_two_factor(
        &self,
        caller: &Caller,
        webauthn: &Webauthn,
        two_factor_id: &str,
    ) -> Result<BegunCeremony> {
        token::check_issued(
            "two_factor_id",
            CHALLENGE_PREFIX,
            two_factor_id,
            "a two-factor id issued by Login",
        )?;
        let challenge_hash = token::hash(two_factor_id);
        let gone = || {
            Error::FailedPrecondition(
                "two_factor_id: unknown, expired or out of attempts, or its user has no \
                 passkey: log in again"
                    .into(),
            )
        };
        let now = self.now();
        if let Some(wait) = self
            .throttles
            .two_factor_challenge
            .wait(&challenge_hash, now)
            .await?
        {
            audit::record(Event::TwoFactor, "throttled", None, caller);
            return Err(Error::RateLimited(wait));
        }
        let attempt = self
            .store
            .attempt_challenge(&challenge_hash, now, self.settings.challenge_max_attempts)
            .await?
            .ok_or_else(gone)?;
        let user = self
            .store
            .find_user_by_id(&attempt.user_id)
            .await?
            .filter(|user| can_sign_in(user) && user.passkeys > 0)
            .ok_or_else(gone)?;
        // It dies with its challenge, or sooner.
        let ttl = Duration::from_millis(u64::try_from(attempt.expires_at - now).unwrap_or(0))
            .min(LOGIN_TTL);
        self.begin_named_sign_in(
            webauthn,
            CeremonyPurpose::TwoFactor,
            &user,
            Some(&challenge_hash),
            ttl,
        )
        .await
    }

    /// Finishes a passkey sign-in with the browser's assertion. Answers like a login.
    pub async fn finish_passkey_login(
        &self,
        caller: &Caller,
        challenge_id: &str,
        credential_json: &str,
    ) -> Result<LoginOutcome> {
        let webauthn = self.webauthn()?;
        token::check_issued(
            "challenge_id",
            CEREMONY_PREFIX,
            challenge_id,
            "a challenge id from BeginPasskeyLogin",
        )?;
        let assertion: PublicKeyCredential = parse_credential(credential_json)?;
        let now = self.now();
        // The address counts failures, as for password logins; the user's throttle joins
        // once the assertion names the user.
        let address = caller.address.map(throttle::address);
        let checks: Vec<(&Backoff, &[u8])> = address
            .iter()
            .map(|address| (&self.throttles.login_address, &address[..]))
            .collect();
        let mut reserved = match Reserved::attempt(&checks, now).await? {
            Ok(reserved) => reserved,
            Err(wait) => {
                audit::record(Event::PasskeyLogin, "throttled", None, caller);
                return Ok(LoginOutcome::rate_limited(wait));
            }
        };
        let guess = self
            .passkey_guess(caller, webauthn, challenge_id, &assertion, &mut reserved)
            .await;
        reserved.settle(guess, self.now()).await
    }

    /// The assertion check of a passkey sign-in, past the address throttle.
    async fn passkey_guess<'a>(
        &'a self,
        caller: &Caller,
        webauthn: &Webauthn,
        challenge_id: &str,
        assertion: &PublicKeyCredential,
        reserved: &mut Reserved<'a>,
    ) -> Result<Guess<LoginOutcome>> {
        let now = self.now();
        let expired = || Guess::NotChecked(LoginOutcome::failed(FailureReason::ChallengeExpired));
        let refused = |outcome: &'static str, user_id: Option<&str>| {
            audit::record(Event::PasskeyLogin, outcome, user_id, caller);
            Guess::Failed(LoginOutcome::failed(FailureReason::InvalidCredentials))
        };
        // Taken whatever follows: a challenge is answered once.
        let Some(ceremony) = self
            .store
            .take_passkey_ceremony(&token::hash(challenge_id))
            .await?
            .filter(|ceremony| {
                ceremony.purpose != CeremonyPurpose::Registration && ceremony.expires_at > now
            })
        else {
            return Ok(expired());
        };
        let sign_in: SignIn = ceremony_state(&ceremony)?;
        // Whose passkey may answer: the named user's, or the one the assertion's user
        // handle names.
        let claimed_user = match (&sign_in, &ceremony.user_id) {
            (SignIn::Named(_), Some(user_id)) => user_id.clone(),
            (SignIn::Discoverable(_), None) => {
                match webauthn.identify_discoverable_authentication(assertion) {
                    Ok((user, _)) => user.to_string(),
                    Err(_) => return Ok(refused("failure_no_user_handle", None)),
                }
            }
            (SignIn::Nobody(_), _) => return Ok(refused("failure_unknown_passkey", None)),
            _ => {
                return Err(Error::Internal(
                    "passkey ceremony: its state and its user disagree".into(),
                ));
            }
        };
        let record = self
            .store
            .passkey_by_credential_id(assertion.get_credential_id())
            .await?
            .filter(|record| record.user_id == claimed_user);
        let Some(record) = record else {
            return Ok(refused("failure_unknown_passkey", None));
        };
        let user = self
            .store
            .find_user_by_id(&record.user_id)
            .await?
            .filter(can_sign_in);
        let Some(user) = user else {
            return Ok(refused("failure_user_disabled", Some(&record.user_id)));
        };
        let user_id = user.owner.id.as_str();
        // The user's throttles join, as for their password: every identifier they log in
        // with, or the second factor's.
        let keys = match ceremony.purpose {
            CeremonyPurpose::TwoFactor => vec![user_id.to_owned()],
            _ => identifier_keys(&user),
        };
        let throttle = match ceremony.purpose {
            CeremonyPurpose::TwoFactor => &self.throttles.two_factor_user,
            _ => &self.throttles.login_identifier,
        };
        for key in &keys {
            if let Err(wait) = reserved.also(throttle, key.as_bytes(), now).await? {
                audit::record(Event::PasskeyLogin, "throttled", Some(user_id), caller);
                return Ok(Guess::NotChecked(LoginOutcome::rate_limited(wait)));
            }
        }

        let mut passkey = stored_passkey(&record)?;
        let verified = match sign_in {
            SignIn::Named(state) => webauthn.finish_passkey_authentication(assertion, &state),
            SignIn::Discoverable(state) | SignIn::Nobody(state) => webauthn
                .finish_discoverable_authentication(
                    assertion,
                    state,
                    &[DiscoverableKey::from(&passkey)],
                ),
        };
        let result = match verified {
            Ok(result) if result.user_verified() => result,
            Ok(_) => return Ok(refused("failure_no_user_verification", Some(user_id))),
            Err(error) => {
                tracing::info!(%error, "passkey assertion refused");
                return Ok(refused("failure", Some(user_id)));
            }
        };
        // The ceremony's state holds the credential as it was at Begin; the stored counter
        // is the newest. A counter that did not move past it means two authenticators hold
        // this key: a clone (WebAuthn §6.1.1). Authenticators without a counter send 0.
        let stored = u32::try_from(record.sign_count).unwrap_or(u32::MAX);
        if (result.counter() > 0 || stored > 0) && result.counter() <= stored {
            tracing::warn!(user_id, passkey_id = %record.id, "passkey sign counter went backwards: a cloned authenticator?");
            return Ok(refused("failure_counter", Some(user_id)));
        }
        passkey.update_credential(&result);
        let credential = state_json(&passkey)?;
        let used = PasskeyUse {
            passkey_id: &record.id,
            credential: &credential,
            sign_count_before: record.sign_count,
            sign_count: i64::from(result.counter()),
            used_at: now,
        };
        let session = token::mint(SESSION_PREFIX);
        let expires_at = now.saturating_add(millis(self.settings.session_ttl));
        let new_session = NewSession {
            id: &new_session_id(),
            token_hash: &session.hash,
            user_id,
            created_at: now,
            expires_at,
            api_key_id: None,
        };
        let issued = || {
            LoginOutcome::Authenticated(IssuedSession {
                token: session.secret.clone(),
                expires_at,
                user: (&user).into(),
            })
        };
        match (ceremony.purpose, ceremony.challenge_hash) {
            (CeremonyPurpose::TwoFactor, Some(challenge_hash)) => {
                let completion = self
                    .store
                    .complete_two_factor(&challenge_hash, SecondFactor::Passkey(used), new_session)
                    .await?;
                Ok(match completion {
                    TwoFactorCompletion::Completed => {
                        audit::record(Event::TwoFactor, "success_passkey", Some(user_id), caller);
                        Guess::Succeeded(issued())
                    }
                    TwoFactorCompletion::Refused => {
                        refused("failure_concurrent_use", Some(user_id))
                    }
                    TwoFactorCompletion::ChallengeGone => expired(),
                })
            }
            _ => {
                if !self.store.sign_in_with_passkey(used, new_session).await? {
                    return Ok(refused("failure_concurrent_use", Some(user_id)));
                }
                audit::record(Event::PasskeyLogin, "success", Some(user_id), caller);
                Ok(Guess::Succeeded(issued()))
            }
        }
    }

    /// A sign-in answered `RateLimited` while the login throttles hold for the identifier
    /// or the caller's address, or past the address's rate of begun sign-ins (each stores
    /// a challenge before anyone is known).
    async fn refuse_while_throttled(
        &self,
        caller: &Caller,
        identifier: Option<&Identifier>,
    ) -> Result<()> {
        let now = self.now();
        let mut waits = Vec::new();
        if let Some(address) = caller.address {
            let rate = self
                .throttles
                .passkey_begin_address
                .check(&address.to_string(), now)
                .await?;
            waits.push(rate.err());
        }
        if let Some(identifier) = identifier {
            waits.push(
                self.throttles
                    .login_identifier
                    .wait(identifier.key().as_bytes(), now)
                    .await?,
            );
        }
        if let Some(address) = caller.address.map(throttle::address) {
            waits.push(self.throttles.login_address.wait(&address, now).await?);
        }
        match waits.into_iter().flatten().max() {
            Some(wait) => {
                audit::record(Event::PasskeyLogin, "throttled", None, caller);
                Err(Error::RateLimited(wait))
            }
            None => Ok(()),
        }
    }

    async fn stored_passkeys(&self, user_id: &str) -> Result<Vec<Passkey>> {
        self.store
            .passkeys(user_id)
            .await?
            .iter()
            .map(stored_passkey)
            .collect()
    }

    async fn put_ceremony(
        &self,
        purpose: CeremonyPurpose,
        user_id: Option<&str>,
        challenge_hash: Option<&SecretHash>,
        state: &str,
        ttl: Duration,
    ) -> Result<String> {
        let minted = token::mint(CEREMONY_PREFIX);
        let now = self.now();
        self.store
            .put_passkey_ceremony(NewPasskeyCeremony {
                id_hash: &minted.hash,
                purpose,
                user_id,
                challenge_hash,
                state,
                created_at: now,
                expires_at: now.saturating_add(millis(ttl)),
            })
            .await?;
        Ok(minted.secret)
    }
}

/// Whether this user may sign in at all: an enabled person.
fn can_sign_in(user: &UserRecord) -> bool {
    !user.owner.disabled && user.owner.kind == UserKind::Human
}

/// The WebAuthn user handle of a user: their id's 16 bytes (random, no personal data).
fn user_handle(user_id: &str) -> Result<Uuid> {
    Uuid::parse_str(user_id)
        .map_err(|_| Error::Internal(format!("user id {user_id:?} is not a UUID")))
}

fn stored_passkey(record: &PasskeyRecord) -> Result<Passkey> {
    serde_json::from_str(&record.credential).map_err(|error| {
        Error::Internal(format!(
            "passkey {}: stored credential unreadable: {error}",
            record.id
        ))
    })
}

fn ceremony_state<T: serde::de::DeserializeOwned>(ceremony: &PasskeyCeremony) -> Result<T> {
    serde_json::from_str(&ceremony.state)
        .map_err(|error| Error::Internal(format!("passkey ceremony state unreadable: {error}")))
}

fn state_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|error| Error::Internal(format!("serialising passkey state: {error}")))
}

fn options_json<T: serde::Serialize>(options: &T) -> Result<String> {
    serde_json::to_string(options)
        .map_err(|error| Error::Internal(format!("serialising passkey options: {error}")))
}

/// The browser's credential (`PublicKeyCredential.toJSON()`), read before anything is
/// spent on it.
fn parse_credential<T: serde::de::DeserializeOwned>(credential_json: &str) -> Result<T> {
    if credential_json.trim().is_empty() {
        return Err(invalid("credential_json", "must not be empty"));
    }
    if credential_json.len() > MAX_CREDENTIAL_JSON_BYTES {
        return Err(invalid(
            "credential_json",
            format!("must be at most {MAX_CREDENTIAL_JSON_BYTES} bytes"),
        ));
    }
    serde_json::from_str(credential_json).map_err(|error| {
        invalid(
            "credential_json",
            format!("is not a PublicKeyCredential as JSON (credential.toJSON()): {error}"),
        )
    })
}

fn check_name(name: &str) -> Result<String> {
    check_short_name(name, MAX_NAME_CHARS)
}

/// A passkey id as ListPasskeys gives it: a UUID, in its canonical lowercase form.
fn check_passkey_id(passkey_id: &str) -> Result<String> {
    check_listed_id("passkey_id", passkey_id, "ListPasskeys")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(rp_id: &str, origins: &[&str]) -> WebauthnSettings {
        WebauthnSettings {
            rp_id: rp_id.into(),
            origins: origins.iter().map(|origin| origin.to_string()).collect(),
        }
    }

    #[test]
    fn relying_party_settings_are_checked_naming_the_flag() {
        assert!(relying_party(&settings("example.com", &["https://login.example.com"])).is_ok());
        assert!(relying_party(&settings("localhost", &["http://localhost:8080"])).is_ok());
        for (bad, flag) in [
            (settings("", &["https://example.com"]), "--webauthn-rp-id"),
            (settings("example.com", &[]), "--webauthn-origin"),
            (settings("example.com", &["not a url"]), "--webauthn-origin"),
            (
                settings("example.com", &["https://evil.test"]),
                "--webauthn-rp-id",
            ),
            (
                settings("example.com", &["https://example.com", "https://evil.test"]),
                "--webauthn-origin",
            ),
        ] {
            let error = relying_party(&bad).expect_err("refused").to_string();
            assert!(error.contains(flag), "{error}");
        }
    }

    #[test]
    fn names_and_ids_are_checked() {
        assert_eq!(check_name("  work laptop ").unwrap(), "work laptop");
        assert!(check_name("").is_err());
        assert!(check_name(&"x".repeat(MAX_NAME_CHARS + 1)).is_err());
        assert!(check_name("a\nb").is_err());
        assert!(check_passkey_id("nope").is_err());
        let id = Uuid::new_v4().to_string();
        assert_eq!(check_passkey_id(&id.to_uppercase()).unwrap(), id);
    }
}

//! Self-service: what signed-in users do to their own account (`AccountService`). The
//! caller is the owner of a valid session token; changes that could lock them out or hand
//! the account to whoever holds a stolen token also need the current password, whose
//! failures count towards the login throttles. The admin command line's counterparts
//! (by identifier, no current password) live beside the rules they share: `accounts`,
//! `sessions`, `two_factor`.
use crate::clock::{UnixMillis, millis};
use crate::domain::accounts::user_context;
use crate::domain::app::{Caller, StPeter, UserKind, UserView};
use crate::domain::audit::{self, Event};
use crate::domain::identifier::Identifier;
use crate::domain::sessions::SessionView;
use crate::domain::throttle::{self, Backoff, Guess, Reserved};
use crate::error::{Error, Result, invalid};
use crate::secrets::password;
use crate::secrets::recovery_codes;
use crate::secrets::token::{self, ENROLLMENT_PREFIX, SecretHash};
use crate::secrets::totp;
use crate::store::{NewTotpEnrollment, RevokeSessions, TotpConfirmation, UserRecord};

/// The caller of a self-service operation: the user, and which session is theirs.
pub(crate) struct SignedIn {
    pub(crate) user: UserRecord,
    token_hash: SecretHash,
}

impl SignedIn {
    pub(crate) fn id(&self) -> &str {
        &self.user.owner.id
    }

    /// Every other live session of the user.
    fn others(&self) -> RevokeSessions<'_> {
        RevokeSessions {
            user_id: self.id(),
            except: Some(&self.token_hash),
        }
    }
}

/// A TOTP enrollment waiting for its confirming code. The URI holds the new secret.
#[derive(Clone)]
pub struct PendingTotp {
    pub enrollment_id: String,
    pub otpauth_uri: String,
    pub expires_at: UnixMillis,
}

impl std::fmt::Debug for PendingTotp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingTotp")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// TOTP is active: the recovery codes, shown once.
#[derive(Clone)]
pub struct ConfirmedTotp {
    pub recovery_codes: Vec<String>,
    pub revoked_sessions: u64,
}

impl std::fmt::Debug for ConfirmedTotp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfirmedTotp")
            .field("revoked_sessions", &self.revoked_sessions)
            .finish_non_exhaustive()
    }
}

/// The caller's account as an account page shows it.
#[derive(Debug, Clone)]
pub struct AccountView {
    pub user: UserView,
    pub totp_enabled: bool,
    pub recovery_codes_left: u64,
    pub passkeys: u64,
}

impl StPeter {
    /// Who the caller is and which second factors they have.
    pub async fn own_account(&self, token: &str) -> Result<AccountView> {
        let me = self.signed_in(token).await?;
        let totp_enabled = me.user.totp_secret.is_some();
        let recovery_codes_left = if totp_enabled {
            self.store.unused_recovery_codes(me.id()).await?
        } else {
            0
        };
        Ok(AccountView {
            user: UserView::from(&me.user),
            totp_enabled,
            recovery_codes_left,
            passkeys: u64::try_from(me.user.passkeys).unwrap_or(0),
        })
    }

    /// Sets a new password after checking the current one. The caller's session stays;
    /// with `revoke_other_sessions` every other one ends. Returns how many ended.
    pub async fn change_own_password(
        &self,
        caller: &Caller,
        token: &str,
        current_password: &str,
        new_password: &str,
        revoke_other_sessions: bool,
    ) -> Result<u64> {
        let me = self.signed_in(token).await?;
        password::check_given("current_password", current_password)?;
        if new_password == current_password {
            return Err(invalid(
                "new_password",
                "must differ from the current password",
            ));
        }
        // Strength first: it costs no hash and spends no attempt.
        self.check_new_password("new_password", new_password, &user_context(&me.user))?;
        self.check_current_password(Event::PasswordChange, caller, &me.user, current_password)
            .await?;
        let hash = self
            .passwords
            .admit(caller.deadline)?
            .hash(new_password)
            .await?;
        let revoke = revoke_other_sessions.then(|| me.others());
        let revoked = self
            .store
            .change_password(me.id(), &hash, revoke, self.now())
            .await?;
        if revoked > 0 {
            self.changed_user(me.id());
        }
        let outcome = if revoke_other_sessions {
            "changed_and_revoked_others"
        } else {
            "changed"
        };
        audit::record(Event::PasswordChange, outcome, Some(me.id()), caller);
        Ok(revoked)
    }

    /// Holds a new TOTP secret for the caller until a code from it confirms it. A second
    /// Begin replaces the first; a user who has TOTP must disable it first.
    pub async fn begin_totp_enrollment(&self, caller: &Caller, token: &str) -> Result<PendingTotp> {
        let me = self.signed_in(token).await?;
        if me.user.totp_secret.is_some() {
            return Err(Error::FailedPrecondition(
                "TOTP is already enrolled: disable it first (DisableTotp, with the current \
                 password), then enroll the new authenticator"
                    .into(),
            ));
        }
        let secret = totp::new_secret();
        let otpauth_uri =
            totp::otpauth_uri(&secret, &self.settings.totp_issuer, &me.user.owner.handle)?;
        let sealed = self.totp_key()?.seal(me.id(), &secret)?;
        let minted = token::mint(ENROLLMENT_PREFIX);
        let now = self.now();
        let expires_at = now.saturating_add(millis(self.settings.totp_enrollment_ttl));
        self.store
            .put_totp_enrollment(NewTotpEnrollment {
                id_hash: &minted.hash,
                user_id: me.id(),
                sealed_secret: &sealed,
                created_at: now,
                expires_at,
            })
            .await?;
        audit::record(Event::TotpEnrollment, "begun", Some(me.id()), caller);
        Ok(PendingTotp {
            enrollment_id: minted.secret,
            otpauth_uri,
            expires_at,
        })
    }

    /// Activates the caller's pending enrollment with a code from the new authenticator
    /// and issues recovery codes. The code's step is spent: a login cannot replay it.
    pub async fn confirm_totp_enrollment(
        &self,
        caller: &Caller,
        token: &str,
        enrollment_id: &str,
        code: &str,
        revoke_other_sessions: bool,
    ) -> Result<ConfirmedTotp> {
        let me = self.signed_in(token).await?;
        check_enrollment_id(enrollment_id)?;
        totp::check_code_shape(code)?;
        let now = self.now();
        let reserved = match Reserved::attempt(
            &[(&self.throttles.two_factor_user, me.id().as_bytes())],
            now,
        )
        .await?
        {
            Ok(reserved) => reserved,
            Err(wait) => {
                audit::record(Event::TotpEnrollment, "throttled", Some(me.id()), caller);
                return Err(Error::RateLimited(wait));
            }
        };
        let guess = self
            .confirm_guess(caller, &me, enrollment_id, code, revoke_other_sessions, now)
            .await;
        let (recovery_codes, revoked_sessions) = reserved.settle(guess, self.now()).await??;
        if revoked_sessions > 0 {
            self.changed_user(me.id());
        }
        audit::record(Event::TotpEnrollment, "confirmed", Some(me.id()), caller);
        Ok(ConfirmedTotp {
            recovery_codes,
            revoked_sessions,
        })
    }

    /// Removes the caller's TOTP and recovery codes, given the current password.
    pub async fn disable_own_totp(
        &self,
        caller: &Caller,
        token: &str,
        current_password: &str,
    ) -> Result<()> {
        let me = self.signed_in(token).await?;
        password::check_given("current_password", current_password)?;
        if me.user.totp_secret.is_none() {
            return Err(totp_not_enrolled());
        }
        self.check_current_password(Event::TotpDisable, caller, &me.user, current_password)
            .await?;
        self.store
            .set_totp_secret(me.id(), None, &[], self.now())
            .await?;
        audit::record(Event::TotpDisable, "disabled", Some(me.id()), caller);
        Ok(())
    }

    /// Replaces the caller's recovery codes, given the current password.
    pub async fn regenerate_own_recovery_codes(
        &self,
        caller: &Caller,
        token: &str,
        current_password: &str,
    ) -> Result<Vec<String>> {
        let me = self.signed_in(token).await?;
        password::check_given("current_password", current_password)?;
        if me.user.totp_secret.is_none() {
            return Err(totp_not_enrolled());
        }
        self.check_current_password(Event::RecoveryCodes, caller, &me.user, current_password)
            .await?;
        let codes = self.replace_recovery_codes(me.id()).await?;
        audit::record(Event::RecoveryCodes, "regenerated", Some(me.id()), caller);
        Ok(codes)
    }

    /// The caller's live sessions, newest first, their own marked `current`.
    pub async fn list_own_sessions(&self, token: &str) -> Result<Vec<SessionView>> {
        let me = self.signed_in(token).await?;
        self.sessions_of(me.id(), Some(&me.token_hash)).await
    }

    /// Ends one of the caller's sessions by id; another user's is `NotFound`.
    pub async fn revoke_own_session(
        &self,
        caller: &Caller,
        token: &str,
        session_id: &str,
    ) -> Result<()> {
        let me = self.signed_in(token).await?;
        self.revoke_session_by_id(caller, session_id, Some(me.id()))
            .await
    }

    /// Ends every live session of the caller but the one making the call.
    pub async fn revoke_own_other_sessions(&self, caller: &Caller, token: &str) -> Result<u64> {
        let me = self.signed_in(token).await?;
        let revoked = self.revoke_sessions(me.others()).await?;
        audit::record(Event::Revoke, "revoked_others", Some(me.id()), caller);
        Ok(revoked)
    }

    /// The owner of a bearer token, or `Unauthenticated` for anything but a valid session.
    pub(crate) async fn signed_in(&self, token: &str) -> Result<SignedIn> {
        let not_valid =
            Error::Unauthenticated("authorization: the bearer token is not a valid session");
        let verified = match self.verify_token(token).await {
            Ok(verified) => verified,
            Err(Error::Unauthenticated(_) | Error::InvalidArgument { .. }) => {
                return Err(not_valid);
            }
            Err(other) => return Err(other),
        };
        let token_hash = token::hash(token);
        self.last_seen.saw(&token_hash, self.now());
        let user = self
            .store
            .find_user_by_id(&verified.user.user_id)
            .await?
            .filter(|user| !user.owner.disabled)
            .ok_or(not_valid)?;
        if user.owner.kind == UserKind::Service {
            return Err(Error::PermissionDenied(
                "authorization: service accounts have no self-service account; they are \
                 administered with `st-peter service`"
                    .into(),
            ));
        }
        Ok(SignedIn { user, token_hash })
    }

    /// The code check of `confirm_totp_enrollment`, past the throttle: the new recovery
    /// codes and how many other sessions were revoked. A wrong code is a failed guess; a
    /// vanished enrollment was no guess at all.
    async fn confirm_guess(
        &self,
        caller: &Caller,
        me: &SignedIn,
        enrollment_id: &str,
        code: &str,
        revoke_other_sessions: bool,
        now: UnixMillis,
    ) -> Result<Guess<Result<(Vec<String>, u64)>>> {
        let gone = || {
            audit::record(
                Event::TotpEnrollment,
                "no_such_enrollment",
                Some(me.id()),
                caller,
            );
            enrollment_gone()
        };
        let id_hash = token::hash(enrollment_id);
        let Some(sealed) = self
            .store
            .attempt_totp_enrollment(&id_hash, me.id(), now, self.settings.challenge_max_attempts)
            .await?
        else {
            return Ok(Guess::NotChecked(Err(gone())));
        };
        let secret = self.totp_key()?.open(me.id(), &sealed)?;
        let Some(step) = totp::matching_step(&secret, code, now)? else {
            audit::record(Event::TotpEnrollment, "wrong_code", Some(me.id()), caller);
            return Ok(Guess::Failed(Err(invalid(
                "code",
                "does not match the new authenticator: check that it was set up from this \
                 enrollment's QR code and that the device's clock is right",
            ))));
        };
        let (recovery_codes, hashes) = recovery_codes::issue(me.id());
        let confirmed = self
            .store
            .confirm_totp_enrollment(TotpConfirmation {
                id_hash: &id_hash,
                user_id: me.id(),
                step,
                recovery_code_hashes: &hashes,
                revoke_others_of: revoke_other_sessions.then_some(&me.token_hash),
                now,
            })
            .await?;
        // Gone since the attempt: a concurrent confirmation won.
        Ok(match confirmed {
            Some(revoked_sessions) => Guess::Succeeded(Ok((recovery_codes, revoked_sessions))),
            None => Guess::NotChecked(Err(gone())),
        })
    }

    /// Checks the current password a sensitive change was given. Failures count towards
    /// the login throttles of every identifier of the user and of the caller's address,
    /// so a stolen session cannot be used to guess the password faster than a login can.
    pub(crate) async fn check_current_password(
        &self,
        event: Event,
        caller: &Caller,
        user: &UserRecord,
        current_password: &str,
    ) -> Result<()> {
        let keys = identifier_keys(user);
        let throttles = &self.throttles;
        let now = self.now();
        let address = caller.address.map(throttle::address);
        let mut checks: Vec<(&Backoff, &[u8])> = keys
            .iter()
            .map(|key| (&throttles.login_identifier, key.as_bytes()))
            .collect();
        if let Some(address) = &address {
            checks.push((&throttles.login_address, &address[..]));
        }
        let reserved = match Reserved::attempt(&checks, now).await? {
            Ok(reserved) => reserved,
            Err(wait) => {
                audit::record(event, "throttled", Some(&user.owner.id), caller);
                return Err(Error::RateLimited(wait));
            }
        };
        let check = async {
            let check = self
                .passwords
                .admit(caller.deadline)?
                .verify(current_password, Some(&user.password_hash))
                .await?;
            Ok(if check.matches {
                Guess::Succeeded(true)
            } else {
                Guess::Failed(false)
            })
        }
        .await;
        if !reserved.settle(check, self.now()).await? {
            audit::record(event, "wrong_password", Some(&user.owner.id), caller);
            return Err(Error::PermissionDenied("current_password: is wrong".into()));
        }
        Ok(())
    }
}

/// The login-throttle keys of every identifier the user can log in with.
pub(crate) fn identifier_keys(user: &UserRecord) -> Vec<String> {
    let owner = &user.owner;
    [
        Some(Identifier::Handle(owner.handle.clone())),
        owner.email.clone().map(Identifier::Email),
        owner.phone.clone().map(Identifier::Phone),
    ]
    .into_iter()
    .flatten()
    .map(|identifier| identifier.key())
    .collect()
}

pub(crate) fn check_enrollment_id(enrollment_id: &str) -> Result<()> {
    token::check_issued(
        "enrollment_id",
        ENROLLMENT_PREFIX,
        enrollment_id,
        "an enrollment id from BeginTotpEnrollment",
    )
}

fn enrollment_gone() -> Error {
    Error::FailedPrecondition(
        "enrollment_id: unknown, expired, out of attempts or already confirmed: call \
         BeginTotpEnrollment again"
            .into(),
    )
}

fn totp_not_enrolled() -> Error {
    Error::FailedPrecondition("TOTP is not enrolled".into())
}

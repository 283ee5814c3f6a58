//! The second step of a login: TOTP challenges, and enrolling or removing TOTP.
use crate::clock::{UnixMillis, millis};
use crate::domain::app::{Caller, StPeter};
use crate::domain::audit::{self, Event};
use crate::domain::sessions::{FailureReason, LoginOutcome, SecondFactors};
use crate::domain::throttle::{Guess, Reserved};
use crate::error::{Error, Result, invalid};
use crate::secrets::recovery_codes;
use crate::secrets::token::{self, CHALLENGE_PREFIX, SESSION_PREFIX, SecretHash};
use crate::secrets::totp;
use crate::secrets::totp_key::TotpKey;
use crate::store::{NewSession, SecondFactor, TwoFactorCompletion, UserRecord};

/// What an administrator needs to hand to the user after enrolling TOTP. Shown once:
/// neither the secret nor the recovery codes can be read back later.
#[derive(Clone, serde::Serialize)]
pub struct TotpEnrollment {
    pub user_id: String,
    pub otpauth_uri: String,
    /// One-time codes for when the authenticator is lost, each accepted once.
    pub recovery_codes: Vec<String>,
}

impl std::fmt::Debug for TotpEnrollment {
    // The URI holds the TOTP secret; the codes are secrets too.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpEnrollment")
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

/// What a caller sent as the second factor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecondFactorCode {
    /// A 6-digit TOTP code.
    Totp(String),
    /// A recovery code, normalized.
    RecoveryCode(String),
}

impl SecondFactorCode {
    /// Tells a TOTP code from a recovery code; anything else is `INVALID_ARGUMENT`.
    pub fn parse(code: &str) -> Result<Self> {
        if code.is_empty() {
            return Err(invalid("code", "must not be empty"));
        }
        if totp::check_code_shape(code).is_ok() {
            return Ok(Self::Totp(code.to_owned()));
        }
        recovery_codes::normalize(code)
            .map(Self::RecoveryCode)
            .ok_or_else(|| {
                invalid(
                    "code",
                    format!(
                        "must be {} digits, or a recovery code (xxxx-xxxx-xxxx-xxxx)",
                        totp::DIGITS
                    ),
                )
            })
    }
}

impl StPeter {
    pub(crate) async fn start_two_factor(&self, user: &UserRecord) -> Result<LoginOutcome> {
        let minted = token::mint(CHALLENGE_PREFIX);
        let now = self.now();
        let expires_at = now.saturating_add(millis(self.settings.challenge_ttl));
        self.store
            .create_challenge(&minted.hash, &user.owner.id, now, expires_at)
            .await?;
        Ok(LoginOutcome::TwoFactor {
            two_factor_id: minted.secret,
            expires_at,
            methods: SecondFactors::of(user),
        })
    }

    /// Finishes a login with a TOTP code. Each call spends one of the challenge's attempts;
    /// a code is accepted once per user, ever.
    pub async fn verify_two_factor(
        &self,
        caller: &Caller,
        two_factor_id: &str,
        code: &str,
    ) -> Result<LoginOutcome> {
        token::check_issued(
            "two_factor_id",
            CHALLENGE_PREFIX,
            two_factor_id,
            "a two-factor id issued by Login",
        )?;
        let code = SecondFactorCode::parse(code)?;

        let challenge_hash = token::hash(two_factor_id);
        let now = self.now();
        let throttles = &self.throttles;
        // Both throttles count the guess before it is checked; the user's is known only
        // once the challenge is read, and joins then.
        let mut reserved = match Reserved::attempt(
            &[(&throttles.two_factor_challenge, &challenge_hash[..])],
            now,
        )
        .await?
        {
            Ok(reserved) => reserved,
            Err(wait) => {
                audit::record(Event::TwoFactor, "throttled", None, caller);
                return Ok(LoginOutcome::rate_limited(wait));
            }
        };
        let guess = self
            .second_factor_guess(caller, &challenge_hash, &code, now, &mut reserved)
            .await;
        reserved.settle(guess, self.now()).await
    }

    /// The second factor step past the challenge's throttle.
    async fn second_factor_guess<'a>(
        &'a self,
        caller: &Caller,
        challenge_hash: &SecretHash,
        code: &SecondFactorCode,
        now: UnixMillis,
        reserved: &mut Reserved<'a>,
    ) -> Result<Guess<LoginOutcome>> {
        let Some(attempt) = self
            .store
            .attempt_challenge(challenge_hash, now, self.settings.challenge_max_attempts)
            .await?
        else {
            return Ok(Guess::NotChecked(LoginOutcome::failed(
                FailureReason::ChallengeExpired,
            )));
        };
        let user = self
            .store
            .find_user_by_id(&attempt.user_id)
            .await?
            .filter(|user| !user.owner.disabled && SecondFactors::of(user).any());
        let Some(user) = user else {
            // Disabled or un-enrolled since the password step: the challenge is void.
            return Ok(Guess::NotChecked(LoginOutcome::failed(
                FailureReason::ChallengeExpired,
            )));
        };
        if let Err(wait) = reserved
            .also(
                &self.throttles.two_factor_user,
                user.owner.id.as_bytes(),
                now,
            )
            .await?
        {
            audit::record(Event::TwoFactor, "throttled", Some(&user.owner.id), caller);
            return Ok(Guess::NotChecked(LoginOutcome::rate_limited(wait)));
        }
        let recovery_hash;
        let factor = match code {
            // A user with passkeys alone has no code that matches.
            SecondFactorCode::Totp(code) => match &user.totp_secret {
                Some(sealed) => {
                    let secret = self.totp_key()?.open(&user.owner.id, sealed)?;
                    totp::matching_step(&secret, code, now)?.map(|step| SecondFactor::Totp { step })
                }
                None => None,
            },
            SecondFactorCode::RecoveryCode(normalized) => {
                recovery_hash = recovery_codes::hash(&user.owner.id, normalized);
                Some(SecondFactor::RecoveryCode {
                    hash: &recovery_hash,
                })
            }
        };
        let Some(factor) = factor else {
            audit::record(Event::TwoFactor, "failure", Some(&user.owner.id), caller);
            return Ok(Guess::Failed(LoginOutcome::failed(
                FailureReason::InvalidCode,
            )));
        };

        let session = token::mint(SESSION_PREFIX);
        let expires_at = now.saturating_add(millis(self.settings.session_ttl));
        let completion = self
            .store
            .complete_two_factor(
                challenge_hash,
                factor,
                NewSession {
                    id: &crate::domain::sessions::new_session_id(),
                    token_hash: &session.hash,
                    user_id: &user.owner.id,
                    created_at: now,
                    expires_at,
                    api_key_id: None,
                },
            )
            .await?;
        let outcome = match (completion, code) {
            (TwoFactorCompletion::Completed, SecondFactorCode::Totp(_)) => "success",
            (TwoFactorCompletion::Completed, SecondFactorCode::RecoveryCode(_)) => {
                "success_recovery_code"
            }
            (TwoFactorCompletion::Refused, SecondFactorCode::Totp(_)) => "replayed",
            (TwoFactorCompletion::Refused, SecondFactorCode::RecoveryCode(_)) => {
                "recovery_code_refused"
            }
            (TwoFactorCompletion::ChallengeGone, _) => "challenge_gone",
        };
        audit::record(Event::TwoFactor, outcome, Some(&user.owner.id), caller);
        Ok(match completion {
            TwoFactorCompletion::Completed => Guess::Succeeded(LoginOutcome::Authenticated(
                crate::domain::sessions::IssuedSession {
                    token: session.secret,
                    expires_at,
                    user: (&user).into(),
                },
            )),
            TwoFactorCompletion::Refused => {
                Guess::Failed(LoginOutcome::failed(FailureReason::InvalidCode))
            }
            TwoFactorCompletion::ChallengeGone => {
                Guess::NotChecked(LoginOutcome::failed(FailureReason::ChallengeExpired))
            }
        })
    }

    /// Enrolls (or re-enrolls) TOTP for a user: a new secret and new recovery codes replace
    /// any old ones. The secret is stored sealed with the TOTP key, the codes as hashes.
    pub async fn enroll_totp(&self, identifier: &str) -> Result<TotpEnrollment> {
        let user = self.find_person(identifier).await?;
        let secret = totp::new_secret();
        let otpauth_uri =
            totp::otpauth_uri(&secret, &self.settings.totp_issuer, &user.owner.handle)?;
        let sealed = self.totp_key()?.seal(&user.owner.id, &secret)?;
        let (codes, hashes) = recovery_codes::issue(&user.owner.id);
        self.store
            .set_totp_secret(&user.owner.id, Some(&sealed), &hashes, self.now())
            .await?;
        Ok(TotpEnrollment {
            user_id: user.owner.id,
            otpauth_uri,
            recovery_codes: codes,
        })
    }

    /// Issues new recovery codes to a user with TOTP on an administrator's word; the old
    /// ones stop working.
    pub async fn regenerate_recovery_codes(&self, identifier: &str) -> Result<Vec<String>> {
        let user = self.find_person(identifier).await?;
        let codes = self.replace_recovery_codes(&user.owner.id).await?;
        audit::record(
            Event::RecoveryCodes,
            "regenerated",
            Some(&user.owner.id),
            &Caller::CLI,
        );
        Ok(codes)
    }

    /// New recovery codes replace the user's; `FailedPrecondition` without TOTP.
    pub(crate) async fn replace_recovery_codes(&self, user_id: &str) -> Result<Vec<String>> {
        let (codes, hashes) = recovery_codes::issue(user_id);
        if !self
            .store
            .replace_recovery_codes(user_id, &hashes, self.now())
            .await?
        {
            return Err(Error::FailedPrecondition("TOTP is not enrolled".into()));
        }
        Ok(codes)
    }

    pub(crate) fn totp_key(&self) -> Result<&TotpKey> {
        self.settings.totp_key.as_ref().ok_or_else(|| {
            Error::Config("no TOTP key: set --totp-key-file or ST_PETER_TOTP_KEY".into())
        })
    }

    /// Removes TOTP: the user logs in with the password alone again.
    pub async fn disable_totp(&self, identifier: &str) -> Result<String> {
        let user = self.find_user(identifier).await?;
        if user.totp_secret.is_none() {
            return Err(Error::FailedPrecondition(format!(
                "{}: TOTP is not enrolled",
                user.owner.handle
            )));
        }
        self.store
            .set_totp_secret(&user.owner.id, None, &[], self.now())
            .await?;
        Ok(user.owner.id)
    }
}

//! The answers st-peter gives, as plain Rust types.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use st_peter_proto::auth::v1 as pb;

/// A user as st-peter knows them. Key your own local roles on `user_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub user_id: String,
    pub handle: String,
    /// Lowercase; `None` when the user has no email.
    pub email: Option<String>,
    /// E.164; `None` when the user has no phone.
    pub phone: Option<String>,
    pub display_name: String,
    pub disabled: bool,
    /// A person or a service account.
    pub kind: UserKind,
}

/// What kind of principal a [`User`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserKind {
    /// A person: logs in with a password (and a second factor where enrolled).
    Human,
    /// A service account: platform roles and API keys, no password. Its tokens come from
    /// [`Client::exchange_api_key`](crate::Client::exchange_api_key).
    Service,
    /// A kind this client version does not know yet.
    Unknown(i32),
}

/// The verified owner of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedUser {
    pub user: User,
    /// Platform roles, sorted.
    pub roles: Vec<String>,
    /// When the token stops being valid; the cache never serves the answer past this.
    pub expires_at: SystemTime,
}

impl VerifiedUser {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// A session token and its user: from a login, or from exchanging an API key.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    pub token: String,
    pub expires_at: SystemTime,
    pub user: User,
}

impl std::fmt::Debug for Session {
    // The token is a secret: keep it out of logs that print the outcome.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("user", &self.user)
            .finish()
    }
}

/// A second factor is required to finish the login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwoFactorChallenge {
    /// Send this with the user's code to `verify_two_factor`, or (for a passkey) to
    /// `begin_passkey_login`.
    pub two_factor_id: String,
    pub expires_at: SystemTime,
    pub methods: Vec<TwoFactorMethod>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TwoFactorMethod {
    /// A 6-digit code from an authenticator app.
    Totp,
    /// One of the recovery codes issued with the enrollment, each accepted once.
    RecoveryCode,
    /// One of the user's passkeys: `begin_passkey_login` with
    /// [`PasskeyLogin::TwoFactor`](crate::PasskeyLogin::TwoFactor), then
    /// `finish_passkey_login`.
    Passkey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// Wrong password, unknown identifier or disabled user: deliberately indistinguishable.
    InvalidCredentials,
    RateLimited,
    InvalidCode,
    ChallengeExpired,
    /// A reason this client version does not know yet.
    Unknown(i32),
}

/// Why a login did not succeed, and how long to wait where that applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginFailure {
    pub reason: FailureReason,
    pub retry_after: Option<Duration>,
}

/// The answer to `login`, `verify_two_factor` and `finish_passkey_login`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginOutcome {
    Authenticated(Session),
    TwoFactor(TwoFactorChallenge),
    Failed(LoginFailure),
}

pub(crate) fn system_time(timestamp: Option<prost_types::Timestamp>) -> SystemTime {
    let Some(ts) = timestamp else {
        return UNIX_EPOCH;
    };
    let seconds = Duration::from_secs(u64::try_from(ts.seconds).unwrap_or(0));
    let nanos = Duration::from_nanos(u64::try_from(ts.nanos).unwrap_or(0));
    UNIX_EPOCH + seconds + nanos
}

fn user_kind(kind: i32) -> UserKind {
    match pb::UserKind::try_from(kind) {
        Ok(pb::UserKind::Human) => UserKind::Human,
        // Servers from before service accounts do not send the field, and have only people.
        Ok(pb::UserKind::Unspecified) => UserKind::Human,
        Ok(pb::UserKind::Service) => UserKind::Service,
        Err(_) => UserKind::Unknown(kind),
    }
}

impl From<pb::User> for User {
    fn from(user: pb::User) -> Self {
        let non_empty = |s: String| (!s.is_empty()).then_some(s);
        Self {
            kind: user_kind(user.kind),
            user_id: user.user_id,
            handle: user.handle,
            email: non_empty(user.email),
            phone: non_empty(user.phone),
            display_name: user.display_name,
            disabled: user.disabled,
        }
    }
}

impl From<pb::VerifyTokenResponse> for VerifiedUser {
    fn from(response: pb::VerifyTokenResponse) -> Self {
        Self {
            user: response.user.unwrap_or_default().into(),
            roles: response.roles,
            expires_at: system_time(response.expires_at),
        }
    }
}

impl From<pb::Authenticated> for Session {
    fn from(auth: pb::Authenticated) -> Self {
        Self {
            token: auth.token,
            expires_at: system_time(auth.expires_at),
            user: auth.user.unwrap_or_default().into(),
        }
    }
}

impl From<pb::LoginResponse> for LoginOutcome {
    fn from(response: pb::LoginResponse) -> Self {
        use pb::login_response::Result as Outcome;
        match response.result {
            Some(Outcome::Authenticated(auth)) => LoginOutcome::Authenticated(auth.into()),
            Some(Outcome::TwoFactor(challenge)) => LoginOutcome::TwoFactor(TwoFactorChallenge {
                methods: challenge
                    .methods()
                    .filter_map(|m| match m {
                        pb::TwoFactorMethod::Totp => Some(TwoFactorMethod::Totp),
                        pb::TwoFactorMethod::RecoveryCode => Some(TwoFactorMethod::RecoveryCode),
                        pb::TwoFactorMethod::Passkey => Some(TwoFactorMethod::Passkey),
                        pb::TwoFactorMethod::Unspecified => None,
                    })
                    .collect(),
                two_factor_id: challenge.two_factor_id,
                expires_at: system_time(challenge.expires_at),
            }),
            Some(Outcome::Failed(failed)) => LoginOutcome::Failed(LoginFailure {
                reason: match pb::FailureReason::try_from(failed.reason) {
                    Ok(pb::FailureReason::InvalidCredentials) => FailureReason::InvalidCredentials,
                    Ok(pb::FailureReason::RateLimited) => FailureReason::RateLimited,
                    Ok(pb::FailureReason::InvalidCode) => FailureReason::InvalidCode,
                    Ok(pb::FailureReason::ChallengeExpired) => FailureReason::ChallengeExpired,
                    _ => FailureReason::Unknown(failed.reason),
                },
                retry_after: failed.retry_after.and_then(|d| Duration::try_from(d).ok()),
            }),
            // An empty oneof comes only from a newer server with an outcome we cannot read:
            // fail closed.
            None => LoginOutcome::Failed(LoginFailure {
                reason: FailureReason::Unknown(0),
                retry_after: None,
            }),
        }
    }
}

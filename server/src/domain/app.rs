//! `StPeter`: the domain operations that both faces (gRPC and the admin CLI) call. Its
//! methods live beside what they act on: `accounts`, `sessions`, `two_factor`, and
//! `self_service` for what signed-in users do to their own account.
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clock::{Clock, SystemClock, UnixMillis, millis};
use crate::domain::last_seen::LastSeen;
use crate::domain::throttle::{ThrottlePolicies, Throttles};
use crate::error::Result;
use crate::revocation::cache::VerifyCacheSettings;
use crate::revocation::{LOG_RETENTION, Revocations};
use crate::secrets::password::{AdmissionSettings, PasswordParams, Passwords};
use crate::secrets::totp_key::TotpKey;
use crate::store::{OwnerRecord, Store, UserRecord};

/// Which face a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Face {
    Grpc,
    /// The admin command line on the server's own machine.
    Cli,
}

impl Face {
    pub fn name(self) -> &'static str {
        match self {
            Face::Grpc => "grpc",
            Face::Cli => "cli",
        }
    }
}

/// Who is on the other end of a request: throttling and audit lines use it.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub address: Option<IpAddr>,
    pub face: Face,
    /// When the caller stops waiting (gRPC's `grpc-timeout`): password work that cannot
    /// finish by then is refused before it starts.
    pub deadline: Option<Instant>,
}

impl Caller {
    pub fn grpc(address: Option<IpAddr>, deadline: Option<Instant>) -> Self {
        Self {
            address,
            face: Face::Grpc,
            deadline,
        }
    }

    /// The admin command line on the server's own machine.
    pub const CLI: Self = Self {
        address: None,
        face: Face::Cli,
        deadline: None,
    };
}

/// Tunables of the domain, with production defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a session token lives.
    pub session_ttl: Duration,
    /// How long a two-factor challenge lives.
    pub challenge_ttl: Duration,
    /// Codes a challenge (or a pending TOTP enrollment) accepts before it dies.
    pub challenge_max_attempts: u32,
    /// How long a TOTP enrollment waits for its confirming code.
    pub totp_enrollment_ttl: Duration,
    /// The zxcvbn score (0 to 4) a new password needs; 0 checks the length alone.
    pub min_password_score: u8,
    /// Issuer shown by authenticator apps.
    pub totp_issuer: String,
    pub password_params: PasswordParams,
    /// argon2 computations running at once; defaults to all cores but one.
    pub hash_concurrency: usize,
    /// How long password checks may queue for the hashing threads.
    pub admission: AdmissionSettings,
    pub throttle: ThrottlePolicies,
    /// Seals TOTP secrets at rest. `None` refuses TOTP enrollment and TOTP logins.
    pub totp_key: Option<TotpKey>,
    /// The server's verification cache (used while the revocation feed is followed).
    pub verify_cache: VerifyCacheSettings,
    /// How long a session exchanged for an API key lives (never past its key).
    pub api_token_ttl: Duration,
    /// VerifyToken, LookupUser and WatchRevocations answer only callers that present a
    /// service account's token or a client certificate.
    pub require_caller_credentials: bool,
    /// The relying party passkeys are bound to. `None` turns passkeys off: their calls
    /// answer `FailedPrecondition`.
    pub webauthn: Option<crate::domain::passkeys::WebauthnSettings>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            session_ttl: Duration::from_secs(24 * 60 * 60),
            challenge_ttl: Duration::from_secs(5 * 60),
            challenge_max_attempts: 5,
            totp_enrollment_ttl: Duration::from_secs(10 * 60),
            min_password_score: crate::secrets::password_strength::DEFAULT_MIN_SCORE,
            totp_issuer: "st-peter".into(),
            password_params: PasswordParams::OWASP,
            hash_concurrency: crate::secrets::password::default_concurrency(),
            admission: AdmissionSettings::default(),
            throttle: ThrottlePolicies::default(),
            totp_key: None,
            verify_cache: VerifyCacheSettings::default(),
            api_token_ttl: Duration::from_secs(15 * 60),
            require_caller_credentials: false,
            webauthn: None,
        }
    }
}

/// What kind of principal a user is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UserKind {
    /// A person: logs in with a password (and a second factor where enrolled).
    Human,
    /// A service account: platform roles and API keys, no password, no TOTP.
    Service,
}

impl UserKind {
    /// The `users.kind` column's value.
    pub fn column(self) -> &'static str {
        match self {
            UserKind::Human => "human",
            UserKind::Service => "service",
        }
    }
}

/// A `users.kind` value that is neither `human` nor `service` (the column's CHECK
/// constraint keeps them out).
#[derive(Debug, thiserror::Error)]
#[error("users.kind: unknown kind {0:?}")]
pub struct UnknownKind(String);

impl TryFrom<String> for UserKind {
    type Error = UnknownKind;

    fn try_from(column: String) -> Result<Self, UnknownKind> {
        match column.as_str() {
            "human" => Ok(UserKind::Human),
            "service" => Ok(UserKind::Service),
            _ => Err(UnknownKind(column)),
        }
    }
}

/// A user as callers may see them: no secrets.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UserView {
    pub user_id: String,
    pub handle: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub display_name: String,
    pub disabled: bool,
    pub kind: UserKind,
}

impl From<&UserRecord> for UserView {
    fn from(user: &UserRecord) -> Self {
        Self::from(user.owner.clone())
    }
}

impl From<OwnerRecord> for UserView {
    fn from(user: OwnerRecord) -> Self {
        Self {
            kind: user.kind,
            user_id: user.id,
            handle: user.handle,
            email: user.email,
            phone: user.phone,
            display_name: user.display_name,
            disabled: user.disabled,
        }
    }
}

pub struct StPeter {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) passwords: Passwords,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) settings: Settings,
    pub(crate) throttles: Throttles,
    pub(crate) revocations: Arc<Revocations>,
    pub(crate) last_seen: LastSeen,
    pub(crate) relying_party: Option<webauthn_rs::Webauthn>,
}

impl StPeter {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, settings: Settings) -> Result<Self> {
        let passwords = Passwords::with_admission(
            settings.password_params,
            settings.hash_concurrency,
            settings.admission,
        )?;
        let throttles = Throttles::new(&settings.throttle, clock.clone(), &store);
        let relying_party = settings
            .webauthn
            .as_ref()
            .map(crate::domain::passkeys::relying_party)
            .transpose()?;
        Ok(Self {
            relying_party,
            store,
            passwords,
            throttles,
            revocations: Arc::new(Revocations::new(settings.verify_cache)),
            last_seen: LastSeen::default(),
            clock,
            settings,
        })
    }

    /// The production clock.
    pub fn system_clock() -> Arc<dyn Clock> {
        Arc::new(SystemClock)
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Whether this server's throttles are shared with every server on its database
    /// (PostgreSQL) rather than kept in its own memory (SQLite).
    pub fn shares_throttles(&self) -> bool {
        self.throttles.shared()
    }

    /// The password-hashing queue now: pending checks, a hash's duration, shed and
    /// skipped counts.
    pub fn hashing_queue(&self) -> crate::secrets::password::QueueStats {
        self.passwords.queue_stats()
    }

    pub(crate) fn now(&self) -> UnixMillis {
        self.clock.now_millis()
    }

    /// Deletes expired sessions and challenges, revocation log rows past their retention,
    /// and shared throttle rows that no longer decide anything; run now and then by the
    /// server.
    pub async fn purge_expired(&self) -> Result<u64> {
        // Keep a day of ended sessions around for forensics before deleting them.
        let grace = 24 * 60 * 60 * 1000;
        let now = self.now();
        let throttles = self.throttles.purge(now).await?;
        let rows = self
            .store
            .purge_expired(now, now - grace, now - millis(LOG_RETENTION))
            .await?;
        Ok(rows + throttles)
    }

    /// The revocation feed this server follows (its verification cache, its subscribers).
    pub fn revocations(&self) -> &Arc<Revocations> {
        &self.revocations
    }
}

//! Persistence behind one trait, one implementation for both backends (`sql.rs`) with what
//! differs per backend beside it. The store knows rows and transactions, nothing of gRPC or
//! of the rules that decide a login.
mod postgres;
mod sql;
mod sqlite;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::UnixMillis;
pub use crate::domain::app::UserKind;
pub use crate::domain::identifier::Identifier;
use crate::error::{Error, Result};
use crate::secrets::token::SecretHash;

/// A user row, secrets included: never leaves the server.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRecord {
    /// The columns the verify path reads too.
    #[sqlx(flatten)]
    pub owner: OwnerRecord,
    pub password_hash: String,
    pub totp_secret: Option<Vec<u8>>,
    pub created_at: i64,
    /// How many passkeys the user has registered (a password login then asks for a second
    /// factor).
    pub passkeys: i64,
}

/// A user to insert.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub id: String,
    pub handle: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub display_name: String,
    /// Empty for a service account: no password verifies against it.
    pub password_hash: String,
    pub kind: UserKind,
    pub created_at: UnixMillis,
}

/// A user as the verify path reads them: no secret columns.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OwnerRecord {
    pub id: String,
    pub handle: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub display_name: String,
    pub disabled: bool,
    /// Read from the `users.kind` column (`human` or `service`).
    #[sqlx(try_from = "String")]
    pub kind: UserKind,
}

/// The owner of a live session.
#[derive(Debug, Clone)]
pub struct SessionOwner {
    pub user: OwnerRecord,
    pub roles: Vec<String>,
    pub expires_at: UnixMillis,
}

/// A session to insert.
#[derive(Debug, Clone, Copy)]
pub struct NewSession<'a> {
    /// The id its user names it by (a UUID); not a secret, and not a token.
    pub id: &'a str,
    pub token_hash: &'a SecretHash,
    pub user_id: &'a str,
    pub created_at: UnixMillis,
    pub expires_at: UnixMillis,
    /// The API key it was exchanged from (a service account's session), if any.
    pub api_key_id: Option<&'a str>,
}

/// A live session as its user sees it listed.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub id: String,
    /// Never leaves the server: it tells the caller's own session from the others.
    pub token_hash: SecretHash,
    pub created_at: UnixMillis,
    pub expires_at: UnixMillis,
    pub last_seen_at: Option<UnixMillis>,
}

/// A TOTP enrollment to hold until its user confirms it with a code.
#[derive(Debug, Clone, Copy)]
pub struct NewTotpEnrollment<'a> {
    pub id_hash: &'a SecretHash,
    pub user_id: &'a str,
    pub sealed_secret: &'a [u8],
    pub created_at: UnixMillis,
    pub expires_at: UnixMillis,
}

/// What activates a pending TOTP enrollment, in one transaction.
#[derive(Debug, Clone, Copy)]
pub struct TotpConfirmation<'a> {
    pub id_hash: &'a SecretHash,
    pub user_id: &'a str,
    /// The step of the code that confirmed: spent, so a login cannot replay it.
    pub step: i64,
    pub recovery_code_hashes: &'a [SecretHash],
    /// Revoke the user's other live sessions: every one but this token's.
    pub revoke_others_of: Option<&'a SecretHash>,
    pub now: UnixMillis,
}

/// Which of a user's live sessions to revoke.
#[derive(Debug, Clone, Copy)]
pub struct RevokeSessions<'a> {
    pub user_id: &'a str,
    /// Keep the session of this token hash (the caller's own).
    pub except: Option<&'a SecretHash>,
}

/// A two-factor challenge that was alive and had attempts left (one is now spent).
#[derive(Debug, Clone)]
pub struct ChallengeAttempt {
    pub user_id: String,
    pub expires_at: UnixMillis,
}

/// The second factor that finishes a two-factor login, already checked for shape.
#[derive(Debug, Clone, Copy)]
pub enum SecondFactor<'a> {
    /// A TOTP code that matched this step; claimed only if later than any step before.
    Totp { step: i64 },
    /// A recovery code: claimed only if issued to the user and not used yet.
    RecoveryCode { hash: &'a SecretHash },
    /// An assertion of one of the user's passkeys that verified: claimed only if the
    /// passkey's counter is still the one the check read.
    Passkey(PasskeyUse<'a>),
}

/// A registered passkey, its public key and counter included: never leaves the server.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PasskeyRecord {
    /// Its `passkey_id`: a UUID.
    pub id: String,
    pub user_id: String,
    /// The authenticator's id for the credential.
    pub credential_id: Vec<u8>,
    pub name: String,
    /// webauthn-rs's `Passkey` as JSON.
    pub credential: String,
    pub sign_count: i64,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// A passkey that just verified an assertion: its credential with the new counter.
#[derive(Debug, Clone, Copy)]
pub struct PasskeyUse<'a> {
    pub passkey_id: &'a str,
    /// webauthn-rs's `Passkey` as JSON, updated by the assertion.
    pub credential: &'a str,
    /// The counter the check compared against: the claim fails if another sign-in moved it.
    pub sign_count_before: i64,
    pub sign_count: i64,
    pub used_at: UnixMillis,
}

/// What a passkey ceremony is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CeremonyPurpose {
    /// Registering a passkey for `user_id`.
    Registration,
    /// Signing in: `user_id` named by the identifier, or none (discoverable).
    Login,
    /// Completing the two-factor challenge `challenge_hash` of `user_id`.
    TwoFactor,
}

impl CeremonyPurpose {
    /// The `passkey_ceremonies.purpose` column's value.
    pub fn column(self) -> &'static str {
        match self {
            Self::Registration => "registration",
            Self::Login => "login",
            Self::TwoFactor => "two_factor",
        }
    }

    fn from_column(column: &str) -> Result<Self> {
        match column {
            "registration" => Ok(Self::Registration),
            "login" => Ok(Self::Login),
            "two_factor" => Ok(Self::TwoFactor),
            other => Err(Error::Internal(format!(
                "passkey_ceremonies.purpose: unknown purpose {other:?}"
            ))),
        }
    }
}

/// A passkey ceremony between its Begin and its Finish.
#[derive(Debug, Clone)]
pub struct PasskeyCeremony {
    pub purpose: CeremonyPurpose,
    pub user_id: Option<String>,
    pub challenge_hash: Option<SecretHash>,
    /// webauthn-rs's ceremony state as JSON.
    pub state: String,
    pub expires_at: UnixMillis,
}

/// A passkey ceremony to hold until its Finish.
#[derive(Debug, Clone, Copy)]
pub struct NewPasskeyCeremony<'a> {
    pub id_hash: &'a SecretHash,
    pub purpose: CeremonyPurpose,
    pub user_id: Option<&'a str>,
    pub challenge_hash: Option<&'a SecretHash>,
    pub state: &'a str,
    pub created_at: UnixMillis,
    pub expires_at: UnixMillis,
}

/// How the atomic end of a two-factor login went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TwoFactorCompletion {
    /// Challenge consumed, factor claimed, session stored.
    Completed,
    /// The challenge was consumed by a concurrent request.
    ChallengeGone,
    /// The factor cannot be claimed: a TOTP code for this step or a later one was already
    /// accepted, or the recovery code is unknown or used.
    Refused,
}

/// An API key to insert. Only its hash is stored.
#[derive(Debug, Clone, Copy)]
pub struct NewApiKey<'a> {
    pub id: &'a str,
    pub key_hash: &'a SecretHash,
    pub user_id: &'a str,
    pub name: &'a str,
    pub created_at: UnixMillis,
    pub expires_at: Option<UnixMillis>,
}

/// An API key as its administrator sees it listed: no secret, no hash.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    pub created_at: UnixMillis,
    pub expires_at: Option<UnixMillis>,
    pub last_used_at: Option<UnixMillis>,
    pub revoked_at: Option<UnixMillis>,
}

/// An API key to exchange for a new session of its service account.
#[derive(Debug, Clone, Copy)]
pub struct ApiKeyExchange<'a> {
    pub key_hash: &'a SecretHash,
    pub session_id: &'a str,
    pub token_hash: &'a SecretHash,
    pub now: UnixMillis,
    /// The session's lifetime; it ends with its key if the key ends first.
    pub session_ttl: UnixMillis,
}

/// The session an exchange stored.
#[derive(Debug, Clone)]
pub struct ExchangedSession {
    pub user: OwnerRecord,
    pub expires_at: UnixMillis,
}

/// One row of the revocation log: what became stale, at which sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// Strictly increasing in commit order; gaps are possible (PostgreSQL).
    pub sequence: i64,
    pub change: Change,
    /// When the change was committed (the committing server's clock): the feed's lag is
    /// measured from it.
    pub created_at: UnixMillis,
}

/// What a revocation makes stale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The answer for one session token, by its hash.
    Token(SecretHash),
    /// Every answer for this user.
    User(String),
}

/// The oldest and newest sequence the revocation log still holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBounds {
    pub oldest: i64,
    pub newest: i64,
}

/// A backoff policy in milliseconds, as the shared throttle statement applies it (see
/// `domain::throttle`).
#[derive(Debug, Clone, Copy)]
pub struct BackoffRule {
    pub free_failures: i64,
    pub base: i64,
    pub max: i64,
    pub forget_after: i64,
}

/// What counting a throttled attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleCount {
    /// Counted: the key's failures so far, this one included.
    Counted(u32),
    /// The key must still wait: nothing was counted.
    Blocked,
}

/// Wakes a follower of the revocation log when another process appended to it.
#[async_trait]
pub trait LogNotices: Send {
    /// Waits until the log may have grown. An error means notices may have been lost (the
    /// listening connection dropped): read the log again before trusting a cache.
    async fn next(&mut self) -> Result<()>;
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Inserts a user with no roles. A taken handle, email or phone is `Error::Conflict`.
    async fn create_user(&self, user: &NewUser) -> Result<()>;
    /// In one transaction: inserts a user brought in by `user import` (disabled or not)
    /// with these roles, unless a user with this handle exists. Returns false, and writes
    /// nothing, when one does; a taken email or phone is `Error::Conflict`.
    async fn import_user(&self, user: &NewUser, disabled: bool, roles: &[String]) -> Result<bool>;
    async fn find_user(&self, identifier: &Identifier) -> Result<Option<UserRecord>>;
    async fn find_user_by_id(&self, id: &str) -> Result<Option<UserRecord>>;
    async fn list_users(&self) -> Result<Vec<UserRecord>>;
    /// Disabling also revokes every live session of the user, in the same transaction.
    /// Returns false when no such user exists.
    ///
    /// This and every other change that can make a verified answer wrong (disable, role
    /// grant and revoke, session revokes) appends to the revocation log in its own
    /// transaction, as its last statement.
    async fn set_disabled(&self, user_id: &str, disabled: bool, now: UnixMillis) -> Result<bool>;
    /// Replaces a password hash with a rehash of the same password, only if it is still
    /// `old_hash`: a password changed since the login that proved the old one is kept.
    /// Returns whether it was replaced.
    async fn rehash_password(
        &self,
        user_id: &str,
        old_hash: &str,
        new_hash: &str,
        now: UnixMillis,
    ) -> Result<bool>;
    /// In one transaction: sets a new password hash and, when asked, revokes sessions of
    /// the user as [`Store::revoke_user_sessions`] does. Returns how many were revoked.
    async fn change_password(
        &self,
        user_id: &str,
        hash: &str,
        revoke: Option<RevokeSessions<'_>>,
        now: UnixMillis,
    ) -> Result<u64>;
    /// Returns false when the user already had the role.
    async fn grant_role(&self, user_id: &str, role: &str, now: UnixMillis) -> Result<bool>;
    /// Returns false when the user did not have the role.
    async fn revoke_role(&self, user_id: &str, role: &str, now: UnixMillis) -> Result<bool>;
    async fn roles(&self, user_id: &str) -> Result<Vec<String>>;
    /// In one transaction: sets or clears the (sealed) TOTP secret, forgets the last
    /// accepted step, and replaces the user's recovery codes with these hashes.
    async fn set_totp_secret(
        &self,
        user_id: &str,
        sealed_secret: Option<&[u8]>,
        recovery_code_hashes: &[SecretHash],
        now: UnixMillis,
    ) -> Result<()>;
    /// Replaces the recovery codes of a user who has TOTP; false (and nothing changed)
    /// when the user has none.
    async fn replace_recovery_codes(
        &self,
        user_id: &str,
        hashes: &[SecretHash],
        now: UnixMillis,
    ) -> Result<bool>;
    /// Holds a TOTP enrollment until it is confirmed, replacing the user's pending one.
    async fn put_totp_enrollment(&self, enrollment: NewTotpEnrollment<'_>) -> Result<()>;
    /// Spends one attempt of the user's pending enrollment with this id if it is alive at
    /// `now` with fewer than `max_attempts` spent, and returns its sealed secret.
    async fn attempt_totp_enrollment(
        &self,
        id_hash: &SecretHash,
        user_id: &str,
        now: UnixMillis,
        max_attempts: u32,
    ) -> Result<Option<Vec<u8>>>;
    /// In one transaction: consumes the pending enrollment, makes its secret the user's
    /// (with the confirming step spent), replaces the recovery codes and, when asked,
    /// revokes the other sessions. `None` when the enrollment was gone (a concurrent
    /// confirm) or the user has TOTP already; otherwise how many sessions were revoked.
    async fn confirm_totp_enrollment(
        &self,
        confirmation: TotpConfirmation<'_>,
    ) -> Result<Option<u64>>;
    /// Stores an API key of a service account. A name a live key of the account already
    /// has is `Error::Conflict`.
    async fn create_api_key(&self, key: NewApiKey<'_>) -> Result<()>;
    /// The account's API keys, revoked and expired ones included, oldest first.
    async fn api_keys(&self, user_id: &str) -> Result<Vec<ApiKeyRecord>>;
    /// In one transaction: revokes a live key and every live session exchanged from it
    /// (logged as a change of its account). `None` when no live key has this id; otherwise
    /// the account's id and how many sessions ended.
    async fn revoke_api_key(&self, key_id: &str, now: UnixMillis) -> Result<Option<(String, u64)>>;
    /// In one transaction: finds the live key with this hash, of an enabled service account,
    /// notes its use and stores a session for it. `None` when there is no such key.
    async fn exchange_api_key(
        &self,
        exchange: ApiKeyExchange<'_>,
    ) -> Result<Option<ExchangedSession>>;

    /// Recovery codes of the user not used yet.
    async fn unused_recovery_codes(&self, user_id: &str) -> Result<u64>;

    async fn create_session(&self, session: NewSession<'_>) -> Result<()>;
    /// The owner of a session that is not revoked, not expired at `now`, and whose user is
    /// not disabled.
    async fn session_owner(
        &self,
        token_hash: &SecretHash,
        now: UnixMillis,
    ) -> Result<Option<SessionOwner>>;
    /// Returns false when no live session had that hash.
    async fn revoke_session(&self, token_hash: &SecretHash, now: UnixMillis) -> Result<bool>;
    /// Revokes the user's live sessions (all, or all but one); returns how many.
    async fn revoke_user_sessions(
        &self,
        revoke: RevokeSessions<'_>,
        now: UnixMillis,
    ) -> Result<u64>;
    /// The user's sessions live at `now`, newest first.
    async fn live_sessions(&self, user_id: &str, now: UnixMillis) -> Result<Vec<SessionRecord>>;
    /// Revokes the live session with this id, if it is the user's (`None` for any user:
    /// the admin); returns the revoked session's token hash.
    async fn revoke_session_by_id(
        &self,
        session_id: &str,
        user_id: Option<&str>,
        now: UnixMillis,
    ) -> Result<Option<SecretHash>>;
    /// Records when session tokens were last seen (a time never moves back).
    async fn note_sessions_seen(&self, seen: &[(SecretHash, UnixMillis)]) -> Result<()>;

    async fn create_challenge(
        &self,
        id_hash: &SecretHash,
        user_id: &str,
        created_at: UnixMillis,
        expires_at: UnixMillis,
    ) -> Result<()>;
    /// Spends one attempt of a challenge that is alive at `now` and has fewer than
    /// `max_attempts` spent; `None` when it is unknown, expired or exhausted.
    async fn attempt_challenge(
        &self,
        id_hash: &SecretHash,
        now: UnixMillis,
        max_attempts: u32,
    ) -> Result<Option<ChallengeAttempt>>;
    /// In one transaction: delete the challenge, claim the second factor for the user and
    /// store the session. A refused factor leaves the challenge alive (its attempt spent).
    async fn complete_two_factor(
        &self,
        challenge_hash: &SecretHash,
        factor: SecondFactor<'_>,
        session: NewSession<'_>,
    ) -> Result<TwoFactorCompletion>;

    /// Holds a passkey ceremony until its Finish.
    async fn put_passkey_ceremony(&self, ceremony: NewPasskeyCeremony<'_>) -> Result<()>;
    /// Deletes and returns a passkey ceremony, live or expired (the caller checks
    /// `expires_at`): each is finished at most once, on any server.
    async fn take_passkey_ceremony(&self, id_hash: &SecretHash) -> Result<Option<PasskeyCeremony>>;
    /// Stores a new passkey; `Conflict` when its credential id is registered already.
    async fn add_passkey(&self, passkey: &PasskeyRecord) -> Result<()>;
    /// A user's passkeys, oldest first.
    async fn passkeys(&self, user_id: &str) -> Result<Vec<PasskeyRecord>>;
    /// The passkey with this credential id, whoever's it is.
    async fn passkey_by_credential_id(&self, credential_id: &[u8])
    -> Result<Option<PasskeyRecord>>;
    /// Removes a passkey of this user; false when the user has none with this id.
    async fn remove_passkey(&self, user_id: &str, passkey_id: &str) -> Result<bool>;
    /// In one transaction: claim the passkey's use (its counter unchanged since the check)
    /// and store the session. False, and nothing stored, when the claim fails.
    async fn sign_in_with_passkey(
        &self,
        used: PasskeyUse<'_>,
        session: NewSession<'_>,
    ) -> Result<bool>;

    /// The stored check value of a named key, inserting `candidate` when there is none yet
    /// (the first server to start with a key decides it; concurrent starts agree).
    async fn key_check_or_insert(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>>;

    /// The log rows after `sequence`, oldest first, at most `limit`.
    async fn revocations_after(&self, sequence: i64, limit: u32) -> Result<Vec<Revocation>>;
    /// `None` while the log has never had a row.
    async fn revocation_log_bounds(&self) -> Result<Option<LogBounds>>;
    /// Notices of appends by any process: PostgreSQL's `LISTEN`. `None` where the backend
    /// has none (SQLite), so the follower polls.
    async fn log_notices(&self) -> Result<Option<Box<dyn LogNotices>>>;

    /// Deletes challenges, enrollments and sessions that ended before `before`, passkey
    /// ceremonies expired at `now`, and revocation log rows older than `log_before` (always
    /// keeping the newest, which holds the head).
    async fn purge_expired(
        &self,
        now: UnixMillis,
        before: UnixMillis,
        log_before: UnixMillis,
    ) -> Result<u64>;

    /// One trivial statement: succeeds while the database can be reached.
    async fn ping(&self) -> Result<()>;

    /// Whether the throttles live here, shared by every server on the database
    /// (PostgreSQL), or each server keeps its own in memory (SQLite).
    fn shares_throttles(&self) -> bool;
    /// Counts a failure of throttle key `key` by `rule`, in one atomic statement; with
    /// `unless_blocked`, counts nothing while the key must wait. Only where
    /// `shares_throttles`.
    async fn throttle_count(
        &self,
        key: &[u8; 32],
        rule: BackoffRule,
        now: UnixMillis,
        unless_blocked: bool,
    ) -> Result<ThrottleCount>;
    /// Until when `key` must wait (possibly past), if it has a row.
    async fn throttle_blocked_until(&self, key: &[u8; 32]) -> Result<Option<UnixMillis>>;
    /// Gives back a counted attempt that was not a failure; `counted` is the count it got.
    async fn throttle_refund(&self, key: &[u8; 32], counted: u32, now: UnixMillis) -> Result<()>;
    /// Forgets the failures of `key`.
    async fn throttle_forgive(&self, key: &[u8; 32]) -> Result<()>;
    /// One request by `key` against a GCRA rate limit (microseconds): `None` when let
    /// through (and counted), else how long until it would be.
    async fn throttle_rate(
        &self,
        key: &[u8; 32],
        now_micros: i64,
        interval_micros: i64,
        tolerance_micros: i64,
    ) -> Result<Option<i64>>;
    /// Deletes throttle rows that no longer decide anything at `now`.
    async fn purge_throttles(&self, now: UnixMillis) -> Result<u64>;

    /// The connection pool's occupancy now, for metrics.
    fn pool_stats(&self) -> PoolStats;
}

/// A connection pool's occupancy at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Connections open (in use or idle).
    pub open: u32,
    /// Open connections not in use.
    pub idle: u32,
    /// The most the pool opens.
    pub max: u32,
}

/// The connection pool of a store.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// Connections the pool opens at most (per server process).
    pub max_connections: u32,
    /// How long a request waits for a connection before it fails with UNAVAILABLE; while
    /// the database is down this bounds every request instead of letting it hang.
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// Opens the store a database URL names, creating and migrating it as needed.
pub async fn connect(database_url: &str) -> Result<Arc<dyn Store>> {
    connect_with(database_url, &PoolSettings::default()).await
}

/// `connect` with explicit pool settings. `sqlite://PATH` is created if missing;
/// `postgres://` (or `postgresql://`) needs an existing database, which is migrated.
pub async fn connect_with(database_url: &str, pool: &PoolSettings) -> Result<Arc<dyn Store>> {
    if database_url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(database_url, pool).await?))
    } else if database_url.starts_with("postgres://") || database_url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::connect(database_url, pool).await?))
    } else {
        Err(Error::InvalidArgument {
            field: "database_url",
            reason: format!(
                "unsupported scheme in {:?}: expected sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DATABASE",
                redact_url(database_url)
            ),
        })
    }
}

/// A database URL its backend cannot parse.
fn invalid_url(error: sqlx::Error) -> Error {
    Error::InvalidArgument {
        field: "database_url",
        reason: error.to_string(),
    }
}

impl From<sqlx::Error> for Error {
    /// Sorts a database fault into "cannot be reached right now" (the request may succeed
    /// later: UNAVAILABLE) and everything else.
    fn from(error: sqlx::Error) -> Self {
        if matches!(error, sqlx::Error::PoolTimedOut) {
            crate::metrics::pool_acquire_timed_out();
        }
        if is_unreachable(&error) {
            Error::Unavailable(error)
        } else {
            Error::Storage(error)
        }
    }
}

fn is_unreachable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| is_unreachable_code(&code)),
        _ => false,
    }
}

/// PostgreSQL SQLSTATEs that say the connection or the server went away, not that the
/// statement was wrong: connection_exception (class 08), admin_shutdown, crash_shutdown,
/// cannot_connect_now (starting up or shutting down), idle_session_timeout and
/// idle_in_transaction_session_timeout (the server closed a connection that sat idle),
/// too_many_connections.
fn is_unreachable_code(code: &str) -> bool {
    code.starts_with("08")
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" | "57P05" | "25P03" | "53300"
        )
}

/// A database URL with any password replaced, safe for logs and errors.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _password)) => {
                    format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..])
                }
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Maps a unique-constraint violation to a `Conflict` naming the taken field.
pub(crate) fn unique_violation(error: sqlx::Error) -> Error {
    if let sqlx::Error::Database(db) = &error {
        if db.is_unique_violation() {
            let message = db.message();
            for field in ["handle", "email", "phone"] {
                if message.contains(field) {
                    return Error::Conflict(format!("{field}: already taken by another user"));
                }
            }
            return Error::Conflict("already exists".into());
        }
    }
    Error::from(error)
}

#[cfg(test)]
mod tests {
    use super::{is_unreachable_code, redact_url};

    #[test]
    fn connection_faults_are_unreachable_and_statement_faults_are_not() {
        for gone in [
            "08006", "08001", "57P01", "57P02", "57P03", "57P05", "25P03", "53300",
        ] {
            assert!(is_unreachable_code(gone), "{gone}");
        }
        // unique_violation, undefined_table, syntax_error, query_canceled
        for wrong in ["23505", "42P01", "42601", "57014"] {
            assert!(!is_unreachable_code(wrong), "{wrong}");
        }
    }

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/auth"),
            "postgres://app:***@db:5432/auth"
        );
        assert_eq!(redact_url("sqlite://st-peter.db"), "sqlite://st-peter.db");
    }
}

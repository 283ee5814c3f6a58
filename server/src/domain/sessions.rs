//! Logging in with a password, verifying tokens, logging out and revoking sessions.
use std::time::Duration;

use crate::clock::{UnixMillis, millis};
use crate::domain::app::{Caller, StPeter, UserKind, UserView};
use crate::domain::audit::{self, Event};
use crate::domain::identifier::{self, Identifier};
use crate::domain::throttle::{self, Guess, Reserved};
use crate::error::{Error, Result, invalid};
use crate::secrets::password::{self, Verification};
use crate::secrets::token::{self, SESSION_PREFIX, SecretHash};
use crate::store::{Change, NewSession, RevokeSessions, SessionOwner, SessionRecord, UserRecord};

/// Longest token accepted on the wire; real ones are 47 bytes.
pub const MAX_TOKEN_BYTES: usize = 256;

/// Why a login did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    InvalidCredentials,
    RateLimited,
    InvalidCode,
    ChallengeExpired,
}

/// A new session: the token is shown to the caller once and never stored.
#[derive(Debug, Clone)]
pub struct IssuedSession {
    pub token: String,
    pub expires_at: UnixMillis,
    pub user: UserView,
}

/// The second factors a user has: the ones a two-factor challenge can be answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecondFactors {
    /// A TOTP code, or one of its recovery codes.
    pub totp: bool,
    /// An assertion of one of the user's passkeys.
    pub passkey: bool,
}

impl SecondFactors {
    pub(crate) fn of(user: &UserRecord) -> Self {
        Self {
            totp: user.totp_secret.is_some(),
            passkey: user.passkeys > 0,
        }
    }

    /// Whether a password alone is not enough.
    pub fn any(self) -> bool {
        self.totp || self.passkey
    }
}

#[derive(Debug, Clone)]
pub enum LoginOutcome {
    Authenticated(IssuedSession),
    TwoFactor {
        two_factor_id: String,
        expires_at: UnixMillis,
        methods: SecondFactors,
    },
    Failed {
        reason: FailureReason,
        retry_after: Option<Duration>,
    },
}

impl LoginOutcome {
    pub(crate) fn failed(reason: FailureReason) -> Self {
        Self::Failed {
            reason,
            retry_after: None,
        }
    }

    /// Throttled: try again after `wait`.
    pub(crate) fn rate_limited(wait: Duration) -> Self {
        Self::Failed {
            reason: FailureReason::RateLimited,
            retry_after: Some(wait),
        }
    }
}

/// The owner of a valid token.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    pub user: UserView,
    pub roles: Vec<String>,
    pub expires_at: UnixMillis,
}

impl StPeter {
    /// Password login. Unknown identifier, wrong password and disabled user all cost one
    /// argon2 verification and answer `InvalidCredentials`. Repeated failures for an
    /// identifier or from an address are answered `RateLimited` without checking the
    /// password at all, so the right password during the backoff does not log in.
    pub async fn login(
        &self,
        caller: &Caller,
        identifier: &str,
        password: &str,
    ) -> Result<LoginOutcome> {
        let identifier = identifier::parse("identifier", identifier)?;
        password::check_login(password)?;
        let key = identifier.key();
        let now = self.now();
        let throttles = &self.throttles;
        // Counted before the hash: concurrent guesses (on any replica) cannot all pass.
        let address = caller.address.map(throttle::address);
        let mut checks = vec![(&throttles.login_identifier, key.as_bytes())];
        if let Some(address) = &address {
            checks.push((&throttles.login_address, &address[..]));
        }
        let reserved = match Reserved::attempt(&checks, now).await? {
            Ok(reserved) => reserved,
            Err(wait) => {
                audit::record(Event::Login, "throttled", None, caller);
                return Ok(LoginOutcome::rate_limited(wait));
            }
        };
        let guess = self.check_password(caller, &identifier, password).await;
        let Some((user, check)) = reserved.settle(guess, self.now()).await? else {
            audit::record(Event::Login, "failure", None, caller);
            return Ok(LoginOutcome::failed(FailureReason::InvalidCredentials));
        };
        if check.needs_rehash {
            self.upgrade_hash(&user, password).await;
        }
        if SecondFactors::of(&user).any() {
            audit::record(
                Event::Login,
                "two_factor_required",
                Some(&user.owner.id),
                caller,
            );
            return self.start_two_factor(&user).await;
        }
        let session = self.issue_session(&user).await?;
        audit::record(Event::Login, "success", Some(&user.owner.id), caller);
        Ok(LoginOutcome::Authenticated(session))
    }

    /// The password step of a login, past its throttles: the user it logs in (with what
    /// the check found), or `None` for a wrong identifier or password.
    async fn check_password(
        &self,
        caller: &Caller,
        identifier: &Identifier,
        password: &str,
    ) -> Result<Guess<Option<(UserRecord, Verification)>>> {
        // A place in the hashing queue first: a login the server cannot finish before the
        // caller's deadline is refused here, before any database work, whoever it names.
        let admitted = match self.passwords.admit(caller.deadline) {
            Ok(admitted) => admitted,
            Err(error) => {
                audit::record(Event::Login, "shed", None, caller);
                return Err(error);
            }
        };
        // A service account has no password: its name answers like an unknown identifier,
        // at the same cost.
        let user = self
            .store
            .find_user(identifier)
            .await?
            .filter(|user| !user.owner.disabled && user.owner.kind == UserKind::Human);
        let check = admitted
            .verify(password, user.as_ref().map(|u| u.password_hash.as_str()))
            .await?;
        Ok(match user.filter(|_| check.matches) {
            Some(user) => Guess::Succeeded(Some((user, check))),
            None => Guess::Failed(None),
        })
    }

    /// Who is this token? Unknown, expired, revoked and disabled all answer
    /// `Unauthenticated`.
    pub async fn verify_token(&self, token: &str) -> Result<VerifiedToken> {
        let (_, owner) = self.session_owner_of(token).await?;
        Ok(VerifiedToken {
            user: UserView::from(owner.user),
            roles: owner.roles,
            expires_at: owner.expires_at,
        })
    }

    /// The owner of a live session token, and the token's hash (hashed once, here), from
    /// the server cache or the store; as [`StPeter::verify_token`] answers.
    pub(crate) async fn session_owner_of(&self, token: &str) -> Result<(SecretHash, SessionOwner)> {
        check_token_size("token", token)?;
        if !token::is_well_formed(SESSION_PREFIX, token) {
            return Err(Error::Unauthenticated("token is not valid"));
        }
        let hash = token::hash(token);
        let now = self.now();
        let cache = &self.revocations.cache;
        let owner = match cache.get(&hash, now) {
            Some(owner) => {
                crate::metrics::verify_cache_hit();
                owner
            }
            None => {
                crate::metrics::verify_cache_miss();
                // Before the query: a revocation that lands while it runs voids the fill.
                let ticket = cache.ticket();
                let owner = self
                    .store
                    .session_owner(&hash, now)
                    .await?
                    .ok_or(Error::Unauthenticated("token is not valid"))?;
                self.last_seen.saw(&hash, now);
                if let Some(ticket) = ticket {
                    cache.fill(hash, &owner, ticket, now);
                }
                owner
            }
        };
        Ok((hash, owner))
    }

    /// Logs a token out (its holder asked). Unknown or already revoked tokens succeed
    /// quietly; returns whether a live session was revoked.
    pub async fn logout(&self, caller: &Caller, token: &str) -> Result<bool> {
        self.end_session(Event::Logout, caller, token).await
    }

    /// Revokes a token on an administrator's word; otherwise as [`StPeter::logout`].
    pub async fn revoke_token(&self, caller: &Caller, token: &str) -> Result<bool> {
        self.end_session(Event::Revoke, caller, token).await
    }

    async fn end_session(&self, event: Event, caller: &Caller, token: &str) -> Result<bool> {
        check_token_size("token", token)?;
        let hash = token::hash(token);
        let revoked = token::is_well_formed(SESSION_PREFIX, token)
            && self.store.revoke_session(&hash, self.now()).await?;
        if revoked {
            self.revocations.changed_here(&Change::Token(hash));
        }
        let outcome = if revoked {
            "revoked"
        } else {
            "no_live_session"
        };
        audit::record(event, outcome, None, caller);
        Ok(revoked)
    }

    /// Revokes every live session of a user; returns how many.
    pub async fn revoke_all_sessions(&self, caller: &Caller, user_id: &str) -> Result<u64> {
        let revoked = self
            .revoke_sessions(RevokeSessions {
                user_id,
                except: None,
            })
            .await?;
        audit::record(Event::Revoke, "revoked_all", Some(user_id), caller);
        Ok(revoked)
    }

    /// Revokes sessions of a user (all, or all but the caller's) and tells the cache.
    pub(crate) async fn revoke_sessions(&self, revoke: RevokeSessions<'_>) -> Result<u64> {
        let revoked = self.store.revoke_user_sessions(revoke, self.now()).await?;
        if revoked > 0 {
            self.changed_user(revoke.user_id);
        }
        Ok(revoked)
    }

    /// The live sessions of a user, newest first, `current` marking this token hash's.
    /// Sightings noted so far are written first, so the list is as fresh as it can be.
    pub(crate) async fn sessions_of(
        &self,
        user_id: &str,
        current: Option<&SecretHash>,
    ) -> Result<Vec<SessionView>> {
        self.write_last_seen().await;
        let sessions = self.store.live_sessions(user_id, self.now()).await?;
        Ok(sessions
            .into_iter()
            .map(|session| SessionView::new(session, current))
            .collect())
    }

    /// Ends a session named by its id: the user's own (`owner`), or any (the admin).
    pub(crate) async fn revoke_session_by_id(
        &self,
        caller: &Caller,
        session_id: &str,
        owner: Option<&str>,
    ) -> Result<()> {
        let session_id = check_session_id(session_id)?;
        let revoked = self
            .store
            .revoke_session_by_id(&session_id, owner, self.now())
            .await?;
        let Some(hash) = revoked else {
            audit::record(Event::Revoke, "no_such_session", owner, caller);
            return Err(Error::NotFound("session".into()));
        };
        self.revocations.changed_here(&Change::Token(hash));
        audit::record(Event::Revoke, "revoked_by_id", owner, caller);
        Ok(())
    }

    /// Writes the session sightings noted since the last write. Best effort: a failure is
    /// logged, and the next sighting of each token notes it again.
    pub async fn write_last_seen(&self) {
        let seen = self.last_seen.take();
        // In short transactions: SQLite has one writer, and logins and revocations must
        // not wait behind thousands of sightings.
        for batch in seen.chunks(LAST_SEEN_BATCH) {
            if let Err(error) = self.store.note_sessions_seen(batch).await {
                tracing::warn!(%error, sessions = batch.len(), "writing when sessions were last seen failed");
            }
        }
    }

    /// A user's live sessions, for the admin.
    pub async fn list_sessions(&self, identifier: &str) -> Result<Vec<SessionView>> {
        let user = self.find_user(identifier).await?;
        self.sessions_of(&user.owner.id, None).await
    }

    /// Ends any user's session by its id, on an administrator's word.
    pub async fn revoke_session(&self, session_id: &str) -> Result<()> {
        self.revoke_session_by_id(&Caller::CLI, session_id, None)
            .await
    }

    /// Every cached answer for this user just became stale (the change is committed).
    pub(crate) fn changed_user(&self, user_id: &str) {
        self.revocations
            .changed_here(&Change::User(user_id.to_owned()));
    }

    pub(crate) async fn issue_session(&self, user: &UserRecord) -> Result<IssuedSession> {
        let minted = token::mint(SESSION_PREFIX);
        let now = self.now();
        let expires_at = now.saturating_add(millis(self.settings.session_ttl));
        self.store
            .create_session(NewSession {
                id: &new_session_id(),
                token_hash: &minted.hash,
                user_id: &user.owner.id,
                created_at: now,
                expires_at,
                api_key_id: None,
            })
            .await?;
        Ok(IssuedSession {
            token: minted.secret,
            expires_at,
            user: UserView::from(user),
        })
    }

    /// Re-hashes a password made with older parameters. A failure here must not fail the
    /// login that proved the password, so it is logged and retried at the next login. A
    /// password changed meanwhile (by its user or the admin) is left as it is.
    async fn upgrade_hash(&self, user: &UserRecord, password: &str) {
        let result = async {
            let hash = self.passwords.hash(password).await?;
            self.store
                .rehash_password(&user.owner.id, &user.password_hash, &hash, self.now())
                .await
        }
        .await;
        match result {
            Ok(true) => {
                tracing::info!(user_id = %user.owner.id, "password hash upgraded to current parameters")
            }
            Ok(false) => {
                tracing::info!(user_id = %user.owner.id, "password changed since the login: no rehash")
            }
            Err(error) => {
                tracing::warn!(user_id = %user.owner.id, %error, "password hash upgrade failed")
            }
        }
    }
}

/// Sightings written per transaction.
const LAST_SEEN_BATCH: usize = 256;

/// A session as its user (or the admin) sees it listed: no token, no hash.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SessionView {
    pub session_id: String,
    pub created_at: UnixMillis,
    pub expires_at: UnixMillis,
    pub last_seen_at: Option<UnixMillis>,
    /// The session whose token made the request.
    pub current: bool,
}

impl SessionView {
    fn new(session: SessionRecord, current: Option<&SecretHash>) -> Self {
        Self {
            current: current.is_some_and(|hash| *hash == session.token_hash),
            session_id: session.id,
            created_at: session.created_at,
            expires_at: session.expires_at,
            last_seen_at: session.last_seen_at,
        }
    }
}

/// A new session's id: a random UUID, unrelated to its token.
pub(crate) fn new_session_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A session id as ListSessions gives it: a UUID, in its canonical lowercase form.
pub(crate) fn check_session_id(session_id: &str) -> Result<String> {
    check_listed_id("session_id", session_id, "ListSessions")
}

/// An id that a list call gives (`listed_by`): a UUID, in its canonical lowercase form.
pub(crate) fn check_listed_id(field: &'static str, id: &str, listed_by: &str) -> Result<String> {
    if id.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    uuid::Uuid::parse_str(id.trim())
        .map(|id| id.to_string())
        .map_err(|_| {
            invalid(
                field,
                format!("must be a {field} from {listed_by} (a UUID)"),
            )
        })
}

/// Empty and oversize tokens are malformed requests; anything else is checked against the
/// store (or refused for its shape) and answered as valid or not.
pub fn check_token_size(field: &'static str, token: &str) -> Result<()> {
    if token.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(invalid(
            field,
            format!("must be at most {MAX_TOKEN_BYTES} bytes"),
        ));
    }
    Ok(())
}

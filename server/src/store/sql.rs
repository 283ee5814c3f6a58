//! The store's operations, written once for both backends: the statements, their binds,
//! the transactions and the row mapping. sqlx binds `$1`-style parameters on SQLite as on
//! PostgreSQL, so every statement both dialects spell alike lives here; what differs (the
//! verify statement, how its roles column decodes, which faults are worth a retry, how a
//! pool is opened) is the backend's, in `postgres.rs` and `sqlite.rs`.
use async_trait::async_trait;
use sqlx::pool::PoolOptions;
use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, FromRow, IntoArguments, Pool, Row, Type,
};

use super::{
    ApiKeyExchange, ApiKeyRecord, CeremonyPurpose, ChallengeAttempt, Change, ExchangedSession,
    LogBounds, LogNotices, NewApiKey, NewPasskeyCeremony, NewSession, NewTotpEnrollment, NewUser,
    OwnerRecord, PasskeyCeremony, PasskeyRecord, PasskeyUse, PoolSettings, Revocation,
    RevokeSessions, SecondFactor, SessionOwner, SessionRecord, Store, TotpConfirmation,
    TwoFactorCompletion, UserRecord, unique_violation,
};
use super::{BackoffRule, ThrottleCount};
use crate::clock::UnixMillis;
use crate::domain::identifier::Identifier;
use crate::error::{Error, Result};
use crate::secrets::token::SecretHash;

/// What one backend adds to the shared store.
#[async_trait]
pub trait Backend: Database {
    /// The verify path in one statement: the owner's columns (`OwnerRecord`), the session's
    /// `session_expires_at` and the user's `roles`, for token hash `$1` live at `$2`.
    const SESSION_OWNER_SQL: &'static str;
    /// The `roles` column of a `SESSION_OWNER_SQL` row, sorted.
    fn roles(row: &Self::Row) -> std::result::Result<Vec<String>, sqlx::Error>;
    /// A verify that failed with this error is retried once (on another connection).
    fn retry_verify(error: &Error) -> bool;
    fn rows_affected(result: &Self::QueryResult) -> u64;
    /// Notices of appends to the revocation log by other processes, if the backend has them.
    async fn log_notices(pool: &Pool<Self>) -> Result<Option<Box<dyn LogNotices>>>;

    /// Whether throttles are kept in this database, shared by its servers; the statements
    /// below are the backend's then (PostgreSQL). Elsewhere each server throttles in memory.
    const SHARES_THROTTLES: bool = false;
    async fn throttle_count(
        _pool: &Pool<Self>,
        _key: &[u8; 32],
        _rule: BackoffRule,
        _now: UnixMillis,
        _unless_blocked: bool,
    ) -> Result<ThrottleCount> {
        Err(throttles_not_shared())
    }
    async fn throttle_blocked_until(
        _pool: &Pool<Self>,
        _key: &[u8; 32],
    ) -> Result<Option<UnixMillis>> {
        Err(throttles_not_shared())
    }
    async fn throttle_refund(
        _pool: &Pool<Self>,
        _key: &[u8; 32],
        _counted: u32,
        _now: UnixMillis,
    ) -> Result<()> {
        Err(throttles_not_shared())
    }
    async fn throttle_forgive(_pool: &Pool<Self>, _key: &[u8; 32]) -> Result<()> {
        Err(throttles_not_shared())
    }
    async fn throttle_rate(
        _pool: &Pool<Self>,
        _key: &[u8; 32],
        _now_micros: i64,
        _interval_micros: i64,
        _tolerance_micros: i64,
    ) -> Result<Option<i64>> {
        Err(throttles_not_shared())
    }
    async fn purge_throttles(_pool: &Pool<Self>, _now: UnixMillis) -> Result<u64> {
        Ok(0)
    }
}

fn throttles_not_shared() -> Error {
    Error::Internal("this backend keeps no shared throttles".into())
}

/// A store on either backend: `PostgresStore` or `SqliteStore`.
pub struct SqlStore<DB: Backend> {
    pub(super) pool: Pool<DB>,
}

/// The pool of either backend. No ping before each use (sqlx's default): it doubled the
/// cost of a token verification on both. A SQLite file does not drop connections; a
/// PostgreSQL connection that died while idle fails its next statement instead, which the
/// read-only verify path retries once (`Backend::retry_verify`).
pub(super) fn pool_options<DB: Database>(settings: &PoolSettings) -> PoolOptions<DB> {
    PoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .test_before_acquire(false)
}

/// The columns of an [`OwnerRecord`].
const OWNER_COLUMNS: &str = "id, handle, email, phone, display_name, disabled, kind";

const USER_COLUMNS: &str = "id, handle, email, phone, display_name, disabled, kind, password_hash, totp_secret, \
     created_at, (SELECT COUNT(*) FROM passkeys WHERE passkeys.user_id = users.id) AS passkeys";

const PASSKEY_COLUMNS: &str =
    "id, user_id, credential_id, name, credential, sign_count, created_at, last_used_at";

// The where clauses say what sqlx must do on a backend for these statements: run them on
// a pool or in a transaction, bind and decode these types, map rows by column name. Both
// backends can; the compiler checks each statement's binds against this list.
#[async_trait]
impl<DB> Store for SqlStore<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q [u8]>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'r> Vec<u8>: Decode<'r, DB> + Type<DB>,
    for<'r> Option<Vec<u8>>: Decode<'r, DB>,
    for<'r> Option<String>: Decode<'r, DB>,
    for<'r> Option<i64>: Decode<'r, DB>,
    usize: ColumnIndex<DB::Row>,
    for<'r> &'r str: ColumnIndex<DB::Row>,
    for<'r> OwnerRecord: FromRow<'r, DB::Row>,
    for<'r> UserRecord: FromRow<'r, DB::Row>,
    for<'r> ApiKeyRecord: FromRow<'r, DB::Row>,
    for<'r> PasskeyRecord: FromRow<'r, DB::Row>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
{
    async fn create_user(&self, user: &NewUser) -> Result<()> {
        sqlx::query(
            "INSERT INTO users (id, handle, email, phone, display_name, password_hash, kind, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
        )
        .bind(user.id.as_str())
        .bind(user.handle.as_str())
        .bind(user.email.as_deref())
        .bind(user.phone.as_deref())
        .bind(user.display_name.as_str())
        .bind(user.password_hash.as_str())
        .bind(user.kind.column())
        .bind(user.created_at)
        .execute(&self.pool)
        .await
        .map_err(unique_violation)?;
        Ok(())
    }

    async fn import_user(&self, user: &NewUser, disabled: bool, roles: &[String]) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO users (id, handle, email, phone, display_name, password_hash, kind, \
             disabled, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) \
             ON CONFLICT (handle) DO NOTHING",
        )
        .bind(user.id.as_str())
        .bind(user.handle.as_str())
        .bind(user.email.as_deref())
        .bind(user.phone.as_deref())
        .bind(user.display_name.as_str())
        .bind(user.password_hash.as_str())
        .bind(user.kind.column())
        .bind(disabled)
        .bind(user.created_at)
        .execute(&mut *tx)
        .await;
        let inserted = match inserted.map_err(unique_violation) {
            Ok(inserted) => inserted,
            Err(Error::Conflict(reason)) => {
                // Another import of the same line may have committed this handle while this
                // insert waited on another unique index (email, phone), which `ON CONFLICT
                // (handle)` does not cover: then the user is already present, not a conflict.
                drop(tx);
                if self.user_where("handle", &user.handle).await?.is_some() {
                    return Ok(false);
                }
                return Err(Error::Conflict(reason));
            }
            Err(error) => return Err(error),
        };
        if DB::rows_affected(&inserted) == 0 {
            return Ok(false);
        }
        for role in roles {
            sqlx::query("INSERT INTO user_roles (user_id, role, granted_at) VALUES ($1, $2, $3)")
                .bind(user.id.as_str())
                .bind(role.as_str())
                .bind(user.created_at)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn find_user(&self, identifier: &Identifier) -> Result<Option<UserRecord>> {
        match identifier {
            Identifier::Email(email) => self.user_where("email", email).await,
            Identifier::Phone(phone) => self.user_where("phone", phone).await,
            Identifier::Handle(handle) => self.user_where("handle", handle).await,
        }
    }

    async fn find_user_by_id(&self, id: &str) -> Result<Option<UserRecord>> {
        self.user_where("id", id).await
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY handle");
        Ok(sqlx::query_as(&sql).fetch_all(&self.pool).await?)
    }

    async fn set_disabled(&self, user_id: &str, disabled: bool, now: UnixMillis) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query("UPDATE users SET disabled = $1, updated_at = $2 WHERE id = $3")
            .bind(disabled)
            .bind(now)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        let found = DB::rows_affected(&updated) == 1;
        if disabled && found {
            sqlx::query(
                "UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
            )
            .bind(now)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
            append_revocation(&mut *tx, &Change::User(user_id.to_owned()), now).await?;
        }
        tx.commit().await?;
        Ok(found)
    }

    async fn rehash_password(
        &self,
        user_id: &str,
        old_hash: &str,
        new_hash: &str,
        now: UnixMillis,
    ) -> Result<bool> {
        let updated = sqlx::query(
            "UPDATE users SET password_hash = $1, updated_at = $2 \
             WHERE id = $3 AND password_hash = $4",
        )
        .bind(new_hash)
        .bind(now)
        .bind(user_id)
        .bind(old_hash)
        .execute(&self.pool)
        .await?;
        Ok(DB::rows_affected(&updated) == 1)
    }

    async fn change_password(
        &self,
        user_id: &str,
        hash: &str,
        revoke: Option<RevokeSessions<'_>>,
        now: UnixMillis,
    ) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
            .bind(hash)
            .bind(now)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        let revoked = match revoke {
            Some(revoke) => revoke_sessions_in::<DB>(&mut tx, revoke, now).await?,
            None => 0,
        };
        tx.commit().await?;
        Ok(revoked)
    }

    async fn grant_role(&self, user_id: &str, role: &str, now: UnixMillis) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO user_roles (user_id, role, granted_at) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, role) DO NOTHING",
        )
        .bind(user_id)
        .bind(role)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let granted = DB::rows_affected(&inserted) == 1;
        if granted {
            append_revocation(&mut *tx, &Change::User(user_id.to_owned()), now).await?;
        }
        tx.commit().await?;
        Ok(granted)
    }

    async fn revoke_role(&self, user_id: &str, role: &str, now: UnixMillis) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let deleted = sqlx::query("DELETE FROM user_roles WHERE user_id = $1 AND role = $2")
            .bind(user_id)
            .bind(role)
            .execute(&mut *tx)
            .await?;
        let revoked = DB::rows_affected(&deleted) == 1;
        if revoked {
            append_revocation(&mut *tx, &Change::User(user_id.to_owned()), now).await?;
        }
        tx.commit().await?;
        Ok(revoked)
    }

    async fn roles(&self, user_id: &str) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT role FROM user_roles WHERE user_id = $1 ORDER BY role")
                .bind(user_id)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn set_totp_secret(
        &self,
        user_id: &str,
        sealed_secret: Option<&[u8]>,
        recovery_code_hashes: &[SecretHash],
        now: UnixMillis,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE users SET totp_secret = $1, totp_last_step = NULL, updated_at = $2 \
             WHERE id = $3",
        )
        .bind(sealed_secret)
        .bind(now)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        // Any pending self-service enrollment is void too: this decides the secret.
        sqlx::query("DELETE FROM totp_enrollments WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        insert_recovery_codes::<DB>(&mut tx, user_id, recovery_code_hashes, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn replace_recovery_codes(
        &self,
        user_id: &str,
        hashes: &[SecretHash],
        now: UnixMillis,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        // Touching the user row first takes its lock (PostgreSQL), so a concurrent
        // DisableTotp cannot slip between the check and the insert.
        let enrolled = sqlx::query(
            "UPDATE users SET updated_at = $1 WHERE id = $2 AND totp_secret IS NOT NULL",
        )
        .bind(now)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        if DB::rows_affected(&enrolled) != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        insert_recovery_codes::<DB>(&mut tx, user_id, hashes, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn put_totp_enrollment(&self, enrollment: NewTotpEnrollment<'_>) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM totp_enrollments WHERE user_id = $1")
            .bind(enrollment.user_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO totp_enrollments (id_hash, user_id, sealed_secret, created_at, \
             expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&enrollment.id_hash[..])
        .bind(enrollment.user_id)
        .bind(enrollment.sealed_secret)
        .bind(enrollment.created_at)
        .bind(enrollment.expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn attempt_totp_enrollment(
        &self,
        id_hash: &SecretHash,
        user_id: &str,
        now: UnixMillis,
        max_attempts: u32,
    ) -> Result<Option<Vec<u8>>> {
        Ok(sqlx::query_scalar(
            "UPDATE totp_enrollments SET attempts = attempts + 1 \
             WHERE id_hash = $1 AND user_id = $2 AND expires_at > $3 AND attempts < $4 \
             RETURNING sealed_secret",
        )
        .bind(&id_hash[..])
        .bind(user_id)
        .bind(now)
        .bind(i64::from(max_attempts))
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn confirm_totp_enrollment(
        &self,
        confirmation: TotpConfirmation<'_>,
    ) -> Result<Option<u64>> {
        let TotpConfirmation {
            id_hash,
            user_id,
            step,
            recovery_code_hashes,
            revoke_others_of,
            now,
        } = confirmation;
        let mut tx = self.pool.begin().await?;
        let sealed: Option<Vec<u8>> = sqlx::query_scalar(
            "DELETE FROM totp_enrollments WHERE id_hash = $1 AND user_id = $2 \
             RETURNING sealed_secret",
        )
        .bind(&id_hash[..])
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(sealed) = sealed else {
            tx.rollback().await?;
            return Ok(None);
        };
        let activated = sqlx::query(
            "UPDATE users SET totp_secret = $1, totp_last_step = $2, updated_at = $3 \
             WHERE id = $4 AND totp_secret IS NULL",
        )
        .bind(&sealed[..])
        .bind(step)
        .bind(now)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        if DB::rows_affected(&activated) != 1 {
            tx.rollback().await?;
            return Ok(None);
        }
        insert_recovery_codes::<DB>(&mut tx, user_id, recovery_code_hashes, now).await?;
        let revoked = match revoke_others_of {
            Some(keep) => {
                let revoke = RevokeSessions {
                    user_id,
                    except: Some(keep),
                };
                revoke_sessions_in::<DB>(&mut tx, revoke, now).await?
            }
            None => 0,
        };
        tx.commit().await?;
        Ok(Some(revoked))
    }

    async fn create_api_key(&self, key: NewApiKey<'_>) -> Result<()> {
        sqlx::query(
            "INSERT INTO api_keys (id, key_hash, user_id, name, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(key.id)
        .bind(&key.key_hash[..])
        .bind(key.user_id)
        .bind(key.name)
        .bind(key.created_at)
        .bind(key.expires_at)
        .execute(&self.pool)
        .await
        .map_err(|error| match unique_violation(error) {
            Error::Conflict(_) => Error::Conflict(format!(
                "name: a live key of this account is already named {:?} (revoke it first, or \
                 pick another name)",
                key.name
            )),
            other => other,
        })?;
        Ok(())
    }

    async fn api_keys(&self, user_id: &str) -> Result<Vec<ApiKeyRecord>> {
        Ok(sqlx::query_as(
            "SELECT id, name, created_at, expires_at, last_used_at, revoked_at FROM api_keys \
             WHERE user_id = $1 ORDER BY created_at, id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn revoke_api_key(&self, key_id: &str, now: UnixMillis) -> Result<Option<(String, u64)>> {
        let mut tx = self.pool.begin().await?;
        let user_id: Option<String> = sqlx::query_scalar(
            "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL \
             RETURNING user_id",
        )
        .bind(now)
        .bind(key_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(user_id) = user_id else {
            tx.rollback().await?;
            return Ok(None);
        };
        let ended = sqlx::query(
            "UPDATE sessions SET revoked_at = $1 \
             WHERE api_key_id = $2 AND revoked_at IS NULL AND expires_at > $1",
        )
        .bind(now)
        .bind(key_id)
        .execute(&mut *tx)
        .await?;
        let ended = DB::rows_affected(&ended);
        if ended > 0 {
            append_revocation(&mut *tx, &Change::User(user_id.clone()), now).await?;
        }
        tx.commit().await?;
        Ok(Some((user_id, ended)))
    }

    async fn exchange_api_key(
        &self,
        exchange: ApiKeyExchange<'_>,
    ) -> Result<Option<ExchangedSession>> {
        let now = exchange.now;
        let mut tx = self.pool.begin().await?;
        let key: Option<(String, String, Option<i64>)> = sqlx::query_as(
            "UPDATE api_keys SET last_used_at = $1 \
             WHERE key_hash = $2 AND revoked_at IS NULL \
             AND (expires_at IS NULL OR expires_at > $1) \
             AND user_id IN (SELECT id FROM users WHERE kind = 'service' AND NOT disabled) \
             RETURNING id, user_id, expires_at",
        )
        .bind(now)
        .bind(&exchange.key_hash[..])
        .fetch_optional(&mut *tx)
        .await?;
        let Some((key_id, user_id, key_expires_at)) = key else {
            tx.rollback().await?;
            return Ok(None);
        };
        let sql = format!("SELECT {OWNER_COLUMNS} FROM users WHERE id = $1");
        let user: OwnerRecord = sqlx::query_as(&sql)
            .bind(user_id.as_str())
            .fetch_one(&mut *tx)
            .await?;
        let ttl_end = now.saturating_add(exchange.session_ttl);
        let expires_at = key_expires_at.map_or(ttl_end, |key_end| key_end.min(ttl_end));
        let session = NewSession {
            id: exchange.session_id,
            token_hash: exchange.token_hash,
            user_id: &user_id,
            created_at: now,
            expires_at,
            api_key_id: Some(&key_id),
        };
        insert_session(&mut *tx, session).await?;
        tx.commit().await?;
        Ok(Some(ExchangedSession { user, expires_at }))
    }

    async fn unused_recovery_codes(&self, user_id: &str) -> Result<u64> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL",
        )
        .bind(user_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn create_session(&self, session: NewSession<'_>) -> Result<()> {
        insert_session(&self.pool, session).await
    }

    async fn session_owner(
        &self,
        token_hash: &SecretHash,
        now: UnixMillis,
    ) -> Result<Option<SessionOwner>> {
        match self.fetch_session_owner(token_hash, now).await {
            Err(error) if DB::retry_verify(&error) => {
                tracing::debug!(%error, "verify on a dead pooled connection; retrying once");
                self.fetch_session_owner(token_hash, now).await
            }
            result => result,
        }
    }

    async fn revoke_session(&self, token_hash: &SecretHash, now: UnixMillis) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE sessions SET revoked_at = $1 WHERE token_hash = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(&token_hash[..])
        .execute(&mut *tx)
        .await?;
        let revoked = DB::rows_affected(&updated) == 1;
        if revoked {
            append_revocation(&mut *tx, &Change::Token(*token_hash), now).await?;
        }
        tx.commit().await?;
        Ok(revoked)
    }

    async fn revoke_user_sessions(
        &self,
        revoke: RevokeSessions<'_>,
        now: UnixMillis,
    ) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let revoked = revoke_sessions_in::<DB>(&mut tx, revoke, now).await?;
        tx.commit().await?;
        Ok(revoked)
    }

    async fn live_sessions(&self, user_id: &str, now: UnixMillis) -> Result<Vec<SessionRecord>> {
        let rows = sqlx::query(
            "SELECT id, token_hash, created_at, expires_at, last_seen_at FROM sessions \
             WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 \
             ORDER BY created_at DESC, id",
        )
        .bind(user_id)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(SessionRecord {
                    id: row.try_get("id")?,
                    token_hash: token_hash_column(row.try_get("token_hash")?)?,
                    created_at: row.try_get("created_at")?,
                    expires_at: row.try_get("expires_at")?,
                    last_seen_at: row.try_get("last_seen_at")?,
                })
            })
            .collect()
    }

    async fn revoke_session_by_id(
        &self,
        session_id: &str,
        user_id: Option<&str>,
        now: UnixMillis,
    ) -> Result<Option<SecretHash>> {
        let mut tx = self.pool.begin().await?;
        let hash: Option<Vec<u8>> = sqlx::query_scalar(
            "UPDATE sessions SET revoked_at = $1 \
             WHERE id = $2 AND ($3 IS NULL OR user_id = $3) \
             AND revoked_at IS NULL AND expires_at > $1 RETURNING token_hash",
        )
        .bind(now)
        .bind(session_id)
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(hash) = hash else {
            tx.rollback().await?;
            return Ok(None);
        };
        let hash = token_hash_column(hash)?;
        append_revocation(&mut *tx, &Change::Token(hash), now).await?;
        tx.commit().await?;
        Ok(Some(hash))
    }

    async fn note_sessions_seen(&self, seen: &[(SecretHash, UnixMillis)]) -> Result<()> {
        if seen.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for (hash, at) in seen {
            sqlx::query(
                "UPDATE sessions SET last_seen_at = $1 \
                 WHERE token_hash = $2 AND (last_seen_at IS NULL OR last_seen_at < $1)",
            )
            .bind(*at)
            .bind(&hash[..])
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn create_challenge(
        &self,
        id_hash: &SecretHash,
        user_id: &str,
        created_at: UnixMillis,
        expires_at: UnixMillis,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO two_factor_challenges (id_hash, user_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&id_hash[..])
        .bind(user_id)
        .bind(created_at)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn attempt_challenge(
        &self,
        id_hash: &SecretHash,
        now: UnixMillis,
        max_attempts: u32,
    ) -> Result<Option<ChallengeAttempt>> {
        // On PostgreSQL the row lock serializes concurrent attempts (from any replica); each
        // one re-checks the count after the previous one committed. SQLite has one writer.
        let row: Option<(String, i64)> = sqlx::query_as(
            "UPDATE two_factor_challenges SET attempts = attempts + 1 \
             WHERE id_hash = $1 AND expires_at > $2 AND attempts < $3 \
             RETURNING user_id, expires_at",
        )
        .bind(&id_hash[..])
        .bind(now)
        .bind(i64::from(max_attempts))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(user_id, expires_at)| ChallengeAttempt {
            user_id,
            expires_at,
        }))
    }

    async fn complete_two_factor(
        &self,
        challenge_hash: &SecretHash,
        factor: SecondFactor<'_>,
        session: NewSession<'_>,
    ) -> Result<TwoFactorCompletion> {
        let mut tx = self.pool.begin().await?;
        let consumed = sqlx::query("DELETE FROM two_factor_challenges WHERE id_hash = $1")
            .bind(&challenge_hash[..])
            .execute(&mut *tx)
            .await?;
        if DB::rows_affected(&consumed) != 1 {
            tx.rollback().await?;
            return Ok(TwoFactorCompletion::ChallengeGone);
        }
        // Under PostgreSQL's READ COMMITTED a concurrent claim of the same user row waits for
        // this one and then re-evaluates its WHERE against the committed step: one of them
        // wins. SQLite has one writer.
        let claimed = match factor {
            SecondFactor::Totp { step } => sqlx::query(
                "UPDATE users SET totp_last_step = $1 \
                 WHERE id = $2 AND (totp_last_step IS NULL OR totp_last_step < $1)",
            )
            .bind(step)
            .bind(session.user_id),
            SecondFactor::RecoveryCode { hash } => sqlx::query(
                "UPDATE recovery_codes SET used_at = $1 \
                 WHERE user_id = $2 AND code_hash = $3 AND used_at IS NULL",
            )
            .bind(session.created_at)
            .bind(session.user_id)
            .bind(&hash[..]),
            SecondFactor::Passkey(used) => claim_passkey_use(used, session.user_id),
        }
        .execute(&mut *tx)
        .await?;
        if DB::rows_affected(&claimed) != 1 {
            // Roll back: the challenge lives on (its attempt is already spent), so a user
            // whose code was used by a double submit can send the next one.
            tx.rollback().await?;
            return Ok(TwoFactorCompletion::Refused);
        }
        insert_session(&mut *tx, session).await?;
        tx.commit().await?;
        Ok(TwoFactorCompletion::Completed)
    }

    async fn put_passkey_ceremony(&self, ceremony: NewPasskeyCeremony<'_>) -> Result<()> {
        sqlx::query(
            "INSERT INTO passkey_ceremonies (id_hash, purpose, user_id, challenge_hash, state, \
             created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&ceremony.id_hash[..])
        .bind(ceremony.purpose.column())
        .bind(ceremony.user_id)
        .bind(ceremony.challenge_hash.map(|hash| &hash[..]))
        .bind(ceremony.state)
        .bind(ceremony.created_at)
        .bind(ceremony.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn take_passkey_ceremony(&self, id_hash: &SecretHash) -> Result<Option<PasskeyCeremony>> {
        type Row = (String, Option<String>, Option<Vec<u8>>, String, i64);
        let row: Option<Row> = sqlx::query_as(
            "DELETE FROM passkey_ceremonies WHERE id_hash = $1 \
             RETURNING purpose, user_id, challenge_hash, state, expires_at",
        )
        .bind(&id_hash[..])
        .fetch_optional(&self.pool)
        .await?;
        let Some((purpose, user_id, challenge_hash, state, expires_at)) = row else {
            return Ok(None);
        };
        Ok(Some(PasskeyCeremony {
            purpose: CeremonyPurpose::from_column(&purpose)?,
            user_id,
            challenge_hash: challenge_hash.map(token_hash_column).transpose()?,
            state,
            expires_at,
        }))
    }

    async fn add_passkey(&self, passkey: &PasskeyRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO passkeys (id, user_id, credential_id, name, credential, sign_count, \
             created_at, last_used_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(passkey.id.as_str())
        .bind(passkey.user_id.as_str())
        .bind(passkey.credential_id.as_slice())
        .bind(passkey.name.as_str())
        .bind(passkey.credential.as_str())
        .bind(passkey.sign_count)
        .bind(passkey.created_at)
        .bind(passkey.last_used_at)
        .execute(&self.pool)
        .await
        .map_err(|error| match unique_violation(error) {
            Error::Conflict(_) => Error::Conflict("this passkey is registered already".into()),
            other => other,
        })?;
        Ok(())
    }

    async fn passkeys(&self, user_id: &str) -> Result<Vec<PasskeyRecord>> {
        let sql = format!(
            "SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE user_id = $1 ORDER BY created_at, id"
        );
        Ok(sqlx::query_as(&sql)
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn passkey_by_credential_id(
        &self,
        credential_id: &[u8],
    ) -> Result<Option<PasskeyRecord>> {
        let sql = format!("SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE credential_id = $1");
        Ok(sqlx::query_as(&sql)
            .bind(credential_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn remove_passkey(&self, user_id: &str, passkey_id: &str) -> Result<bool> {
        let removed = sqlx::query("DELETE FROM passkeys WHERE id = $1 AND user_id = $2")
            .bind(passkey_id)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&removed) == 1)
    }

    async fn sign_in_with_passkey(
        &self,
        used: PasskeyUse<'_>,
        session: NewSession<'_>,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let claimed = claim_passkey_use(used, session.user_id)
            .execute(&mut *tx)
            .await?;
        if DB::rows_affected(&claimed) != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        insert_session(&mut *tx, session).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn key_check_or_insert(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>> {
        sqlx::query("INSERT INTO key_checks (name, sealed) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(name)
            .bind(candidate)
            .execute(&self.pool)
            .await?;
        Ok(
            sqlx::query_scalar("SELECT sealed FROM key_checks WHERE name = $1")
                .bind(name)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn revocations_after(&self, sequence: i64, limit: u32) -> Result<Vec<Revocation>> {
        let rows = sqlx::query(
            "SELECT sequence, token_hash, user_id, created_at FROM revocations \
             WHERE sequence > $1 \
             ORDER BY sequence LIMIT $2",
        )
        .bind(sequence)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(revocation_from_row::<DB>).collect()
    }

    async fn revocation_log_bounds(&self) -> Result<Option<LogBounds>> {
        let (oldest, newest): (Option<i64>, Option<i64>) =
            sqlx::query_as("SELECT MIN(sequence), MAX(sequence) FROM revocations")
                .fetch_one(&self.pool)
                .await?;
        Ok(oldest
            .zip(newest)
            .map(|(oldest, newest)| LogBounds { oldest, newest }))
    }

    async fn log_notices(&self) -> Result<Option<Box<dyn LogNotices>>> {
        DB::log_notices(&self.pool).await
    }

    async fn purge_expired(
        &self,
        now: UnixMillis,
        before: UnixMillis,
        log_before: UnixMillis,
    ) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let challenges = sqlx::query("DELETE FROM two_factor_challenges WHERE expires_at < $1")
            .bind(before)
            .execute(&mut *tx)
            .await?;
        let enrollments = sqlx::query("DELETE FROM totp_enrollments WHERE expires_at < $1")
            .bind(before)
            .execute(&mut *tx)
            .await?;
        // Passkey ceremonies go as soon as they expire: nothing in them is worth keeping,
        // and anyone can begin a sign-in.
        let ceremonies = sqlx::query("DELETE FROM passkey_ceremonies WHERE expires_at < $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let sessions = sqlx::query("DELETE FROM sessions WHERE expires_at < $1")
            .bind(before)
            .execute(&mut *tx)
            .await?;
        // The newest row stays: it tells a resubscribing client whether its sequence is
        // from this log at all.
        let log = sqlx::query(
            "DELETE FROM revocations WHERE created_at < $1 \
             AND sequence < (SELECT MAX(sequence) FROM revocations)",
        )
        .bind(log_before)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok([challenges, enrollments, ceremonies, sessions, log]
            .iter()
            .map(DB::rows_affected)
            .sum())
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    fn shares_throttles(&self) -> bool {
        DB::SHARES_THROTTLES
    }

    async fn throttle_count(
        &self,
        key: &[u8; 32],
        rule: BackoffRule,
        now: UnixMillis,
        unless_blocked: bool,
    ) -> Result<ThrottleCount> {
        DB::throttle_count(&self.pool, key, rule, now, unless_blocked).await
    }

    async fn throttle_blocked_until(&self, key: &[u8; 32]) -> Result<Option<UnixMillis>> {
        DB::throttle_blocked_until(&self.pool, key).await
    }

    async fn throttle_refund(&self, key: &[u8; 32], counted: u32, now: UnixMillis) -> Result<()> {
        DB::throttle_refund(&self.pool, key, counted, now).await
    }

    async fn throttle_forgive(&self, key: &[u8; 32]) -> Result<()> {
        DB::throttle_forgive(&self.pool, key).await
    }

    async fn throttle_rate(
        &self,
        key: &[u8; 32],
        now_micros: i64,
        interval_micros: i64,
        tolerance_micros: i64,
    ) -> Result<Option<i64>> {
        DB::throttle_rate(
            &self.pool,
            key,
            now_micros,
            interval_micros,
            tolerance_micros,
        )
        .await
    }

    async fn purge_throttles(&self, now: UnixMillis) -> Result<u64> {
        DB::purge_throttles(&self.pool, now).await
    }

    fn pool_stats(&self) -> super::PoolStats {
        super::PoolStats {
            open: self.pool.size(),
            idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
            max: self.pool.options().get_max_connections(),
        }
    }
}

impl<DB> SqlStore<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'r> &'r str: ColumnIndex<DB::Row>,
    for<'r> OwnerRecord: FromRow<'r, DB::Row>,
    for<'r> UserRecord: FromRow<'r, DB::Row>,
{
    async fn user_where(&self, column: &str, value: &str) -> Result<Option<UserRecord>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE {column} = $1");
        Ok(sqlx::query_as(&sql)
            .bind(value)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// The verify path: one statement, one round trip.
    async fn fetch_session_owner(
        &self,
        token_hash: &SecretHash,
        now: UnixMillis,
    ) -> Result<Option<SessionOwner>> {
        let row = sqlx::query(DB::SESSION_OWNER_SQL)
            .bind(&token_hash[..])
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(SessionOwner {
            user: OwnerRecord::from_row(&row)?,
            expires_at: row.try_get("session_expires_at")?,
            roles: DB::roles(&row)?,
        }))
    }
}

/// The claim of a passkey's use: its new credential and counter, if the counter is still
/// the one the assertion was checked against (a concurrent sign-in with the same passkey
/// moved it otherwise: under PostgreSQL's READ COMMITTED the second waits, then finds the
/// new count; SQLite has one writer).
fn claim_passkey_use<'q, DB>(
    used: PasskeyUse<'q>,
    user_id: &'q str,
) -> sqlx::query::Query<'q, DB, DB::Arguments<'q>>
where
    DB: Database,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Type<DB>,
{
    sqlx::query(
        "UPDATE passkeys SET credential = $1, sign_count = $2, last_used_at = $3 \
         WHERE id = $4 AND user_id = $5 AND sign_count = $6",
    )
    .bind(used.credential)
    .bind(used.sign_count)
    .bind(used.used_at)
    .bind(used.passkey_id)
    .bind(user_id)
    .bind(used.sign_count_before)
}

async fn insert_session<'e, DB>(
    executor: impl Executor<'e, Database = DB>,
    session: NewSession<'_>,
) -> Result<()>
where
    DB: Database,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    sqlx::query(
        "INSERT INTO sessions (id, token_hash, user_id, created_at, expires_at, api_key_id) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(session.id)
    .bind(&session.token_hash[..])
    .bind(session.user_id)
    .bind(session.created_at)
    .bind(session.expires_at)
    .bind(session.api_key_id)
    .execute(executor)
    .await?;
    Ok(())
}

/// Revokes a user's live sessions (all, or all but one) and, if there were any, logs it.
/// It ends with the log's append: call it last in a transaction.
async fn revoke_sessions_in<DB>(
    tx: &mut sqlx::Transaction<'_, DB>,
    revoke: RevokeSessions<'_>,
    now: UnixMillis,
) -> Result<u64>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q [u8]>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    let updated = sqlx::query(
        "UPDATE sessions SET revoked_at = $1 \
         WHERE user_id = $2 AND revoked_at IS NULL AND expires_at > $1 \
         AND ($3 IS NULL OR token_hash <> $3)",
    )
    .bind(now)
    .bind(revoke.user_id)
    .bind(revoke.except.map(|hash| &hash[..]))
    .execute(&mut **tx)
    .await?;
    let revoked = DB::rows_affected(&updated);
    if revoked > 0 {
        append_revocation(&mut **tx, &Change::User(revoke.user_id.to_owned()), now).await?;
    }
    Ok(revoked)
}

/// Replaces a user's recovery codes with these hashes, in the caller's transaction.
async fn insert_recovery_codes<DB>(
    tx: &mut sqlx::Transaction<'_, DB>,
    user_id: &str,
    hashes: &[SecretHash],
    now: UnixMillis,
) -> Result<()>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    for hash in hashes {
        sqlx::query(
            "INSERT INTO recovery_codes (user_id, code_hash, issued_at) VALUES ($1, $2, $3)",
        )
        .bind(user_id)
        .bind(&hash[..])
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// A token hash column read back as the fixed-size hash it was written as.
fn token_hash_column(bytes: Vec<u8>) -> Result<SecretHash> {
    bytes.try_into().map_err(|bytes: Vec<u8>| {
        Error::Internal(format!("token hash of {} bytes in the store", bytes.len()))
    })
}

/// Appends one row to the revocation log. It must be the last statement of its transaction:
/// on PostgreSQL it takes the log's lock (see migration 0003), held until commit.
async fn append_revocation<'e, DB>(
    executor: impl Executor<'e, Database = DB>,
    change: &Change,
    now: UnixMillis,
) -> Result<()>
where
    DB: Database,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q [u8]>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    let (token_hash, user_id) = match change {
        Change::Token(hash) => (Some(&hash[..]), None),
        Change::User(user_id) => (None, Some(user_id.as_str())),
    };
    sqlx::query("INSERT INTO revocations (token_hash, user_id, created_at) VALUES ($1, $2, $3)")
        .bind(token_hash)
        .bind(user_id)
        .bind(now)
        .execute(executor)
        .await?;
    Ok(())
}

fn revocation_from_row<DB>(row: &DB::Row) -> Result<Revocation>
where
    DB: Database,
    for<'r> &'r str: ColumnIndex<DB::Row>,
    for<'r> i64: Decode<'r, DB> + Type<DB>,
    for<'r> Option<Vec<u8>>: Decode<'r, DB>,
    for<'r> Vec<u8>: Type<DB>,
    for<'r> Option<String>: Decode<'r, DB>,
    for<'r> String: Type<DB>,
{
    let sequence: i64 = row.try_get("sequence")?;
    let token_hash: Option<Vec<u8>> = row.try_get("token_hash")?;
    let user_id: Option<String> = row.try_get("user_id")?;
    let change = match (token_hash, user_id) {
        (Some(hash), None) => Change::Token(hash.try_into().map_err(|hash: Vec<u8>| {
            Error::Internal(format!(
                "revocation {sequence}: token hash of {} bytes",
                hash.len()
            ))
        })?),
        (None, Some(user_id)) => Change::User(user_id),
        _ => {
            return Err(Error::Internal(format!(
                "revocation {sequence}: neither or both of token hash and user id"
            )));
        }
    };
    let created_at: i64 = row.try_get("created_at")?;
    Ok(Revocation {
        sequence,
        change,
        created_at,
    })
}

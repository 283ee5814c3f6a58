//! PostgreSQL: the backend for several server replicas on one database. Same tables and the
//! same transactions as the SQLite store; row locks taken by UPDATE/DELETE make the
//! single-use steps (a challenge attempt, a TOTP step, a recovery code) safe across
//! replicas, not only across tasks of one process.
use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};
use std::str::FromStr;

use super::{
    ChallengeAttempt, NewSession, NewUser, OwnerRecord, PoolSettings, SecondFactor, SessionOwner,
    Store, TwoFactorCompletion, UserRecord, unique_violation,
};
use crate::clock::UnixMillis;
use crate::domain::identifier::Identifier;
use crate::error::{Error, Result};
use crate::secrets::token::SecretHash;

const USER_COLUMNS: &str =
    "id, handle, email, phone, display_name, disabled, password_hash, totp_secret, created_at";

/// The verify path in one round trip: an indexed lookup by token hash joined to its user,
/// with the user's roles as an array.
const SESSION_OWNER_SQL: &str = "SELECT u.id, u.handle, u.email, u.phone, u.display_name, \
     u.disabled, s.expires_at AS session_expires_at, \
     ARRAY(SELECT r.role FROM user_roles r WHERE r.user_id = u.id ORDER BY r.role) AS roles \
     FROM sessions s JOIN users u ON u.id = s.user_id \
     WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > $2 AND NOT u.disabled";

pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    pub async fn connect(database_url: &str, settings: &PoolSettings) -> Result<Self> {
        let options = PgConnectOptions::from_str(database_url)
            .map_err(|e| Error::InvalidArgument {
                field: "database_url",
                reason: e.to_string(),
            })?
            .application_name("st-peter");
        // One direct connection first: the pool retries a refused connection until its
        // acquire timeout and then reports only "timed out", which tells an operator nothing.
        let probe = tokio::time::timeout(settings.acquire_timeout, options.connect())
            .await
            .map_err(|_| {
                Error::Config(format!(
                    "no answer from PostgreSQL at {} within {:?}",
                    server_of(&options),
                    settings.acquire_timeout
                ))
            })?
            .map_err(|error| start_up_error(&options, error))?;
        probe.close().await.ok();

        // No ping before each use (sqlx's default): it doubled the verify path's round
        // trips. A connection that died while idle fails its next statement instead, which
        // the read-only verify path retries once on a fresh connection.
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        // sqlx's Postgres migrator holds an advisory lock while it runs, so replicas that
        // start together apply each migration once and the others wait for it.
        sqlx::migrate!("../migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
    }

    /// The verify path in one statement.
    async fn fetch_session_owner(
        &self,
        token_hash: &SecretHash,
        now: UnixMillis,
    ) -> Result<Option<SessionOwner>> {
        let row: Option<(OwnerRecord, i64, Vec<String>)> = sqlx::query(SESSION_OWNER_SQL)
            .bind(&token_hash[..])
            .bind(now)
            .try_map(|row: sqlx::postgres::PgRow| {
                use sqlx::{FromRow, Row};
                Ok((
                    OwnerRecord::from_row(&row)?,
                    row.try_get("session_expires_at")?,
                    row.try_get("roles")?,
                ))
            })
            .fetch_optional(&self.pool)
            .await?;
        let Some((user, expires_at, roles)) = row else {
            return Ok(None);
        };
        Ok(Some(SessionOwner {
            user,
            roles,
            expires_at,
        }))
    }

    async fn user_where(&self, clause: &str, value: &str) -> Result<Option<UserRecord>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE {clause} = $1");
        Ok(sqlx::query_as::<_, UserRecord>(&sql)
            .bind(value)
            .fetch_optional(&self.pool)
            .await?)
    }
}

/// A statement failed because its pooled connection was dead (the server restarted or
/// dropped it while it sat idle), not because the database is unreachable now.
fn broken_connection(error: &Error) -> bool {
    match error {
        Error::Unavailable(sqlx::Error::Io(_)) => true,
        // admin_shutdown, crash_shutdown: sent on a connection as its server went away.
        Error::Unavailable(sqlx::Error::Database(db)) => {
            matches!(db.code().as_deref(), Some("57P01" | "57P02"))
        }
        _ => false,
    }
}

fn server_of(options: &PgConnectOptions) -> String {
    format!("{}:{}", options.get_host(), options.get_port())
}

/// Turns the first connection's failure into an error an operator can act on. The URL's
/// password is never part of it.
fn start_up_error(options: &PgConnectOptions, error: sqlx::Error) -> Error {
    let server = server_of(options);
    let user = options.get_username();
    match &error {
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            Error::Config(format!(
                "PostgreSQL at {server} refused the connection: is it running and listening there?"
            ))
        }
        sqlx::Error::Io(io) => Error::Config(format!("cannot reach PostgreSQL at {server}: {io}")),
        sqlx::Error::Database(db) => match db.code().as_deref() {
            // invalid_password, invalid_authorization_specification
            Some("28P01" | "28000") => Error::Config(format!(
                "PostgreSQL at {server} refused user {user:?}: wrong user name or password ({})",
                db.message()
            )),
            // invalid_catalog_name
            Some("3D000") => Error::Config(format!(
                "PostgreSQL at {server}: {} (create it first: CREATE DATABASE ...)",
                db.message()
            )),
            _ => Error::Config(format!("PostgreSQL at {server}: {}", db.message())),
        },
        _ => Error::Config(format!("cannot connect to PostgreSQL at {server}: {error}")),
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn create_user(&self, user: &NewUser) -> Result<()> {
        sqlx::query(
            "INSERT INTO users (id, handle, email, phone, display_name, password_hash, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&user.id)
        .bind(&user.handle)
        .bind(&user.email)
        .bind(&user.phone)
        .bind(&user.display_name)
        .bind(&user.password_hash)
        .bind(user.created_at)
        .bind(user.created_at)
        .execute(&self.pool)
        .await
        .map_err(unique_violation)?;
        Ok(())
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
        Ok(sqlx::query_as::<_, UserRecord>(&sql)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn set_disabled(&self, user_id: &str, disabled: bool, now: UnixMillis) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query("UPDATE users SET disabled = $1, updated_at = $2 WHERE id = $3")
            .bind(disabled)
            .bind(now)
            .bind(user_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if disabled {
            sqlx::query(
                "UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
            )
            .bind(now)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(updated == 1)
    }

    async fn set_password_hash(&self, user_id: &str, hash: &str, now: UnixMillis) -> Result<()> {
        sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
            .bind(hash)
            .bind(now)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn grant_role(&self, user_id: &str, role: &str, now: UnixMillis) -> Result<bool> {
        let inserted = sqlx::query(
            "INSERT INTO user_roles (user_id, role, granted_at) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, role) DO NOTHING",
        )
        .bind(user_id)
        .bind(role)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    async fn revoke_role(&self, user_id: &str, role: &str) -> Result<bool> {
        let deleted = sqlx::query("DELETE FROM user_roles WHERE user_id = $1 AND role = $2")
            .bind(user_id)
            .bind(role)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(deleted == 1)
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
        sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        for hash in recovery_code_hashes {
            sqlx::query(
                "INSERT INTO recovery_codes (user_id, code_hash, issued_at) VALUES ($1, $2, $3)",
            )
            .bind(user_id)
            .bind(&hash[..])
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
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
            Err(error) if broken_connection(&error) => {
                tracing::debug!(%error, "verify on a dead pooled connection; retrying once");
                self.fetch_session_owner(token_hash, now).await
            }
            result => result,
        }
    }

    async fn revoke_session(&self, token_hash: &SecretHash, now: UnixMillis) -> Result<bool> {
        let revoked = sqlx::query(
            "UPDATE sessions SET revoked_at = $1 WHERE token_hash = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(&token_hash[..])
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(revoked == 1)
    }

    async fn revoke_user_sessions(&self, user_id: &str, now: UnixMillis) -> Result<u64> {
        Ok(sqlx::query(
            "UPDATE sessions SET revoked_at = $1 \
             WHERE user_id = $2 AND revoked_at IS NULL AND expires_at > $1",
        )
        .bind(now)
        .bind(user_id)
        .execute(&self.pool)
        .await?
        .rows_affected())
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
        // The row lock serializes concurrent attempts (from any replica); each one re-checks
        // the count after the previous one committed.
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
            .await?
            .rows_affected();
        if consumed != 1 {
            tx.rollback().await?;
            return Ok(TwoFactorCompletion::ChallengeGone);
        }
        // Under READ COMMITTED a concurrent claim of the same user row waits for this one
        // and then re-evaluates its WHERE against the committed step: one of them wins.
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
        }
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if claimed != 1 {
            // Roll back: the challenge lives on (its attempt is already spent), so a user
            // whose code was used by a double submit can send the next one.
            tx.rollback().await?;
            return Ok(TwoFactorCompletion::Refused);
        }
        insert_session(&mut *tx, session).await?;
        tx.commit().await?;
        Ok(TwoFactorCompletion::Completed)
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

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn purge_expired(&self, before: UnixMillis) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let challenges = sqlx::query("DELETE FROM two_factor_challenges WHERE expires_at < $1")
            .bind(before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let sessions = sqlx::query("DELETE FROM sessions WHERE expires_at < $1")
            .bind(before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(challenges + sessions)
    }
}

async fn insert_session<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    session: NewSession<'_>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO sessions (token_hash, user_id, created_at, expires_at) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(&session.token_hash[..])
    .bind(session.user_id)
    .bind(session.created_at)
    .bind(session.expires_at)
    .execute(executor)
    .await?;
    Ok(())
}

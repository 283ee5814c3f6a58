//! The embedded default: one SQLite file in WAL mode with foreign keys on, synchronous =
//! FULL so an acknowledged write survives a killed process (and a power cut).
use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::str::FromStr;
use std::time::Duration;

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

/// The verify path in one statement: an indexed lookup by token hash joined to its user,
/// with the roles folded in (role names hold no commas), so a verification costs one round
/// trip to the connection's worker thread instead of two.
const SESSION_OWNER_SQL: &str = "SELECT u.id, u.handle, u.email, u.phone, u.display_name, \
     u.disabled, s.expires_at AS session_expires_at, \
     (SELECT group_concat(role, ',') FROM user_roles r WHERE r.user_id = u.id) AS roles \
     FROM sessions s JOIN users u ON u.id = s.user_id \
     WHERE s.token_hash = ? AND s.revoked_at IS NULL AND s.expires_at > ? AND u.disabled = 0";

pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    pub async fn connect(database_url: &str, settings: &PoolSettings) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(database_url)
            .map_err(|e| Error::InvalidArgument {
                field: "database_url",
                reason: e.to_string(),
            })?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            // A file on this machine does not drop connections: skip the ping sqlx sends
            // to the connection's worker thread before every use (it doubled the cost of
            // a token verification).
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        sqlx::migrate!("../migrations/sqlite").run(&pool).await?;
        Ok(Self { pool })
    }

    async fn user_where(&self, clause: &str, value: &str) -> Result<Option<UserRecord>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE {clause} = ?");
        Ok(sqlx::query_as::<_, UserRecord>(&sql)
            .bind(value)
            .fetch_optional(&self.pool)
            .await?)
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_user(&self, user: &NewUser) -> Result<()> {
        sqlx::query(
            "INSERT INTO users (id, handle, email, phone, display_name, password_hash, \
             created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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
        let updated = sqlx::query("UPDATE users SET disabled = ?, updated_at = ? WHERE id = ?")
            .bind(disabled)
            .bind(now)
            .bind(user_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if disabled {
            sqlx::query(
                "UPDATE sessions SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL",
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
        sqlx::query("UPDATE users SET password_hash = ?, updated_at = ? WHERE id = ?")
            .bind(hash)
            .bind(now)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn grant_role(&self, user_id: &str, role: &str, now: UnixMillis) -> Result<bool> {
        let inserted = sqlx::query(
            "INSERT INTO user_roles (user_id, role, granted_at) VALUES (?, ?, ?) \
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
        let deleted = sqlx::query("DELETE FROM user_roles WHERE user_id = ? AND role = ?")
            .bind(user_id)
            .bind(role)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(deleted == 1)
    }

    async fn roles(&self, user_id: &str) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT role FROM user_roles WHERE user_id = ? ORDER BY role")
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
            "UPDATE users SET totp_secret = ?, totp_last_step = NULL, updated_at = ? WHERE id = ?",
        )
        .bind(sealed_secret)
        .bind(now)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM recovery_codes WHERE user_id = ?")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        for hash in recovery_code_hashes {
            sqlx::query(
                "INSERT INTO recovery_codes (user_id, code_hash, issued_at) VALUES (?, ?, ?)",
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
            "SELECT COUNT(*) FROM recovery_codes WHERE user_id = ? AND used_at IS NULL",
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
        let row: Option<(OwnerRecord, i64, Option<String>)> = sqlx::query(SESSION_OWNER_SQL)
            .bind(&token_hash[..])
            .bind(now)
            .try_map(|row: sqlx::sqlite::SqliteRow| {
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
        let mut roles: Vec<String> = roles
            .iter()
            .flat_map(|roles| roles.split(','))
            .map(str::to_owned)
            .collect();
        roles.sort();
        Ok(Some(SessionOwner {
            user,
            roles,
            expires_at,
        }))
    }

    async fn revoke_session(&self, token_hash: &SecretHash, now: UnixMillis) -> Result<bool> {
        let revoked = sqlx::query(
            "UPDATE sessions SET revoked_at = ? WHERE token_hash = ? AND revoked_at IS NULL",
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
            "UPDATE sessions SET revoked_at = ? \
             WHERE user_id = ? AND revoked_at IS NULL AND expires_at > ?",
        )
        .bind(now)
        .bind(user_id)
        .bind(now)
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
             VALUES (?, ?, ?, ?)",
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
        let row: Option<(String, i64)> = sqlx::query_as(
            "UPDATE two_factor_challenges SET attempts = attempts + 1 \
             WHERE id_hash = ? AND expires_at > ? AND attempts < ? \
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
        let consumed = sqlx::query("DELETE FROM two_factor_challenges WHERE id_hash = ?")
            .bind(&challenge_hash[..])
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if consumed != 1 {
            return Ok(TwoFactorCompletion::ChallengeGone);
        }
        let claimed = match factor {
            SecondFactor::Totp { step } => sqlx::query(
                "UPDATE users SET totp_last_step = ? \
                 WHERE id = ? AND (totp_last_step IS NULL OR totp_last_step < ?)",
            )
            .bind(step)
            .bind(session.user_id)
            .bind(step),
            SecondFactor::RecoveryCode { hash } => sqlx::query(
                "UPDATE recovery_codes SET used_at = ? \
                 WHERE user_id = ? AND code_hash = ? AND used_at IS NULL",
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
        sqlx::query("INSERT INTO key_checks (name, sealed) VALUES (?, ?) ON CONFLICT DO NOTHING")
            .bind(name)
            .bind(candidate)
            .execute(&self.pool)
            .await?;
        Ok(
            sqlx::query_scalar("SELECT sealed FROM key_checks WHERE name = ?")
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
        let challenges = sqlx::query("DELETE FROM two_factor_challenges WHERE expires_at < ?")
            .bind(before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let sessions = sqlx::query("DELETE FROM sessions WHERE expires_at < ?")
            .bind(before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(challenges + sessions)
    }
}

async fn insert_session<'e>(
    executor: impl sqlx::SqliteExecutor<'e>,
    session: NewSession<'_>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO sessions (token_hash, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
    )
    .bind(&session.token_hash[..])
    .bind(session.user_id)
    .bind(session.created_at)
    .bind(session.expires_at)
    .execute(executor)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What makes an acknowledged write survive a power cut, not only a killed process
    /// (which WAL alone survives): every connection the pool hands out runs with
    /// `synchronous = FULL` in WAL mode, with foreign keys enforced.
    #[tokio::test]
    async fn every_pooled_connection_is_wal_with_synchronous_full() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("pragmas.db").display());
        let pool = PoolSettings {
            max_connections: 3,
            ..PoolSettings::default()
        };
        let store = SqliteStore::connect(&url, &pool).await.unwrap();
        // Hold all three at once so each is a separate connection.
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(store.pool.acquire().await.unwrap());
        }
        for connection in &mut held {
            let (synchronous,): (i64,) = sqlx::query_as("PRAGMA synchronous")
                .fetch_one(&mut **connection)
                .await
                .unwrap();
            let (journal,): (String,) = sqlx::query_as("PRAGMA journal_mode")
                .fetch_one(&mut **connection)
                .await
                .unwrap();
            let (foreign_keys,): (i64,) = sqlx::query_as("PRAGMA foreign_keys")
                .fetch_one(&mut **connection)
                .await
                .unwrap();
            assert_eq!(synchronous, 2, "synchronous is not FULL");
            assert_eq!(journal, "wal");
            assert_eq!(foreign_keys, 1);
        }
    }
}

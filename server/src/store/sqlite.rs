//! The embedded default: one SQLite file in WAL mode with foreign keys on, synchronous =
//! FULL so an acknowledged write survives a killed process (and a power cut). The
//! statements and transactions are shared with PostgreSQL, in `sql.rs`.
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqliteQueryResult, SqliteRow, SqliteSynchronous,
};
use sqlx::{Pool, Row, Sqlite};
use std::str::FromStr;
use std::time::Duration;

use super::sql::{Backend, SqlStore, pool_options};
use super::{LogNotices, PoolSettings, invalid_url};
use crate::error::{Error, Result};

pub type SqliteStore = SqlStore<Sqlite>;

#[async_trait::async_trait]
impl Backend for Sqlite {
    /// An indexed lookup by token hash joined to its user, with the roles folded in (role
    /// names hold no commas), so a verification costs one round trip to the connection's
    /// worker thread instead of two.
    const SESSION_OWNER_SQL: &'static str = "SELECT u.id, u.handle, u.email, u.phone, \
         u.display_name, u.disabled, u.kind, s.expires_at AS session_expires_at, \
         (SELECT group_concat(role, ',') FROM user_roles r WHERE r.user_id = u.id) AS roles \
         FROM sessions s JOIN users u ON u.id = s.user_id \
         WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > $2 \
         AND u.disabled = 0";

    fn roles(row: &SqliteRow) -> std::result::Result<Vec<String>, sqlx::Error> {
        let roles: Option<String> = row.try_get("roles")?;
        let mut roles: Vec<String> = roles
            .iter()
            .flat_map(|roles| roles.split(','))
            .map(str::to_owned)
            .collect();
        roles.sort();
        Ok(roles)
    }

    /// A file on this machine does not drop connections: nothing is worth a retry.
    fn retry_verify(_: &Error) -> bool {
        false
    }

    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }

    /// SQLite has no notices: the admin CLI writes the file from another process, so the
    /// follower polls the log.
    async fn log_notices(_: &Pool<Sqlite>) -> Result<Option<Box<dyn LogNotices>>> {
        Ok(None)
    }
}

impl SqliteStore {
    pub async fn connect(database_url: &str, settings: &PoolSettings) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(database_url)
            .map_err(invalid_url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = pool_options(settings).connect_with(options).await?;
        sqlx::migrate!("../migrations/sqlite").run(&pool).await?;
        Ok(Self { pool })
    }
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

//! The local roles store: its own SQLite file, one row per st-peter `user_id` (by value)
//! holding the identity headers the adapter sets for that user, plus the set of header keys
//! the adapter owns.
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::error::{Error, Result};

/// Identity headers of one user: header key (`@employeeId`) -> value.
pub type IdentityHeaders = BTreeMap<String, String>;

const MAX_KEY_CHARS: usize = 64;
const MAX_VALUE_CHARS: usize = 256;

/// One row of the roles table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: String,
    /// The handle at grant time, for people reading the list; never used to authenticate.
    pub handle: String,
    pub headers: IdentityHeaders,
    /// The st-peter user_id of whoever granted it.
    pub granted_by: String,
    pub granted_at: SystemTime,
}

/// The roles database. Cheap to clone (a connection pool).
#[derive(Debug, Clone)]
pub struct RolesStore {
    pool: SqlitePool,
}

impl RolesStore {
    /// Opens (creating if missing) the SQLite file at `path` and applies the migrations.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool })
    }

    /// Writes the user's whole row (replacing any previous one) and marks its header keys
    /// as owned by the adapter.
    pub async fn grant(
        &self,
        user_id: &str,
        handle: &str,
        headers: &IdentityHeaders,
        granted_by: &str,
    ) -> Result<()> {
        if headers.is_empty() {
            return Err(Error::InvalidHeader(
                "a grant needs at least one header".into(),
            ));
        }
        for (key, value) in headers {
            check_header_key(key)?;
            check_header_value(key, value)?;
        }
        let json = serde_json::to_string(headers)
            .map_err(|e| Error::InvalidHeader(format!("cannot encode headers: {e}")))?;
        let granted_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as i64;
        let mut tx = self.pool.begin().await?;
        for key in headers.keys() {
            sqlx::query("INSERT OR IGNORE INTO owned_headers (key) VALUES (?)")
                .bind(key)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO identities (user_id, headers, handle, granted_by, granted_at) \
             VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (user_id) DO UPDATE SET headers = excluded.headers, \
             handle = excluded.handle, granted_by = excluded.granted_by, \
             granted_at = excluded.granted_at",
        )
        .bind(user_id)
        .bind(json)
        .bind(handle)
        .bind(granted_by)
        .bind(granted_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes the user's row. Returns whether there was one. The header keys stay owned.
    pub async fn revoke(&self, user_id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM identities WHERE user_id = ?")
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The identity headers of one user, if they have a row.
    pub async fn headers_of(&self, user_id: &str) -> Result<Option<IdentityHeaders>> {
        let row = sqlx::query("SELECT headers FROM identities WHERE user_id = ?")
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| decode_headers(&row.get::<String, _>("headers")))
            .transpose()
    }

    /// Every row, ordered by handle.
    pub async fn list(&self) -> Result<Vec<Identity>> {
        let rows = sqlx::query(
            "SELECT user_id, headers, handle, granted_by, granted_at FROM identities \
             ORDER BY handle, user_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                let millis: i64 = row.get("granted_at");
                Ok(Identity {
                    user_id: row.get("user_id"),
                    handle: row.get("handle"),
                    headers: decode_headers(&row.get::<String, _>("headers"))?,
                    granted_by: row.get("granted_by"),
                    granted_at: UNIX_EPOCH
                        + Duration::from_millis(u64::try_from(millis).unwrap_or(0)),
                })
            })
            .collect()
    }

    /// The header keys the adapter owns: every key ever granted, plus any declared with
    /// [`RolesStore::own_headers`].
    pub async fn owned_headers(&self) -> Result<BTreeSet<String>> {
        let rows = sqlx::query("SELECT key FROM owned_headers")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|row| row.get("key")).collect())
    }

    /// Declares header keys as owned before any user has them.
    pub async fn own_headers<'a>(&self, keys: impl IntoIterator<Item = &'a str>) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for key in keys {
            check_header_key(key)?;
            sqlx::query("INSERT OR IGNORE INTO owned_headers (key) VALUES (?)")
                .bind(key)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

fn decode_headers(json: &str) -> Result<IdentityHeaders> {
    serde_json::from_str(json)
        .map_err(|e| Error::InvalidHeader(format!("stored headers are not a JSON object: {e}")))
}

/// An identity header key: `@` then a letter then letters and digits, e.g. `@employeeId`.
/// Keys ending in `_` are Telepact's own (`@auth_`, `@id_`, `@select_`) and are refused.
pub fn check_header_key(key: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::InvalidHeader(format!("{key:?}: {why}")));
    let Some(name) = key.strip_prefix('@') else {
        return bad("must start with @");
    };
    if name.chars().count() > MAX_KEY_CHARS {
        return bad("too long");
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return bad("must be @ followed by a letter");
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric()) {
        return bad("only letters and digits may follow @ (a trailing _ is Telepact's)");
    }
    Ok(())
}

fn check_header_value(key: &str, value: &str) -> Result<()> {
    if value.is_empty() || value.chars().count() > MAX_VALUE_CHARS {
        return Err(Error::InvalidHeader(format!(
            "{key}: value must be 1 to {MAX_VALUE_CHARS} characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_keys() {
        for good in ["@employeeId", "@station", "@a1"] {
            assert!(check_header_key(good).is_ok(), "{good}");
        }
        for bad in [
            "employeeId",
            "@",
            "@1a",
            "@auth_",
            "@id_",
            "@em-ployee",
            "@é",
        ] {
            assert!(check_header_key(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn grant_replaces_and_revoke_keeps_ownership() {
        let dir = tempfile::tempdir().unwrap();
        let store = RolesStore::open(dir.path().join("roles.db")).await.unwrap();
        let first = IdentityHeaders::from([
            ("@employeeId".into(), "baker-001".into()),
            ("@station".into(), "oven".into()),
        ]);
        store
            .grant("u1", "lead-baker", &first, "admin")
            .await
            .unwrap();
        let second = IdentityHeaders::from([("@employeeId".into(), "baker-001".into())]);
        store
            .grant("u1", "lead-baker", &second, "admin")
            .await
            .unwrap();
        assert_eq!(store.headers_of("u1").await.unwrap(), Some(second));
        assert!(store.revoke("u1").await.unwrap());
        assert!(!store.revoke("u1").await.unwrap());
        assert_eq!(store.headers_of("u1").await.unwrap(), None);
        let owned: Vec<_> = store.owned_headers().await.unwrap().into_iter().collect();
        assert_eq!(owned, ["@employeeId", "@station"]);
    }

    #[tokio::test]
    async fn refuses_reserved_keys_and_empty_grants() {
        let dir = tempfile::tempdir().unwrap();
        let store = RolesStore::open(dir.path().join("roles.db")).await.unwrap();
        let reserved = IdentityHeaders::from([("@auth_".into(), "x".into())]);
        assert!(store.grant("u1", "h", &reserved, "a").await.is_err());
        assert!(
            store
                .grant("u1", "h", &IdentityHeaders::new(), "a")
                .await
                .is_err()
        );
        assert!(store.list().await.unwrap().is_empty());
        assert!(store.owned_headers().await.unwrap().is_empty());
    }
}

//! The local roles store: its own SQLite file, one row per st-peter `user_id` (by value)
//! holding the identity headers the adapter sets for that user, plus the set of header keys
//! the adapter owns.
//!
//! The owned set is read on every request (to strip and to refuse forged headers), often on
//! an event loop's thread, so it is kept in memory rather than queried. It only ever grows
//! (revokes keep keys owned): writes through this store add to it at once, and a watcher
//! picks up grants made by any other connection, such as the `grant` CLI in another process,
//! through SQLite's `PRAGMA data_version`.
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Row, SqliteExecutor};

use crate::error::{Error, Result};

/// Identity headers of one user: header key (`@employeeId`) -> value.
pub type IdentityHeaders = BTreeMap<String, String>;

const MAX_KEY_CHARS: usize = 64;
const MAX_VALUE_CHARS: usize = 256;

/// How often the store checks the file for commits by other connections. A key granted by
/// another process is owned here within about this long.
pub const OWNED_HEADERS_POLL: Duration = Duration::from_millis(250);

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

/// The roles database. Cheap to clone (a connection pool and the shared owned-header set).
#[derive(Debug, Clone)]
pub struct RolesStore {
    pool: SqlitePool,
    owned: Arc<OwnedKeys>,
}

/// The owned header keys as last read. The lock is never held across I/O.
#[derive(Debug, Default)]
struct OwnedKeys(RwLock<Arc<BTreeSet<String>>>);

impl OwnedKeys {
    fn get(&self) -> Arc<BTreeSet<String>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Adds keys (the set only grows, so a late or repeated read can never drop a key).
    fn extend<'a>(&self, keys: impl IntoIterator<Item = &'a String>) {
        let missing: Vec<&String> = {
            let known = self.get();
            keys.into_iter()
                .filter(|key| !known.contains(*key))
                .collect()
        };
        if missing.is_empty() {
            return;
        }
        let mut guard = self.0.write().unwrap_or_else(|e| e.into_inner());
        let mut keys = BTreeSet::clone(&guard);
        keys.extend(missing.into_iter().cloned());
        *guard = Arc::new(keys);
    }
}

impl RolesStore {
    /// Opens (creating if missing) the SQLite file at `path`, applies the migrations, loads
    /// the owned header keys and starts watching the file for keys granted elsewhere (a
    /// task on the current Tokio runtime that ends when the last clone of the store drops).
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        // A connection of its own: its data_version moves on every commit by any *other*
        // connection, this store's pool included. Read the version before the keys, so a
        // commit in between is seen at the first poll.
        let mut watcher = options.connect().await?;
        let version = data_version(&mut watcher).await?;
        let owned = Arc::new(OwnedKeys::default());
        owned.extend(&load_owned(&mut watcher).await?);
        tokio::spawn(watch_owned(watcher, version, Arc::downgrade(&owned)));
        Ok(Self { pool, owned })
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
        self.owned.extend(headers.keys());
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
        let headers = row
            .map(|row| decode_headers(&row.get::<String, _>("headers")))
            .transpose()?;
        // A row's keys were made owned in the row's own transaction: a fresher read than
        // the watcher's last poll.
        if let Some(headers) = &headers {
            self.owned.extend(headers.keys());
        }
        Ok(headers)
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
    /// [`RolesStore::own_headers`]. From memory, no I/O: current for writes through this
    /// store, and within [`OWNED_HEADERS_POLL`] for writes by other connections.
    pub fn owned_headers(&self) -> Arc<BTreeSet<String>> {
        self.owned.get()
    }

    /// Declares header keys as owned before any user has them.
    pub async fn own_headers<'a>(&self, keys: impl IntoIterator<Item = &'a str>) -> Result<()> {
        let keys: Vec<String> = keys.into_iter().map(str::to_owned).collect();
        let mut tx = self.pool.begin().await?;
        for key in &keys {
            check_header_key(key)?;
            sqlx::query("INSERT OR IGNORE INTO owned_headers (key) VALUES (?)")
                .bind(key)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.owned.extend(&keys);
        Ok(())
    }
}

async fn data_version(conn: impl SqliteExecutor<'_>) -> Result<i64> {
    Ok(sqlx::query_scalar("PRAGMA data_version")
        .fetch_one(conn)
        .await?)
}

async fn load_owned(conn: impl SqliteExecutor<'_>) -> Result<BTreeSet<String>> {
    Ok(sqlx::query_scalar("SELECT key FROM owned_headers")
        .fetch_all(conn)
        .await?
        .into_iter()
        .collect())
}

/// Polls `data_version` and reloads the owned keys when another connection committed. A
/// failed read keeps the set as it is (a subset of the truth) and is retried next tick.
async fn watch_owned(mut conn: SqliteConnection, mut version: i64, owned: Weak<OwnedKeys>) {
    let mut tick = tokio::time::interval(OWNED_HEADERS_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(owned) = owned.upgrade() else {
            break; // every clone of the store is gone
        };
        let Ok(now) = data_version(&mut conn).await else {
            continue;
        };
        if now == version {
            continue;
        }
        if let Ok(keys) = load_owned(&mut conn).await {
            owned.extend(&keys);
            version = now;
        }
    }
    let _ = conn.close().await;
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
        let owned: Vec<_> = store.owned_headers().iter().cloned().collect();
        assert_eq!(owned, ["@employeeId", "@station"]);
        // What a fresh open reads from the file agrees with what this store kept in memory.
        let reopened = RolesStore::open(dir.path().join("roles.db")).await.unwrap();
        assert_eq!(reopened.owned_headers(), store.owned_headers());
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
        assert!(store.owned_headers().is_empty());
    }
}

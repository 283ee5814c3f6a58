//! PostgreSQL: the backend for several server replicas on one database. Same tables and the
//! same transactions as the SQLite store (`sql.rs` holds them); row locks taken by
//! UPDATE/DELETE make the single-use steps (a challenge attempt, a TOTP step, a recovery
//! code) safe across replicas, not only across tasks of one process.
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgQueryResult, PgRow};
use sqlx::{ConnectOptions, Connection, Pool, Postgres, Row};
use std::str::FromStr;
use std::sync::LazyLock;

use super::sql::{Backend, SqlStore, pool_options};
use super::{BackoffRule, LogNotices, PoolSettings, ThrottleCount, invalid_url};
use crate::clock::UnixMillis;
use crate::error::{Error, Result};

pub type PostgresStore = SqlStore<Postgres>;

#[async_trait::async_trait]
impl Backend for Postgres {
    /// An indexed lookup by token hash joined to its user, with the user's roles as an array.
    const SESSION_OWNER_SQL: &'static str = "SELECT u.id, u.handle, u.email, u.phone, \
         u.display_name, u.disabled, u.kind, s.expires_at AS session_expires_at, \
         ARRAY(SELECT r.role FROM user_roles r WHERE r.user_id = u.id ORDER BY r.role) AS roles \
         FROM sessions s JOIN users u ON u.id = s.user_id \
         WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > $2 \
         AND NOT u.disabled";

    fn roles(row: &PgRow) -> std::result::Result<Vec<String>, sqlx::Error> {
        row.try_get("roles")
    }

    /// A statement failed because its pooled connection was dead (the server restarted or
    /// dropped it while it sat idle), not because the database is unreachable now. The pool
    /// does not ping a connection before handing it out (`sql::pool_options`), so the read-only
    /// verify path retries such a failure once, on a fresh connection.
    fn retry_verify(error: &Error) -> bool {
        match error {
            Error::Unavailable(sqlx::Error::Io(_)) => true,
            // admin_shutdown, crash_shutdown: sent on a connection as its server went away;
            // idle_session_timeout: the server closed the connection while it sat idle.
            Error::Unavailable(sqlx::Error::Database(db)) => {
                matches!(db.code().as_deref(), Some("57P01" | "57P02" | "57P05"))
            }
            _ => false,
        }
    }

    fn rows_affected(result: &PgQueryResult) -> u64 {
        result.rows_affected()
    }

    /// `LISTEN` on a connection of its own (a pool of one, so a dead connection is never
    /// handed back to the request pool), for the NOTIFY the log's trigger sends at commit.
    async fn log_notices(pool: &Pool<Postgres>) -> Result<Option<Box<dyn LogNotices>>> {
        let own = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(pool.options().get_acquire_timeout())
            .connect_lazy_with((*pool.connect_options()).clone());
        let mut listener = PgListener::connect_with(&own).await?;
        // Report a dropped connection at once: the follower distrusts its cache and then
        // reconnects itself. (Eagerly, the listener would first wait out a reconnection
        // while the cache went on answering.)
        listener.eager_reconnect(false);
        listener.listen(REVOCATIONS_CHANNEL).await?;
        Ok(Some(Box::new(Listening { listener })))
    }

    /// Replicas share one database, so they share its throttles (migration 0006).
    const SHARES_THROTTLES: bool = true;

    /// One statement: the row lock that `ON CONFLICT DO UPDATE` takes orders racing
    /// replicas, and each sees the count the other left.
    async fn throttle_count(
        pool: &Pool<Postgres>,
        key: &[u8; 32],
        rule: BackoffRule,
        now: UnixMillis,
        unless_blocked: bool,
    ) -> Result<ThrottleCount> {
        let counted: Option<i64> = sqlx::query_scalar(THROTTLE_COUNT_SQL.as_str())
            .bind(&key[..])
            .bind(now)
            .bind(rule.free_failures)
            .bind(rule.base)
            .bind(rule.max)
            .bind(rule.forget_after)
            .bind(unless_blocked)
            .fetch_optional(pool)
            .await?;
        Ok(match counted {
            Some(count) => ThrottleCount::Counted(u32::try_from(count).unwrap_or(u32::MAX)),
            None => ThrottleCount::Blocked,
        })
    }

    async fn throttle_blocked_until(
        pool: &Pool<Postgres>,
        key: &[u8; 32],
    ) -> Result<Option<UnixMillis>> {
        Ok(
            sqlx::query_scalar("SELECT blocked_until FROM throttle_backoffs WHERE key = $1")
                .bind(&key[..])
                .fetch_optional(pool)
                .await?,
        )
    }

    /// The block is lifted only if no attempt counted since this one (then it was this
    /// attempt's, and the key was not blocked before it).
    async fn throttle_refund(
        pool: &Pool<Postgres>,
        key: &[u8; 32],
        counted: u32,
        now: UnixMillis,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE throttle_backoffs SET failures = GREATEST(failures - 1, 0), \
             blocked_until = CASE WHEN failures = $2 THEN LEAST(blocked_until, $3) \
             ELSE blocked_until END WHERE key = $1",
        )
        .bind(&key[..])
        .bind(i64::from(counted))
        .bind(now)
        .execute(pool)
        .await?;
        Ok(())
    }

    async fn throttle_forgive(pool: &Pool<Postgres>, key: &[u8; 32]) -> Result<()> {
        sqlx::query("DELETE FROM throttle_backoffs WHERE key = $1")
            .bind(&key[..])
            .execute(pool)
            .await?;
        Ok(())
    }

    /// GCRA: a request is let through while the key's theoretical arrival time is at most
    /// the tolerance ahead of now, and pushes it one interval on. The `WHERE` of the
    /// upsert decides, under the row lock.
    async fn throttle_rate(
        pool: &Pool<Postgres>,
        key: &[u8; 32],
        now_micros: i64,
        interval_micros: i64,
        tolerance_micros: i64,
    ) -> Result<Option<i64>> {
        let through: Option<i64> = sqlx::query_scalar(
            "INSERT INTO throttle_rates AS r (key, tat) VALUES ($1, $2 + $3) \
             ON CONFLICT (key) DO UPDATE SET tat = GREATEST(r.tat, $2) + $3 \
             WHERE GREATEST(r.tat, $2) - $2 <= $4 RETURNING tat",
        )
        .bind(&key[..])
        .bind(now_micros)
        .bind(interval_micros)
        .bind(tolerance_micros)
        .fetch_optional(pool)
        .await?;
        if through.is_some() {
            return Ok(None);
        }
        // Refused: only the hint is read apart from the decision.
        let tat: Option<i64> = sqlx::query_scalar("SELECT tat FROM throttle_rates WHERE key = $1")
            .bind(&key[..])
            .fetch_optional(pool)
            .await?;
        Ok(Some(
            tat.map_or(1, |tat| tat - tolerance_micros - now_micros)
                .max(1),
        ))
    }

    async fn purge_throttles(pool: &Pool<Postgres>, now: UnixMillis) -> Result<u64> {
        let backoffs = sqlx::query("DELETE FROM throttle_backoffs WHERE expires_at < $1")
            .bind(now)
            .execute(pool)
            .await?;
        let rates = sqlx::query("DELETE FROM throttle_rates WHERE tat < $1")
            .bind(now.saturating_mul(1000))
            .execute(pool)
            .await?;
        Ok(backoffs.rows_affected() + rates.rows_affected())
    }
}

/// Counts a failure (`$7`: unless the key must wait) and answers the count, in one
/// statement. `$2` now, `$3` free failures, `$4` base wait, `$5` longest wait, `$6` the
/// quiet spell that forgets (milliseconds). The same sums as `Failures::count` in memory.
static THROTTLE_COUNT_SQL: LazyLock<String> = LazyLock::new(|| {
    let count = "CASE WHEN $2 - t.last_at > $6 THEN 1 ELSE t.failures + 1 END";
    let blocked = |count: &str, otherwise: &str| {
        format!(
            "CASE WHEN {count} > $3 THEN $2 + LEAST($4::numeric * power(2::numeric, \
             GREATEST(LEAST({count} - $3 - 1, 30), 0)), $5::numeric)::bigint \
             ELSE {otherwise} END"
        )
    };
    format!(
        "INSERT INTO throttle_backoffs AS t (key, failures, last_at, blocked_until, expires_at) \
         VALUES ($1, 1, $2, {first}, $2 + $6 + $5) \
         ON CONFLICT (key) DO UPDATE SET failures = {count}, last_at = $2, \
         blocked_until = {next}, expires_at = $2 + $6 + $5 \
         WHERE NOT $7 OR t.blocked_until <= $2 \
         RETURNING failures",
        first = blocked("1", "0"),
        next = blocked(count, "t.blocked_until"),
    )
});

/// The channel migration 0003's trigger notifies.
const REVOCATIONS_CHANNEL: &str = "st_peter_revocations";

struct Listening {
    listener: PgListener,
}

#[async_trait::async_trait]
impl LogNotices for Listening {
    async fn next(&mut self) -> Result<()> {
        // `try_recv` answers `None` when the connection dropped (and reconnects, but what
        // was notified meanwhile is gone): the caller must treat that as lost notices.
        match self.listener.try_recv().await? {
            Some(_) => {
                // Several commits may have notified: one read of the log serves them all.
                while self.listener.next_buffered().is_some() {}
                Ok(())
            }
            None => Err(Error::Unavailable(sqlx::Error::Protocol(
                "the LISTEN connection dropped".into(),
            ))),
        }
    }
}

impl PostgresStore {
    pub async fn connect(database_url: &str, settings: &PoolSettings) -> Result<Self> {
        let options = PgConnectOptions::from_str(database_url)
            .map_err(invalid_url)?
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

        let pool = pool_options(settings).connect_with(options).await?;
        // sqlx's Postgres migrator holds an advisory lock while it runs, so replicas that
        // start together apply each migration once and the others wait for it.
        sqlx::migrate!("../migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
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

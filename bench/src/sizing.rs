//! Sizing: what one core of the real server does at the default settings (logins,
//! VerifyToken), and what memory and disk a number of live sessions take. Run through
//! `scripts/bench.sh --sizing` (`--no-memory`: the throughput part alone; `--no-throughput`:
//! the memory and disk part alone).
//!
//! Throughput: the server runs pinned to one core (`taskset -c 1`) and this process, the
//! load generator, to the other, and the server's own CPU time is read from /proc over each
//! phase. "Per core" is requests per CPU-second of the server: when the server kept its
//! core busy that is simply the measured rate; when the generator could not keep it busy,
//! the table says so and shows both.
//!
//! Memory and disk: for each session count a fresh database gets that many live sessions,
//! a fresh server (default settings) starts on it, and VerifyToken is sent for many
//! distinct live tokens (twice the server verify cache's capacity, or all of them when
//! there are fewer), so the cache fills to its bound. The server's peak RSS (VmHWM) and
//! the database's size on disk are reported.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::Connection;
use st_peter_proto::auth::v1 as pb;
use st_peter_server::revocation::cache::VerifyCacheSettings;
use st_peter_server::secrets::password::PasswordParams;
use st_peter_server::secrets::token::{self, SESSION_PREFIX, SecretHash};
use tonic::transport::Channel;

use crate::load::{self, Stats};
use crate::scenarios::{
    self, Backend, CALLERS, LOGIN_CALLERS, add_user, channels_for, check_errors, hash_rate,
    insert_sessions, login_load_as, login_token, unknown_token_load, verify_load,
};
use crate::server::Server;

/// The core the server is pinned to, and the one this process (the load generator) takes.
const SERVER_CORE: usize = 1;
const GENERATOR_CORE: usize = 0;
/// Random sessions are inserted in statements of this many rows (progress between them).
const INSERT_CHUNK: u64 = 1_000_000;
/// At most this many rounds of the verify load that fills the cache.
const MAX_FILL_ROUNDS: usize = 6;

/// What to measure.
pub struct SizingPlan {
    pub binary: PathBuf,
    /// Length of each throughput phase.
    pub phase: Duration,
    /// Length of the verify load on each memory server.
    pub fill: Duration,
    /// Live session counts the memory and disk figures are taken at.
    pub sessions: Vec<u64>,
    pub throughput: bool,
    pub memory: bool,
    /// Also take the memory and disk figures on this PostgreSQL database (emptied first).
    pub postgres_url: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Figure {
    pub figure: String,
    pub value: String,
    pub how: String,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct Sizing {
    pub date: String,
    pub machine: String,
    pub source: String,
    pub figures: Vec<Figure>,
    pub raw: serde_json::Map<String, serde_json::Value>,
}

impl Sizing {
    fn figure(
        &mut self,
        figure: impl Into<String>,
        value: impl Into<String>,
        how: impl Into<String>,
    ) {
        let figure = Figure {
            figure: figure.into(),
            value: value.into(),
            how: how.into(),
        };
        eprintln!("  {}: {}", figure.figure, figure.value);
        self.figures.push(figure);
    }

    fn raw(&mut self, key: &str, value: impl serde::Serialize) {
        scenarios::insert_raw(&mut self.raw, key, value);
    }

    pub fn markdown(&self) -> String {
        let mut out = format!(
            "Date: {}  \nMachine: {}  \nSource: {}\n\n| figure | value | how it was measured |\n|---|---|---|\n",
            self.date, self.machine, self.source
        );
        for figure in &self.figures {
            out.push_str(&format!(
                "| {} | {} | {} |\n",
                figure.figure, figure.value, figure.how
            ));
        }
        out
    }
}

pub async fn run(plan: &SizingPlan) -> anyhow::Result<Sizing> {
    let mut sizing = Sizing {
        date: scenarios::date(),
        machine: scenarios::machine(),
        source: scenarios::source(),
        ..Sizing::default()
    };
    if plan.throughput {
        throughput(plan, &mut sizing).await?;
    }
    if plan.memory {
        for &count in &plan.sessions {
            memory(plan, &mut sizing, Backend::Sqlite, count).await?;
        }
        if plan.postgres_url.is_some() {
            for &count in &plan.sessions {
                memory(plan, &mut sizing, Backend::Postgres, count).await?;
            }
        }
    }
    Ok(sizing)
}

/// Logins and VerifyToken per core of the server.
async fn throughput(plan: &SizingPlan, sizing: &mut Sizing) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pinned = cores > SERVER_CORE;
    let dir = tempfile::tempdir()?;
    let binary = if pinned {
        pinned_binary(dir.path(), &plan.binary, SERVER_CORE)?
    } else {
        eprintln!("  (one core only: the server and the load generator share it)");
        plan.binary.clone()
    };
    let placement = if pinned {
        format!(
            "server pinned to core {SERVER_CORE} (`taskset -c {SERVER_CORE}`: it sizes its threads \
             for one core), load generator on core {GENERATOR_CORE}"
        )
    } else {
        "server and load generator on the machine's one core".to_owned()
    };
    let url = format!("sqlite://{}", dir.path().join("sizing.db").display());
    let server = Server::start(&binary, &url)?;
    add_user(&server, "bench-user")?;
    // One user per login caller, as many people logging in at once are.
    let handles: Vec<String> = (0..LOGIN_CALLERS)
        .map(|i| format!("sizing-user-{i}"))
        .collect();
    for handle in &handles {
        add_user(&server, handle)?;
    }
    if pinned {
        set_own_cores(&GENERATOR_CORE.to_string())?;
    }
    let channels = channels_for(&server.target()).await?;
    let token = login_token(&channels[0]).await?;
    let phase = plan.phase;
    let seconds = phase.as_secs();
    let params = PasswordParams::OWASP;
    let argon2 = format!(
        "argon2id m={} KiB, t={}, p={}",
        params.memory_kib, params.iterations, params.parallelism
    );

    eprintln!(
        "sizing: argon2id on one thread (this process), then Login ({LOGIN_CALLERS} callers)"
    );
    let hashes = hash_rate(1, phase).await?;
    sizing.raw("hashes_per_second_one_thread", hashes);
    let (logins, busy) = with_server_cpu(
        &server,
        login_load_as(&channels, &handles, LOGIN_CALLERS, phase),
    )
    .await?;
    check_errors("login", &logins)?;
    sizing.figure(
        format!("Logins per core ({argon2}, the defaults)"),
        per_core(&logins, busy, "logins/s"),
        format!(
            "{LOGIN_CALLERS} callers, each logging in its own user, {seconds} s; {placement}. Baseline: {hashes:.1} \
             argon2id verifications/s on one thread of the generator's core"
        ),
    );
    sizing.raw("login", &logins);
    sizing.raw("login_server_cpu", busy);

    eprintln!("sizing: VerifyToken, one token again and again ({CALLERS} callers)");
    let (verify, busy) =
        with_server_cpu(&server, verify_load(&channels, &token, CALLERS, phase)).await?;
    check_errors("verify", &verify)?;
    sizing.figure(
        "VerifyToken per core, cache hit (a token verified before)",
        per_core(&verify, busy, "verifications/s"),
        format!(
            "{CALLERS} callers on {} connections, {seconds} s; {placement}",
            channels.len()
        ),
    );
    sizing.raw("verify_hit", &verify);
    sizing.raw("verify_hit_server_cpu", busy);

    eprintln!("sizing: VerifyToken, a token never seen before on every call ({CALLERS} callers)");
    let (misses, busy) =
        with_server_cpu(&server, unknown_token_load(&channels, CALLERS, phase)).await?;
    check_errors("verify of unknown tokens", &misses)?;
    sizing.figure(
        "VerifyToken per core, cache miss (a store lookup, SQLite)",
        per_core(&misses, busy, "verifications/s"),
        format!(
            "well-formed tokens never issued, each looked up in the session index and refused; \
             {CALLERS} callers, {seconds} s; {placement}"
        ),
    );
    sizing.raw("verify_miss", &misses);
    sizing.raw("verify_miss_server_cpu", busy);

    if pinned {
        set_own_cores(&format!("0-{}", cores - 1))?;
    }
    drop(server);
    Ok(())
}

/// Runs a load and returns it with the share of one core the server used meanwhile.
async fn with_server_cpu(
    server: &Server,
    load: impl std::future::Future<Output = Stats>,
) -> anyhow::Result<(Stats, f64)> {
    let before = server.cpu_seconds()?;
    let stats = load.await;
    let busy = (server.cpu_seconds()? - before) / stats.seconds.max(1e-9);
    Ok((stats, busy))
}

/// A rate per CPU-second of the server, saying how busy its core was.
fn per_core(stats: &Stats, busy: f64, unit: &str) -> String {
    let measured = format!(
        "{:.0} {unit} measured, server CPU {:.0} % of a core, p50 {}, p99 {}",
        stats.per_second,
        busy * 100.0,
        latency(stats.p50_us),
        latency(stats.p99_us)
    );
    if busy >= 0.9 {
        format!(
            "**{:.0} {unit}** ({measured})",
            stats.per_second / busy.min(1.0)
        )
    } else {
        format!(
            "**{:.0} {unit}** per server CPU-second ({measured}: the generator, not the \
             server, was the limit)",
            stats.per_second / busy.max(1e-9)
        )
    }
}

/// A script that starts `binary` on one core, so the server sizes its runtime and hashing
/// threads for that core.
fn pinned_binary(dir: &Path, binary: &Path, core: usize) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let binary = std::fs::canonicalize(binary)
        .with_context(|| format!("the server binary {}", binary.display()))?;
    let script = dir.join("st-peter-pinned");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec taskset -c {core} '{}' \"$@\"\n",
            binary.display()
        ),
    )?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    Ok(script)
}

/// Moves every thread of this process (the load generator) to `cores`.
fn set_own_cores(cores: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cores, &std::process::id().to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .context("running taskset")?;
    if !status.success() {
        bail!("taskset -a -p -c {cores} failed");
    }
    Ok(())
}

/// Peak RSS and size on disk with `count` live sessions on one backend.
async fn memory(
    plan: &SizingPlan,
    sizing: &mut Sizing,
    backend: Backend,
    count: u64,
) -> anyhow::Result<()> {
    let capacity = VerifyCacheSettings::default().capacity;
    let dir = tempfile::tempdir_in(std::env::temp_dir())?;
    let (name, url) = match backend {
        Backend::Sqlite => (
            "SQLite",
            format!("sqlite://{}", dir.path().join("sizing.db").display()),
        ),
        Backend::Postgres => {
            let url = plan.postgres_url.clone().context("no PostgreSQL URL")?;
            let mut db = sqlx::PgConnection::connect(&url).await?;
            sqlx::raw_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
                .execute(&mut db)
                .await?;
            db.close().await?;
            ("PostgreSQL", url)
        }
    };
    eprintln!("sizing: {count} live sessions ({name})");
    // A first server creates the schema and the user, then stops: the measured server
    // starts on the full database.
    let user_id = {
        let setup = Server::start(&plan.binary, &url)?;
        add_user(&setup, "bench-user")?
    };
    let started = Instant::now();
    let known = count.min(2 * capacity);
    let tokens: Vec<String> = (0..known)
        .map(|_| token::mint(SESSION_PREFIX).secret)
        .collect();
    insert_known_sessions(&url, backend, &user_id, &tokens).await?;
    let mut inserted = known;
    while inserted < count {
        let chunk = INSERT_CHUNK.min(count - inserted);
        insert_sessions(&url, backend, &user_id, chunk).await?;
        inserted += chunk;
        eprintln!(
            "  {inserted} sessions in {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    sizing.raw(
        &format!("insert_seconds_{name}_{count}"),
        started.elapsed().as_secs_f64(),
    );

    let server = Server::start(&plan.binary, &url)?;
    let at_start = server.peak_rss_mib();
    let channels = channels_for(&server.target()).await?;
    let tokens: Arc<Vec<String>> = Arc::new(tokens);
    // Rounds of the load until every token has been verified at least once (and most of
    // them twice), so the cache has been offered more answers than it can hold.
    let next = Arc::new(AtomicUsize::new(0));
    let mut rounds = Vec::new();
    while rounds.len() < MAX_FILL_ROUNDS
        && (next.load(Ordering::Relaxed) as f64) < tokens.len() as f64 * 1.5
    {
        let round = distinct_verify_load(&channels, &tokens, &next, plan.fill).await;
        check_errors("verify of distinct tokens", &round)?;
        rounds.push(round);
    }
    let load = Stats {
        requests: rounds.iter().map(|r| r.requests).sum(),
        errors: rounds.iter().map(|r| r.errors).sum(),
        seconds: rounds.iter().map(|r| r.seconds).sum(),
        ..rounds.last().cloned().unwrap_or_default()
    };
    let load = Stats {
        per_second: load.requests as f64 / load.seconds.max(1e-9),
        ..load
    };
    let peak = server.peak_rss_mib();
    let bytes = disk_bytes(backend, &url, dir.path()).await?;
    drop(server);
    let passes = load.requests as f64 / tokens.len() as f64;
    sizing.figure(
        format!("Server peak RSS, {} live sessions ({name})", group(count)),
        format!("**{peak:.0} MiB** ({at_start:.0} MiB after start)"),
        format!(
            "default settings; VerifyToken for {} distinct live tokens in turn, {CALLERS} callers \
             for {:.0} s ({} verifications, {passes:.1} per token, {:.0}/s): the verify cache (at \
             most {} entries) {}",
            group(known),
            load.seconds,
            load.requests,
            load.per_second,
            group(capacity),
            if known >= capacity {
                "full"
            } else {
                "holds every session"
            }
        ),
    );
    sizing.figure(
        format!("Database on disk, {} live sessions ({name})", group(count)),
        format!(
            "**{}** ({:.0} bytes per session)",
            size(bytes),
            bytes as f64 / count as f64
        ),
        match backend {
            Backend::Sqlite => "the SQLite file and its WAL, sessions inserted in bulk",
            Backend::Postgres => "pg_database_size, sessions inserted in bulk, then ANALYZE",
        },
    );
    sizing.raw(&format!("verify_distinct_{name}_{count}"), &load);
    sizing.raw(&format!("peak_rss_mib_{name}_{count}"), peak);
    sizing.raw(&format!("disk_bytes_{name}_{count}"), bytes);
    Ok(())
}

/// VerifyToken over `tokens` in turn from `CALLERS` callers, each taking the next one
/// (`next` goes on from one round to the next): every token is verified once before any is
/// verified again.
async fn distinct_verify_load(
    channels: &[Channel],
    tokens: &Arc<Vec<String>>,
    next: &Arc<AtomicUsize>,
    duration: Duration,
) -> Stats {
    let (tokens, next) = (tokens.clone(), next.clone());
    let clients = scenarios::auth_clients(channels);
    load::run(CALLERS, duration, move |i| {
        let mut client = clients[i % clients.len()].clone();
        let token = tokens[next.fetch_add(1, Ordering::Relaxed) % tokens.len()].clone();
        async move {
            client
                .verify_token(pb::VerifyTokenRequest { token })
                .await
                .map(|_| ())
        }
    })
    .await
}

/// Live sessions for these tokens, inserted in bulk (a thousand rows a statement).
async fn insert_known_sessions(
    url: &str,
    backend: Backend,
    user_id: &str,
    tokens: &[String],
) -> anyhow::Result<()> {
    let now = scenarios::now_millis();
    let expires = now + 24 * 3600 * 1000;
    let statements: Vec<String> = tokens
        .chunks(1000)
        .map(|chunk| {
            let rows: Vec<String> = chunk
                .iter()
                .map(|secret| {
                    let hash = token::hash(secret);
                    let literal = match backend {
                        Backend::Sqlite => format!("X'{}'", hex(&hash)),
                        Backend::Postgres => format!("'\\x{}'::bytea", hex(&hash)),
                    };
                    format!(
                        "('{}', {literal}, '{user_id}', {now}, {expires})",
                        uuid_from(&hash)
                    )
                })
                .collect();
            format!(
                "INSERT INTO sessions (id, token_hash, user_id, created_at, expires_at) VALUES {};",
                rows.join(", ")
            )
        })
        .collect();
    let sql = format!("BEGIN; {} COMMIT;", statements.concat());
    match backend {
        Backend::Sqlite => {
            let mut db = sqlx::SqliteConnection::connect(url).await?;
            sqlx::raw_sql(&sql).execute(&mut db).await?;
            db.close().await?;
        }
        Backend::Postgres => {
            let mut db = sqlx::PgConnection::connect(url).await?;
            sqlx::raw_sql(&sql).execute(&mut db).await?;
            db.close().await?;
        }
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A version 4 UUID made of a token hash's first bytes (unique as the hashes are).
fn uuid_from(hash: &SecretHash) -> String {
    let h = hex(&hash[..16]);
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// Bytes the database takes on disk.
async fn disk_bytes(backend: Backend, url: &str, dir: &Path) -> anyhow::Result<u64> {
    match backend {
        Backend::Sqlite => {
            let mut total = 0;
            for entry in std::fs::read_dir(dir)? {
                let entry = entry?;
                if entry.file_name().to_string_lossy().starts_with("sizing.db") {
                    total += entry.metadata()?.len();
                }
            }
            Ok(total)
        }
        Backend::Postgres => {
            let mut db = sqlx::PgConnection::connect(url).await?;
            let (bytes,): (i64,) = sqlx::query_as("SELECT pg_database_size(current_database())")
                .fetch_one(&mut db)
                .await?;
            db.close().await?;
            Ok(u64::try_from(bytes)?)
        }
    }
}

/// Bytes in KiB, MiB or GiB.
fn size(bytes: u64) -> String {
    let kib = bytes as f64 / 1024.0;
    if kib < 1024.0 {
        format!("{kib:.0} KiB")
    } else if kib < 1024.0 * 1024.0 {
        format!("{:.0} MiB", kib / 1024.0)
    } else {
        format!("{:.2} GiB", kib / 1048576.0)
    }
}

/// Microseconds as µs, or ms from 10 ms.
fn latency(us: u32) -> String {
    if us < 10_000 {
        format!("{us} µs")
    } else {
        format!("{:.0} ms", f64::from(us) / 1000.0)
    }
}

/// 10000000 as "10 million", 1000 as "1 thousand".
fn group(n: u64) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{} million", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{} thousand", n / 1_000),
        n => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_named_in_words() {
        assert_eq!(group(1_000), "1 thousand");
        assert_eq!(group(200_000), "200 thousand");
        assert_eq!(group(10_000_000), "10 million");
        assert_eq!(group(1_500), "1500");
    }

    #[test]
    fn sizes_and_latencies_pick_a_readable_unit() {
        assert_eq!(size(475_000), "464 KiB");
        assert_eq!(size(57 * 1048576), "57 MiB");
        assert_eq!(size(3 * 1073741824), "3.00 GiB");
        assert_eq!(latency(573), "573 µs");
        assert_eq!(latency(126_347), "126 ms");
    }

    #[test]
    fn ids_made_from_hashes_have_the_uuid_shape() {
        let id = uuid_from(&[0xab; 32]);
        assert_eq!(id, "abababab-abab-4bab-8bab-abababababab");
    }
}

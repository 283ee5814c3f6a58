//! The `st-peter` command line: `serve`, and the admin commands that work on the same
//! database. Commands parse their arguments and call the domain; they hold no rules.
use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::domain::accounts::NewAccount;
use crate::domain::app::{Caller, Settings, StPeter, UserKind, UserView};
use crate::grpc::serve::ServeOptions;
use crate::secrets::password::{AdmissionSettings, PasswordParams};
use crate::startup::{self, Application, TotpKeySource};
use crate::store;

#[derive(Debug, Parser)]
#[command(
    name = "st-peter",
    version,
    about = "A small central authentication service."
)]
pub struct Cli {
    /// Database: `sqlite://PATH` (created and migrated at start) or
    /// `postgres://USER:PASSWORD@HOST:PORT/DATABASE` (an existing database, migrated at start).
    #[arg(
        long,
        global = true,
        env = "ST_PETER_DATABASE_URL",
        default_value = "sqlite://st-peter.db",
        hide_env_values = true
    )]
    pub database_url: String,

    /// File holding the key (base64, 32 bytes) that seals TOTP secrets at rest. The key
    /// itself may instead come from the ST_PETER_TOTP_KEY environment variable. Default for
    /// SQLite: `DATABASE.totp-key` beside the database, created (mode 0600) on first start.
    #[arg(
        long,
        global = true,
        env = "ST_PETER_TOTP_KEY_FILE",
        value_name = "PATH"
    )]
    pub totp_key_file: Option<PathBuf>,

    /// Database connections this process opens at most.
    #[arg(
        long,
        global = true,
        env = "ST_PETER_DB_MAX_CONNECTIONS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub db_max_connections: u32,

    /// How long a request waits for a database connection before failing with UNAVAILABLE
    /// (bounds requests while the database is down), e.g. `5s`, `500ms`.
    #[arg(long, global = true, env = "ST_PETER_DB_ACQUIRE_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub db_acquire_timeout: Duration,

    /// The strength (zxcvbn score, 0 to 4) every new password needs: users created here,
    /// passwords set here, and passwords users change through AccountService. 3 is
    /// "safely unguessable"; 0 checks the length (8 characters) alone.
    #[arg(
        long,
        global = true,
        env = "ST_PETER_MIN_PASSWORD_SCORE",
        default_value_t = crate::secrets::password_strength::DEFAULT_MIN_SCORE,
        value_parser = clap::value_parser!(u8).range(0..=4)
    )]
    pub min_password_score: u8,

    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(flatten)]
    pub hashing: HashingArgs,

    /// Log line format (logs go to standard error).
    #[arg(
        long,
        global = true,
        env = "ST_PETER_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC server.
    Serve(ServeArgs),
    /// Administer users.
    #[command(subcommand)]
    User(UserCommand),
    /// Administer sessions: list and revoke them.
    #[command(subcommand)]
    Session(SessionCommand),
    /// Administer service accounts and their API keys. Grant a service account platform
    /// roles with `user role grant NAME ROLE` (`st-peter:lookup` lets it use LookupUser).
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Password hashing: measure what argon2id costs on this machine.
    #[command(subcommand)]
    Hash(HashCommand),
}

#[derive(Debug, Subcommand)]
pub enum HashCommand {
    /// Time argon2id on this machine for OWASP's parameters and steps around them (and
    /// yours, if given): the median time per hash and the logins one core checks a second.
    /// With --target, recommends the parameters closest below it and prints their flags.
    Calibrate(CalibrateArgs),
}

#[derive(Debug, Args)]
pub struct CalibrateArgs {
    /// The time one password check may take, e.g. `500ms`: the parameters closest below it
    /// are recommended (memory is also scaled towards it from the OWASP default).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub target: Option<Duration>,
    /// Also measure this memory (KiB), with --iterations and --parallelism (default: OWASP's).
    #[arg(long)]
    pub memory_kib: Option<u32>,
    #[arg(long)]
    pub iterations: Option<u32>,
    #[arg(long)]
    pub parallelism: Option<u32>,
    /// Hashes per candidate; the median is shown.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub runs: u32,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "ST_PETER_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// How long a session token lives, e.g. `12h`, `30m`, `7days`.
    #[arg(long, env = "ST_PETER_SESSION_TTL", default_value = "24h", value_parser = humantime::parse_duration)]
    pub session_ttl: Duration,
    /// Serve TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "ST_PETER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "ST_PETER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM): mutual TLS between services.
    #[arg(long, env = "ST_PETER_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// On SIGTERM or Ctrl-C, how long calls in flight may take to finish, e.g. `10s`.
    #[arg(long, env = "ST_PETER_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// The longest a login without a deadline of its own may expect to wait for a
    /// password-hashing thread; past that it is refused at once with UNAVAILABLE and a
    /// retry hint. A caller's deadline (grpc-timeout) bounds the wait the same way.
    #[arg(long, env = "ST_PETER_HASH_MAX_WAIT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub hash_max_wait: Duration,
    /// How long a session token exchanged for an API key (ExchangeApiKey) lives, e.g.
    /// `15m`; never past its key's own expiry. Clients refresh it before it ends.
    #[arg(long, env = "ST_PETER_API_TOKEN_TTL", default_value = "15m", value_parser = humantime::parse_duration)]
    pub api_token_ttl: Duration,
    /// Answer VerifyToken, LookupUser and WatchRevocations only for callers that present a
    /// service account's token (`authorization: Bearer`, from ExchangeApiKey) or a client
    /// certificate signed by --tls-client-ca; others get PERMISSION_DENIED. With
    /// --tls-client-ca, a client certificate becomes optional at the handshake (a service
    /// token is the other way in); without this flag the CA makes it mandatory.
    #[arg(long, env = "ST_PETER_REQUIRE_CALLER_CREDENTIALS")]
    pub require_caller_credentials: bool,
    /// LookupUser calls one actor (a person or a service account) may make a minute, with
    /// bursts of a third of that; past it, RESOURCE_EXHAUSTED. Raise it for a service that
    /// resolves users in bulk.
    #[arg(
        long,
        env = "ST_PETER_LOOKUPS_PER_MINUTE",
        default_value_t = 60,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub lookups_per_minute: u32,
    /// Passkey sign-ins (BeginPasskeyLogin) one client address may begin a minute, with
    /// bursts of a third of that; past it, RESOURCE_EXHAUSTED. Each stores a short-lived
    /// challenge; a web app relays all of its users' sign-ins from its one address.
    #[arg(
        long,
        env = "ST_PETER_PASSKEY_BEGINS_PER_MINUTE",
        default_value_t = 600,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub passkey_begins_per_minute: u32,
    /// Once listening, write the bound address (`HOST:PORT`, useful with port 0) to this
    /// file: tests and supervisors wait for it instead of reading logs. With
    /// --metrics-listen, a second line `metrics HOST:PORT` gives the metrics address.
    #[arg(long, env = "ST_PETER_READY_FILE", value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
    /// Serve Prometheus metrics at `GET /metrics` on this address (plain HTTP, e.g.
    /// `127.0.0.1:9464`; port 0 picks a free one). Off when not given.
    #[arg(long, env = "ST_PETER_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Turn passkeys (WebAuthn) on for this relying party: the domain of the site whose
    /// pages sign users in (`example.com`; `localhost` for development). Passkeys are
    /// bound to it for good: changing it orphans every registered passkey. Needs
    /// --webauthn-origin.
    #[arg(
        long,
        env = "ST_PETER_WEBAUTHN_RP_ID",
        value_name = "DOMAIN",
        requires = "webauthn_origin"
    )]
    pub webauthn_rp_id: Option<String>,
    /// An origin the sign-in pages are served from, exactly as the browser reports it
    /// (`https://login.example.com`, with any port): on the RP id or a subdomain of it.
    /// Repeat the flag (or separate with commas in the variable) for several.
    #[arg(
        long,
        env = "ST_PETER_WEBAUTHN_ORIGIN",
        value_name = "URL",
        value_delimiter = ',',
        requires = "webauthn_rp_id"
    )]
    pub webauthn_origin: Vec<String>,
}

/// The argon2id parameters of new password hashes and the threads that compute them, for
/// `serve` and for the admin commands that set passwords. A stored hash made with other
/// parameters is replaced at its user's next good login.
/// `st-peter hash calibrate` shows what each choice costs on this machine.
#[derive(Debug, Clone, Args)]
pub struct HashingArgs {
    /// argon2id memory per hash, in KiB (OWASP: 19456 = 19 MiB). At least 8 × parallelism,
    /// at most 4194304 (4 GiB).
    #[arg(long, global = true, env = "ST_PETER_ARGON2_MEMORY_KIB", default_value_t = PasswordParams::OWASP.memory_kib)]
    pub argon2_memory_kib: u32,
    /// argon2id passes over the memory (OWASP: 2), 1 to 64.
    #[arg(long, global = true, env = "ST_PETER_ARGON2_ITERATIONS", default_value_t = PasswordParams::OWASP.iterations)]
    pub argon2_iterations: u32,
    /// argon2id lanes (OWASP: 1), 1 to 64. Each hash still runs on one thread: more lanes
    /// add no speed here, only memory.
    #[arg(long, global = true, env = "ST_PETER_ARGON2_PARALLELISM", default_value_t = PasswordParams::OWASP.parallelism)]
    pub argon2_parallelism: u32,
    /// Threads that compute password hashes (default: all cores but one), 1 to 1024.
    #[arg(long, global = true, env = "ST_PETER_HASH_THREADS")]
    pub hash_threads: Option<usize>,
}

impl HashingArgs {
    /// The parameters, checked: each error names its flag.
    pub fn params(&self) -> anyhow::Result<PasswordParams> {
        check_params(
            self.argon2_memory_kib,
            self.argon2_iterations,
            self.argon2_parallelism,
            "--argon2-",
        )
    }

    pub fn threads(&self) -> anyhow::Result<usize> {
        match self.hash_threads {
            None => Ok(crate::secrets::password::default_concurrency()),
            Some(threads @ 1..=1024) => Ok(threads),
            Some(threads) => bail!("--hash-threads: {threads} is not between 1 and 1024"),
        }
    }
}

/// argon2id parameters as flags named `{prefix}memory-kib` and so on: the limits argon2
/// itself sets, and a ceiling against typos (4 GiB, 64 passes, 64 lanes).
fn check_params(
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
    prefix: &str,
) -> anyhow::Result<PasswordParams> {
    if !(1..=64).contains(&parallelism) {
        bail!("{prefix}parallelism: {parallelism} is not between 1 and 64");
    }
    if !(1..=64).contains(&iterations) {
        bail!("{prefix}iterations: {iterations} is not between 1 and 64");
    }
    let least = 8 * parallelism;
    if memory_kib < least {
        bail!(
            "{prefix}memory-kib: {memory_kib} is below 8 KiB per lane ({least} for parallelism \
             {parallelism})"
        );
    }
    if memory_kib > 4 * 1024 * 1024 {
        bail!("{prefix}memory-kib: {memory_kib} is above 4194304 (4 GiB)");
    }
    let params = PasswordParams {
        memory_kib,
        iterations,
        parallelism,
    };
    params.block_count()?;
    Ok(params)
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user. The password comes from stdin or an environment variable, never
    /// from an argument (arguments are visible to every user of the machine).
    Add(AddUser),
    /// List users with their roles.
    List,
    /// Disable a user: they cannot log in and their sessions are revoked.
    Disable { identifier: String },
    /// Enable a disabled user.
    Enable { identifier: String },
    /// Set a user's password (from stdin or an environment variable), with the same
    /// strength rule as every new password.
    Password(SetPassword),
    /// Grant or revoke platform roles.
    #[command(subcommand)]
    Role(RoleCommand),
    /// Enroll or remove TOTP two-factor authentication.
    #[command(subcommand)]
    Totp(TotpCommand),
    /// List or remove a user's passkeys (users register them through AccountService).
    #[command(subcommand)]
    Passkey(PasskeyCommand),
    /// Bring users in from another system: JSON lines (FILE, or `-` for standard input),
    /// one user a line, with the password hash they had there (argon2, bcrypt, PBKDF2,
    /// scrypt, or a Keycloak credential), rehashed to argon2id at their next good login.
    /// Each line is one transaction; a handle that exists is left alone, so a re-run is
    /// harmless. Exits non-zero if any line failed.
    Import {
        /// The JSON-lines file, or `-` for standard input.
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("password_source").required(true))]
pub struct AddUser {
    #[arg(long)]
    pub handle: String,
    #[arg(long)]
    pub email: Option<String>,
    /// E.164, e.g. +15551234567.
    #[arg(long)]
    pub phone: Option<String>,
    #[arg(long)]
    pub display_name: Option<String>,
    /// Read the password from the first line of standard input.
    #[arg(long, group = "password_source")]
    pub password_stdin: bool,
    /// Read the password from this environment variable.
    #[arg(long, value_name = "VAR", group = "password_source")]
    pub password_env: Option<String>,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("password_source").required(true))]
pub struct SetPassword {
    /// The user (id, handle, email or phone).
    pub identifier: String,
    /// Read the new password from the first line of standard input.
    #[arg(long, group = "password_source")]
    pub password_stdin: bool,
    /// Read the new password from this environment variable.
    #[arg(long, value_name = "VAR", group = "password_source")]
    pub password_env: Option<String>,
    /// Also revoke every live session of the user.
    #[arg(long)]
    pub revoke_sessions: bool,
}

#[derive(Debug, Subcommand)]
pub enum RoleCommand {
    Grant { identifier: String, role: String },
    Revoke { identifier: String, role: String },
}

#[derive(Debug, Subcommand)]
pub enum TotpCommand {
    /// Enroll TOTP: prints the otpauth:// URI and a QR code to scan with a phone.
    Enroll { identifier: String },
    /// Remove TOTP from a user.
    Disable { identifier: String },
    /// Issue new recovery codes to a user with TOTP (the old ones stop working).
    RecoveryCodes { identifier: String },
}

#[derive(Debug, Subcommand)]
pub enum PasskeyCommand {
    /// A user's passkeys: id, name, when registered and last used.
    List { identifier: String },
    /// Remove one of a user's passkeys (a lost device): it no longer signs them in.
    Remove {
        identifier: String,
        /// The passkey's id, from `user passkey list`.
        passkey_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Create a service account: platform roles and API keys, no password, no TOTP.
    Add {
        /// Its name (a handle: lowercase letters, digits, '.', '_' and '-').
        name: String,
        #[arg(long)]
        display_name: Option<String>,
    },
    /// List service accounts with their roles.
    List,
    /// Create, list and revoke a service account's API keys.
    #[command(subcommand)]
    Key(KeyCommand),
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create an API key and print it, this once (only its hash is kept). An account may
    /// have several, so a key can be replaced without downtime: create, deploy, revoke.
    Create {
        /// The service account (name or id).
        service: String,
        /// Tells this account's keys apart (default: `key-` and the start of its id).
        #[arg(long = "name", value_name = "KEY_NAME")]
        key_name: Option<String>,
        /// Expire the key after this long, e.g. `90days`; default: never (until revoked).
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        expires: Option<Duration>,
    },
    /// List a service account's keys (never the keys themselves).
    List {
        /// The service account (name or id).
        service: String,
    },
    /// Revoke a key at once, and every session token exchanged from it.
    Revoke {
        /// The key's id (from `service key list` or `create`).
        key_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// List a user's live sessions, newest first.
    List {
        /// The user (id, handle, email or phone).
        #[arg(long)]
        user: String,
    },
    /// Revoke one session (by id, or by its token from stdin or an environment variable)
    /// or all of a user's.
    #[command(group = clap::ArgGroup::new("which").required(true))]
    Revoke {
        /// Revoke every live session of this user (id, handle, email or phone).
        #[arg(long, group = "which")]
        user: Option<String>,
        /// Revoke the session with this id (from `session list`).
        #[arg(long, value_name = "SESSION_ID", group = "which")]
        id: Option<String>,
        /// Read the token to revoke from the first line of standard input.
        #[arg(long, group = "which")]
        token_stdin: bool,
        /// Read the token to revoke from this environment variable.
        #[arg(long, value_name = "VAR", group = "which")]
        token_env: Option<String>,
    },
}

pub use crate::startup::TOTP_KEY_ENV;

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let totp_key = match (std::env::var(TOTP_KEY_ENV), &cli.totp_key_file) {
        (Ok(text), _) => TotpKeySource::Base64(text),
        (Err(_), Some(path)) => TotpKeySource::File(path.clone()),
        (Err(_), None) => TotpKeySource::BesideDatabase,
    };
    let mut config = startup::Config {
        database_url: cli.database_url.clone(),
        pool: store::PoolSettings {
            max_connections: cli.db_max_connections,
            acquire_timeout: cli.db_acquire_timeout,
        },
        totp_key,
        settings: Settings {
            min_password_score: cli.min_password_score,
            password_params: cli.hashing.params()?,
            hash_concurrency: cli.hashing.threads()?,
            ..Settings::default()
        },
    };
    match cli.command {
        Command::Serve(args) => {
            config.settings.session_ttl = args.session_ttl;
            config.settings.api_token_ttl = args.api_token_ttl;
            config.settings.require_caller_credentials = args.require_caller_credentials;
            config.settings.webauthn = args.webauthn_rp_id.clone().map(|rp_id| {
                crate::domain::passkeys::WebauthnSettings {
                    rp_id,
                    origins: args.webauthn_origin.clone(),
                }
            });
            config.settings.throttle.lookups_per_minute = args.lookups_per_minute;
            config.settings.throttle.lookup_burst = (args.lookups_per_minute / 3).max(1);
            config.settings.throttle.passkey_begins_per_minute = args.passkey_begins_per_minute;
            config.settings.throttle.passkey_begin_burst =
                (args.passkey_begins_per_minute / 3).max(1);
            config.settings.admission = AdmissionSettings {
                max_wait: args.hash_max_wait,
            };
            let mut options = match (&args.tls_cert, &args.tls_key) {
                (Some(cert), Some(key)) => ServeOptions::tls_from_files(
                    cert,
                    key,
                    args.tls_client_ca.as_deref(),
                    args.require_caller_credentials,
                )?,
                _ => ServeOptions::default(),
            };
            options.shutdown_grace = args.shutdown_grace;
            let app = startup::open(config).await?;
            // Before the gRPC listener, so its routes are metered from the first call.
            let metrics = match args.metrics_listen {
                Some(listen) => Some((
                    crate::metrics::enable(),
                    crate::metrics::http::bind(listen).await?,
                )),
                None => None,
            };
            let application = Application::bind(app, args.listen, options).await?;
            let address = application.local_addr();
            let metrics_address = match metrics {
                Some((metrics, listener)) => {
                    let metrics_address = crate::metrics::http::local_addr(&listener);
                    let app = application.app().clone();
                    tokio::spawn(async move {
                        if let Err(error) =
                            crate::metrics::http::serve(listener, metrics, app).await
                        {
                            tracing::error!(%error, "the metrics listener failed");
                        }
                    });
                    tracing::info!(address = %metrics_address, "serving metrics at /metrics");
                    Some(metrics_address)
                }
                None => None,
            };
            tracing::info!(
                %address,
                tls = application.tls(),
                mutual_tls = args.tls_client_ca.is_some(),
                require_caller_credentials = args.require_caller_credentials,
                database = %store::redact_url(&cli.database_url),
                "st-peter listening"
            );
            if let Some(path) = &args.ready_file {
                startup::write_ready_file(path, address, metrics_address)?;
            }
            application
                .run_until_stopped(crate::grpc::serve::shutdown_signal())
                .await
        }
        Command::User(command) => {
            let app = startup::open(config).await?;
            user_command(&app, command, cli.json).await
        }
        Command::Session(command) => {
            let app = startup::open(config).await?;
            session_command(&app, command, cli.json).await
        }
        Command::Service(command) => {
            let app = startup::open(config).await?;
            service_command(&app, command, cli.json).await
        }
        Command::Hash(HashCommand::Calibrate(args)) => {
            calibrate(args, config.settings.password_params, cli.json).await
        }
    }
}

async fn calibrate(args: CalibrateArgs, current: PasswordParams, json: bool) -> anyhow::Result<()> {
    use crate::secrets::calibrate;
    let given = match (args.memory_kib, args.iterations, args.parallelism) {
        (None, None, None) => None,
        (memory_kib, iterations, parallelism) => Some(check_params(
            memory_kib.unwrap_or(PasswordParams::OWASP.memory_kib),
            iterations.unwrap_or(PasswordParams::OWASP.iterations),
            parallelism.unwrap_or(PasswordParams::OWASP.parallelism),
            "--",
        )?),
    };
    if args.target.is_some_and(|target| target.is_zero()) {
        bail!("--target: must be more than zero");
    }
    let runs = args.runs as usize;
    let (rows, recommended) = tokio::task::spawn_blocking(move || {
        calibrate::calibrate(current, given, args.target, runs)
    })
    .await??;
    let report = serde_json::json!({
        "runs": runs,
        "rows": rows,
        "target_ms": args.target.map(|target| target.as_secs_f64() * 1000.0),
        "recommended": recommended.as_ref().map(|row| serde_json::json!({
            "memory_kib": row.memory_kib,
            "iterations": row.iterations,
            "parallelism": row.parallelism,
            "millis": row.millis,
            "logins_per_second_per_core": row.logins_per_second_per_core,
            "flags": row.flags(),
        })),
    });
    print(json, &report, || {
        let mut text = format!(
            "argon2id on this machine, one core, median of {runs} hash(es) each:\n\
             {:>10} {:>10} {:>11} {:>9} {:>14}  source\n",
            "memory_kib", "iterations", "parallelism", "ms/hash", "logins/s/core"
        );
        for row in &rows {
            text.push_str(&format!(
                "{:>10} {:>10} {:>11} {:>9.1} {:>14.1}  {}\n",
                row.memory_kib,
                row.iterations,
                row.parallelism,
                row.millis,
                row.logins_per_second_per_core,
                row.source
            ));
        }
        if let (Some(target), Some(row)) = (args.target, &recommended) {
            let fits = row.millis <= target.as_secs_f64() * 1000.0;
            text.push_str(&format!(
                "\n{} {}: {:.1} ms a hash, {:.1} logins/s per core\n  st-peter serve {}\n",
                if fits {
                    "closest below the target"
                } else {
                    "nothing fits the target; the cheapest is"
                },
                humantime::format_duration(target),
                row.millis,
                row.logins_per_second_per_core,
                row.flags()
            ));
        }
        text.trim_end().to_owned()
    })
}

async fn service_command(app: &StPeter, command: ServiceCommand, json: bool) -> anyhow::Result<()> {
    match command {
        ServiceCommand::Add { name, display_name } => {
            let service = app.create_service_account(&name, display_name).await?;
            print(json, &service, || {
                format!(
                    "created service account {} ({}); give it a key with `st-peter service key \
                     create {}`",
                    service.user_id, service.handle, service.handle
                )
            })
        }
        ServiceCommand::List => {
            let services: Vec<_> = app
                .list_users()
                .await?
                .into_iter()
                .filter(|(user, _)| user.kind == UserKind::Service)
                .collect();
            let rows: Vec<_> = services
                .iter()
                .map(|(user, roles)| serde_json::json!({ "user": user, "roles": roles }))
                .collect();
            print(json, &rows, || {
                if services.is_empty() {
                    return "no service accounts".to_owned();
                }
                services
                    .iter()
                    .map(|(user, roles)| describe(user, roles))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        ServiceCommand::Key(KeyCommand::Create {
            service,
            key_name,
            expires,
        }) => {
            let key = app
                .create_api_key(&service, key_name.as_deref(), expires)
                .await?;
            print(json, &key, || {
                format!(
                    "API key {} ({}) for {service}, expires {}:\n\n{}\n\nIt is shown this once: \
                     only its hash is kept. Exchange it with AuthService/ExchangeApiKey.",
                    key.key_id,
                    key.name,
                    key.expires_at.map_or("never".into(), time_text),
                    key.api_key
                )
            })
        }
        ServiceCommand::Key(KeyCommand::List { service }) => {
            let keys = app.list_api_keys(&service).await?;
            print(json, &keys, || {
                if keys.is_empty() {
                    return format!("{service} has no API keys");
                }
                keys.iter()
                    .map(|key| {
                        let state = match key.revoked_at {
                            Some(at) => format!("revoked {}", time_text(at)),
                            None => format!(
                                "expires {}",
                                key.expires_at.map_or("never".into(), time_text)
                            ),
                        };
                        format!(
                            "{}  {}  created {}  {state}  last used {}",
                            key.key_id,
                            key.name,
                            time_text(key.created_at),
                            key.last_used_at.map_or("never".into(), time_text),
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        ServiceCommand::Key(KeyCommand::Revoke { key_id }) => {
            let ended = app.revoke_api_key(&key_id).await?;
            print(
                json,
                &serde_json::json!({ "key_id": key_id, "revoked_sessions": ended }),
                || format!("revoked key {key_id} and {ended} session(s) exchanged from it"),
            )
        }
    }
}

async fn session_command(app: &StPeter, command: SessionCommand, json: bool) -> anyhow::Result<()> {
    match command {
        SessionCommand::List { user } => {
            let sessions = app.list_sessions(&user).await?;
            print(json, &sessions, || {
                if sessions.is_empty() {
                    return "no live sessions".to_owned();
                }
                sessions
                    .iter()
                    .map(|session| {
                        format!(
                            "{}  created {}  expires {}  last seen {}",
                            session.session_id,
                            time_text(session.created_at),
                            time_text(session.expires_at),
                            session.last_seen_at.map_or("never".into(), time_text),
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        SessionCommand::Revoke {
            user,
            id,
            token_stdin,
            token_env,
        } => {
            let revoked = match (user, id) {
                (Some(identifier), _) => {
                    let user = app.find_user(&identifier).await?;
                    app.revoke_all_sessions(&Caller::CLI, &user.owner.id)
                        .await?
                }
                (None, Some(session_id)) => {
                    app.revoke_session(&session_id).await?;
                    1
                }
                (None, None) => {
                    let token = read_secret(token_stdin, token_env.as_deref(), "token")?;
                    u64::from(app.revoke_token(&Caller::CLI, &token).await?)
                }
            };
            print(json, &serde_json::json!({ "revoked": revoked }), || {
                format!("revoked {revoked} session(s)")
            })
        }
    }
}

/// A Unix-milliseconds time as RFC 3339 (UTC, seconds).
fn time_text(millis: i64) -> String {
    let time = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(millis).unwrap_or(0));
    humantime::format_rfc3339_seconds(time).to_string()
}

async fn user_command(app: &StPeter, command: UserCommand, json: bool) -> anyhow::Result<()> {
    match command {
        UserCommand::Add(add) => {
            let password =
                read_secret(add.password_stdin, add.password_env.as_deref(), "password")?;
            let user = app
                .create_user(NewAccount {
                    handle: add.handle,
                    email: add.email,
                    phone: add.phone,
                    display_name: add.display_name,
                    password,
                })
                .await?;
            print(json, &user, || {
                format!("created user {} ({})", user.user_id, user.handle)
            })
        }
        UserCommand::List => {
            let users = app.list_users().await?;
            let rows: Vec<_> = users
                .iter()
                .map(|(user, roles)| serde_json::json!({ "user": user, "roles": roles }))
                .collect();
            print(json, &rows, || {
                users
                    .iter()
                    .map(|(user, roles)| describe(user, roles))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        UserCommand::Disable { identifier } => {
            let user = app.set_disabled(&identifier, true).await?;
            print(json, &user, || {
                format!("disabled {} and revoked their sessions", user.handle)
            })
        }
        UserCommand::Enable { identifier } => {
            let user = app.set_disabled(&identifier, false).await?;
            print(json, &user, || format!("enabled {}", user.handle))
        }
        UserCommand::Password(set) => {
            let password =
                read_secret(set.password_stdin, set.password_env.as_deref(), "password")?;
            let revoked = app
                .set_password(&set.identifier, &password, set.revoke_sessions)
                .await?;
            print(
                json,
                &serde_json::json!({ "revoked_sessions": revoked }),
                || {
                    if set.revoke_sessions {
                        format!("password set; revoked {revoked} session(s)")
                    } else {
                        "password set".to_owned()
                    }
                },
            )
        }
        UserCommand::Role(RoleCommand::Grant { identifier, role }) => {
            let changed = app.grant_role(&identifier, &role).await?;
            print(json, &serde_json::json!({ "changed": changed }), || {
                if changed {
                    format!("granted {role}")
                } else {
                    format!("already had {role}")
                }
            })
        }
        UserCommand::Role(RoleCommand::Revoke { identifier, role }) => {
            let changed = app.revoke_role(&identifier, &role).await?;
            print(json, &serde_json::json!({ "changed": changed }), || {
                if changed {
                    format!("revoked {role}")
                } else {
                    format!("did not have {role}")
                }
            })
        }
        UserCommand::Totp(TotpCommand::Enroll { identifier }) => {
            let enrollment = app.enroll_totp(&identifier).await?;
            print(json, &enrollment, || {
                format!(
                    "Scan this QR code with an authenticator app, or enter the URI by hand:\n\n{}\n{}\n\n\
                     Recovery codes (each works once in place of a code; keep them safe, they \
                     are not shown again):\n{}\n",
                    terminal_qr(&enrollment.otpauth_uri),
                    enrollment.otpauth_uri,
                    enrollment.recovery_codes.join("\n")
                )
            })
        }
        UserCommand::Totp(TotpCommand::RecoveryCodes { identifier }) => {
            let codes = app.regenerate_recovery_codes(&identifier).await?;
            print(
                json,
                &serde_json::json!({ "recovery_codes": codes }),
                || {
                    format!(
                        "New recovery codes (the old ones no longer work; each works once; they \
                     are not shown again):\n{}",
                        codes.join("\n")
                    )
                },
            )
        }
        UserCommand::Import { file } => import_users(app, &file, json).await,
        UserCommand::Passkey(PasskeyCommand::List { identifier }) => {
            let passkeys = app.list_passkeys(&identifier).await?;
            print(json, &passkeys, || {
                if passkeys.is_empty() {
                    return "no passkeys".to_owned();
                }
                passkeys
                    .iter()
                    .map(|passkey| {
                        format!(
                            "{}  {:?}  registered {}  last used {}",
                            passkey.passkey_id,
                            passkey.name,
                            time_text(passkey.created_at),
                            passkey.last_used_at.map_or("never".into(), time_text),
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        UserCommand::Passkey(PasskeyCommand::Remove {
            identifier,
            passkey_id,
        }) => {
            app.remove_passkey(&identifier, &passkey_id).await?;
            print(json, &serde_json::json!({ "removed": passkey_id }), || {
                "passkey removed".to_owned()
            })
        }
        UserCommand::Totp(TotpCommand::Disable { identifier }) => {
            let user_id = app.disable_totp(&identifier).await?;
            print(json, &serde_json::json!({ "user_id": user_id }), || {
                "TOTP removed".to_owned()
            })
        }
    }
}

/// Reads the import file line by line and reports each line's outcome as it goes (errors
/// on standard error), then the totals.
async fn import_users(app: &StPeter, file: &std::path::Path, json: bool) -> anyhow::Result<()> {
    use crate::domain::import::ImportOutcome;
    let reader: Box<dyn BufRead> = if file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let opened =
            std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
        Box::new(std::io::BufReader::new(opened))
    };
    let (mut imported, mut present, mut failed) = (0u64, 0u64, 0u64);
    for (index, line) in reader.lines().enumerate() {
        let number = index + 1;
        let line = line.with_context(|| format!("reading line {number}"))?;
        if line.trim().is_empty() {
            continue;
        }
        match app.import_line(&line).await {
            Ok(outcome) => {
                let text = match &outcome {
                    ImportOutcome::Imported { user, .. } => {
                        imported += 1;
                        format!("line {number}: imported {} ({})", user.handle, user.user_id)
                    }
                    ImportOutcome::AlreadyPresent { handle } => {
                        present += 1;
                        format!("line {number}: already present: {handle} (left as it is)")
                    }
                };
                let row = serde_json::json!({ "line": number, "result": outcome });
                print(json, &row, || text)?;
            }
            Err(error) => {
                failed += 1;
                if json {
                    let row = serde_json::json!({ "line": number, "error": error.to_string() });
                    eprintln!("{row}");
                } else {
                    eprintln!("line {number}: {error}");
                }
            }
        }
    }
    let totals = serde_json::json!({
        "imported": imported,
        "already_present": present,
        "failed": failed,
    });
    print(json, &totals, || {
        format!("imported {imported}, already present {present}, failed {failed}")
    })?;
    if failed > 0 {
        bail!("{failed} line(s) failed");
    }
    Ok(())
}

fn print(
    json: bool,
    value: &impl serde::Serialize,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(value)?);
    } else {
        println!("{}", text());
    }
    Ok(())
}

fn describe(user: &UserView, roles: &[String]) -> String {
    let mut line = format!("{}  {}", user.user_id, user.handle);
    for value in [&user.email, &user.phone].into_iter().flatten() {
        line.push_str("  ");
        line.push_str(value);
    }
    if !roles.is_empty() {
        line.push_str(&format!("  roles={}", roles.join(",")));
    }
    if user.kind == UserKind::Service {
        line.push_str("  (service account)");
    }
    if user.disabled {
        line.push_str("  (disabled)");
    }
    line
}

/// Reads a secret from the first line of stdin or from an environment variable.
fn read_secret(from_stdin: bool, env_var: Option<&str>, what: &str) -> anyhow::Result<String> {
    let secret = if from_stdin {
        let stdin = std::io::stdin();
        if stdin.is_terminal() {
            eprint!("{what}: ");
        }
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    } else if let Some(var) = env_var {
        std::env::var(var).with_context(|| format!("reading {what} from ${var}"))?
    } else {
        bail!("give --{what}-stdin or --{what}-env VAR");
    };
    if secret.is_empty() {
        bail!("{what}: must not be empty");
    }
    Ok(secret)
}

/// A QR code drawn with half-block characters, light on dark so phones read it on the
/// usual dark terminal.
fn terminal_qr(data: &str) -> String {
    use qrcode::render::unicode::Dense1x2;
    match qrcode::QrCode::new(data.as_bytes()) {
        Ok(code) => code
            .render::<Dense1x2>()
            .dark_color(Dense1x2::Light)
            .light_color(Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
        Err(error) => format!("(no QR code: {error})"),
    }
}

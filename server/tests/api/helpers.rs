//! `spawn_app()` starts the real server in-process (so tests can move its clock);
//! `start_server()` runs the real `st-peter` binary for what needs a separate process.
//! Both come from `st-peter-testkit`; this module adds the suite's backends, admin
//! commands and the logs and secrets it checks.
//!
//! The backend comes from the environment: with `ST_PETER_TEST_POSTGRES_URL` set (a
//! superuser URL of a throwaway cluster, see `scripts/pg.sh run`) every test gets a fresh
//! PostgreSQL database on that cluster, left to die with it; otherwise a temp SQLite file.
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use st_peter_proto::auth::v1 as pb;
use st_peter_proto::auth::v1::auth_service_client::AuthServiceClient;
use st_peter_server::clock::Clock as _;
use st_peter_server::domain::app::{Settings, UserView};
use st_peter_server::store::Store;
pub use st_peter_testkit::ServerProcess;
use st_peter_testkit::TestServer;
pub use st_peter_testkit::test_settings;
use tonic::transport::Channel;

pub type Client = AuthServiceClient<Channel>;

/// The in-process server (`st_peter_testkit::TestServer`: `addr`, `app`, `clock`, `store`)
/// with a generated client and the suite's helpers that remember the secrets they use.
pub struct TestApp {
    server: TestServer,
    pub client: Client,
}

impl Deref for TestApp {
    type Target = TestServer;

    fn deref(&self) -> &TestServer {
        &self.server
    }
}

impl DerefMut for TestApp {
    fn deref_mut(&mut self) -> &mut TestServer {
        &mut self.server
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(test_settings()).await
}

pub async fn spawn_app_with(settings: Settings) -> TestApp {
    capture_logs();
    let mut builder = TestServer::builder().settings(settings);
    if let Some(server) = postgres_url() {
        builder = builder.database_url(create_postgres_database(&server).await);
    }
    let server = builder.start().await;
    let client = server.grpc_client().await;
    TestApp { server, client }
}

impl TestApp {
    pub fn app_store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    pub fn app_now(&self) -> i64 {
        self.clock.now_millis()
    }

    pub async fn add_user(&self, handle: &str, password: &str) -> UserView {
        remember_secret(password);
        self.server.add_user(handle, password).await
    }

    pub async fn login(&self, identifier: &str, password: &str) -> pb::login_response::Result {
        login(&mut self.client.clone(), identifier, password).await
    }

    /// Answers a two-factor challenge with a TOTP or recovery code.
    pub async fn second_factor(
        &self,
        two_factor_id: &str,
        code: &str,
    ) -> pb::login_response::Result {
        second_factor(&mut self.client.clone(), two_factor_id, code).await
    }

    /// Logs in a user without a second factor and returns the token.
    pub async fn token_for(&self, identifier: &str, password: &str) -> String {
        token(&mut self.client.clone(), identifier, password).await
    }

    pub async fn verify(&self, token: &str) -> Result<pb::VerifyTokenResponse, tonic::Status> {
        verify(&mut self.client.clone(), token).await
    }

    /// The TOTP code for the app's clock, computed from the enrollment URI with totp-rs.
    pub fn totp_code(&self, otpauth_uri: &str, offset_steps: i64) -> String {
        let totp = totp_rs::TOTP::from_url(otpauth_uri).unwrap();
        remember_secret(&totp.get_secret_base32());
        let seconds = self.clock.now_millis() / 1000 + offset_steps * 30;
        let code = totp.generate(seconds as u64);
        remember_secret(&code);
        code
    }

    pub async fn stop(mut self) {
        self.server.stop().await;
    }
}

/// Logs in over `client`; the password and whatever the answer holds are remembered as
/// secrets that no log line may contain.
pub async fn login(
    client: &mut Client,
    identifier: &str,
    password: &str,
) -> pb::login_response::Result {
    remember_secret(password);
    let result = client
        .login(pb::LoginRequest {
            identifier: identifier.into(),
            password: password.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    match &result {
        pb::login_response::Result::Authenticated(auth) => remember_secret(&auth.token),
        pb::login_response::Result::TwoFactor(two_factor) => {
            remember_secret(&two_factor.two_factor_id)
        }
        pb::login_response::Result::Failed(_) => {}
    }
    result
}

/// Logs in a user without a second factor over `client`; answers the token.
pub async fn token(client: &mut Client, identifier: &str, password: &str) -> String {
    match login(client, identifier, password).await {
        pb::login_response::Result::Authenticated(auth) => auth.token,
        other => panic!("expected authenticated, got {other:?}"),
    }
}

/// The revocation contract: a change made anywhere is refused by every replica (and every
/// subscribed client cache) within this.
pub const REVOCATION_BOUND: std::time::Duration = std::time::Duration::from_secs(1);

/// Polls VerifyToken on `client` until it refuses `token` (UNAUTHENTICATED); fails past
/// `bound`. Answers how long the refusal took.
pub async fn refused_within(
    client: &mut Client,
    token: &str,
    bound: std::time::Duration,
) -> std::time::Duration {
    let start = std::time::Instant::now();
    loop {
        match verify(client, token).await {
            Err(status) if status.code() == tonic::Code::Unauthenticated => return start.elapsed(),
            Ok(_) if start.elapsed() <= bound => {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await
            }
            other => panic!("not refused within {bound:?}: {other:?}"),
        }
    }
}

pub async fn verify(
    client: &mut Client,
    token: &str,
) -> Result<pb::VerifyTokenResponse, tonic::Status> {
    client
        .verify_token(pb::VerifyTokenRequest {
            token: token.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Answers a two-factor challenge over `client`.
pub async fn second_factor(
    client: &mut Client,
    two_factor_id: &str,
    code: &str,
) -> pb::login_response::Result {
    client
        .verify_two_factor(pb::VerifyTwoFactorRequest {
            two_factor_id: two_factor_id.into(),
            code: code.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap()
}

/// How long a `RATE_LIMITED` login outcome says to wait.
pub fn retry_after(result: &pb::login_response::Result) -> std::time::Duration {
    match result {
        pb::login_response::Result::Failed(failed)
            if failed.reason() == pb::FailureReason::RateLimited =>
        {
            std::time::Duration::try_from(failed.retry_after.unwrap()).unwrap()
        }
        other => panic!("expected rate limited, got {other:?}"),
    }
}

pub fn failed_reason(result: &pb::login_response::Result) -> pb::FailureReason {
    match result {
        pb::login_response::Result::Failed(failed) => failed.reason(),
        other => panic!("expected failed, got {other:?}"),
    }
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_st-peter"))
}

/// A fresh database for one test on the backend under test (see the module comment):
/// a PostgreSQL database on the test cluster, or a SQLite file in `dir`.
pub fn database_url(dir: &Path) -> String {
    match postgres_url() {
        // Called from async tests too: create the database on a runtime of its own.
        Some(server) => std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(create_postgres_database(&server))
        })
        .join()
        .unwrap(),
        None => sqlite_database_url(dir),
    }
}

/// For tests that are about SQLite files themselves.
pub fn sqlite_database_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("st-peter.db").display())
}

/// The test cluster's URL when the suite runs on PostgreSQL.
pub fn postgres_url() -> Option<String> {
    std::env::var("ST_PETER_TEST_POSTGRES_URL")
        .ok()
        .filter(|url| !url.is_empty())
}

/// The test cluster's URL for a test that needs PostgreSQL: without one it fails, never
/// passes silently.
pub fn required_postgres_url() -> String {
    postgres_url().expect(
        "this test needs PostgreSQL: run it through scripts/pg.sh run -- cargo test -p \
         st-peter-server --test api -- --include-ignored (scripts/test.sh does)",
    )
}

/// Creates an empty database on the cluster `server_url` points at; returns its URL.
pub async fn create_postgres_database(server_url: &str) -> String {
    st_peter_testkit::create_postgres_database(server_url, "st_peter_test")
        .await
        .unwrap()
}

pub use st_peter_testkit::with_database;

/// The TOTP key every real binary of this test run gets on a non-SQLite database (which
/// has no key file beside it); replicas of one database must share it anyway.
pub fn shared_totp_key() -> &'static str {
    static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        use base64::Engine;
        use rand::RngCore;
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        let key = base64::engine::general_purpose::STANDARD.encode(bytes);
        remember_secret(&key);
        key
    })
}

/// The environment a real binary needs for `database_url` besides the URL itself.
pub fn backend_env(database_url: &str) -> Vec<(&'static str, String)> {
    if database_url.starts_with("sqlite:") {
        Vec::new()
    } else {
        vec![("ST_PETER_TOTP_KEY", shared_totp_key().to_owned())]
    }
}

/// The real binary serving `database_url`; everything it says goes into the captured
/// logs checked for secrets.
pub fn start_server(database_url: &str) -> ServerProcess {
    start_server_with(database_url, &[])
}

/// `serve` with extra arguments, e.g. pool settings.
pub fn start_server_with(database_url: &str, extra_args: &[&str]) -> ServerProcess {
    backend_env(database_url)
        .into_iter()
        .fold(
            ServerProcess::builder(binary())
                .database_url(database_url)
                .args(extra_args)
                .log_filter("debug")
                .on_stderr_line(append_log),
            |builder, (key, value)| builder.env(key, value),
        )
        .start()
        .unwrap()
}

/// A stock tool from PATH or `go install`'s directory (grpcurl, ghz); `scripts/test.sh`
/// installs them.
pub fn go_tool(name: &str) -> PathBuf {
    let go_bin = std::env::var_os("GOPATH")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join("go")))
        .map(|go| go.join("bin"));
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(go_bin)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!("{name} not found: run scripts/test.sh, which installs it with `go install`")
        })
}

/// Runs an admin command of the real binary with `stdin` piped in; returns stdout.
/// `st-peter user add` on the database, the password given on stdin.
pub fn add_user_with_cli(database_url: &str, handle: &str, password: &str) {
    admin(
        database_url,
        &["user", "add", "--handle", handle, "--password-stdin"],
        &format!("{password}\n"),
    );
}

/// Runs `command` with `stdin` as its standard input, and collects what it printed.
pub fn output_with_stdin(command: &mut Command, stdin: &str) -> Output {
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

pub fn admin(database_url: &str, args: &[&str], stdin: &str) -> String {
    stdin.lines().for_each(remember_secret);
    let output = output_with_stdin(
        Command::new(binary())
            .args(args)
            .env("ST_PETER_DATABASE_URL", database_url)
            .envs(backend_env(database_url)),
        stdin,
    );
    append_log(&String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "st-peter {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Every log line this test binary produced: the in-process servers' (captured by a global
/// subscriber at debug level, trace for st-peter) and the real binaries' standard error.
static LOGS: Mutex<String> = Mutex::new(String::new());
/// Every password, token, challenge id, TOTP secret and code the tests used.
static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

pub fn remember_secret(secret: &str) {
    if !secret.is_empty() {
        SECRETS.lock().unwrap().push(secret.to_owned());
    }
}

/// Whether a remembered `secret` is in `text`. Numeric codes count only as a whole number,
/// so a port, a byte count or a timestamp that happens to contain the digits is not a false
/// alarm; a secret shorter than four characters (a test's deliberately bad password, "x")
/// is in any text by chance and is not looked for.
pub fn secret_appears(text: &str, secret: &str) -> bool {
    if secret.chars().count() < 4 {
        return false;
    }
    if !secret.bytes().all(|b| b.is_ascii_digit()) {
        return text.contains(secret);
    }
    text.match_indices(secret).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + secret.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit()) && !after.is_some_and(|c| c.is_ascii_digit())
    })
}

pub fn secrets() -> Vec<String> {
    SECRETS.lock().unwrap().clone()
}

pub fn logs() -> String {
    LOGS.lock().unwrap().clone()
}

pub fn append_log(text: &str) {
    let mut logs = LOGS.lock().unwrap();
    logs.push_str(text);
    logs.push('\n');
}

struct LogSink;

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        append_log(&String::from_utf8_lossy(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn capture_logs() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "debug,st_peter_server=trace,audit=trace",
            ))
            .without_time()
            .with_ansi(false)
            .with_writer(|| LogSink)
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}

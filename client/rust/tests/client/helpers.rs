//! The suite's server: `st_peter_testkit::TestServer` (the real serving path on a free
//! port) with the testkit's `Calls` layer, so RPCs are counted and can be held, plus
//! clients whose cache clock moves with the server's; and for the real binary, its admin
//! CLI and a clock that moves only when told.
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use st_peter_client::{Client, Error, LoginOutcome};
use st_peter_server::clock::{Clock as _, ManualClock};
use st_peter_server::domain::app::Settings;
use st_peter_server::domain::service_accounts::{IssuedApiKey, LOOKUP_ROLE};
use st_peter_testkit::{Calls, Hold};
pub use st_peter_testkit::{HoldPoint, RpcCounts};

/// The client's clock, tied to the server's manual clock so both move together.
pub struct SharedClock(pub ManualClock);

impl st_peter_client::Clock for SharedClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0.now_millis() as u64)
    }
}

/// A client clock that stands still until advanced: a cached answer's age is then what
/// the test says, however slow the machine.
pub struct StillClock(Mutex<SystemTime>);

impl StillClock {
    pub fn new() -> Arc<Self> {
        Arc::new(Self(Mutex::new(SystemTime::now())))
    }

    pub fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
}

impl st_peter_client::Clock for StillClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap()
    }
}

/// Generous: the contract is 1 s, a loaded machine may take longer to schedule anything.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Polls `condition` every 10 ms until it holds; panics naming `what` after `PATIENCE`.
/// Returns how long it took.
pub async fn eventually<F, Fut>(what: &str, mut condition: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !condition().await {
        assert!(
            start.elapsed() < PATIENCE,
            "{what}: not within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

/// Starts the client's revocation feed (the first verify does; this one is of a token that
/// never exists) and waits until its stream has caught up, so that its first checkpoint
/// (which clears the cache) has come and gone.
pub async fn subscribe(client: &Client) {
    let never = format!("stp_{}", "N".repeat(43));
    assert_eq!(
        client.verify_token(&never).await.unwrap_err(),
        Error::InvalidToken
    );
    eventually("the revocation feed subscribed", || async {
        client.feed_status().subscribed
    })
    .await;
}

/// Until `token` reads as invalid through `client`; how long that took.
pub async fn refused(client: &Client, token: &str) -> Duration {
    eventually("the token refused", || async {
        match client.verify_token(token).await {
            Err(Error::InvalidToken) => true,
            Ok(_) => false,
            Err(other) => panic!("verify: {other:?}"),
        }
    })
    .await
}

pub fn settings(session_ttl: Duration) -> Settings {
    Settings {
        session_ttl,
        ..st_peter_testkit::test_settings()
    }
}

/// Exchanged service tokens live this long (`--api-token-ttl 3s`).
pub const API_TOKEN_TTL: Duration = Duration::from_secs(3);

/// A st-peter that answers VerifyToken, LookupUser and WatchRevocations only for service
/// accounts (`--require-caller-credentials`), whose tokens live [`API_TOKEN_TTL`].
pub fn service_settings() -> Settings {
    Settings {
        api_token_ttl: API_TOKEN_TTL,
        require_caller_credentials: true,
        ..settings(Duration::from_secs(3600))
    }
}

/// `st_peter_testkit::TestServer` (`addr`, `app`, `clock`, `stop`, `resume`, ...) with
/// its calls counted.
pub struct TestServer {
    server: st_peter_testkit::TestServer,
    pub counts: RpcCounts,
    calls: Calls,
}

impl Deref for TestServer {
    type Target = st_peter_testkit::TestServer;

    fn deref(&self) -> &Self::Target {
        &self.server
    }
}

impl DerefMut for TestServer {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.server
    }
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(settings(Duration::from_secs(3600))).await
    }

    pub async fn start_with(settings: Settings) -> Self {
        let calls = Calls::default();
        let server = st_peter_testkit::TestServer::builder()
            .settings(settings)
            .layer(calls.clone())
            .start()
            .await;
        Self {
            server,
            counts: calls.counts.clone(),
            calls,
        }
    }

    /// Holds the next call of `method` (`VerifyToken`, `Logout`, ...) at `point` until the
    /// returned hold is released.
    pub fn hold_next(&self, method: &str, point: HoldPoint) -> Arc<Hold> {
        self.calls.hold_next(method, point)
    }

    /// A client whose cache clock moves with the server's clock.
    pub fn client(&self) -> Client {
        self.client_builder().build().unwrap()
    }

    pub fn client_builder(&self) -> st_peter_client::ClientBuilder {
        Client::builder(self.target()).clock(Arc::new(SharedClock(self.clock.clone())))
    }

    pub async fn token(&self, client: &Client, handle: &str, password: &str) -> String {
        login(client, handle, password).await
    }

    /// VerifyToken RPCs the server received so far.
    pub fn verifies(&self) -> usize {
        self.counts.get("VerifyToken")
    }

    /// ExchangeApiKey RPCs the server received so far.
    pub fn exchanges(&self) -> usize {
        self.counts.get("ExchangeApiKey")
    }

    /// A service account `name` (with the role `st-peter:lookup` if `lookup`) and one API
    /// key for it, made through the domain.
    pub async fn service_with_key(&self, name: &str, lookup: bool) -> IssuedApiKey {
        self.app.create_service_account(name, None).await.unwrap();
        if lookup {
            assert!(self.app.grant_role(name, LOOKUP_ROLE).await.unwrap());
        }
        self.app.create_api_key(name, None, None).await.unwrap()
    }
}

/// The person every service-identity test knows.
pub const CASHIER_PASSWORD: &str = "knock knock, who goes there";

/// A server on `settings` with a person `cashier` and a service account `shift-board`
/// (with `st-peter:lookup` if `lookup`) holding one API key.
pub async fn service_server(settings: Settings, lookup: bool) -> (TestServer, IssuedApiKey) {
    let server = TestServer::start_with(settings).await;
    server.add_user("cashier", CASHIER_PASSWORD).await;
    let key = server.service_with_key("shift-board", lookup).await;
    (server, key)
}

/// Every verify an RPC (so every verify needs the service token), and no feed.
pub fn uncached(builder: st_peter_client::ClientBuilder) -> st_peter_client::ClientBuilder {
    builder
        .cache_ttl(Duration::ZERO)
        .invalid_token_ttl(Duration::ZERO)
}

pub async fn login(client: &Client, handle: &str, password: &str) -> String {
    match client.login(handle, password).await.unwrap() {
        LoginOutcome::Authenticated(session) => session.token,
        other => panic!("expected authenticated, got {other:?}"),
    }
}

/// `st-peter ARGS --database-url URL` (the admin CLI, on the server's database), with
/// `stdin`; panics with its stderr unless it succeeds. Answers its stdout.
pub fn admin(server: &st_peter_testkit::ServerProcess, args: &[&str], stdin: &str) -> String {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut admin = Command::new(server.binary())
        .args(args)
        .args(["--database-url", server.database_url()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    admin
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output = admin.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "st-peter {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Creates a user with the admin CLI on the server's database.
pub fn add_user(server: &st_peter_testkit::ServerProcess, handle: &str, password: &str) {
    admin(
        server,
        &["user", "add", "--handle", handle, "--password-stdin"],
        &format!("{password}\n"),
    );
}

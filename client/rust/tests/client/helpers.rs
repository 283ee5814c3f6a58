//! The suite's server: `st_peter_testkit::TestServer` (the real serving path on a free
//! port) with the testkit's `Calls` layer, so RPCs are counted and can be held, plus
//! clients whose cache clock moves with the server's.
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use st_peter_client::{Client, LoginOutcome};
use st_peter_server::clock::{Clock as _, ManualClock};
use st_peter_server::domain::app::Settings;
use st_peter_testkit::{Calls, Hold};
pub use st_peter_testkit::{HoldPoint, RpcCounts};

/// The client's clock, tied to the server's manual clock so both move together.
pub struct SharedClock(pub ManualClock);

impl st_peter_client::Clock for SharedClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0.now_millis() as u64)
    }
}

pub fn settings(session_ttl: Duration) -> Settings {
    Settings {
        session_ttl,
        ..st_peter_testkit::test_settings()
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
        match client.login(handle, password).await.unwrap() {
            LoginOutcome::Authenticated(session) => session.token,
            other => panic!("expected authenticated, got {other:?}"),
        }
    }
}

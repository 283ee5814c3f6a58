use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use serde_json::{Value, json};
use st_peter_client::{Client, LoginOutcome};
use st_peter_server::domain::app::Settings;
use st_peter_telepact::{Headers, OnAuth, RolesStore};

/// A real st-peter on 127.0.0.1:0 with a temp SQLite database
/// (`st_peter_testkit::TestServer`: `app`, `stop`, ...), plus a temp roles file beside it.
pub struct TestServer(st_peter_testkit::TestServer);

impl Deref for TestServer {
    type Target = st_peter_testkit::TestServer;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for TestServer {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl TestServer {
    pub async fn start() -> Self {
        let settings = Settings {
            session_ttl: Duration::from_secs(3600),
            ..st_peter_testkit::test_settings()
        };
        Self(
            st_peter_testkit::TestServer::builder()
                .settings(settings)
                .start()
                .await,
        )
    }

    pub fn roles_db(&self) -> std::path::PathBuf {
        self.dir.path().join("roles.db")
    }

    pub fn client(&self) -> Client {
        Client::builder(self.target())
            .connect_timeout(Duration::from_millis(500))
            .request_timeout(Duration::from_secs(2))
            .build()
            .unwrap()
    }

    /// An adapter with its own client (and so its own cache) and the shared roles file.
    pub async fn on_auth(&self) -> OnAuth {
        OnAuth::new(self.client(), self.roles().await)
    }

    pub async fn roles(&self) -> RolesStore {
        RolesStore::open(self.roles_db()).await.unwrap()
    }

    pub async fn token(&self, handle: &str, password: &str) -> String {
        match self.client().login(handle, password).await.unwrap() {
            LoginOutcome::Authenticated(session) => session.token,
            other => panic!("expected authenticated, got {other:?}"),
        }
    }
}

/// Waits until the adapter's client has a caught-up revocation feed stream (the first
/// verification opens it). Its first checkpoint clears the cache, so answers a test wants
/// cached are cached after this.
pub async fn subscribed(adapter: &OnAuth) {
    let patience = Duration::from_secs(10);
    let deadline = std::time::Instant::now() + patience;
    while !adapter.client().feed_status().subscribed {
        assert!(
            std::time::Instant::now() < deadline,
            "the revocation feed did not subscribe within {patience:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn headers(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn session(token: &str) -> Headers {
    request(json!({"@auth_": {"Session": {"token": token}}}))
}

pub fn password(username: &str, password: &str) -> Headers {
    request(json!({"@auth_": {"Password": {"username": username, "password": password}}}))
}

pub fn request(value: Value) -> Headers {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// `st-peter-telepact` aimed at `target` and `roles_db`, with none of the developer's
/// credentials (`ST_PETER_ACTOR_TOKEN`, `ST_PETER_API_KEY`) inherited.
pub fn telepact_command(target: &str, roles_db: &std::path::Path) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_st-peter-telepact"));
    command
        .env_remove("ST_PETER_ACTOR_TOKEN")
        .env_remove("ST_PETER_API_KEY")
        .env("ST_PETER_TARGET", target)
        .env("ST_PETER_TELEPACT_ROLES_DB", roles_db);
    command
}

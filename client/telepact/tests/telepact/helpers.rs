use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use st_peter_client::{Client, LoginOutcome};
use st_peter_proto::auth::v1::auth_service_server::AuthServiceServer;
use st_peter_server::clock::ManualClock;
use st_peter_server::domain::accounts::NewAccount;
use st_peter_server::domain::app::{Settings, StPeter};
use st_peter_server::grpc::AuthGrpc;
use st_peter_server::secrets::password::PasswordParams;
use st_peter_telepact::{Headers, OnAuth, RolesStore};
use tokio::sync::oneshot;

/// A real st-peter on 127.0.0.1:0 with a temp SQLite database, plus a temp roles file.
pub struct TestServer {
    pub addr: SocketAddr,
    pub app: Arc<StPeter>,
    pub dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("st-peter.db").display());
        let store = st_peter_server::store::connect(&url).await.unwrap();
        let settings = Settings {
            session_ttl: Duration::from_secs(3600),
            password_params: PasswordParams::INSECURE_FOR_TESTS,
            ..Settings::default()
        };
        let app = Arc::new(StPeter::new(store, Arc::new(ManualClock::new()), settings).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut server = Self {
            addr: listener.local_addr().unwrap(),
            app,
            dir,
            shutdown: None,
            task: None,
        };
        server.serve(listener);
        server
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let (tx, rx) = oneshot::channel::<()>();
        let service = AuthServiceServer::new(AuthGrpc::new(self.app.clone()));
        self.shutdown = Some(tx);
        self.task = Some(tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = rx.await;
                    },
                )
                .await
                .unwrap();
        }));
    }

    /// Stops serving and closes the port: st-peter is now unreachable.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }

    pub fn target(&self) -> String {
        format!("http://{}", self.addr)
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

    pub async fn add_user(&self, handle: &str, password: &str) -> String {
        self.app
            .create_user(NewAccount {
                handle: handle.into(),
                email: Some(format!("{handle}@bakery.example")),
                password: password.into(),
                ..NewAccount::default()
            })
            .await
            .unwrap()
            .user_id
    }

    pub async fn token(&self, handle: &str, password: &str) -> String {
        match self.client().login(handle, password).await.unwrap() {
            LoginOutcome::Authenticated(session) => session.token,
            other => panic!("expected authenticated, got {other:?}"),
        }
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

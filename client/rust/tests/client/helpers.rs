use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use st_peter_client::{Client, LoginOutcome};
use st_peter_proto::auth::v1::auth_service_server::AuthServiceServer;
use st_peter_server::clock::{Clock as _, ManualClock};
use st_peter_server::domain::accounts::NewAccount;
use st_peter_server::domain::app::{Settings, StPeter};
use st_peter_server::grpc::AuthGrpc;
use st_peter_server::secrets::password::PasswordParams;
use tokio::sync::{Semaphore, oneshot};

/// RPCs the test server received, by method name (`VerifyToken`, `Login`, ...).
#[derive(Clone, Default)]
pub struct RpcCounts(Arc<Mutex<HashMap<String, usize>>>);

impl RpcCounts {
    pub fn get(&self, method: &str) -> usize {
        self.0.lock().unwrap().get(method).copied().unwrap_or(0)
    }

    fn record(&self, path: &str) {
        let method = path.rsplit('/').next().unwrap_or(path).to_owned();
        *self.0.lock().unwrap().entry(method).or_default() += 1;
    }
}

/// Where a held call waits: before the server handles it, or after it has answered (the
/// answer is decided but not yet sent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldPoint {
    BeforeHandling,
    AfterAnswer,
}

/// One call held at the server until the test releases it: it stands for a slow network
/// or a slow server at a chosen moment, which a real server cannot be asked to be.
pub struct Hold {
    point: HoldPoint,
    reached: Semaphore,
    release: Semaphore,
}

impl Hold {
    /// Waits until the held call has reached its hold point.
    pub async fn reached(&self) {
        self.reached.acquire().await.unwrap().forget();
    }

    /// Lets the held call go on.
    pub fn release(&self) {
        self.release.add_permits(1);
    }

    async fn wait_here(&self) {
        self.reached.add_permits(1);
        self.release.acquire().await.unwrap().forget();
    }
}

/// Holds armed by `TestServer::hold_next`, by method name; each catches one call.
#[derive(Clone, Default)]
struct Holds(Arc<Mutex<HashMap<String, Arc<Hold>>>>);

impl Holds {
    fn take(&self, path: &str) -> Option<Arc<Hold>> {
        let method = path.rsplit('/').next().unwrap_or(path);
        self.0.lock().unwrap().remove(method)
    }
}

#[derive(Clone)]
struct Counting<S> {
    inner: S,
    counts: RpcCounts,
    holds: Holds,
}

impl<S, B> tower::Service<http::Request<B>> for Counting<S>
where
    S: tower::Service<http::Request<B>> + Clone + Send + 'static,
    S::Response: Send,
    S::Error: Send,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        self.counts.record(request.uri().path());
        let Some(hold) = self.holds.take(request.uri().path()) else {
            return Box::pin(self.inner.call(request));
        };
        // The clone that was made ready serves this call; the fresh clone stays behind.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        Box::pin(async move {
            if hold.point == HoldPoint::BeforeHandling {
                hold.wait_here().await;
            }
            let response = inner.call(request).await;
            if hold.point == HoldPoint::AfterAnswer {
                hold.wait_here().await;
            }
            response
        })
    }
}

/// The client's clock, tied to the server's manual clock so both move together.
pub struct SharedClock(pub ManualClock);

impl st_peter_client::Clock for SharedClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0.now_millis() as u64)
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub app: Arc<StPeter>,
    pub clock: ManualClock,
    pub counts: RpcCounts,
    holds: Holds,
    _dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

pub fn settings(session_ttl: Duration) -> Settings {
    Settings {
        session_ttl,
        password_params: PasswordParams::INSECURE_FOR_TESTS,
        totp_key: Some(st_peter_server::secrets::totp_key::TotpKey::generate()),
        ..Settings::default()
    }
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(settings(Duration::from_secs(3600))).await
    }

    pub async fn start_with(settings: Settings) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("st-peter.db").display());
        let store = st_peter_server::store::connect(&url).await.unwrap();
        let clock = ManualClock::new();
        let app = Arc::new(StPeter::new(store, Arc::new(clock.clone()), settings).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut server = Self {
            addr: listener.local_addr().unwrap(),
            app,
            clock,
            counts: RpcCounts::default(),
            holds: Holds::default(),
            _dir: dir,
            shutdown: None,
            task: None,
        };
        server.serve(listener);
        server
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let (tx, rx) = oneshot::channel::<()>();
        let counts = self.counts.clone();
        let holds = self.holds.clone();
        let service = AuthServiceServer::new(AuthGrpc::new(self.app.clone()));
        self.shutdown = Some(tx);
        self.task = Some(tokio::spawn(async move {
            tonic::transport::Server::builder()
                .layer(tower::layer::layer_fn(move |inner| Counting {
                    inner,
                    counts: counts.clone(),
                    holds: holds.clone(),
                }))
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

    /// Stops serving; the database stays, so `resume` can serve it again on the same port.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }

    pub async fn resume(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    /// Holds the next call of `method` (`VerifyToken`, `Logout`, ...) at `point` until the
    /// returned hold is released.
    pub fn hold_next(&self, method: &str, point: HoldPoint) -> Arc<Hold> {
        let hold = Arc::new(Hold {
            point,
            reached: Semaphore::new(0),
            release: Semaphore::new(0),
        });
        let previous = self
            .holds
            .0
            .lock()
            .unwrap()
            .insert(method.to_owned(), hold.clone());
        assert!(previous.is_none(), "{method} is already held");
        hold
    }

    pub fn target(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client whose cache clock moves with the server's clock.
    pub fn client(&self) -> Client {
        self.client_builder().build().unwrap()
    }

    pub fn client_builder(&self) -> st_peter_client::ClientBuilder {
        Client::builder(self.target()).clock(Arc::new(SharedClock(self.clock.clone())))
    }

    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
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

    pub async fn token(&self, client: &Client, handle: &str, password: &str) -> String {
        match client.login(handle, password).await.unwrap() {
            LoginOutcome::Authenticated(session) => session.token,
            other => panic!("expected authenticated, got {other:?}"),
        }
    }
}

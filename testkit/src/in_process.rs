//! The real server in-process: the domain with a manual clock, served through
//! [`Application`] exactly as `st-peter serve` serves it.
use std::net::SocketAddr;
use std::sync::Arc;

use st_peter_server::clock::ManualClock;
use st_peter_server::domain::accounts::NewAccount;
use st_peter_server::domain::app::{Settings, StPeter, UserView};
use st_peter_server::grpc::serve::{ServeOptions, WrapRoutes};
use st_peter_server::secrets::password::PasswordParams;
use st_peter_server::secrets::totp_key::TotpKey;
use st_peter_server::startup::Application;
use st_peter_server::store::Store;
use tokio::sync::oneshot;

use crate::ObservedStore;
use tonic::service::Routes;

/// Fast password hashing and a fresh TOTP key; everything else as `Settings::default()`.
pub fn test_settings() -> Settings {
    Settings {
        password_params: PasswordParams::INSECURE_FOR_TESTS,
        totp_key: Some(TotpKey::generate()),
        ..Settings::default()
    }
}

/// How a [`TestServer`] starts; see [`TestServer::builder`].
pub struct TestServerBuilder {
    settings: Settings,
    database_url: Option<String>,
    options: ServeOptions,
    observe_store: bool,
    clock: Option<ManualClock>,
}

impl TestServerBuilder {
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }

    /// Serve this database (e.g. a fresh PostgreSQL database) instead of a temp SQLite file.
    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.database_url = Some(url.into());
        self
    }

    /// TLS or a shutdown grace, as `st-peter serve` would be given them.
    pub fn serve_options(mut self, options: ServeOptions) -> Self {
        let wrap_routes = self.options.wrap_routes.take();
        self.options = ServeOptions {
            wrap_routes: options.wrap_routes.or(wrap_routes),
            ..options
        };
        self
    }

    /// Wraps every route (health and reflection included) in `layer`, e.g. [`crate::Calls`].
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: tower::Layer<axum::routing::Route> + Clone + Send + Sync + 'static,
        L::Service: tower::Service<axum::extract::Request> + Clone + Send + Sync + 'static,
        <L::Service as tower::Service<axum::extract::Request>>::Response:
            axum::response::IntoResponse + 'static,
        <L::Service as tower::Service<axum::extract::Request>>::Error:
            Into<std::convert::Infallible> + 'static,
        <L::Service as tower::Service<axum::extract::Request>>::Future: Send + 'static,
    {
        self.options.wrap_routes = Some(WrapRoutes(Arc::new(move |routes: Routes| {
            Routes::from(routes.into_axum_router().layer(layer.clone()))
        })));
        self
    }

    /// Read this clock (e.g. one shared by two replicas of one database) instead of a
    /// clock of its own.
    pub fn clock(mut self, clock: ManualClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Serve through an [`ObservedStore`] (see [`TestServer::observed`]).
    pub fn observe_store(mut self) -> Self {
        self.observe_store = true;
        self
    }

    pub async fn start(self) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let database_url = self
            .database_url
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("st-peter.db").display()));
        let mut store = st_peter_server::store::connect(&database_url)
            .await
            .unwrap();
        let observed = self
            .observe_store
            .then(|| ObservedStore::wrap(store.clone()));
        if let Some(observed) = &observed {
            store = observed.clone();
        }
        let clock = self.clock.unwrap_or_default();
        let app =
            Arc::new(StPeter::new(store.clone(), Arc::new(clock.clone()), self.settings).unwrap());
        // Not `:0`: `resume` binds this port again (see `port`).
        let listen: SocketAddr = crate::port::outside_ephemeral_range();
        let mut server = TestServer {
            addr: listen,
            app,
            clock,
            store,
            observed,
            database_url,
            dir,
            options: self.options,
            running: None,
        };
        server.serve(listen).await;
        server
    }
}

/// The real server on 127.0.0.1 (a free port), serving one database until stopped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub app: Arc<StPeter>,
    /// The domain's clock: move it with `advance`.
    pub clock: ManualClock,
    pub store: Arc<dyn Store>,
    /// The store's observer, when built with [`TestServerBuilder::observe_store`].
    pub observed: Option<Arc<ObservedStore>>,
    pub database_url: String,
    /// Holds the SQLite file; free for the suite's own files.
    pub dir: tempfile::TempDir,
    options: ServeOptions,
    running: Option<Running>,
}

struct Running {
    shutdown: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestServer {
    /// Test settings, a temp SQLite file, no layer.
    pub fn builder() -> TestServerBuilder {
        TestServerBuilder {
            settings: test_settings(),
            database_url: None,
            options: ServeOptions::default(),
            observe_store: false,
            clock: None,
        }
    }

    pub async fn start() -> Self {
        Self::builder().start().await
    }

    async fn serve(&mut self, listen: SocketAddr) {
        let application = Application::bind(self.app.clone(), listen, self.options.clone())
            .await
            .unwrap();
        self.addr = application.local_addr();
        let (shutdown, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(application.run_until_stopped(async {
            let _ = stopped.await;
        }));
        self.running = Some(Running { shutdown, task });
    }

    /// `http://ADDR` (`https://localhost:PORT` under TLS, for the certificate's name).
    pub fn target(&self) -> String {
        if self.options.tls.is_some() {
            format!("https://localhost:{}", self.addr.port())
        } else {
            format!("http://{}", self.addr)
        }
    }

    /// A generated gRPC client on a plaintext connection.
    pub async fn grpc_client(&self) -> crate::AuthClient {
        crate::connect(self.addr).await
    }

    /// Stops serving as `st-peter serve` stops on SIGTERM (health, then the drain); the
    /// database stays, so `resume` can serve it again on the same port.
    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.shutdown.send(());
            running.task.await.unwrap().unwrap();
        }
    }

    /// Serves the same domain again on the same port.
    pub async fn resume(&mut self) {
        assert!(self.running.is_none(), "the test server is already serving");
        self.serve(self.addr).await;
    }

    pub fn advance(&self, by: std::time::Duration) {
        self.clock.advance(by);
    }

    /// A user with `handle`, `HANDLE@bakery.example` and `password`.
    pub async fn add_user(&self, handle: &str, password: &str) -> UserView {
        self.app
            .create_user(NewAccount {
                handle: handle.into(),
                email: Some(format!("{handle}@bakery.example")),
                password: password.into(),
                ..NewAccount::default()
            })
            .await
            .unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.shutdown.send(());
        }
    }
}

//! Serving: the auth service beside the standard health service and server reflection
//! (v1 and v1alpha), on a listener the caller binds, until a shutdown future resolves.
//!
//! Health follows the database: a probe every second turns both the overall status and
//! the auth service's `NOT_SERVING` while the store cannot be reached, and `SERVING` again
//! when it can, so the health service works as a readiness probe. Shutdown is graceful:
//! health turns `NOT_SERVING`, the listener closes (new connections are refused), open
//! connections get GOAWAY (new calls on them are refused, so clients see UNAVAILABLE), and
//! calls in flight finish, for at most [`ServeOptions::shutdown_grace`].
use anyhow::Context;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use st_peter_proto::auth::v1::account_service_server::AccountServiceServer;
use st_peter_proto::auth::v1::auth_service_server::AuthServiceServer;

use crate::domain::app::StPeter;
use crate::grpc::AuthGrpc;
use crate::grpc::account::AccountGrpc;

/// Largest request message accepted. Every field of the contract is far smaller; a larger
/// body is refused with OUT_OF_RANGE before it is buffered.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// How often expired sessions and challenges are deleted.
const PURGE_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// How often the session sightings noted in memory are written (`ListSessions` writes
/// them too, before it reads).
const LAST_SEEN_INTERVAL: Duration = Duration::from_secs(30);

/// How often the database is probed for the health service, and how long a probe may take.
const HEALTH_PROBE_INTERVAL: Duration = Duration::from_secs(1);
const HEALTH_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// TCP keepalive on accepted connections: a peer that vanished without a FIN (a crashed
/// host, a dropped NAT entry) is found and its connection closed.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// The service name the auth service reports health under (`st_peter.auth.v1.AuthService`).
const AUTH_SERVICE: &str = <AuthServiceServer<AuthGrpc> as tonic::server::NamedService>::NAME;
/// The self-service account service's name, for health.
const ACCOUNT_SERVICE: &str =
    <AccountServiceServer<AccountGrpc> as tonic::server::NamedService>::NAME;

/// How to serve beyond the listener.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Serve TLS with this configuration (with a client CA for mutual TLS).
    pub tls: Option<ServerTlsConfig>,
    /// After the shutdown signal, how long calls in flight may take to finish.
    pub shutdown_grace: Duration,
    /// A hook for tests (the test kit counts and holds calls with it): wraps the served
    /// routes, health and reflection included, before serving. `st-peter serve` sets none.
    pub wrap_routes: Option<WrapRoutes>,
}

/// Wraps the routes [`run_with`] serves, e.g. in a tower layer through
/// [`Routes::into_axum_router`] and `axum::Router::layer`.
#[derive(Clone)]
pub struct WrapRoutes(pub Arc<dyn Fn(Routes) -> Routes + Send + Sync>);

impl std::fmt::Debug for WrapRoutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WrapRoutes(..)")
    }
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            tls: None,
            shutdown_grace: Duration::from_secs(10),
            wrap_routes: None,
        }
    }
}

impl ServeOptions {
    /// TLS from PEM files: the server's certificate chain and key, and optionally a CA whose
    /// client certificates are required (mutual TLS between services), or only checked
    /// when presented (`client_auth_optional`: callers may prove who they are with a
    /// service token instead, see `Settings::require_caller_credentials`).
    pub fn tls_from_files(
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
        client_auth_optional: bool,
    ) -> anyhow::Result<Self> {
        let read = |path: &Path| {
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))
        };
        let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
        if let Some(ca) = client_ca {
            tls = tls
                .client_ca_root(Certificate::from_pem(read(ca)?))
                .client_auth_optional(client_auth_optional);
        }
        Ok(Self {
            tls: Some(tls),
            ..Self::default()
        })
    }
}

/// Serves plain HTTP/2 (h2c) until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    app: Arc<StPeter>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_with(listener, app, ServeOptions::default(), shutdown).await
}

pub async fn run_with(
    listener: TcpListener,
    app: Arc<StPeter>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    set_health(&health_reporter, ServingStatus::Serving).await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(st_peter_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(st_peter_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let auth = AuthServiceServer::new(AuthGrpc::new(app.clone()))
        .max_decoding_message_size(MAX_REQUEST_BYTES);
    let account = AccountServiceServer::new(AccountGrpc::new(app.clone()))
        .max_decoding_message_size(MAX_REQUEST_BYTES);

    let purger = tokio::spawn(purge_periodically(app.clone()));
    let sightings = tokio::spawn(write_last_seen_periodically(app.clone()));
    let revocations = app.revocations().clone();
    revocations.set_closing(false);
    let follower = tokio::spawn(crate::revocation::follow(
        app.store.clone(),
        revocations.clone(),
    ));

    // Nagle's algorithm holds small responses back until the peer's delayed ACK (up to
    // 40 ms per call from grpc-go callers); the options apply under TLS too, which wraps
    // the accepted TCP stream.
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(TCP_KEEPALIVE));

    let (stopping, mut stopped) = tokio::sync::watch::channel(false);
    let prober = tokio::spawn(probe_database(
        app.clone(),
        health_reporter.clone(),
        stopped.clone(),
    ));
    let draining = health_reporter.clone();
    let closing = revocations.clone();
    let shutdown = async move {
        shutdown.await;
        // Readiness first, so load balancers stop sending before the drain begins.
        set_health(&draining, ServingStatus::NotServing).await;
        // Revocation streams never finish on their own: end them, so the drain does not
        // wait out its grace for them.
        closing.set_closing(true);
        let _ = stopping.send(true);
    };

    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = options.tls {
        builder = builder.tls_config(tls)?;
    }
    let routes = Routes::new(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(auth)
        .add_service(account);
    let routes = crate::traces::wrap_routes(routes);
    // Counted and timed per method and status code when `--metrics-listen` is given.
    let routes = crate::metrics::rpc_layer::wrap_if_enabled(routes);
    let routes = match &options.wrap_routes {
        Some(wrap) => (wrap.0)(routes),
        None => routes,
    };
    let serving = builder
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown);
    let grace = options.shutdown_grace;
    let result = tokio::select! {
        result = serving => result.map_err(anyhow::Error::from),
        () = async {
            let _ = stopped.wait_for(|stopping| *stopping).await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(?grace, "calls still in flight after the shutdown grace; stopping anyway");
            Ok(())
        }
    };
    purger.abort();
    sightings.abort();
    // What was noted since the last write would be lost with the process.
    app.write_last_seen().await;
    prober.abort();
    follower.abort();
    // Not following any more: the cache must not answer if this domain serves again.
    revocations.stopped_following();
    result
}

async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter.set_service_status(AUTH_SERVICE, status).await;
    reporter.set_service_status(ACCOUNT_SERVICE, status).await;
}

/// Keeps the health status in step with the database until shutdown begins (from then
/// on it stays `NOT_SERVING`).
async fn probe_database(
    app: Arc<StPeter>,
    reporter: HealthReporter,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let mut every = tokio::time::interval(HEALTH_PROBE_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut serving = true;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stopping.wait_for(|stopping| *stopping) => return,
        }
        let probe = tokio::time::timeout(HEALTH_PROBE_TIMEOUT, app.store.ping()).await;
        if *stopping.borrow() {
            return;
        }
        let reachable = matches!(probe, Ok(Ok(())));
        if reachable == serving {
            continue;
        }
        serving = reachable;
        if reachable {
            tracing::info!("database reachable again: health SERVING");
            set_health(&reporter, ServingStatus::Serving).await;
        } else {
            match probe {
                Ok(Err(error)) => {
                    tracing::warn!(%error, "database unreachable: health NOT_SERVING")
                }
                _ => {
                    tracing::warn!(timeout = ?HEALTH_PROBE_TIMEOUT, "database probe timed out: health NOT_SERVING")
                }
            }
            set_health(&reporter, ServingStatus::NotServing).await;
        }
    }
}

async fn purge_periodically(app: Arc<StPeter>) {
    let mut every = tokio::time::interval(PURGE_INTERVAL);
    loop {
        every.tick().await;
        match app.purge_expired().await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "deleted expired sessions and challenges"),
            Err(error) => tracing::warn!(%error, "purging expired rows failed"),
        }
    }
}

async fn write_last_seen_periodically(app: Arc<StPeter>) {
    let mut every = tokio::time::interval(LAST_SEEN_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        app.write_last_seen().await;
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}

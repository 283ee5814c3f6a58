//! Serving: the auth service beside the standard health service and server reflection
//! (v1 and v1alpha), on a listener the caller binds, until a shutdown future resolves.
use anyhow::Context;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use st_peter_proto::auth::v1::auth_service_server::AuthServiceServer;

use crate::app::StPeter;
use crate::grpc::AuthGrpc;

/// Largest request message accepted. Every field of the contract is far smaller; a larger
/// body is refused with OUT_OF_RANGE before it is buffered.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// How often expired sessions and challenges are deleted.
const PURGE_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// How to serve beyond the listener: TLS for now.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Serve TLS with this configuration (with a client CA for mutual TLS).
    pub tls: Option<ServerTlsConfig>,
}

impl ServeOptions {
    /// TLS from PEM files: the server's certificate chain and key, and optionally a CA whose
    /// client certificates are required (mutual TLS between services).
    pub fn tls_from_files(
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let read = |path: &Path| {
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))
        };
        let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
        if let Some(ca) = client_ca {
            tls = tls.client_ca_root(Certificate::from_pem(read(ca)?));
        }
        Ok(Self { tls: Some(tls) })
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
    health_reporter
        .set_serving::<AuthServiceServer<AuthGrpc>>()
        .await;

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

    let purger = tokio::spawn(purge_periodically(app));
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = options.tls {
        builder = builder.tls_config(tls)?;
    }
    let result = builder
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(auth)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await;
    purger.abort();
    result?;
    Ok(())
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

//! The one way Rust suites (and the bench) start st-peter.
//!
//! - [`TestServer`]: the real server in-process, through `st_peter_server::startup`'s
//!   [`Application`](st_peter_server::startup::Application) (the path `st-peter serve`
//!   takes: health, reflection, the request size limit and the purge task included), on
//!   a free `127.0.0.1` port below the kernel's ephemeral range (so no other test's `:0`
//!   takes it while the server is stopped), with a temp SQLite file or a given database
//!   URL, a manual clock, and stop / resume on the same port. [`Calls`] is an optional
//!   tower layer for it that counts calls by method and holds one at a chosen point;
//!   [`ObservedStore`] wraps its store to count the verify lookups that reach the database
//!   and hold one mid-way.
//!   [`pki`] makes certificates for TLS tests.
//! - [`ServerProcess`]: a given `st-peter` binary on such a port, with `--ready-file` (its
//!   address comes from that file), stderr captured, kill / SIGTERM / restart on the same
//!   port.
//! - [`SoftAuthenticator`]: a software WebAuthn authenticator (and the browser's part) for
//!   passkey tests.
mod calls;
mod in_process;
mod observed_store;
mod pki;
mod port;
mod postgres;
mod process;
mod soft_authenticator;

pub use calls::{Calls, Hold, HoldPoint, RpcCounts};
pub use in_process::{TestServer, TestServerBuilder, test_settings};
pub use observed_store::{HeldLookup, ObservedStore};
pub use pki::{Pki, pki};
pub use postgres::{create_postgres_database, with_database};
pub use process::{ProcessBuilder, ServerProcess, st_peter_binary};
pub use soft_authenticator::SoftAuthenticator;

/// The generated gRPC client on a plaintext channel.
pub type AuthClient =
    st_peter_proto::auth::v1::auth_service_client::AuthServiceClient<tonic::transport::Channel>;

/// A gRPC client connected to `addr` (plaintext).
pub async fn connect(addr: std::net::SocketAddr) -> AuthClient {
    AuthClient::connect(format!("http://{addr}")).await.unwrap()
}

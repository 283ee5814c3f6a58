//! st-peter: a small central authentication service.
//!
//! Two faces over one set of domain operations ([`domain::app::StPeter`]): the gRPC service
//! ([`grpc`], served by [`grpc::serve::run`]) and the admin command line ([`cli`]). Both sit
//! on the [`store`], which knows nothing of either, and on [`secrets`], the primitives that
//! make and check tokens, password hashes and TOTP codes. [`revocation`] follows the store's
//! revocation log: it keeps the server's verification cache honest and feeds
//! `WatchRevocations` subscribers. [`startup`] builds the whole from
//! its configuration, the one way every face and test starts it.
pub mod cli;
pub mod clock;
pub mod domain;
pub mod error;
pub mod fuzzing;
pub mod grpc;
pub mod metrics;
pub mod revocation;
pub mod secrets;
pub mod startup;
pub mod store;
pub mod traces;

pub use domain::app::{Caller, Settings, StPeter};

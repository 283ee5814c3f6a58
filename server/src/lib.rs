//! st-peter: a small central authentication service.
//!
//! Two faces over one set of domain operations ([`app::StPeter`]): the gRPC service
//! ([`grpc`], served by [`server::run`]) and the admin command line ([`cli`]). Both sit on
//! the [`store`], which knows nothing of either. [`startup`] builds the whole from its
//! configuration, the one way every face and test starts it.
pub mod accounts;
pub mod app;
pub mod audit;
pub mod cli;
pub mod clock;
pub mod error;
pub mod fuzzing;
pub mod grpc;
pub mod identifier;
pub mod password;
pub mod recovery_codes;
pub mod server;
pub mod sessions;
pub mod startup;
pub mod store;
pub mod throttle;
pub mod token;
pub mod totp;
pub mod totp_key;
pub mod two_factor;

pub use app::{Caller, Settings, StPeter};

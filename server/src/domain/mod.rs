//! The domain: what st-peter does, whichever face asks. [`app::StPeter`] holds the
//! operations; the modules beside it hold one concern each (accounts, sessions and login,
//! two-factor, service accounts and their API keys, the audit trail, identifiers,
//! throttles). Nothing here knows gRPC or the command line.
pub mod accounts;
pub mod app;
pub(crate) mod audit;
pub(crate) mod identifier;
pub mod import;
pub(crate) mod last_seen;
pub mod passkeys;
pub mod self_service;
pub mod service_accounts;
pub mod sessions;
pub mod throttle;
pub mod two_factor;

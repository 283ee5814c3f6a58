//! The client against the real st-peter server on an ephemeral port (no mocked st-peter).
//! RPCs are counted by a layer on the test server, never inferred from timing.
mod helpers;

mod account;
mod cache;
mod churn;
mod conformance;
mod feed;
mod guard;
mod logout_race;
mod methods;
mod passkeys;
mod restart;
mod service;
mod service_refresh;
mod tls;
mod unavailable;

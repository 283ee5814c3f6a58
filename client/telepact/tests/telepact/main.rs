//! The adapter against the real st-peter server on an ephemeral port (no mocked st-peter).
mod helpers;

mod cli;
mod on_auth;
mod service;

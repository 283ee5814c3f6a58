//! Integration tests: the real server on 127.0.0.1:0 with a temp SQLite file, or a fresh
//! PostgreSQL database when ST_PETER_TEST_POSTGRES_URL is set (`scripts/pg.sh run -- ...`),
//! called through the generated tonic client (and the real binary where a process must die).
mod helpers;

mod account;
mod attacks;
mod bad_input;
mod durability;
mod fuzz_smoke;
mod grpcurl;
mod import;
mod log_secrets;
mod login;
mod lookup;
mod metrics;
mod overload;
mod passkeys;
mod postgres;
mod replicas;
mod revocations;
mod secrets_at_rest;
mod service_accounts;
mod shared_throttles;
mod shutdown;
mod stock_clients;
mod tokens;
mod traces;
mod two_factor;

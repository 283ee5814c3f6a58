//! Prometheus metrics, served in the Prometheus text format at `GET /metrics` on a listener
//! of their own (`--metrics-listen`), off by default.
//!
//! One registry per process, set up by [`enable`] when `st-peter serve` is given a metrics
//! address. Until then every hook here is one atomic load that finds nothing ([`get`]), and
//! the RPC layer is not installed at all, so a server without metrics pays nothing
//! measurable on its hot path (VerifyToken). The domain reports what only it knows through
//! the hooks below (login outcomes, cache hits, hashing queue waits, feed lag); what can be
//! read at any moment (the hashing queue's depth and counters, the database pool) is read
//! when Prometheus scrapes.
//!
//! Never a label from a caller's input: methods come from the served services' descriptors
//! (anything else is `unknown`), codes are gRPC's, outcomes are the audit log's fixed words.
pub mod http;
pub mod rpc_layer;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};
use std::sync::{Mutex, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::domain::app::StPeter;

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The metrics, once [`enable`]d.
pub fn get() -> Option<&'static Metrics> {
    METRICS.get()
}

/// Turns metrics on for this process (idempotent) and returns them.
pub fn enable() -> &'static Metrics {
    METRICS.get_or_init(|| Metrics::new().expect("the metric definitions are valid"))
}

/// Latency buckets (seconds) for RPCs: a cached VerifyToken answers in tens of
/// microseconds, a login takes an argon2 hash (tens to hundreds of milliseconds) or waits
/// for one up to `--hash-max-wait`.
const RPC_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Buckets (seconds) for the wait of a hashing job in the queue.
const HASH_WAIT_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// Buckets (seconds) for the revocation feed's lag.
const FEED_LAG_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

pub struct Metrics {
    registry: Registry,
    pub(crate) rpcs: IntCounterVec,
    pub(crate) rpc_seconds: HistogramVec,
    login_outcomes: IntCounterVec,
    hash_pending: IntGauge,
    hash_wait: Histogram,
    hash_shed: IntCounter,
    hashes: IntCounter,
    hash_skipped: IntCounter,
    cache_hits: IntCounter,
    cache_misses: IntCounter,
    feed_lag: Histogram,
    pool_connections: IntGaugeVec,
    pool_max: IntGauge,
    pool_timeouts: IntCounter,
    /// Serializes the refresh of what is read at scrape time (counters copied from the
    /// hashing queue advance by a difference, which two scrapes at once would add twice).
    scraping: Mutex<()>,
    pub(crate) methods: rpc_layer::Methods,
}

fn histogram(name: &str, help: &str, buckets: &[f64]) -> prometheus::Result<Histogram> {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
}

impl Metrics {
    fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let rpcs = IntCounterVec::new(
            Opts::new(
                "st_peter_rpcs_total",
                "gRPC calls finished, by service, method and status code (streams count when they end).",
            ),
            &["service", "method", "code"],
        )?;
        let rpc_seconds = HistogramVec::new(
            HistogramOpts::new(
                "st_peter_rpc_duration_seconds",
                "Time from a gRPC call's request to the end of its response (a stream's whole life), by service, method and status code.",
            )
            .buckets(RPC_BUCKETS.to_vec()),
            &["service", "method", "code"],
        )?;
        let rpcs_in_flight = IntGaugeVec::new(
            Opts::new(
                "st_peter_rpcs_in_flight",
                "gRPC calls started and not yet finished (open WatchRevocations streams among them), by service and method.",
            ),
            &["service", "method"],
        )?;
        let login_outcomes = IntCounterVec::new(
            Opts::new(
                "st_peter_login_outcomes_total",
                "Login steps by outcome: step password (Login) or two_factor (CompleteTwoFactor); outcomes as in the audit log.",
            ),
            &["step", "outcome"],
        )?;
        let hash_pending = IntGauge::new(
            "st_peter_password_hash_pending",
            "Password checks and hashes admitted and not finished (queued or running on a hashing thread).",
        )?;
        let hash_wait = histogram(
            "st_peter_password_hash_queue_wait_seconds",
            "Time a password check or hash waited in the queue before a hashing thread took it.",
            HASH_WAIT_BUCKETS,
        )?;
        let hash_shed = IntCounter::new(
            "st_peter_password_hash_shed_total",
            "Password checks and hashes refused at admission (UNAVAILABLE with a retry hint) because they could not finish in time.",
        )?;
        let hashes = IntCounter::new(
            "st_peter_password_hashes_total",
            "Password checks and hashes computed by the hashing threads.",
        )?;
        let hash_skipped = IntCounter::new(
            "st_peter_password_hash_skipped_total",
            "Queued password checks skipped because their caller had gone or its deadline had passed.",
        )?;
        let cache_hits = IntCounter::new(
            "st_peter_verify_cache_hits_total",
            "Token verifications answered from the server's verification cache.",
        )?;
        let cache_misses = IntCounter::new(
            "st_peter_verify_cache_misses_total",
            "Token verifications that read the database (not cached, or the cache not trusted while the revocation feed is not caught up).",
        )?;
        let feed_lag = histogram(
            "st_peter_revocation_feed_lag_seconds",
            "Time from a revocation's commit (its created_at, by the committing server's clock) to this server applying it from the revocation log.",
            FEED_LAG_BUCKETS,
        )?;
        let pool_connections = IntGaugeVec::new(
            Opts::new(
                "st_peter_db_pool_connections",
                "Open database connections by state: in_use or idle.",
            ),
            &["state"],
        )?;
        let pool_max = IntGauge::new(
            "st_peter_db_pool_max_connections",
            "The most database connections the pool opens (--db-max-connections).",
        )?;
        let pool_timeouts = IntCounter::new(
            "st_peter_db_pool_acquire_timeouts_total",
            "Requests that waited longer than --db-acquire-timeout for a database connection and failed with UNAVAILABLE.",
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "st_peter_build_info",
                "Always 1; the version of this st-peter in a label.",
            ),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        registry.register(Box::new(build_info))?;
        registry.register(Box::new(rpcs.clone()))?;
        registry.register(Box::new(rpc_seconds.clone()))?;
        registry.register(Box::new(rpcs_in_flight.clone()))?;
        registry.register(Box::new(login_outcomes.clone()))?;
        registry.register(Box::new(hash_pending.clone()))?;
        registry.register(Box::new(hash_wait.clone()))?;
        registry.register(Box::new(hash_shed.clone()))?;
        registry.register(Box::new(hashes.clone()))?;
        registry.register(Box::new(hash_skipped.clone()))?;
        registry.register(Box::new(cache_hits.clone()))?;
        registry.register(Box::new(cache_misses.clone()))?;
        registry.register(Box::new(feed_lag.clone()))?;
        registry.register(Box::new(pool_connections.clone()))?;
        registry.register(Box::new(pool_max.clone()))?;
        registry.register(Box::new(pool_timeouts.clone()))?;
        let methods = rpc_layer::Methods::new(&rpcs_in_flight);
        Ok(Self {
            registry,
            rpcs,
            rpc_seconds,
            login_outcomes,
            hash_pending,
            hash_wait,
            hash_shed,
            hashes,
            hash_skipped,
            cache_hits,
            cache_misses,
            feed_lag,
            pool_connections,
            pool_max,
            pool_timeouts,
            scraping: Mutex::new(()),
            methods,
        })
    }

    /// Reads what is read at scrape time from `app`, then encodes every metric in the
    /// Prometheus text format (0.0.4).
    pub fn scrape(&self, app: &StPeter) -> String {
        {
            let _scraping = self
                .scraping
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let queue = app.passwords.queue_stats();
            self.hash_pending
                .set(i64::try_from(queue.pending).unwrap_or(i64::MAX));
            advance(&self.hash_shed, queue.shed);
            advance(&self.hashes, queue.hashed);
            advance(&self.hash_skipped, queue.skipped);
            let pool = app.store.pool_stats();
            let idle = pool.idle.min(pool.open);
            self.pool_connections
                .with_label_values(&["in_use"])
                .set(i64::from(pool.open - idle));
            self.pool_connections
                .with_label_values(&["idle"])
                .set(i64::from(idle));
            self.pool_max.set(i64::from(pool.max));
        }
        let mut text = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&self.registry.gather(), &mut text)
            .expect("encoding metrics into a String cannot fail");
        text
    }
}

/// Brings a counter mirrored from a monotonic source up to `total`.
fn advance(counter: &IntCounter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

/// A login step ended (`step`: the audit event, `login` or `two_factor`) with `outcome`,
/// one of the audit log's fixed words.
pub(crate) fn login_outcome(event: &'static str, outcome: &'static str) {
    if let Some(metrics) = get() {
        let step = if event == "login" { "password" } else { event };
        metrics
            .login_outcomes
            .with_label_values(&[step, outcome])
            .inc();
    }
}

/// A hashing thread took a job queued at `queued_at`.
pub(crate) fn hash_job_started(queued_at: Instant) {
    if let Some(metrics) = get() {
        metrics.hash_wait.observe(queued_at.elapsed().as_secs_f64());
    }
}

pub(crate) fn verify_cache_hit() {
    if let Some(metrics) = get() {
        metrics.cache_hits.inc();
    }
}

pub(crate) fn verify_cache_miss() {
    if let Some(metrics) = get() {
        metrics.cache_misses.inc();
    }
}

/// A revocation committed at `created_at` (Unix milliseconds) was applied here now.
pub(crate) fn revocation_applied(created_at: i64) {
    if let Some(metrics) = get() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as i64);
        // Another server's clock may run ahead of this one's: never a negative lag.
        let lag_ms = now.saturating_sub(created_at).max(0);
        metrics.feed_lag.observe(lag_ms as f64 / 1000.0);
    }
}

pub(crate) fn pool_acquire_timed_out() {
    if let Some(metrics) = get() {
        metrics.pool_timeouts.inc();
    }
}

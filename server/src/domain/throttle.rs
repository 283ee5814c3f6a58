//! Throttling of guessing: progressive backoff after repeated failures (logins per
//! identifier and per client address, two-factor codes per user and per challenge, API keys
//! per key and per address), and a plain rate limit on lookups per actor.
//!
//! Where the state lives is chosen at start-up by the store: on PostgreSQL in the database,
//! shared by every replica (one statement per decision, so replicas racing cannot both take
//! the last free attempt); on SQLite (one server per file) in this process's memory, bounded
//! in size. Time comes from the injected clock either way.
//!
//! A guess is counted when it is let through, before its outcome is known ([`Backoff::attempt`]):
//! concurrent guesses cannot all pass a check that none of them has counted yet. What turns
//! out not to be a failure gives its count back (a good login forgives the identifier and
//! refunds the address; work refused for another reason refunds both).
//!
//! Keys are stored as SHA-256 digests of the throttle's name and the key, so the shared
//! table holds no identifier or address in clear. A fault of the shared store fails closed:
//! the request is refused as unavailable, never let through unthrottled.
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use governor::{Quota, RateLimiter};
use sha2::{Digest, Sha256};

use crate::clock::{Clock, UnixMillis, millis};
use crate::error::{Error, Result};
use crate::store::{BackoffRule, Store, ThrottleCount};

/// A throttle's key as stored: SHA-256 of the throttle's name and the caller's key.
pub type ThrottleKey = [u8; 32];

/// When failures start to cost waiting, and how much.
#[derive(Debug, Clone, Copy)]
pub struct BackoffPolicy {
    /// Failures allowed before any waiting.
    pub free_failures: u32,
    /// The first wait; each further failure doubles it.
    pub base: Duration,
    /// The longest wait: bounds how long anyone can keep an identifier locked.
    pub max: Duration,
    /// A quiet spell this long forgets past failures.
    pub forget_after: Duration,
}

impl BackoffPolicy {
    /// The wait that the `failures`th failure starts, if any.
    fn wait_after(&self, failures: u32) -> Option<Duration> {
        (failures > self.free_failures).then(|| {
            let doublings = (failures - self.free_failures - 1).min(30);
            self.base.saturating_mul(1 << doublings).min(self.max)
        })
    }

    fn rule(&self) -> BackoffRule {
        BackoffRule {
            free_failures: i64::from(self.free_failures),
            base: millis(self.base.min(self.max)),
            max: millis(self.max),
            forget_after: millis(self.forget_after),
        }
    }
}

#[derive(Debug, Default)]
struct Failures {
    count: u32,
    last: UnixMillis,
    blocked_until: UnixMillis,
}

impl Failures {
    /// The in-memory twin of the shared store's statement (`throttle_count`).
    fn count(
        &mut self,
        policy: &BackoffPolicy,
        now: UnixMillis,
        unless_blocked: bool,
    ) -> Option<u32> {
        if unless_blocked && self.blocked_until > now {
            return None;
        }
        if now - self.last > millis(policy.forget_after) {
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        self.last = now;
        if let Some(wait) = policy.wait_after(self.count) {
            self.blocked_until = now + millis(wait);
        }
        Some(self.count)
    }
}

enum Place {
    /// Failure counts by key, at most a capacity of keys (least recently used go first).
    Memory(moka::sync::Cache<ThrottleKey, Arc<Mutex<Failures>>>),
    Shared(Arc<dyn Store>),
}

/// Progressive backoff by key.
pub struct Backoff {
    /// Names the throttle in its keys and in log lines.
    name: &'static str,
    policy: BackoffPolicy,
    counting: Counting,
    place: Place,
}

/// What a throttle counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counting {
    /// Every guess, when it is let through (an identifier's): concurrent guesses cannot all
    /// pass a check none of them has counted yet. A success forgives the key's failures.
    Guesses,
    /// Failures only, once known (a client address's). An address is shared by everyone
    /// behind it (a web app relaying its users' logins, an office's NAT): counting its
    /// logins in flight would lock it out under ordinary load. A spray from one address
    /// may run ahead of the count by the logins in flight, which the hashing queue bounds.
    /// A success does not excuse the address's failures.
    Failures,
}

/// A guess let through and counted. Settle it with [`Reserved`].
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    key: ThrottleKey,
    /// The key's count with this attempt: a refund restores the block only if no other
    /// attempt counted since.
    count: u32,
    /// Whether the guess was counted when let through ([`Counting::Guesses`]); if not, a
    /// failure is counted when settled.
    counted: bool,
}

impl Backoff {
    pub fn in_memory(name: &'static str, policy: BackoffPolicy, capacity: u64) -> Self {
        let entries = moka::sync::Cache::builder()
            .max_capacity(capacity)
            // Memory clean-up only; the decisions below read the injected clock.
            .time_to_idle(policy.forget_after + policy.max)
            .build();
        Self {
            name,
            policy,
            counting: Counting::Guesses,
            place: Place::Memory(entries),
        }
    }

    pub fn shared(name: &'static str, policy: BackoffPolicy, store: Arc<dyn Store>) -> Self {
        Self {
            name,
            policy,
            counting: Counting::Guesses,
            place: Place::Shared(store),
        }
    }

    fn counting_failures_only(mut self) -> Self {
        self.counting = Counting::Failures;
        self
    }

    fn key(&self, raw: &[u8]) -> ThrottleKey {
        let mut digest = Sha256::new();
        digest.update(self.name.as_bytes());
        digest.update([0]);
        digest.update(raw);
        digest.finalize().into()
    }

    fn entry(
        entries: &moka::sync::Cache<ThrottleKey, Arc<Mutex<Failures>>>,
        key: ThrottleKey,
    ) -> Arc<Mutex<Failures>> {
        entries.get_with(key, Default::default)
    }

    /// How long `raw` must still wait, if it must. Counts nothing.
    pub async fn wait(&self, raw: &[u8], now: UnixMillis) -> Result<Option<Duration>> {
        let key = self.key(raw);
        let blocked_until = match &self.place {
            Place::Memory(entries) => match entries.get(&key) {
                Some(entry) => lock(&entry).blocked_until,
                None => return Ok(None),
            },
            Place::Shared(store) => match store
                .throttle_blocked_until(&key)
                .await
                .map_err(|error| self.closed(error))?
            {
                Some(until) => until,
                None => return Ok(None),
            },
        };
        Ok(waiting(blocked_until, now))
    }

    /// Lets one guess by `raw` through and counts it as a failure until settled, or
    /// answers how long it must wait (counting nothing). One atomic step, so concurrent
    /// guesses (on any replica) never get more free attempts than one at a time would.
    pub async fn attempt(
        &self,
        raw: &[u8],
        now: UnixMillis,
    ) -> Result<std::result::Result<Attempt, Duration>> {
        if self.counting == Counting::Failures {
            return Ok(match self.wait(raw, now).await? {
                Some(wait) => Err(wait),
                None => Ok(Attempt {
                    key: self.key(raw),
                    count: 0,
                    counted: false,
                }),
            });
        }
        let key = self.key(raw);
        let counted = match &self.place {
            Place::Memory(entries) => {
                lock(&Self::entry(entries, key)).count(&self.policy, now, true)
            }
            Place::Shared(store) => match store
                .throttle_count(&key, self.policy.rule(), now, true)
                .await
                .map_err(|error| self.closed(error))?
            {
                ThrottleCount::Counted(count) => Some(count),
                ThrottleCount::Blocked => None,
            },
        };
        match counted {
            Some(count) => Ok(Ok(Attempt {
                key,
                count,
                counted: true,
            })),
            // Raced past its end since: a minimal wait, still not counted.
            None => Ok(Err(self
                .wait(raw, now)
                .await?
                .unwrap_or(Duration::from_millis(1)))),
        }
    }

    /// Counts a failure after the fact (without a prior `attempt`). Answers the key's
    /// failures so far, this one included.
    pub async fn fail(&self, raw: &[u8], now: UnixMillis) -> Result<u32> {
        self.fail_key(self.key(raw), now).await
    }

    async fn fail_key(&self, key: ThrottleKey, now: UnixMillis) -> Result<u32> {
        match &self.place {
            Place::Memory(entries) => Ok(lock(&Self::entry(entries, key))
                .count(&self.policy, now, false)
                .unwrap_or(u32::MAX)),
            Place::Shared(store) => match store
                .throttle_count(&key, self.policy.rule(), now, false)
                .await
                .map_err(|error| self.closed(error))?
            {
                ThrottleCount::Counted(count) => Ok(count),
                ThrottleCount::Blocked => Ok(u32::MAX),
            },
        }
    }

    /// Forgets the failures of `raw`. A fault only leaves the count (logged): the caller
    /// already has its answer.
    pub async fn forgive(&self, raw: &[u8]) {
        self.forget(self.key(raw)).await;
    }

    async fn forget(&self, key: ThrottleKey) {
        match &self.place {
            Place::Memory(entries) => entries.invalidate(&key),
            Place::Shared(store) => {
                if let Err(error) = store.throttle_forgive(&key).await {
                    tracing::warn!(throttle = self.name, %error, "forgiving failures failed");
                }
            }
        }
    }

    /// Gives back an attempt that was not a failure. A fault leaves it counted (logged).
    async fn refund(&self, attempt: Attempt, now: UnixMillis) {
        if !attempt.counted {
            return;
        }
        match &self.place {
            Place::Memory(entries) => {
                if let Some(entry) = entries.get(&attempt.key) {
                    let mut failures = lock(&entry);
                    if failures.count == attempt.count {
                        failures.blocked_until = failures.blocked_until.min(now);
                    }
                    failures.count = failures.count.saturating_sub(1);
                }
            }
            Place::Shared(store) => {
                if let Err(error) = store
                    .throttle_refund(&attempt.key, attempt.count, now)
                    .await
                {
                    tracing::warn!(throttle = self.name, %error, "refunding an attempt failed");
                }
            }
        }
    }

    /// A shared throttle that cannot decide refuses: the request is unavailable.
    fn closed(&self, error: Error) -> Error {
        tracing::warn!(throttle = self.name, %error, "shared throttle unavailable: refusing");
        match error {
            Error::Storage(error) => Error::Unavailable(error),
            other => other,
        }
    }
}

fn lock(entry: &Mutex<Failures>) -> std::sync::MutexGuard<'_, Failures> {
    entry
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn waiting(blocked_until: UnixMillis, now: UnixMillis) -> Option<Duration> {
    (blocked_until > now).then(|| Duration::from_millis((blocked_until - now) as u64))
}

/// The key of a client address (IPv4 as its IPv6-mapped form).
pub fn address(address: IpAddr) -> [u8; 16] {
    match address {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// What a guess turned out to be, for [`Reserved::settle`].
pub enum Guess<T> {
    /// A wrong guess: it stays counted.
    Failed(T),
    /// A right one: identifiers are forgiven, addresses get the attempt back.
    Succeeded(T),
    /// Refused before anything was checked (gone, expired, throttled elsewhere): every
    /// attempt is given back.
    NotChecked(T),
}

/// Guesses let through a set of throttles, counted as failures until settled.
pub struct Reserved<'a> {
    attempts: Vec<(&'a Backoff, Attempt)>,
}

impl<'a> Reserved<'a> {
    /// Lets one guess through every throttle of `checks` (counting it in each), or answers
    /// the longest wait among them, counting nothing. One after the other, in order: a
    /// guess held back by the first (a locked identifier) never touches the next (its
    /// address), so hammering one key cannot spill over onto another.
    pub async fn attempt(
        checks: &[(&'a Backoff, &[u8])],
        now: UnixMillis,
    ) -> Result<std::result::Result<Reserved<'a>, Duration>> {
        let mut reserved = Reserved {
            attempts: Vec::with_capacity(checks.len()),
        };
        for (at, (backoff, raw)) in checks.iter().enumerate() {
            let wait = match backoff.attempt(raw, now).await {
                Ok(Ok(attempt)) => {
                    reserved.attempts.push((backoff, attempt));
                    continue;
                }
                Ok(Err(wait)) => wait,
                Err(error) => {
                    reserved.refund(now).await;
                    return Err(error);
                }
            };
            reserved.refund(now).await;
            // The same hint as a check of every throttle: the longest wait.
            let mut longest = wait;
            for (backoff, raw) in &checks[at + 1..] {
                longest = longest.max(backoff.wait(raw, now).await?.unwrap_or_default());
            }
            return Ok(Err(longest));
        }
        Ok(Ok(reserved))
    }

    /// Adds one more throttle to the guess; on a wait, this guess's other attempts are
    /// still held (settle them as not checked).
    pub async fn also(
        &mut self,
        backoff: &'a Backoff,
        raw: &[u8],
        now: UnixMillis,
    ) -> Result<std::result::Result<(), Duration>> {
        Ok(backoff.attempt(raw, now).await?.map(|attempt| {
            self.attempts.push((backoff, attempt));
        }))
    }

    /// Settles every attempt by what the guess turned out to be; an error counts as not
    /// checked (a database fault is not the caller's failure).
    pub async fn settle<T>(self, guess: Result<Guess<T>>, now: UnixMillis) -> Result<T> {
        match guess {
            Ok(Guess::Failed(answer)) => {
                // Guesses counted when let through stay counted; failures are counted now.
                let failures = join_all(
                    self.attempts
                        .iter()
                        .filter(|(_, attempt)| !attempt.counted)
                        .map(|(backoff, attempt)| backoff.fail_key(attempt.key, now)),
                )
                .await;
                for failure in failures {
                    failure?;
                }
                Ok(answer)
            }
            Ok(Guess::Succeeded(answer)) => {
                join_all(
                    self.attempts
                        .into_iter()
                        .filter(|(_, attempt)| attempt.counted)
                        .map(|(backoff, attempt)| backoff.forget(attempt.key)),
                )
                .await;
                Ok(answer)
            }
            Ok(Guess::NotChecked(answer)) => {
                self.refund(now).await;
                Ok(answer)
            }
            Err(error) => {
                self.refund(now).await;
                Err(error)
            }
        }
    }

    async fn refund(self, now: UnixMillis) {
        join_all(
            self.attempts
                .into_iter()
                .map(|(backoff, attempt)| backoff.refund(attempt, now)),
        )
        .await;
    }
}

/// governor's view of the injected clock: time since the epoch.
#[derive(Clone)]
pub struct GovernorClock(pub Arc<dyn Clock>);

impl governor::clock::Clock for GovernorClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.0.now_millis()).unwrap_or(0))
    }
}

type KeyedLimiter = RateLimiter<
    String,
    governor::state::keyed::DefaultKeyedStateStore<String>,
    GovernorClock,
    governor::middleware::NoOpMiddleware<Duration>,
>;

enum RatePlace {
    Memory {
        limiter: KeyedLimiter,
        clock: GovernorClock,
    },
    /// GCRA in the shared store: one theoretical arrival time per key, in microseconds.
    Shared {
        store: Arc<dyn Store>,
        interval_micros: i64,
        tolerance_micros: i64,
    },
}

/// A token-bucket rate limit per key (GCRA: governor's in memory, the same sum in SQL when
/// shared).
pub struct RateLimit {
    name: &'static str,
    place: RatePlace,
}

impl RateLimit {
    /// `per_minute` sustained, with bursts of `burst`, in this process's memory.
    pub fn per_minute(
        name: &'static str,
        per_minute: u32,
        burst: u32,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let per_minute = NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let clock = GovernorClock(clock);
        Self {
            name,
            place: RatePlace::Memory {
                limiter: RateLimiter::dashmap_with_clock(
                    Quota::per_minute(per_minute).allow_burst(burst),
                    clock.clone(),
                ),
                clock,
            },
        }
    }

    /// The same limit, kept in the shared store.
    pub fn shared_per_minute(
        name: &'static str,
        per_minute: u32,
        burst: u32,
        store: Arc<dyn Store>,
    ) -> Self {
        let interval_micros = 60_000_000 / i64::from(per_minute.max(1));
        Self {
            name,
            place: RatePlace::Shared {
                store,
                interval_micros,
                tolerance_micros: interval_micros.saturating_mul(i64::from(burst.max(1) - 1)),
            },
        }
    }

    /// `Ok(Err(wait))` when `key` is over its rate.
    pub async fn check(
        &self,
        key: &str,
        now: UnixMillis,
    ) -> Result<std::result::Result<(), Duration>> {
        match &self.place {
            RatePlace::Memory { limiter, clock } => {
                use governor::clock::Clock as _;
                Ok(limiter
                    .check_key(&key.to_owned())
                    .map_err(|not_until| not_until.wait_time_from(clock.now())))
            }
            RatePlace::Shared {
                store,
                interval_micros,
                tolerance_micros,
            } => {
                let mut digest = Sha256::new();
                digest.update(self.name.as_bytes());
                digest.update([0]);
                digest.update(key.as_bytes());
                let key: ThrottleKey = digest.finalize().into();
                let refused = store
                    .throttle_rate(
                        &key,
                        now.saturating_mul(1000),
                        *interval_micros,
                        *tolerance_micros,
                    )
                    .await
                    .map_err(|error| {
                        tracing::warn!(throttle = self.name, %error, "shared throttle unavailable: refusing");
                        match error {
                            Error::Storage(error) => Error::Unavailable(error),
                            other => other,
                        }
                    })?;
                Ok(match refused {
                    None => Ok(()),
                    Some(wait_micros) => Err(Duration::from_micros(wait_micros.max(1) as u64)),
                })
            }
        }
    }
}

/// The throttling policies of a server, with production defaults.
#[derive(Debug, Clone, Copy)]
pub struct ThrottlePolicies {
    pub login_identifier: BackoffPolicy,
    pub login_address: BackoffPolicy,
    pub two_factor_user: BackoffPolicy,
    pub two_factor_challenge: BackoffPolicy,
    /// Refusals of one API key (ExchangeApiKey): a revoked or mistyped key sent again and
    /// again waits, costing the store nothing, and troubles no other key.
    pub api_key: BackoffPolicy,
    /// Different refused API keys per client address. Keys are too long to guess; this
    /// bounds the store work a flood of made-up keys can cause.
    pub api_key_address: BackoffPolicy,
    pub lookups_per_minute: u32,
    pub lookup_burst: u32,
    /// Passkey sign-ins one client address may begin a minute (BeginPasskeyLogin stores a
    /// challenge before anyone is known), with bursts of `passkey_begin_burst`. Generous:
    /// a web app relays all its users' sign-ins from its one address.
    pub passkey_begins_per_minute: u32,
    pub passkey_begin_burst: u32,
}

impl Default for ThrottlePolicies {
    fn default() -> Self {
        let minutes = |m: u64| Duration::from_secs(m * 60);
        let per_identifier = BackoffPolicy {
            free_failures: 5,
            base: Duration::from_secs(1),
            max: minutes(5),
            forget_after: minutes(15),
        };
        Self {
            login_identifier: per_identifier,
            // An office behind one NAT address shares this, so it allows more.
            login_address: BackoffPolicy {
                free_failures: 20,
                ..per_identifier
            },
            two_factor_user: per_identifier,
            two_factor_challenge: BackoffPolicy {
                free_failures: 2,
                ..per_identifier
            },
            api_key: per_identifier,
            api_key_address: BackoffPolicy {
                free_failures: 20,
                ..per_identifier
            },
            lookups_per_minute: 60,
            lookup_burst: 20,
            passkey_begins_per_minute: 600,
            passkey_begin_burst: 200,
        }
    }
}

impl ThrottlePolicies {
    /// No throttling at all: for benchmarks that measure the cost of the work itself.
    pub fn unlimited() -> Self {
        let never = BackoffPolicy {
            free_failures: u32::MAX,
            ..Self::default().login_identifier
        };
        Self {
            login_identifier: never,
            login_address: never,
            two_factor_user: never,
            two_factor_challenge: never,
            api_key: never,
            api_key_address: never,
            lookups_per_minute: u32::MAX,
            lookup_burst: u32::MAX,
            passkey_begins_per_minute: u32::MAX,
            passkey_begin_burst: u32::MAX,
        }
    }
}

/// The throttles of one server process: in the shared store when it shares them
/// (PostgreSQL), else in memory.
pub struct Throttles {
    pub login_identifier: Backoff,
    pub login_address: Backoff,
    pub two_factor_user: Backoff,
    pub two_factor_challenge: Backoff,
    pub api_key: Backoff,
    pub api_key_address: Backoff,
    pub lookup_actor: RateLimit,
    pub passkey_begin_address: RateLimit,
    /// The store that holds them, when shared: its expired rows are purged now and then.
    shared: Option<Arc<dyn Store>>,
}

/// Keys remembered per throttle before the least recently used are forgotten.
const THROTTLE_CAPACITY: u64 = 100_000;

impl Throttles {
    /// Shared through `store` when it shares throttles, in memory otherwise.
    pub fn new(policies: &ThrottlePolicies, clock: Arc<dyn Clock>, store: &Arc<dyn Store>) -> Self {
        let shared = store.shares_throttles().then(|| store.clone());
        let backoff = |name, policy| match &shared {
            Some(store) => Backoff::shared(name, policy, store.clone()),
            None => Backoff::in_memory(name, policy, THROTTLE_CAPACITY),
        };
        let rate = |name, per_minute, burst| match &shared {
            Some(store) => RateLimit::shared_per_minute(name, per_minute, burst, store.clone()),
            None => RateLimit::per_minute(name, per_minute, burst, clock.clone()),
        };
        let lookup_actor = rate(
            "lookup_actor",
            policies.lookups_per_minute,
            policies.lookup_burst,
        );
        let passkey_begin_address = rate(
            "passkey_begin_address",
            policies.passkey_begins_per_minute,
            policies.passkey_begin_burst,
        );
        Self {
            login_identifier: backoff("login_identifier", policies.login_identifier),
            login_address: backoff("login_address", policies.login_address)
                .counting_failures_only(),
            two_factor_user: backoff("two_factor_user", policies.two_factor_user),
            two_factor_challenge: backoff("two_factor_challenge", policies.two_factor_challenge),
            api_key: backoff("api_key", policies.api_key),
            api_key_address: backoff("api_key_address", policies.api_key_address)
                .counting_failures_only(),
            lookup_actor,
            passkey_begin_address,
            shared,
        }
    }

    /// Whether the state is shared with other replicas (in the database).
    pub fn shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Deletes shared rows that no longer decide anything; nothing to do in memory (the
    /// caches bound themselves).
    pub async fn purge(&self, now: UnixMillis) -> Result<u64> {
        match &self.shared {
            Some(store) => store.purge_throttles(now).await,
            None => Ok(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn policy() -> BackoffPolicy {
        BackoffPolicy {
            free_failures: 2,
            base: Duration::from_secs(1),
            max: Duration::from_secs(8),
            forget_after: Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn waits_double_up_to_the_cap_and_forgiveness_clears_them() {
        let backoff = Backoff::in_memory("test", policy(), 10);
        let key = b"lead-baker";
        let mut now = 1_000_000;
        let mut waits = Vec::new();
        for _ in 0..7 {
            backoff.fail(key, now).await.unwrap();
            waits.push(backoff.wait(key, now).await.unwrap().map(|d| d.as_secs()));
            now += 1;
        }
        assert_eq!(
            waits,
            [None, None, Some(1), Some(2), Some(4), Some(8), Some(8)]
        );
        backoff.forgive(key).await;
        assert_eq!(backoff.wait(key, now).await.unwrap(), None);
    }

    #[tokio::test]
    async fn the_wait_ends_and_a_quiet_spell_forgets() {
        let backoff = Backoff::in_memory("test", policy(), 10);
        let key = b"cashier";
        for _ in 0..3 {
            backoff.fail(key, 0).await.unwrap();
        }
        assert_eq!(
            backoff.wait(key, 999).await.unwrap(),
            Some(Duration::from_millis(1))
        );
        assert_eq!(backoff.wait(key, 1000).await.unwrap(), None);
        backoff.fail(key, 61_001).await.unwrap();
        assert_eq!(
            backoff.wait(key, 61_001).await.unwrap(),
            None,
            "count restarted after 60 s quiet"
        );
    }

    #[tokio::test]
    async fn attempts_are_counted_before_their_outcome_and_refunds_give_them_back() {
        let backoff = Backoff::in_memory("test", policy(), 10);
        let key = b"till";
        // Three guesses in flight at once: the third is the first that blocks, and a
        // fourth is refused before any of them has an outcome.
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(backoff.attempt(key, 0).await.unwrap().unwrap());
        }
        assert_eq!(
            backoff.attempt(key, 0).await.unwrap().unwrap_err(),
            Duration::from_secs(1)
        );
        // The last one was not a failure after all: the block it started is lifted.
        let last = held.pop().unwrap();
        backoff.refund(last, 0).await;
        assert_eq!(backoff.wait(key, 0).await.unwrap(), None);
        assert!(backoff.attempt(key, 0).await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn a_reservation_blocked_anywhere_counts_nowhere() {
        let first = Backoff::in_memory("first", policy(), 10);
        let second = Backoff::in_memory("second", policy(), 10);
        for _ in 0..3 {
            second.fail(b"k", 0).await.unwrap();
        }
        let wait = Reserved::attempt(&[(&first, b"k"), (&second, b"k")], 0)
            .await
            .unwrap()
            .err();
        assert_eq!(wait, Some(Duration::from_secs(1)));
        // `first` got its attempt back: two more free ones, then the block.
        for _ in 0..2 {
            first.attempt(b"k", 0).await.unwrap().unwrap();
        }
        assert_eq!(first.wait(b"k", 0).await.unwrap(), None);
    }

    #[tokio::test]
    async fn rate_limit_refills_with_the_injected_clock() {
        let clock = ManualClock::new();
        let limit = RateLimit::per_minute("test", 60, 3, Arc::new(clock.clone()));
        let check = |key: &'static str| limit.check(key, 0);
        for _ in 0..3 {
            assert!(check("actor").await.unwrap().is_ok());
        }
        let wait = check("actor").await.unwrap().unwrap_err();
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert!(
            check("other").await.unwrap().is_ok(),
            "keys are independent"
        );
        clock.advance(Duration::from_secs(1));
        assert!(check("actor").await.unwrap().is_ok());
    }
}

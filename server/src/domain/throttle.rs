//! Throttling of guessing: progressive backoff after repeated failures (logins per
//! identifier and per client address, two-factor codes per user and per challenge), and a
//! plain rate limit on lookups per actor.
//!
//! State is in this process's memory, bounded in size: each replica throttles on its own,
//! so N replicas allow at most N times the attempts. Time comes from the injected clock.
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{Quota, RateLimiter};

use crate::clock::{Clock, UnixMillis, millis};

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

#[derive(Debug, Default)]
struct Failures {
    count: u32,
    last: UnixMillis,
    blocked_until: UnixMillis,
}

/// Failure counts by key, at most `capacity` keys (least recently used go first).
pub struct Backoff<K: Hash + Eq + Send + Sync + 'static> {
    policy: BackoffPolicy,
    entries: moka::sync::Cache<K, Arc<Mutex<Failures>>>,
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static> Backoff<K> {
    pub fn new(policy: BackoffPolicy, capacity: u64) -> Self {
        let entries = moka::sync::Cache::builder()
            .max_capacity(capacity)
            // Memory clean-up only; the decisions below read the injected clock.
            .time_to_idle(policy.forget_after + policy.max)
            .build();
        Self { policy, entries }
    }

    /// How long `key` must still wait, if it must.
    pub fn wait(&self, key: &K, now: UnixMillis) -> Option<Duration> {
        let entry = self.entries.get(key)?;
        let failures = entry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        (failures.blocked_until > now)
            .then(|| Duration::from_millis((failures.blocked_until - now) as u64))
    }

    /// Counts a failure; past the free ones, blocks the key for a doubling wait. Answers
    /// the key's failures so far, this one included.
    pub fn fail(&self, key: &K, now: UnixMillis) -> u32 {
        let entry = self.entries.get_with(key.clone(), Default::default);
        let mut failures = entry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if now - failures.last > millis(self.policy.forget_after) {
            failures.count = 0;
        }
        failures.count = failures.count.saturating_add(1);
        failures.last = now;
        if failures.count > self.policy.free_failures {
            let doublings = (failures.count - self.policy.free_failures - 1).min(30);
            let wait = self
                .policy
                .base
                .saturating_mul(1 << doublings)
                .min(self.policy.max);
            failures.blocked_until = now + millis(wait);
        }
        failures.count
    }

    pub fn forgive(&self, key: &K) {
        self.entries.invalidate(key);
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

/// A token-bucket rate limit per key (governor's GCRA).
pub struct RateLimit {
    limiter: KeyedLimiter,
    clock: GovernorClock,
}

impl RateLimit {
    /// `per_minute` sustained, with bursts of `burst`.
    pub fn per_minute(per_minute: u32, burst: u32, clock: Arc<dyn Clock>) -> Self {
        let per_minute = NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let clock = GovernorClock(clock);
        Self {
            limiter: RateLimiter::dashmap_with_clock(
                Quota::per_minute(per_minute).allow_burst(burst),
                clock.clone(),
            ),
            clock,
        }
    }

    /// `Err(wait)` when `key` is over its rate.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        use governor::clock::Clock as _;
        self.limiter
            .check_key(&key.to_owned())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
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
        }
    }
}

/// The throttles of one server process.
pub struct Throttles {
    pub login_identifier: Backoff<String>,
    pub login_address: Backoff<std::net::IpAddr>,
    pub two_factor_user: Backoff<String>,
    pub two_factor_challenge: Backoff<[u8; 32]>,
    pub api_key: Backoff<[u8; 32]>,
    pub api_key_address: Backoff<std::net::IpAddr>,
    pub lookup_actor: RateLimit,
}

/// Keys remembered per throttle before the least recently used are forgotten.
const THROTTLE_CAPACITY: u64 = 100_000;

impl Throttles {
    pub fn new(policies: &ThrottlePolicies, clock: Arc<dyn Clock>) -> Self {
        Self {
            login_identifier: Backoff::new(policies.login_identifier, THROTTLE_CAPACITY),
            login_address: Backoff::new(policies.login_address, THROTTLE_CAPACITY),
            two_factor_user: Backoff::new(policies.two_factor_user, THROTTLE_CAPACITY),
            two_factor_challenge: Backoff::new(policies.two_factor_challenge, THROTTLE_CAPACITY),
            api_key: Backoff::new(policies.api_key, THROTTLE_CAPACITY),
            api_key_address: Backoff::new(policies.api_key_address, THROTTLE_CAPACITY),
            lookup_actor: RateLimit::per_minute(
                policies.lookups_per_minute,
                policies.lookup_burst,
                clock,
            ),
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

    #[test]
    fn waits_double_up_to_the_cap_and_forgiveness_clears_them() {
        let backoff = Backoff::new(policy(), 10);
        let key = "lead-baker".to_owned();
        let mut now = 1_000_000;
        let mut waits = Vec::new();
        for _ in 0..7 {
            backoff.fail(&key, now);
            waits.push(backoff.wait(&key, now).map(|d| d.as_secs()));
            now += 1;
        }
        assert_eq!(
            waits,
            [None, None, Some(1), Some(2), Some(4), Some(8), Some(8)]
        );
        backoff.forgive(&key);
        assert_eq!(backoff.wait(&key, now), None);
    }

    #[test]
    fn the_wait_ends_and_a_quiet_spell_forgets() {
        let backoff = Backoff::new(policy(), 10);
        let key = "cashier".to_owned();
        for _ in 0..3 {
            backoff.fail(&key, 0);
        }
        assert_eq!(backoff.wait(&key, 999), Some(Duration::from_millis(1)));
        assert_eq!(backoff.wait(&key, 1000), None);
        backoff.fail(&key, 61_001);
        assert_eq!(
            backoff.wait(&key, 61_001),
            None,
            "count restarted after 60 s quiet"
        );
    }

    #[test]
    fn rate_limit_refills_with_the_injected_clock() {
        let clock = ManualClock::new();
        let limit = RateLimit::per_minute(60, 3, Arc::new(clock.clone()));
        for _ in 0..3 {
            assert!(limit.check("actor").is_ok());
        }
        let wait = limit.check("actor").unwrap_err();
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert!(limit.check("other").is_ok(), "keys are independent");
        clock.advance(Duration::from_secs(1));
        assert!(limit.check("actor").is_ok());
    }
}

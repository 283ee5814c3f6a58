//! The verification cache: answers kept about a minute, never past the token's own expiry,
//! keyed by a SHA-256 of the token so raw tokens are not kept as keys.
use moka::Expiry;
use moka::future::Cache;
use sha2::{Digest, Sha256};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::clock::Clock;
use crate::error::Error;
use crate::model::VerifiedUser;

type TokenKey = [u8; 32];

#[derive(Debug, Clone)]
enum Answer {
    Valid(VerifiedUser),
    /// st-peter said UNAUTHENTICATED: remembered briefly so a flood of one bad token does
    /// not become a flood of RPCs.
    Invalid,
}

#[derive(Debug, Clone)]
struct Cached {
    answer: Answer,
    /// Read with the client's clock: past this the entry is not served.
    fresh_until: SystemTime,
    /// For moka's own eviction (which runs on real time).
    lifetime: Duration,
}

struct ByLifetime;

impl Expiry<TokenKey, Cached> for ByLifetime {
    fn expire_after_create(
        &self,
        _key: &TokenKey,
        value: &Cached,
        _now: Instant,
    ) -> Option<Duration> {
        Some(value.lifetime)
    }
}

/// Cache settings.
#[derive(Debug, Clone, Copy)]
pub struct CacheSettings {
    /// How long a valid answer is served (capped by the token's expiry). Default 60 s.
    pub ttl: Duration,
    /// How long an UNAUTHENTICATED answer is served. Default 5 s; zero disables it.
    pub invalid_ttl: Duration,
    /// Most entries held. Default 10 000.
    pub capacity: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(60),
            invalid_ttl: Duration::from_secs(5),
            capacity: 10_000,
        }
    }
}

pub(crate) struct VerifyCache {
    entries: Cache<TokenKey, Cached>,
    settings: CacheSettings,
    clock: Arc<dyn Clock>,
}

impl VerifyCache {
    pub(crate) fn new(settings: CacheSettings, clock: Arc<dyn Clock>) -> Self {
        let entries = Cache::builder()
            .max_capacity(settings.capacity)
            .expire_after(ByLifetime)
            .build();
        Self {
            entries,
            settings,
            clock,
        }
    }

    /// The cached answer for `token`, or the answer of `fetch`, run once however many
    /// callers miss on the same token at the same time. Errors other than an invalid
    /// token are returned to every waiting caller and never cached.
    pub(crate) async fn get_or_fetch<F>(&self, token: &str, fetch: F) -> Result<VerifiedUser, Error>
    where
        F: Future<Output = Result<VerifiedUser, Error>>,
    {
        let key = key(token);
        if let Some(cached) = self.entries.get(&key).await {
            if self.clock.now() < cached.fresh_until {
                return cached.answer.into_result();
            }
            self.entries.invalidate(&key).await;
        }
        let cached = self
            .entries
            .try_get_with(key, async {
                let answer = match fetch.await {
                    Ok(user) => Answer::Valid(user),
                    Err(Error::InvalidToken) => Answer::Invalid,
                    Err(other) => return Err(other),
                };
                Ok(self.entry(answer))
            })
            .await
            .map_err(|shared: Arc<Error>| (*shared).clone())?;
        if matches!(cached.answer, Answer::Invalid) && self.settings.invalid_ttl.is_zero() {
            self.entries.invalidate(&key).await;
        }
        cached.answer.into_result()
    }

    pub(crate) async fn len(&self) -> u64 {
        self.entries.run_pending_tasks().await;
        self.entries.entry_count()
    }

    pub(crate) async fn evict(&self, token: &str) {
        self.entries.invalidate(&key(token)).await;
    }

    fn entry(&self, answer: Answer) -> Cached {
        let now = self.clock.now();
        let lifetime = match &answer {
            Answer::Valid(user) => self.settings.ttl.min(
                user.expires_at
                    .duration_since(now)
                    .unwrap_or(Duration::ZERO),
            ),
            Answer::Invalid => self.settings.invalid_ttl,
        };
        Cached {
            answer,
            fresh_until: now + lifetime,
            lifetime,
        }
    }
}

impl Answer {
    fn into_result(self) -> Result<VerifiedUser, Error> {
        match self {
            Answer::Valid(user) => Ok(user),
            Answer::Invalid => Err(Error::InvalidToken),
        }
    }
}

fn key(token: &str) -> TokenKey {
    Sha256::digest(token.as_bytes()).into()
}

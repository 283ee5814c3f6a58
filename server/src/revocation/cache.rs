//! The server's verification cache: the owner of a session by token hash, so a repeated
//! `VerifyToken` makes no database query. It is trusted only while the revocation feed is
//! followed; every change the feed reports evicts what it makes stale.
//!
//! A fill that raced a revocation must not survive it. A verify takes a [`Ticket`] (the
//! eviction generation) before it queries the store, and its answer is stored only if no
//! eviction happened since: otherwise an answer read just before a logout committed could
//! be stored just after its eviction. Evictions and fills take one lock, so a fill either
//! lands before an eviction (which then removes it) or sees the new generation (and is
//! dropped). Cache hits take no lock.
use moka::Expiry;
use moka::sync::Cache;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::clock::UnixMillis;
use crate::secrets::token::SecretHash;
use crate::store::{Change, SessionOwner};

/// Cache settings.
#[derive(Debug, Clone, Copy)]
pub struct VerifyCacheSettings {
    /// How long an answer is kept at most (never past its token's expiry). The feed evicts
    /// what revocations make stale, so this bounds only memory held by idle tokens.
    pub ttl: Duration,
    /// Most answers kept.
    pub capacity: u64,
}

impl Default for VerifyCacheSettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(5 * 60),
            capacity: 100_000,
        }
    }
}

struct Cached {
    owner: SessionOwner,
    lifetime: Duration,
}

struct ByLifetime;

impl Expiry<SecretHash, Arc<Cached>> for ByLifetime {
    fn expire_after_create(
        &self,
        _key: &SecretHash,
        value: &Arc<Cached>,
        _now: Instant,
    ) -> Option<Duration> {
        Some(value.lifetime)
    }
}

/// The eviction generation a verify saw before it queried the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

struct Guard {
    generation: u64,
}

pub struct VerifyCache {
    entries: Cache<SecretHash, Arc<Cached>>,
    guard: Mutex<Guard>,
    /// True while the feed is followed and caught up. Read without the lock by hits; set
    /// and cleared under it.
    trusted: AtomicBool,
    ttl: Duration,
}

impl VerifyCache {
    pub fn new(settings: VerifyCacheSettings) -> Self {
        Self {
            entries: Cache::builder()
                .max_capacity(settings.capacity)
                .expire_after(ByLifetime)
                .support_invalidation_closures()
                .build(),
            guard: Mutex::new(Guard { generation: 0 }),
            trusted: AtomicBool::new(false),
            ttl: settings.ttl,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Guard> {
        self.guard.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached owner of a live session, while the cache is trusted.
    pub fn get(&self, hash: &SecretHash, now: UnixMillis) -> Option<SessionOwner> {
        if !self.trusted.load(Ordering::Acquire) {
            return None;
        }
        let cached = self.entries.get(hash)?;
        (cached.owner.expires_at > now).then(|| cached.owner.clone())
    }

    /// Take before querying the store; `None` while the cache is not trusted (the answer
    /// is then not stored at all).
    pub fn ticket(&self) -> Option<Ticket> {
        let guard = self.lock();
        self.trusted
            .load(Ordering::Acquire)
            .then_some(Ticket(guard.generation))
    }

    /// Stores an answer read from the store after `ticket` was taken, unless an eviction
    /// (or a loss of the feed) happened since.
    pub fn fill(&self, hash: SecretHash, owner: &SessionOwner, ticket: Ticket, now: UnixMillis) {
        let remaining = u64::try_from(owner.expires_at.saturating_sub(now)).unwrap_or(0);
        let lifetime = self.ttl.min(Duration::from_millis(remaining));
        if lifetime.is_zero() {
            return;
        }
        let guard = self.lock();
        if guard.generation == ticket.0 && self.trusted.load(Ordering::Acquire) {
            let cached = Cached {
                owner: owner.clone(),
                lifetime,
            };
            self.entries.insert(hash, Arc::new(cached));
        }
    }

    /// Forgets what a change makes stale.
    pub fn evict(&self, change: &Change) {
        let mut guard = self.lock();
        guard.generation += 1;
        match change {
            Change::Token(hash) => self.entries.invalidate(hash),
            Change::User(user_id) => {
                let user_id = user_id.clone();
                if self
                    .entries
                    .invalidate_entries_if(move |_, cached| cached.owner.user.id == user_id)
                    .is_err()
                {
                    // Unreachable (the builder enables closures), but fail closed.
                    self.entries.invalidate_all();
                }
            }
        }
    }

    /// Forgets everything (the feed cannot say what changed).
    pub fn clear(&self) {
        let mut guard = self.lock();
        guard.generation += 1;
        self.entries.invalidate_all();
    }

    /// The feed is lost: answers come from the store until it is caught up again. What is
    /// cached stays, for the catch-up to evict from.
    pub fn distrust(&self) {
        let mut guard = self.lock();
        guard.generation += 1;
        self.trusted.store(false, Ordering::Release);
    }

    /// The feed is caught up: answers may come from the cache again.
    pub fn trust(&self) {
        let _guard = self.lock();
        self.trusted.store(true, Ordering::Release);
    }

    pub fn is_trusted(&self) -> bool {
        self.trusted.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::OwnerRecord;

    fn owner(user_id: &str, expires_at: UnixMillis) -> SessionOwner {
        SessionOwner {
            user: OwnerRecord {
                id: user_id.into(),
                handle: user_id.into(),
                email: None,
                phone: None,
                display_name: String::new(),
                disabled: false,
                kind: crate::domain::app::UserKind::Human,
            },
            roles: vec![],
            expires_at,
        }
    }

    fn trusted_cache() -> VerifyCache {
        let cache = VerifyCache::new(VerifyCacheSettings::default());
        cache.trust();
        cache
    }

    #[test]
    fn a_fill_that_overlapped_an_eviction_is_dropped() {
        let cache = trusted_cache();
        let ticket = cache.ticket().unwrap();
        cache.evict(&Change::Token([1; 32]));
        cache.fill([1; 32], &owner("u", 10_000), ticket, 0);
        assert!(cache.get(&[1; 32], 0).is_none());

        let ticket = cache.ticket().unwrap();
        cache.fill([1; 32], &owner("u", 10_000), ticket, 0);
        assert!(cache.get(&[1; 32], 0).is_some());
    }

    #[test]
    fn an_untrusted_cache_answers_nothing_and_stores_nothing() {
        let cache = trusted_cache();
        let ticket = cache.ticket().unwrap();
        cache.fill([2; 32], &owner("u", 10_000), ticket, 0);
        cache.distrust();
        assert!(cache.get(&[2; 32], 0).is_none());
        assert!(cache.ticket().is_none());
        cache.fill([3; 32], &owner("u", 10_000), ticket, 0);
        cache.trust();
        assert!(
            cache.get(&[3; 32], 0).is_none(),
            "a fill from before the loss"
        );
        assert!(
            cache.get(&[2; 32], 0).is_some(),
            "kept for the catch-up to evict from"
        );
    }

    #[test]
    fn user_evictions_drop_every_answer_for_the_user_only() {
        let cache = trusted_cache();
        for (key, user) in [(4u8, "a"), (5, "a"), (6, "b")] {
            let ticket = cache.ticket().unwrap();
            cache.fill([key; 32], &owner(user, 10_000), ticket, 0);
        }
        cache.evict(&Change::User("a".into()));
        assert!(cache.get(&[4; 32], 0).is_none());
        assert!(cache.get(&[5; 32], 0).is_none());
        assert!(cache.get(&[6; 32], 0).is_some());
    }

    #[test]
    fn answers_are_never_served_past_their_token_expiry() {
        let cache = trusted_cache();
        let ticket = cache.ticket().unwrap();
        cache.fill([7; 32], &owner("u", 1_000), ticket, 0);
        assert!(cache.get(&[7; 32], 999).is_some());
        assert!(cache.get(&[7; 32], 1_000).is_none());
    }
}

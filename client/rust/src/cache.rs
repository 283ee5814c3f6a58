//! The verification cache: answers kept up to five minutes while the revocation feed is
//! subscribed (five seconds while it is not), never past the token's own expiry, keyed by a
//! SHA-256 of the token so raw tokens are not kept as keys.
//!
//! An answer fetched while an eviction touched its token is handed to the callers who
//! asked but never stored: otherwise a verify in flight during `logout` would put the
//! logged-out token back. Every eviction and every store takes one lock, so an answer is
//! either stored before an eviction (which then removes it) or checked after it (and
//! dropped); reads of cached answers do not take it.
use moka::Expiry;
use moka::sync::Cache;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use crate::clock::Clock;
use crate::error::Error;
use crate::flight::Flight;
use crate::model::VerifiedUser;

/// SHA-256 of a token: the same hash st-peter stores and the revocation feed names.
pub(crate) type TokenKey = [u8; 32];

/// Token evictions are counted in this many stripes (by key), so a storm of evictions of
/// other tokens seldom discards a fetch of this one.
const STRIPES: usize = 1024;

/// What to forget. The revocation feed names tokens by hash, users by id, or everything.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Eviction<'a> {
    Token(&'a TokenKey),
    User(&'a str),
    All,
}

/// What a fetch answered: an answer to cache, or an error every waiting caller gets.
type Outcome = Result<Answer, Error>;

/// A fetch in flight, and the evictions that could touch its key when it began.
struct Fetch {
    generation: Generation,
    flight: Flight<Outcome>,
}

#[derive(Debug, Clone)]
pub(crate) enum Answer {
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
    /// Past this (and before `fresh_until`) the entry is served only while the revocation
    /// feed is subscribed, since nothing else would tell this client it went stale.
    unsubscribed_until: SystemTime,
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
    /// How long a valid answer is served (capped by the token's expiry) while the
    /// revocation feed is subscribed. Default 5 minutes: the feed evicts what a revocation
    /// makes stale, so this only bounds the memory idle tokens hold and the exposure to a
    /// feed fault nobody noticed.
    pub ttl: Duration,
    /// How long a valid answer is served while the feed is not subscribed (not yet, between
    /// streams, or turned off): a token revoked elsewhere can pass for up to this long.
    /// Default 5 s.
    pub fallback_ttl: Duration,
    /// How long an UNAUTHENTICATED answer is served. Default 5 s; zero disables it.
    pub invalid_ttl: Duration,
    /// Most entries held. Default 10 000.
    pub capacity: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(5 * 60),
            fallback_ttl: Duration::from_secs(5),
            invalid_ttl: Duration::from_secs(5),
            capacity: 10_000,
        }
    }
}

/// How many evictions could have touched a key: read when its fetch starts, compared
/// before its answer is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Generation {
    token: u64,
    /// Evictions by user and of everything, which any answer may fall under.
    users: u64,
}

/// Evictions so far and the fetches in flight, under one lock.
struct State {
    token_evictions: Box<[u64]>,
    user_evictions: u64,
    flights: HashMap<TokenKey, Arc<Fetch>>,
}

impl State {
    fn generation(&self, key: &TokenKey) -> Generation {
        Generation {
            token: self.token_evictions[stripe(key)],
            users: self.user_evictions,
        }
    }
}

pub(crate) struct VerifyCache {
    entries: Cache<TokenKey, Cached>,
    state: Mutex<State>,
    /// The revocation feed is caught up and streaming: answers get the long TTL.
    subscribed: AtomicBool,
    settings: CacheSettings,
    clock: Arc<dyn Clock>,
}

enum Join<'a> {
    Cached(Answer),
    Follow(Arc<Fetch>),
    Lead(Lead<'a>),
}

/// The caller that runs the fetch for everyone waiting on the key. Its flight lands
/// exactly once: with the outcome, or abandoned when the caller's future is dropped
/// mid-fetch, so that followers take over rather than wait forever.
struct Lead<'a> {
    cache: &'a VerifyCache,
    key: TokenKey,
    fetch: Arc<Fetch>,
    landed: bool,
}

impl VerifyCache {
    pub(crate) fn new(settings: CacheSettings, clock: Arc<dyn Clock>) -> Self {
        let entries = Cache::builder()
            .max_capacity(settings.capacity)
            .expire_after(ByLifetime)
            .build();
        Self {
            entries,
            state: Mutex::new(State {
                token_evictions: vec![0; STRIPES].into_boxed_slice(),
                user_evictions: 0,
                flights: HashMap::new(),
            }),
            subscribed: AtomicBool::new(false),
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
        if let Some(answer) = self.fresh(&key) {
            return answer.into_result();
        }
        loop {
            match self.join(key) {
                Join::Cached(answer) => return answer.into_result(),
                Join::Follow(fetch) => match fetch.flight.outcome().await {
                    Some(outcome) => return outcome.and_then(Answer::into_result),
                    // The leading caller gave up (its future was dropped): take over.
                    None => continue,
                },
                Join::Lead(mut lead) => {
                    let outcome = match fetch.await {
                        Ok(user) => Ok(Answer::Valid(user)),
                        Err(Error::InvalidToken) => Ok(Answer::Invalid),
                        Err(other) => Err(other),
                    };
                    lead.land(Some(outcome.clone()));
                    return outcome.and_then(Answer::into_result);
                }
            }
        }
    }

    /// Forgets cached answers, and makes answers being fetched right now for what it
    /// names go uncached. Callers that start a verify afterwards do not share a fetch that
    /// began before it.
    pub(crate) fn evict(&self, what: Eviction<'_>) {
        let mut state = self.lock();
        match what {
            Eviction::Token(key) => {
                state.token_evictions[stripe(key)] += 1;
                self.entries.invalidate(key);
            }
            Eviction::User(user_id) => {
                state.user_evictions += 1;
                // Rare (a user disabled, a role changed), so a scan rather than an index.
                for (key, cached) in &self.entries {
                    if matches!(&cached.answer, Answer::Valid(v) if v.user.user_id == user_id) {
                        self.entries.invalidate(&*key);
                    }
                }
            }
            Eviction::All => {
                state.user_evictions += 1;
                self.entries.invalidate_all();
            }
        }
    }

    /// Whether answers past their fallback TTL may be served: the feed sets it once a
    /// stream has caught up (after evicting what that stream replayed) and clears it the
    /// moment a stream ends.
    pub(crate) fn set_subscribed(&self, subscribed: bool) {
        self.subscribed.store(subscribed, Ordering::Release);
    }

    pub(crate) fn is_subscribed(&self) -> bool {
        self.subscribed.load(Ordering::Acquire)
    }

    pub(crate) fn evict_token(&self, token: &str) {
        self.evict(Eviction::Token(&key(token)));
    }

    /// The user a cached valid answer for `token` names, fresh or not (a token's user never
    /// changes); `None` when nothing valid is cached for it.
    pub(crate) fn user_of(&self, token: &str) -> Option<String> {
        match self.entries.get(&key(token))?.answer {
            Answer::Valid(verified) => Some(verified.user.user_id),
            Answer::Invalid => None,
        }
    }

    pub(crate) fn len(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }

    /// A cached answer still fresh by the client's clock; a stale one is dropped.
    fn fresh(&self, key: &TokenKey) -> Option<Answer> {
        let cached = self.entries.get(key)?;
        let now = self.clock.now();
        if now < cached.fresh_until && (now < cached.unsubscribed_until || self.is_subscribed()) {
            return Some(cached.answer);
        }
        self.entries.invalidate(key);
        None
    }

    fn join(&self, key: TokenKey) -> Join<'_> {
        let mut state = self.lock();
        let generation = state.generation(&key);
        if let Some(fetch) = state.flights.get(&key) {
            if fetch.generation == generation {
                return Join::Follow(fetch.clone());
            }
        }
        // Stored while this caller waited for the lock.
        if let Some(answer) = self.fresh(&key) {
            return Join::Cached(answer);
        }
        // A flight from before an eviction is left to its own callers.
        let fetch = Arc::new(Fetch {
            generation,
            flight: Flight::new(),
        });
        state.flights.insert(key, fetch.clone());
        Join::Lead(Lead {
            cache: self,
            key,
            fetch,
            landed: false,
        })
    }

    fn entry(&self, answer: Answer) -> Option<Cached> {
        let now = self.clock.now();
        let (lifetime, unsubscribed) = match &answer {
            Answer::Valid(user) => {
                let lifetime = self.settings.ttl.min(
                    user.expires_at
                        .duration_since(now)
                        .unwrap_or(Duration::ZERO),
                );
                (lifetime, self.settings.fallback_ttl.min(lifetime))
            }
            // The feed carries what makes a "valid" answer wrong; "not valid" keeps its TTL.
            Answer::Invalid => (self.settings.invalid_ttl, self.settings.invalid_ttl),
        };
        (!lifetime.is_zero()).then(|| Cached {
            answer,
            fresh_until: now + lifetime,
            unsubscribed_until: now + unsubscribed,
            lifetime,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is consistent between statements, so a panic elsewhere leaves it usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Lead<'_> {
    /// Stores the answer unless an eviction touched the key since the fetch began, ends
    /// the flight, and hands the outcome (`None`: abandoned) to the followers.
    fn land(&mut self, outcome: Option<Outcome>) {
        self.landed = true;
        {
            let cache = self.cache;
            let mut state = cache.lock();
            let unevicted = state.generation(&self.key) == self.fetch.generation;
            if let (Some(Ok(answer)), true) = (&outcome, unevicted) {
                if let Some(cached) = cache.entry(answer.clone()) {
                    cache.entries.insert(self.key, cached);
                }
            }
            if state
                .flights
                .get(&self.key)
                .is_some_and(|f| Arc::ptr_eq(f, &self.fetch))
            {
                state.flights.remove(&self.key);
            }
        }
        self.fetch.flight.land(outcome);
    }
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        if !self.landed {
            self.land(None);
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

fn stripe(key: &TokenKey) -> usize {
    // A SHA-256 is uniform already.
    usize::from(u16::from_le_bytes([key[0], key[1]])) % STRIPES
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::oneshot;

    use super::*;
    use crate::clock::SystemClock;
    use crate::model::{User, UserKind};

    fn cache() -> Arc<VerifyCache> {
        Arc::new(VerifyCache::new(
            CacheSettings::default(),
            Arc::new(SystemClock),
        ))
    }

    fn verified(user_id: &str) -> VerifiedUser {
        VerifiedUser {
            user: User {
                user_id: user_id.into(),
                handle: user_id.into(),
                email: None,
                phone: None,
                display_name: String::new(),
                disabled: false,
                kind: UserKind::Human,
            },
            roles: Vec::new(),
            expires_at: SystemTime::now() + Duration::from_secs(3600),
        }
    }

    /// Counts fetches; each answers `user_id`.
    async fn verify(cache: &VerifyCache, token: &str, user_id: &str, fetches: &AtomicUsize) {
        cache
            .get_or_fetch(token, async {
                fetches.fetch_add(1, Ordering::SeqCst);
                Ok(verified(user_id))
            })
            .await
            .unwrap();
    }

    /// A verify of `token` whose fetch answers only when the returned sender fires.
    fn held_verify(
        cache: &Arc<VerifyCache>,
        token: &str,
    ) -> (
        oneshot::Sender<VerifiedUser>,
        tokio::task::JoinHandle<Result<VerifiedUser, Error>>,
    ) {
        let (answer, answered) = oneshot::channel::<VerifiedUser>();
        let (cache, token) = (cache.clone(), token.to_owned());
        let task = tokio::spawn(async move {
            cache
                .get_or_fetch(&token, async { Ok(answered.await.unwrap()) })
                .await
        });
        (answer, task)
    }

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn an_answer_fetched_across_an_eviction_of_its_token_is_not_stored() {
        let cache = cache();
        let (answer, task) = held_verify(&cache, "stp_a");
        settle().await;
        cache.evict_token("stp_a");
        answer.send(verified("u1")).unwrap();
        assert_eq!(task.await.unwrap().unwrap().user.user_id, "u1");
        assert_eq!(cache.len(), 0);
    }

    #[tokio::test]
    async fn an_eviction_of_another_token_does_not_discard_the_answer() {
        let cache = cache();
        let (answer, task) = held_verify(&cache, "stp_a");
        settle().await;
        // A different stripe, as good as certain for two fixed tokens; checked here.
        assert_ne!(stripe(&key("stp_a")), stripe(&key("stp_b")));
        cache.evict_token("stp_b");
        answer.send(verified("u1")).unwrap();
        task.await.unwrap().unwrap();
        assert_eq!(cache.len(), 1);
    }

    #[tokio::test]
    async fn a_verify_after_an_eviction_does_not_share_a_fetch_from_before_it() {
        let cache = cache();
        let (old_answer, old) = held_verify(&cache, "stp_a");
        settle().await;
        cache.evict_token("stp_a");
        let fetches = AtomicUsize::new(0);
        verify(&cache, "stp_a", "fresh", &fetches).await;
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        old_answer.send(verified("stale")).unwrap();
        old.await.unwrap().unwrap();
        // The fresh answer is the one kept.
        let fetches = AtomicUsize::new(0);
        verify(&cache, "stp_a", "unused", &fetches).await;
        assert_eq!(fetches.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn evicting_a_user_drops_their_answers_and_their_fetches_in_flight() {
        let cache = cache();
        let fetches = AtomicUsize::new(0);
        verify(&cache, "stp_a", "u1", &fetches).await;
        verify(&cache, "stp_b", "u1", &fetches).await;
        verify(&cache, "stp_c", "u2", &fetches).await;
        let (answer, task) = held_verify(&cache, "stp_d");
        settle().await;
        cache.evict(Eviction::User("u1"));
        answer.send(verified("u1")).unwrap();
        task.await.unwrap().unwrap();
        assert_eq!(cache.len(), 1, "only u2's answer stays");
        verify(&cache, "stp_c", "u2", &fetches).await;
        assert_eq!(fetches.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn evicting_everything_drops_every_answer() {
        let cache = cache();
        let fetches = AtomicUsize::new(0);
        verify(&cache, "stp_a", "u1", &fetches).await;
        verify(&cache, "stp_b", "u2", &fetches).await;
        cache.evict(Eviction::All);
        assert_eq!(cache.len(), 0);
    }

    struct StillClock(Mutex<SystemTime>);

    impl Clock for StillClock {
        fn now(&self) -> SystemTime {
            *self.0.lock().unwrap()
        }
    }

    #[tokio::test]
    async fn past_its_fallback_ttl_an_answer_is_served_only_while_subscribed() {
        let clock = Arc::new(StillClock(Mutex::new(SystemTime::now())));
        let settings = CacheSettings {
            ttl: Duration::from_secs(300),
            fallback_ttl: Duration::from_secs(5),
            ..CacheSettings::default()
        };
        let cache = VerifyCache::new(settings, clock.clone());
        let fetches = AtomicUsize::new(0);
        verify(&cache, "stp_a", "u1", &fetches).await;
        *clock.0.lock().unwrap() += Duration::from_secs(5);
        cache.set_subscribed(true);
        verify(&cache, "stp_a", "u1", &fetches).await;
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            1,
            "subscribed: the long TTL"
        );
        cache.set_subscribed(false);
        verify(&cache, "stp_a", "u1", &fetches).await;
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            2,
            "not subscribed: the fallback TTL"
        );
        // The new answer is young again.
        verify(&cache, "stp_a", "u1", &fetches).await;
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn followers_take_over_when_the_leading_caller_goes_away() {
        let cache = cache();
        let (_never, leader) = held_verify(&cache, "stp_a");
        settle().await;
        let fetches = Arc::new(AtomicUsize::new(0));
        let follower = tokio::spawn({
            let (cache, fetches) = (cache.clone(), fetches.clone());
            async move { verify(&cache, "stp_a", "u1", &fetches).await }
        });
        settle().await;
        assert_eq!(fetches.load(Ordering::SeqCst), 0, "the follower waits");
        leader.abort();
        follower.await.unwrap();
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        assert_eq!(cache.len(), 1);
    }
}

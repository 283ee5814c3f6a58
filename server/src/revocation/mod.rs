//! The revocation feed, server side. Every change that can make a verified answer wrong is
//! a row in the store's revocation log (written in the change's own transaction). Each
//! server follows that log ([`follow`]: PostgreSQL's `LISTEN`, or polling a SQLite file
//! that the admin CLI may write from another process), evicts what each row makes stale
//! from its [`cache`], and forwards the row to its `WatchRevocations` subscribers, the
//! client caches.
//!
//! While the server is not caught up with the log (at start, or after it lost its
//! `LISTEN` connection) its cache is not trusted: verifies go to the store, and
//! subscribers are refused, until the rows it missed are applied (or, if they were
//! pruned, the whole cache is dropped and subscribers told `reset`).
pub mod cache;
mod follow;

pub use follow::follow;

use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{Notify, broadcast, watch};

use crate::error::{Error, Result};
use crate::store::{Change, Revocation, Store};
use cache::{VerifyCache, VerifyCacheSettings};

/// How long log rows are kept for subscribers that reconnect. A client away longer than
/// its cache TTL has nothing left to evict, so this need only exceed the clients' TTLs.
pub const LOG_RETENTION: Duration = Duration::from_secs(60 * 60);

/// How long a new subscriber waits for a server that is catching up before it is refused.
const CATCH_UP_WAIT: Duration = Duration::from_secs(2);

/// Rows read from the log at a time.
const PAGE: u32 = 1000;

/// Events buffered per subscriber before a slow one is cut off (it resubscribes and is
/// replayed from the log).
const SUBSCRIBER_BUFFER: usize = 4096;

/// What a subscriber is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedEvent {
    /// What became stale at `sequence`.
    Changed { sequence: i64, change: Change },
    /// The log cannot be replayed from where the subscriber was: drop everything.
    Reset { sequence: i64 },
}

impl FeedEvent {
    pub fn sequence(&self) -> i64 {
        match self {
            FeedEvent::Changed { sequence, .. } | FeedEvent::Reset { sequence } => *sequence,
        }
    }
}

/// What the follower broadcasts to the streams of its subscribers.
#[derive(Debug, Clone)]
pub enum Broadcast {
    Event(FeedEvent),
    /// The follower lost the log: end every stream (their clients fall back to short
    /// TTLs and resubscribe).
    Lost,
}

/// A new subscriber's start: what to replay, then live events after `caught_up`.
pub struct Subscription {
    pub backlog: Vec<FeedEvent>,
    /// The sequence the subscriber is caught up to once the backlog is sent.
    pub caught_up: i64,
    pub live: broadcast::Receiver<Broadcast>,
}

pub struct Revocations {
    pub(crate) cache: VerifyCache,
    /// The newest log sequence this server has applied; `None` before it first read the log.
    applied: Mutex<Option<i64>>,
    events: broadcast::Sender<Broadcast>,
    /// Wakes a polling follower at once after a local change.
    nudge: Notify,
    /// True from a shutdown until serving starts again: streams end.
    closing: watch::Sender<bool>,
    /// Mirrors whether the cache is trusted, for subscribers that wait for a catch-up.
    caught_up: watch::Sender<bool>,
}

impl Revocations {
    pub fn new(settings: VerifyCacheSettings) -> Self {
        Self {
            cache: VerifyCache::new(settings),
            applied: Mutex::new(None),
            events: broadcast::channel(SUBSCRIBER_BUFFER).0,
            nudge: Notify::new(),
            closing: watch::channel(false).0,
            caught_up: watch::channel(false).0,
        }
    }

    pub fn applied(&self) -> Option<i64> {
        *self.applied.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_applied(&self, sequence: i64) {
        *self.applied.lock().unwrap_or_else(|e| e.into_inner()) = Some(sequence);
    }

    /// A change this server just committed: evicted here before the caller is answered
    /// (the feed brings it again, harmlessly), and the follower woken to forward it.
    pub fn changed_here(&self, change: &Change) {
        self.cache.evict(change);
        self.nudge.notify_one();
    }

    /// Applies one log row: evict, then tell subscribers.
    fn apply(&self, revocation: Revocation) {
        crate::metrics::revocation_applied(revocation.created_at);
        self.cache.evict(&revocation.change);
        self.set_applied(revocation.sequence);
        let _ = self.events.send(Broadcast::Event(FeedEvent::Changed {
            sequence: revocation.sequence,
            change: revocation.change,
        }));
    }

    /// The follower lost the log.
    fn lost(&self) {
        self.cache.distrust();
        self.caught_up.send_replace(false);
        let _ = self.events.send(Broadcast::Lost);
    }

    /// Serving stopped, and with it the follower: nothing keeps the cache honest now.
    pub fn stopped_following(&self) {
        self.lost();
    }

    /// Reads and applies every row after the last one applied.
    async fn apply_new(&self, store: &dyn Store) -> Result<()> {
        for row in rows_after(store, self.applied().unwrap_or(0)).await? {
            self.apply(row);
        }
        Ok(())
    }

    /// After a (re)connection: applies what was missed, or drops everything when the log
    /// no longer holds it, then trusts the cache again.
    async fn catch_up(&self, store: &dyn Store) -> Result<()> {
        let bounds = store.revocation_log_bounds().await?;
        let newest = bounds.map_or(0, |bounds| bounds.newest);
        match self.applied() {
            // First start: the cache is empty, nothing to replay.
            None => self.set_applied(newest),
            Some(applied) if replayable(applied, bounds) => self.apply_new(store).await?,
            Some(_) => {
                tracing::warn!(
                    newest,
                    "revocation log no longer holds what this server missed: dropping its cache"
                );
                self.cache.clear();
                self.set_applied(newest);
                let _ = self
                    .events
                    .send(Broadcast::Event(FeedEvent::Reset { sequence: newest }));
            }
        }
        self.cache.trust();
        self.caught_up.send_replace(true);
        Ok(())
    }

    /// Starts a subscriber at `after` (0: from now), replaying from the log.
    pub async fn subscribe(&self, store: &dyn Store, after: u64) -> Result<Subscription> {
        // Live events first, so nothing falls between the replay and them.
        let live = self.events.subscribe();
        if !self.is_caught_up() {
            // Just started, or reconnecting: a catch-up takes milliseconds, so wait a little
            // rather than send the subscriber away at once.
            let mut caught_up = self.caught_up.subscribe();
            let waited = tokio::time::timeout(CATCH_UP_WAIT, caught_up.wait_for(|&c| c)).await;
            if !matches!(waited, Ok(Ok(_))) {
                return Err(Error::FeedResyncing);
            }
        }
        let applied = self.applied().unwrap_or(0);
        if after == 0 {
            return Ok(Subscription {
                backlog: Vec::new(),
                caught_up: applied,
                live,
            });
        }
        let bounds = store.revocation_log_bounds().await?;
        let Some(after) = i64::try_from(after).ok().filter(|&a| replayable(a, bounds)) else {
            let sequence = bounds.map_or(0, |b| b.newest).max(applied);
            return Ok(Subscription {
                backlog: vec![FeedEvent::Reset { sequence }],
                caught_up: sequence,
                live,
            });
        };
        let rows = rows_after(store, after).await?;
        let caught_up = rows.last().map_or(after, |row| row.sequence);
        let backlog = rows
            .into_iter()
            .map(|row| FeedEvent::Changed {
                sequence: row.sequence,
                change: row.change,
            })
            .collect();
        Ok(Subscription {
            backlog,
            caught_up,
            live,
        })
    }

    /// Whether the server follows the log and is caught up with it (its cache answers).
    pub fn is_caught_up(&self) -> bool {
        self.cache.is_trusted()
    }

    /// Streams end while this is true (a shutdown began).
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    pub fn set_closing(&self, closing: bool) {
        self.closing.send_replace(closing);
    }
}

/// Every log row after `sequence`, oldest first, read a page at a time.
async fn rows_after(store: &dyn Store, sequence: i64) -> Result<Vec<Revocation>> {
    let mut rows = Vec::new();
    loop {
        let after = rows
            .last()
            .map_or(sequence, |row: &Revocation| row.sequence);
        let page = store.revocations_after(after, PAGE).await?;
        let full = page.len() == PAGE as usize;
        rows.extend(page);
        if !full {
            return Ok(rows);
        }
    }
}

/// Whether the rows after `sequence` are all still in the log.
fn replayable(sequence: i64, bounds: Option<crate::store::LogBounds>) -> bool {
    match bounds {
        // An empty log: only "nothing seen" is from this log.
        None => sequence == 0,
        Some(bounds) => sequence >= bounds.oldest - 1 && sequence <= bounds.newest,
    }
}

#[cfg(test)]
mod tests {
    use super::replayable;
    use crate::store::LogBounds;

    #[test]
    fn replay_needs_every_row_after_the_sequence() {
        let bounds = Some(LogBounds {
            oldest: 10,
            newest: 20,
        });
        assert!(replayable(9, bounds));
        assert!(replayable(20, bounds));
        assert!(!replayable(8, bounds), "row 9 was pruned");
        assert!(!replayable(21, bounds), "from another log");
        assert!(replayable(0, None));
        assert!(!replayable(3, None));
    }
}

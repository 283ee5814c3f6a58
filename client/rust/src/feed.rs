//! The revocation feed: one `WatchRevocations` stream per client, on the client's own
//! channel, started by the first verify. Each event evicts what it makes stale (a token by
//! its hash, a user's answers, or everything); while a stream is caught up the cache serves
//! answers for the long TTL, otherwise only for the fallback TTL.
//!
//! A stream that ends, fails or stays silent for [`SILENCE`] is replaced, with backoff,
//! from the last sequence seen, so the server replays what happened meanwhile (or says
//! `reset`). The task stops when the last clone of the client is dropped.
//!
//! A client with an API key opens each stream with the service token current then (an
//! exchange first, if due); a stream refused for its caller credentials drops that token,
//! so the next one is opened with a fresh exchange. St-peter ends a stream when the token
//! it was opened with expires (by then the token is due for refresh here) or may have
//! been revoked; it is resubscribed like any ended stream.
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use st_peter_proto::auth::v1 as pb;
use st_peter_proto::auth::v1::auth_service_client::AuthServiceClient;
use st_peter_proto::auth::v1::revocation_event::Change;
use tokio::task::AbortHandle;
use tokio::time::timeout;
use tonic::transport::Channel;

use crate::cache::{Eviction, VerifyCache};
use crate::error::is_caller_credentials;
use crate::identity::ServiceIdentity;

/// The server sends a checkpoint every 15 s while quiet: three missed is a dead stream.
const SILENCE: Duration = Duration::from_secs(45);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What the revocation feed of a [`Client`](crate::Client) is doing, for operators and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FeedStatus {
    /// A stream is open and caught up: cached answers are served for the full `cache_ttl`.
    /// False before the first verify, between streams, and when the feed is turned off.
    pub subscribed: bool,
    /// The last sequence the feed delivered (events and checkpoints alike); a new stream
    /// resumes after it.
    pub last_sequence: u64,
    /// Streams opened so far: the first, then one per resubscription.
    pub subscriptions: u64,
}

/// The client's side of the feed: shared by its clones, and stopping the task when the last
/// of them goes.
pub(crate) struct Feed {
    task: OnceLock<AbortHandle>,
    follower: Follower,
}

#[derive(Clone)]
struct Follower {
    grpc: AuthServiceClient<Channel>,
    cache: Arc<VerifyCache>,
    progress: Arc<Progress>,
    service: Option<Arc<ServiceIdentity>>,
}

#[derive(Default)]
struct Progress {
    last_sequence: AtomicU64,
    subscriptions: AtomicU64,
}

impl Feed {
    pub(crate) fn new(
        grpc: AuthServiceClient<Channel>,
        cache: Arc<VerifyCache>,
        service: Option<Arc<ServiceIdentity>>,
    ) -> Self {
        Self {
            task: OnceLock::new(),
            follower: Follower {
                grpc,
                cache,
                progress: Arc::default(),
                service,
            },
        }
    }

    /// Starts the subscription unless it runs already. Outside a Tokio runtime it stays
    /// unstarted (answers then get the fallback TTL) and a later call starts it.
    pub(crate) fn start(&self) {
        if self.task.get().is_some() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.task.get_or_init(|| {
            let follower = self.follower.clone();
            runtime.spawn(follower.run()).abort_handle()
        });
    }

    pub(crate) fn status(&self) -> FeedStatus {
        let progress = &self.follower.progress;
        FeedStatus {
            subscribed: self.follower.cache.is_subscribed(),
            last_sequence: progress.last_sequence.load(Ordering::Acquire),
            subscriptions: progress.subscriptions.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        if let Some(task) = self.task.get() {
            task.abort();
        }
    }
}

impl Follower {
    async fn run(mut self) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let caught_up = self.watch().await;
            self.cache.set_subscribed(false);
            if caught_up {
                backoff = BACKOFF_MIN;
            }
            tokio::time::sleep(jitter(backoff)).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// One stream, until it ends, fails or falls silent. True if it caught up at least once.
    async fn watch(&mut self) -> bool {
        let after = self.progress.last_sequence.load(Ordering::Acquire);
        self.progress.subscriptions.fetch_add(1, Ordering::Relaxed);
        let message = pb::WatchRevocationsRequest {
            after_sequence: after,
        };
        let (request, token) = match &self.service {
            None => (tonic::Request::new(message), None),
            Some(service) => match timeout(SILENCE, service.token()).await {
                Ok(Ok(token)) => (token.request(message), Some(token)),
                // Refused, or st-peter unreachable: try again after the backoff.
                Ok(Err(_)) | Err(_) => return false,
            },
        };
        let refused = |status: &tonic::Status| {
            if let (Some(service), Some(token), true) =
                (&self.service, &token, is_caller_credentials(status))
            {
                service.forget(token);
            }
        };
        let response = match timeout(SILENCE, self.grpc.clone().watch_revocations(request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(status)) => {
                refused(&status);
                return false;
            }
            Err(_) => return false,
        };
        let mut stream = response.into_inner();
        let mut first = true;
        let mut caught_up = false;
        // Dropping the stream (silence) cancels the call.
        loop {
            let event = match timeout(SILENCE, stream.message()).await {
                Ok(Ok(Some(event))) => event,
                Ok(Err(status)) => {
                    refused(&status);
                    break;
                }
                Ok(Ok(None)) | Err(_) => break,
            };
            match event.change {
                Some(Change::TokenHash(hash)) => match <&[u8; 32]>::try_from(hash.as_slice()) {
                    Ok(key) => self.cache.evict(Eviction::Token(key)),
                    // Not a hash this client can match: forget everything rather than guess.
                    Err(_) => self.cache.evict(Eviction::All),
                },
                Some(Change::UserId(user_id)) => self.cache.evict(Eviction::User(&user_id)),
                Some(Change::Reset(_)) => self.cache.evict(Eviction::All),
                None => {
                    // A stream "from now" replays nothing: answers cached before it may
                    // already be stale, and would otherwise get the long TTL.
                    if first && after == 0 {
                        self.cache.evict(Eviction::All);
                    }
                    if !caught_up {
                        caught_up = true;
                        self.cache.set_subscribed(true);
                    }
                }
            }
            self.progress
                .last_sequence
                .store(event.sequence, Ordering::Release);
            first = false;
        }
        caught_up
    }
}

/// Between half and all of `backoff`, so clients cut off together do not come back together.
fn jitter(backoff: Duration) -> Duration {
    let random = RandomState::new().hash_one(0u8);
    let half = backoff / 2;
    half + half.mul_f64((random % 1024) as f64 / 1024.0)
}

//! Following the revocation log for as long as the server serves.
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use super::Revocations;
use crate::error::Result;
use crate::store::Store;

/// How often a server without notices (SQLite) reads the log. Changes made by this server
/// wake it at once; this bounds how late a change by the admin CLI arrives.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Backoff between attempts to follow the log again after losing it.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// Follows the log until the task is aborted: catch up, then apply each new row. A lost
/// `LISTEN` connection (or an unreachable database) makes the cache untrusted until the
/// next catch-up succeeds.
pub async fn follow(store: Arc<dyn Store>, feed: Arc<Revocations>) {
    let mut retry = RETRY_MIN;
    loop {
        let error = follow_once(store.as_ref(), &feed, &mut retry).await;
        feed.lost();
        tracing::warn!(%error, ?retry, "lost the revocation feed: verifying from the store until it is caught up");
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(RETRY_MAX);
    }
}

/// Returns only when the feed is lost.
async fn follow_once(
    store: &dyn Store,
    feed: &Revocations,
    retry: &mut Duration,
) -> crate::error::Error {
    let result: Result<Infallible> = async {
        // Listen before catching up, so a change committed in between is noticed.
        let mut notices = store.log_notices().await?;
        feed.catch_up(store).await?;
        *retry = RETRY_MIN;
        tracing::debug!(applied = ?feed.applied(), "revocation feed caught up");
        loop {
            match notices.as_mut() {
                Some(notices) => notices.next().await?,
                None => {
                    tokio::select! {
                        () = tokio::time::sleep(POLL_INTERVAL) => {}
                        () = feed.nudge.notified() => {}
                    }
                }
            }
            feed.apply_new(store).await?;
        }
    }
    .await;
    match result {
        Err(error) => error,
        Ok(never) => match never {},
    }
}

//! `WatchRevocations`: a subscriber's stream. The replay from the log, a checkpoint, then
//! live events as the follower applies them, with a checkpoint every
//! [`HEARTBEAT`] so a client can tell a quiet stream from a dead one. A stream a service
//! account opened with its token (under `--require-caller-credentials`) ends when that
//! token may have: at its expiry, or after an event that revokes it or its account.
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use st_peter_proto::auth::v1 as pb;
use st_peter_proto::auth::v1::revocation_event::Change as PbChange;

use crate::domain::app::StPeter;
use crate::domain::service_accounts::ServiceCaller;
use crate::revocation::{Broadcast, FeedEvent, Subscription};
use crate::store::Change;

/// A checkpoint this often while nothing else is sent. Clients treat a stream silent for
/// three of these as dead.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

pub type EventStream = ReceiverStream<Result<pb::RevocationEvent, Status>>;

/// Subscribes and hands the stream to a task that feeds it until the subscriber leaves,
/// the server loses its feed, or a shutdown begins.
pub async fn watch(
    app: &Arc<StPeter>,
    after_sequence: u64,
    credential: Option<ServiceCaller>,
) -> Result<EventStream, Status> {
    let feed = app.revocations();
    let subscription = feed
        .subscribe(app.store.as_ref(), after_sequence)
        .await
        .map_err(super::status)?;
    let (sender, receiver) = mpsc::channel(64);
    let credential = credential.map(|caller| {
        let left = u64::try_from(caller.expires_at.saturating_sub(app.now()));
        let expires = tokio::time::Instant::now() + Duration::from_millis(left.unwrap_or(0));
        (caller, expires)
    });
    tokio::spawn(pump(subscription, sender, feed.closing(), credential));
    Ok(ReceiverStream::new(receiver))
}

/// Why a stream opened with a service token ends: the caller resubscribes with a fresh one.
const CREDENTIAL_ENDED: &str = "caller credentials: the service token this stream was opened with has ended or may have; \
     resubscribe from the last sequence with a fresh one";

async fn pump(
    subscription: Subscription,
    sender: mpsc::Sender<Result<pb::RevocationEvent, Status>>,
    mut closing: tokio::sync::watch::Receiver<bool>,
    credential: Option<(ServiceCaller, tokio::time::Instant)>,
) {
    let expiry = async {
        match &credential {
            Some((_, expires)) => tokio::time::sleep_until(*expires).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(expiry);
    let Subscription {
        backlog,
        mut caught_up,
        mut live,
    } = subscription;
    let mut credential_ended = false;
    for event in backlog {
        credential_ended |= ends(&credential, &event);
        if sender.send(Ok(event_message(&event))).await.is_err() {
            return;
        }
    }
    if sender.send(Ok(checkpoint(caught_up))).await.is_err() {
        return;
    }
    let mut heartbeat =
        tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
    let ended = loop {
        if credential_ended {
            break Status::unavailable(CREDENTIAL_ENDED);
        }
        let message = tokio::select! {
            received = live.recv() => match received {
                Ok(Broadcast::Event(event)) if event.sequence() > caught_up => {
                    caught_up = event.sequence();
                    credential_ended = ends(&credential, &event);
                    event_message(&event)
                }
                Ok(Broadcast::Event(_)) => continue,
                Ok(Broadcast::Lost) => {
                    break Status::unavailable("this server lost the revocation feed: resubscribe")
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    break Status::unavailable("subscriber fell behind: resubscribe from the last sequence")
                }
                Err(broadcast::error::RecvError::Closed) => {
                    break Status::unavailable("server shutting down")
                }
            },
            _ = heartbeat.tick() => checkpoint(caught_up),
            _ = closing.wait_for(|closing| *closing) => break Status::unavailable("server shutting down"),
            () = &mut expiry => break Status::unavailable(CREDENTIAL_ENDED),
            () = sender.closed() => return,
        };
        heartbeat.reset();
        if sender.send(Ok(message)).await.is_err() {
            return;
        }
    };
    let _ = sender.send(Err(ended)).await;
}

/// Whether `event` may have ended the service token the stream was opened with (its
/// revocation, a change of its account, or a reset that could hide either).
fn ends(credential: &Option<(ServiceCaller, tokio::time::Instant)>, event: &FeedEvent) -> bool {
    let Some((caller, _)) = credential else {
        return false;
    };
    match event {
        FeedEvent::Changed {
            change: Change::Token(hash),
            ..
        } => *hash == caller.token_hash,
        FeedEvent::Changed {
            change: Change::User(user_id),
            ..
        } => *user_id == caller.user_id,
        FeedEvent::Reset { .. } => true,
    }
}

fn checkpoint(sequence: i64) -> pb::RevocationEvent {
    pb::RevocationEvent {
        sequence: wire_sequence(sequence),
        change: None,
    }
}

fn event_message(event: &FeedEvent) -> pb::RevocationEvent {
    let change = match event {
        FeedEvent::Changed {
            change: Change::Token(hash),
            ..
        } => PbChange::TokenHash(hash.to_vec()),
        FeedEvent::Changed {
            change: Change::User(user_id),
            ..
        } => PbChange::UserId(user_id.clone()),
        FeedEvent::Reset { .. } => PbChange::Reset(true),
    };
    pb::RevocationEvent {
        sequence: wire_sequence(event.sequence()),
        change: Some(change),
    }
}

/// Log sequences start at 1 and only grow.
fn wire_sequence(sequence: i64) -> u64 {
    u64::try_from(sequence).unwrap_or(0)
}

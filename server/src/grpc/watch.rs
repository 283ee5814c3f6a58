//! `WatchRevocations`: a subscriber's stream. The replay from the log, a checkpoint, then
//! live events as the follower applies them, with a checkpoint every
//! [`HEARTBEAT`] so a client can tell a quiet stream from a dead one.
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use st_peter_proto::auth::v1 as pb;
use st_peter_proto::auth::v1::revocation_event::Change as PbChange;

use crate::domain::app::StPeter;
use crate::revocation::{Broadcast, FeedEvent, Subscription};
use crate::store::Change;

/// A checkpoint this often while nothing else is sent. Clients treat a stream silent for
/// three of these as dead.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

pub type EventStream = ReceiverStream<Result<pb::RevocationEvent, Status>>;

/// Subscribes and hands the stream to a task that feeds it until the subscriber leaves,
/// the server loses its feed, or a shutdown begins.
pub async fn watch(app: &Arc<StPeter>, after_sequence: u64) -> Result<EventStream, Status> {
    let feed = app.revocations();
    let subscription = feed
        .subscribe(app.store.as_ref(), after_sequence)
        .await
        .map_err(super::status)?;
    let (sender, receiver) = mpsc::channel(64);
    tokio::spawn(pump(subscription, sender, feed.closing()));
    Ok(ReceiverStream::new(receiver))
}

async fn pump(
    subscription: Subscription,
    sender: mpsc::Sender<Result<pb::RevocationEvent, Status>>,
    mut closing: tokio::sync::watch::Receiver<bool>,
) {
    let Subscription {
        backlog,
        mut caught_up,
        mut live,
    } = subscription;
    for event in backlog {
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
        let message = tokio::select! {
            received = live.recv() => match received {
                Ok(Broadcast::Event(event)) if event.sequence() > caught_up => {
                    caught_up = event.sequence();
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
            () = sender.closed() => return,
        };
        heartbeat.reset();
        if sender.send(Ok(message)).await.is_err() {
            return;
        }
    };
    let _ = sender.send(Err(ended)).await;
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

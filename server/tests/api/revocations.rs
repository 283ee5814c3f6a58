//! The revocation feed: the server's verification cache and `WatchRevocations`, on the
//! backend under test (SQLite, or PostgreSQL in the PostgreSQL pass), plus what needs
//! PostgreSQL itself (a second replica, the `LISTEN` connection) or SQLite with the admin
//! CLI in another process.
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use sha2::{Digest, Sha256};
use st_peter_proto::auth::v1 as pb;
use st_peter_proto::auth::v1::revocation_event::Change;
use st_peter_server::domain::app::Caller;
use st_peter_testkit::TestServer;
use tokio::sync::Mutex;
use tonic::Code;

use crate::helpers::{
    REVOCATION_BOUND, admin, capture_logs, create_postgres_database, database_url, postgres_url,
    refused_within, remember_secret, required_postgres_url, spawn_app, sqlite_database_url,
    start_server, token, verify,
};

type Events = tonic::Streaming<pb::RevocationEvent>;

async fn watch(client: &mut crate::helpers::Client, after_sequence: u64) -> Events {
    client
        .watch_revocations(pb::WatchRevocationsRequest { after_sequence })
        .await
        .unwrap()
        .into_inner()
}

/// The next event, within a bound that only a broken feed misses.
async fn next(events: &mut Events) -> pb::RevocationEvent {
    tokio::time::timeout(Duration::from_secs(10), events.message())
        .await
        .expect("no revocation event within 10 s")
        .expect("the stream failed")
        .expect("the stream ended")
}

/// The next event that is not a checkpoint.
async fn next_change(events: &mut Events) -> (u64, Change) {
    loop {
        let event = next(events).await;
        if let Some(change) = event.change {
            return (event.sequence, change);
        }
    }
}

fn hash_of(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// An in-process server whose verify lookups are counted, on `database_url` (or a temp
/// SQLite file).
async fn observed_server(database_url: Option<String>) -> TestServer {
    capture_logs();
    let mut builder = TestServer::builder().observe_store();
    if let Some(url) = database_url {
        builder = builder.database_url(url);
    }
    builder.start().await
}

/// An observed server on the backend under test, caught up with its log, with a client
/// and a session of alice's.
async fn observed_session() -> (
    TestServer,
    Arc<st_peter_testkit::ObservedStore>,
    crate::helpers::Client,
    String,
) {
    let server = observed_server(backend_database().await).await;
    let observed = server.observed.clone().unwrap();
    server
        .add_user("alice", "alice keeps bees in the orchard")
        .await;
    let mut client = server.grpc_client().await;
    let token = token(&mut client, "alice", "alice keeps bees in the orchard").await;
    caught_up(&server).await;
    (server, observed, client, token)
}

/// Waits until the server follows the log (its cache answers).
async fn caught_up(server: &TestServer) {
    let start = Instant::now();
    while !server.app.revocations().is_caught_up() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the feed never caught up"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A database on the backend under test, for servers started here.
async fn backend_database() -> Option<String> {
    match postgres_url() {
        Some(server) => Some(create_postgres_database(&server).await),
        None => None,
    }
}

#[tokio::test]
async fn every_revoking_change_is_streamed_in_commit_order_and_replayed_from_a_sequence() {
    let mut app = spawn_app().await;
    let alice = app
        .add_user("alice", "alice keeps bees in the orchard")
        .await;
    let bob = app.add_user("bob", "bob bakes rye on tuesdays").await;
    let first = app
        .token_for("alice", "alice keeps bees in the orchard")
        .await;
    let second = app
        .token_for("alice", "alice keeps bees in the orchard")
        .await;
    app.token_for("bob", "bob bakes rye on tuesdays").await;

    let mut events = watch(&mut app.client, 0).await;
    let start = next(&mut events).await;
    assert_eq!(
        start.change, None,
        "a stream from now opens with a checkpoint"
    );

    app.client
        .logout(pb::LogoutRequest {
            token: first.clone(),
        })
        .await
        .unwrap();
    app.app.grant_role("alice", "baker").await.unwrap();
    app.app.revoke_role("alice", "baker").await.unwrap();
    app.app.set_disabled("bob", true).await.unwrap();
    app.app
        .revoke_all_sessions(&Caller::CLI, &alice.user_id)
        .await
        .unwrap();
    // Changes that change nothing log nothing: an unknown token, a role not held.
    app.app.revoke_token(&Caller::CLI, &first).await.unwrap();
    app.app.revoke_role("alice", "baker").await.unwrap();

    let expected = [
        Change::TokenHash(hash_of(&first)),
        Change::UserId(alice.user_id.clone()),
        Change::UserId(alice.user_id.clone()),
        Change::UserId(bob.user_id.clone()),
        Change::UserId(alice.user_id.clone()),
    ];
    let mut seen = Vec::new();
    for want in &expected {
        let (sequence, change) = next_change(&mut events).await;
        assert_eq!(&change, want, "after {seen:?}");
        assert!(seen.last().is_none_or(|&(last, _)| sequence > last));
        seen.push((sequence, change));
    }
    assert!(start.sequence < seen[0].0);
    // The second session went with "all of alice's": verified as revoked.
    let status = verify(&mut app.client, &second).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    // The stream is cut; changes happen meanwhile; a new one from the second event's
    // sequence replays exactly what came after it, then checkpoints at the newest.
    drop(events);
    app.app.grant_role("alice", "oven").await.unwrap();
    let mut resumed = watch(&mut app.client, seen[1].0).await;
    for &(sequence, ref change) in &seen[2..] {
        let event = next(&mut resumed).await;
        assert_eq!(
            (event.sequence, event.change.as_ref()),
            (sequence, Some(change))
        );
    }
    let (oven, change) = next_change(&mut resumed).await;
    assert_eq!(change, Change::UserId(alice.user_id.clone()));
    let checkpoint = next(&mut resumed).await;
    assert_eq!((checkpoint.sequence, checkpoint.change), (oven, None));

    // A sequence this log never had (another database's): reset, then the checkpoint.
    let mut foreign = watch(&mut app.client, oven + 1000).await;
    let event = next(&mut foreign).await;
    assert_eq!(event.change, Some(Change::Reset(true)));
    assert_eq!(event.sequence, oven);
    assert_eq!(next(&mut foreign).await.change, None);
}

#[tokio::test]
async fn a_subscriber_whose_sequence_was_pruned_is_told_to_reset() {
    let mut app = spawn_app().await;
    app.add_user("alice", "alice keeps bees in the orchard")
        .await;
    for role in ["a", "b", "c"] {
        app.app.grant_role("alice", role).await.unwrap();
    }
    let bounds = app.store.revocation_log_bounds().await.unwrap().unwrap();
    let head = u64::try_from(bounds.newest).unwrap();
    assert!(
        bounds.newest - bounds.oldest >= 2,
        "three grants logged: {bounds:?}"
    );

    // Past the log's retention the purge deletes every row but the newest.
    app.advance(st_peter_server::revocation::LOG_RETENTION + Duration::from_secs(60));
    app.app.purge_expired().await.unwrap();

    let mut stale = watch(&mut app.client, head - 2).await;
    let event = next(&mut stale).await;
    assert_eq!(event.change, Some(Change::Reset(true)), "{event:?}");
    assert_eq!(event.sequence, head);
    // The newest row is kept, so a subscriber that had seen it resumes without a reset.
    let mut current = watch(&mut app.client, head).await;
    assert_eq!(
        next(&mut current).await,
        pb::RevocationEvent {
            sequence: head,
            change: None
        }
    );
}

#[tokio::test]
async fn repeated_verifies_are_answered_from_the_cache_and_revocations_evict_them() {
    // The follower has caught up: from now on one lookup serves every verify.
    let (server, observed, mut client, token) = observed_session().await;
    let before = observed.lookups();
    for _ in 0..100 {
        verify(&mut client, &token).await.unwrap();
    }
    assert_eq!(
        observed.lookups() - before,
        1,
        "cached answers made queries"
    );

    // A role grant evicts the user's answers: the next verify reads the new roles.
    server.app.grant_role("alice", "baker").await.unwrap();
    assert_eq!(verify(&mut client, &token).await.unwrap().roles, ["baker"]);
    assert_eq!(observed.lookups() - before, 2);

    client
        .logout(pb::LogoutRequest {
            token: token.clone(),
        })
        .await
        .unwrap();
    let status = verify(&mut client, &token).await.unwrap_err();
    assert_eq!(
        status.code(),
        Code::Unauthenticated,
        "logout answered from the cache"
    );
}

#[tokio::test]
async fn an_answer_read_before_a_logout_but_delivered_after_it_is_not_cached() {
    let (_server, observed, mut client, token) = observed_session().await;

    // A verify reads the live session, and is held before it can cache the answer...
    let mut held = observed.hold_next_lookup();
    let racing = tokio::spawn({
        let mut client = client.clone();
        let token = token.clone();
        async move { verify(&mut client, &token).await }
    });
    held.reached().await;
    // ...while the logout commits and evicts.
    client
        .logout(pb::LogoutRequest {
            token: token.clone(),
        })
        .await
        .unwrap();
    held.release();
    // The racing caller gets what was true when it asked; the cache keeps nothing of it.
    racing.await.unwrap().expect("read before the logout");
    let status = verify(&mut client, &token).await.unwrap_err();
    assert_eq!(
        status.code(),
        Code::Unauthenticated,
        "the racing fill survived"
    );
}

/// Many verifies on two servers of one database while random tokens are revoked through
/// either: no answer "valid" for a verify that started later than the revocation's
/// acknowledgement plus the bound.
#[tokio::test]
async fn no_revoked_token_is_answered_valid_past_the_bound_under_churn() {
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(dir.path());
    let servers = [
        observed_server(Some(url.clone())).await,
        observed_server(Some(url.clone())).await,
    ];
    servers[0]
        .add_user("alice", "alice keeps bees in the orchard")
        .await;
    let mut clients = Vec::new();
    for server in &servers {
        clients.push(server.grpc_client().await);
    }
    let mut tokens = Vec::new();
    for i in 0..40 {
        tokens.push(
            token(
                &mut clients[i % 2].clone(),
                "alice",
                "alice keeps bees in the orchard",
            )
            .await,
        );
    }
    let tokens = Arc::new(tokens);
    // Token index → when its revocation was acknowledged.
    let revoked: Arc<Mutex<HashMap<usize, Instant>>> = Arc::default();
    let running = Arc::new(AtomicBool::new(true));

    let mut verifiers = Vec::new();
    for caller in 0..8 {
        let mut client = clients[caller % 2].clone();
        let (tokens, revoked, running) = (tokens.clone(), revoked.clone(), running.clone());
        verifiers.push(tokio::spawn(async move {
            let (mut calls, mut stale) = (0u64, Vec::new());
            while running.load(Ordering::SeqCst) {
                let index = rand::thread_rng().gen_range(0..tokens.len());
                let started = Instant::now();
                let answer = verify(&mut client, &tokens[index]).await;
                calls += 1;
                match answer {
                    Ok(_) => {
                        if let Some(&acked) = revoked.lock().await.get(&index) {
                            if started > acked + REVOCATION_BOUND {
                                stale.push((index, started - acked));
                            }
                        }
                    }
                    Err(status) => assert_eq!(status.code(), Code::Unauthenticated),
                }
            }
            (calls, stale)
        }));
    }

    let mut order: Vec<usize> = (0..tokens.len()).collect();
    rand::seq::SliceRandom::shuffle(&mut order[..], &mut rand::thread_rng());
    for (n, &index) in order.iter().take(30).enumerate() {
        tokio::time::sleep(Duration::from_millis(rand::thread_rng().gen_range(5..40))).await;
        clients[n % 2]
            .clone()
            .logout(pb::LogoutRequest {
                token: tokens[index].clone(),
            })
            .await
            .unwrap();
        revoked.lock().await.insert(index, Instant::now());
    }
    // Keep verifying past the bound of the last revocation.
    tokio::time::sleep(REVOCATION_BOUND + Duration::from_millis(500)).await;
    running.store(false, Ordering::SeqCst);
    let (mut calls, mut stale) = (0, Vec::new());
    for verifier in verifiers {
        let (n, s) = verifier.await.unwrap();
        calls += n;
        stale.extend(s);
    }
    let lookups: u64 = servers
        .iter()
        .map(|s| s.observed.as_ref().unwrap().lookups())
        .sum();
    println!(
        "churn: {calls} verifies ({lookups} reached the database), {} revocations, {} stale",
        revoked.lock().await.len(),
        stale.len()
    );
    assert!(calls > 200, "too little traffic: {calls}");
    assert!(lookups < calls, "nothing was answered from the caches");
    assert_eq!(stale, [], "revoked tokens answered valid past the bound");
    for (index, token) in tokens.iter().enumerate() {
        if revoked.lock().await.contains_key(&index) {
            for client in &mut clients {
                let status = verify(client, token).await.unwrap_err();
                assert_eq!(status.code(), Code::Unauthenticated);
            }
        }
    }
}

/// The admin CLI writes the SQLite file from another process: the running server finds the
/// change in the log, evicts its cached answer and tells its subscribers.
#[tokio::test]
async fn a_cli_revocation_reaches_a_running_sqlite_server_and_its_subscribers() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_database_url(dir.path());
    crate::helpers::add_user_with_cli(&url, "alice", "alice keeps bees in the orchard");
    let server = start_server(&url);
    let mut client = server.grpc_client().await;
    let token = token(&mut client, "alice", "alice keeps bees in the orchard").await;
    verify(&mut client, &token).await.unwrap();
    let mut events = watch(&mut client, 0).await;
    next(&mut events).await;

    admin(
        &url,
        &["session", "revoke", "--token-stdin"],
        &format!("{token}\n"),
    );
    let acked = Instant::now();
    let took = refused_within(&mut client, &token, REVOCATION_BOUND).await;
    let (_, change) = next_change(&mut events).await;
    assert_eq!(change, Change::TokenHash(hash_of(&token)));
    println!(
        "CLI revoke refused by the server {took:?} after the CLI exited; event after {:?}",
        acked.elapsed()
    );
}

/// Lets the test hold PostgreSQL connections off while it looks at a server that lost its
/// `LISTEN` connection (the follower cannot reconnect), and lets them in again.
async fn allow_connections(server_url: &str, database: &str, allow: bool) {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(server_url).await.unwrap();
    sqlx::query(&format!(
        "ALTER DATABASE {database} WITH ALLOW_CONNECTIONS {allow}"
    ))
    .execute(&mut admin)
    .await
    .unwrap();
}

#[tokio::test]
#[ignore = "needs PostgreSQL: runs in the PostgreSQL pass (scripts/pg.sh run -- cargo test -p st-peter-server --test api -- --include-ignored)"]
async fn a_server_that_lost_its_listen_connection_verifies_from_the_store_until_it_caught_up() {
    use sqlx::Connection;
    let cluster = required_postgres_url();
    let url = create_postgres_database(&cluster).await;
    let database = url.rsplit_once('/').unwrap().1.to_owned();
    let server = observed_server(Some(url.clone())).await;
    let observed = server.observed.clone().unwrap();
    server
        .add_user("alice", "alice keeps bees in the orchard")
        .await;
    let mut client = server.grpc_client().await;
    let kept = token(&mut client, "alice", "alice keeps bees in the orchard").await;
    let revoked_elsewhere = token(&mut client, "alice", "alice keeps bees in the orchard").await;
    caught_up(&server).await;
    verify(&mut client, &kept).await.unwrap();
    verify(&mut client, &revoked_elsewhere).await.unwrap();
    let mut events = watch(&mut client, 0).await;
    next(&mut events).await;

    // No new connection may open; then the follower's LISTEN connection is killed.
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    allow_connections(&cluster, &database, false).await;
    let terminated: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'LISTEN %'",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert_eq!(terminated, [true], "one listening connection");

    // Subscribers are cut off at once, and refused while the server is behind.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the stream went on after the feed was lost");
    assert_eq!(ended.unwrap_err().code(), Code::Unavailable);
    let refused = client
        .watch_revocations(pb::WatchRevocationsRequest { after_sequence: 0 })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");

    // Meanwhile "another replica" revokes a session (same statements, through the log):
    // this server hears nothing of it, yet must not answer from its cache.
    let mut tx = db.begin().await.unwrap();
    sqlx::query("UPDATE sessions SET revoked_at = 1 WHERE token_hash = $1")
        .bind(hash_of(&revoked_elsewhere))
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("INSERT INTO revocations (token_hash, created_at) VALUES ($1, 1)")
        .bind(hash_of(&revoked_elsewhere))
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let before = observed.lookups();
    let status = verify(&mut client, &revoked_elsewhere).await.unwrap_err();
    assert_eq!(
        status.code(),
        Code::Unauthenticated,
        "answered from the cache"
    );
    verify(&mut client, &kept).await.unwrap();
    verify(&mut client, &kept).await.unwrap();
    assert_eq!(
        observed.lookups() - before,
        3,
        "the cache answered while behind"
    );

    // Connections allowed again: the follower reconnects, applies the row it missed, and
    // the cache answers again.
    allow_connections(&cluster, &database, true).await;
    caught_up(&server).await;
    let mut resumed = watch(&mut client, 0).await;
    next(&mut resumed).await;
    verify(&mut client, &kept).await.unwrap();
    let before = observed.lookups();
    verify(&mut client, &kept).await.unwrap();
    assert_eq!(observed.lookups(), before, "the cache did not come back");
    let status = verify(&mut client, &revoked_elsewhere).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    remember_secret(&kept);
}

/// Revocation streams never finish by themselves: a shutdown ends them (UNAVAILABLE, so
/// clients resubscribe elsewhere or later) instead of waiting out its grace for them.
#[tokio::test]
async fn a_shutdown_ends_open_revocation_streams_instead_of_waiting_out_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(dir.path());
    let mut server = crate::helpers::start_server_with(&url, &["--shutdown-grace", "60s"]);
    let mut client = server.grpc_client().await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut events = watch(&mut client, 0).await;
        next(&mut events).await;
        streams.push(events);
    }
    server.send_sigterm();
    let signalled = Instant::now();
    for mut events in streams {
        let ended = tokio::time::timeout(Duration::from_secs(30), events.message())
            .await
            .expect("a stream outlived the shutdown");
        assert_eq!(ended.unwrap_err().code(), Code::Unavailable);
    }
    let status = loop {
        if let Some(status) = server.try_wait() {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(30),
            "still running: waiting out the grace for the streams"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
    println!(
        "exited {:?} after SIGTERM with 3 streams open",
        signalled.elapsed()
    );
}

//! The revocation feed against the real server: a revocation made anywhere evicts this
//! client's cached answer, with `cache_ttl` and `fallback_ttl` so long (and the client's
//! clock standing still) that nothing but the feed can explain a refusal.
use std::sync::Arc;
use std::time::Duration;

use st_peter_client::Client;
use st_peter_testkit::{ServerProcess, st_peter_binary};

use crate::helpers::{
    StillClock, TestServer, add_user, admin, eventually, login, refused, subscribe,
};

const LONG: Duration = Duration::from_secs(10 * 60);

/// A client that keeps answers `LONG` subscribed or not, on a clock that stands still.
fn caching_client(target: String, clock: Arc<StillClock>) -> Client {
    Client::builder(target)
        .cache_ttl(LONG)
        .fallback_ttl(LONG)
        .clock(clock)
        .connect_timeout(Duration::from_secs(1))
        .request_timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

/// Another path to the server: no cache, so no feed either.
fn uncached_client(target: String) -> Client {
    Client::builder(target)
        .cache_ttl(Duration::ZERO)
        .invalid_token_ttl(Duration::ZERO)
        .build()
        .unwrap()
}

async fn start_process() -> ServerProcess {
    let server = ServerProcess::builder(st_peter_binary())
        .start_async()
        .await
        .unwrap();
    add_user(&server, "cashier", "knock knock, who goes there");
    server
}

/// Revokes one session with the admin CLI on the server's database.
fn revoke_with_cli(server: &ServerProcess, token: &str) {
    admin(
        server,
        &["session", "revoke", "--token-stdin"],
        &format!("{token}\n"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_logged_out_through_another_client_is_refused_by_the_feed() {
    let server = TestServer::start().await;
    server
        .add_user("cashier", "knock knock, who goes there")
        .await;
    let caching = caching_client(server.target(), StillClock::new());
    let other = uncached_client(server.target());
    let token = login(&other, "cashier", "knock knock, who goes there").await;
    subscribe(&caching).await;

    caching.verify_token(&token).await.unwrap();
    let before = server.verifies();
    caching.verify_token(&token).await.unwrap();
    assert_eq!(server.verifies(), before, "the answer is cached");

    other.logout(&token).await.unwrap();
    let took = refused(&caching, &token).await;
    println!("a logout through another client was refused here after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_granted_with_the_cli_changes_the_cached_roles() {
    let server = start_process().await;
    let caching = caching_client(server.target(), StillClock::new());
    let token = login(&caching, "cashier", "knock knock, who goes there").await;
    subscribe(&caching).await;
    assert!(caching.verify_token(&token).await.unwrap().roles.is_empty());

    admin(&server, &["user", "role", "grant", "cashier", "admin"], "");
    let took = eventually("the cached roles changed", || async {
        caching.verify_token(&token).await.unwrap().roles == ["admin"]
    })
    .await;
    println!("a role granted with the admin CLI reached the cached answer after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_stream_resumes_from_its_sequence_and_the_replay_evicts() {
    let mut server = start_process().await;
    let caching = caching_client(server.target(), StillClock::new());
    let other = uncached_client(server.target());
    subscribe(&caching).await;
    // A first event, so the client has a sequence to resume from (0 would be "from now",
    // whose first checkpoint clears everything: no proof of a replay).
    other
        .logout(&login(&other, "cashier", "knock knock, who goes there").await)
        .await
        .unwrap();
    eventually("a first sequence", || async {
        caching.feed_status().last_sequence > 0
    })
    .await;
    let seen = caching.feed_status().last_sequence;
    let revoked = login(&other, "cashier", "knock knock, who goes there").await;
    let kept = login(&other, "cashier", "knock knock, who goes there").await;
    caching.verify_token(&revoked).await.unwrap();
    caching.verify_token(&kept).await.unwrap();

    assert!(server.terminate().await.success());
    eventually("the stream ended", || async {
        !caching.feed_status().subscribed
    })
    .await;
    revoke_with_cli(&server, &revoked);
    // Down, and the fallback TTL is long: the cache still vouches for it.
    caching.verify_token(&revoked).await.unwrap();
    server.restart().await;

    let took = refused(&caching, &revoked).await;
    println!("a session revoked while st-peter was down was refused {took:?} after its restart");
    let status = caching.feed_status();
    assert!(status.subscriptions >= 2, "{status:?}");
    assert!(status.last_sequence > seen, "{status:?}");

    // A replay, not a reset: the other answer is still cached (served with st-peter down).
    assert!(server.terminate().await.success());
    assert_eq!(
        caching.verify_token(&kept).await.unwrap().user.handle,
        "cashier"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_on_a_new_database_resets_the_cache() {
    let mut server = start_process().await;
    let caching = caching_client(server.target(), StillClock::new());
    let other = uncached_client(server.target());
    subscribe(&caching).await;
    other
        .logout(&login(&other, "cashier", "knock knock, who goes there").await)
        .await
        .unwrap();
    eventually("a first sequence", || async {
        caching.feed_status().last_sequence > 0
    })
    .await;
    let token = login(&other, "cashier", "knock knock, who goes there").await;
    caching.verify_token(&token).await.unwrap();

    // The same port, a new empty database: the client's sequence is from another log.
    assert!(server.terminate().await.success());
    let file = server
        .database_url()
        .trim_start_matches("sqlite://")
        .to_owned();
    let (dir, name) = file.rsplit_once('/').unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(name)
        {
            std::fs::remove_file(path).unwrap();
        }
    }
    server.restart().await;

    // Only a reset evicts it: the new database never revoked it, and the TTLs are long.
    let took = refused(&caching, &token).await;
    println!("a restart on a new database reset the cache after {took:?}");
    assert_eq!(
        caching.cached_answers().await,
        1,
        "only the refusal is cached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_st_peter_down_a_cached_answer_serves_for_the_fallback_ttl_only() {
    let mut server = start_process().await;
    let clock = StillClock::new();
    let fallback = Duration::from_millis(300);
    let client = Client::builder(server.target())
        .cache_ttl(LONG)
        .fallback_ttl(fallback)
        .clock(clock.clone())
        .connect_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let token = login(&client, "cashier", "knock knock, who goes there").await;
    subscribe(&client).await;
    client.verify_token(&token).await.unwrap();

    assert!(server.terminate().await.success());
    eventually("the stream ended", || async {
        !client.feed_status().subscribed
    })
    .await;
    client.verify_token(&token).await.unwrap();
    clock.advance(fallback - Duration::from_millis(1));
    client.verify_token(&token).await.unwrap();
    clock.advance(Duration::from_millis(1));
    let err = client.verify_token(&token).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_verifies_of_many_tokens_open_one_stream() {
    let server = TestServer::start().await;
    server
        .add_user("cashier", "knock knock, who goes there")
        .await;
    let other = uncached_client(server.target());
    let mut tokens = Vec::new();
    for _ in 0..20 {
        tokens.push(login(&other, "cashier", "knock knock, who goes there").await);
    }
    // Right after its start the server refuses subscribers until its own feed has caught
    // up (the client then retries): wait for that, so one stream means one call.
    subscribe(&server.client()).await;
    let opened = server.counts.get("WatchRevocations");
    let client = server.client();
    assert_eq!(client.feed_status().subscriptions, 0, "not at construction");

    let verifies = (0..200).map(|n| {
        let (client, token) = (client.clone(), tokens[n % tokens.len()].clone());
        tokio::spawn(async move { client.verify_token(&token).await })
    });
    for verify in verifies.collect::<Vec<_>>() {
        verify.await.unwrap().unwrap();
    }
    eventually("subscribed", || async { client.feed_status().subscribed }).await;
    // A second client has a stream of its own.
    let second = server.client();
    subscribe(&second).await;

    assert_eq!(client.feed_status().subscriptions, 1);
    assert_eq!(second.feed_status().subscriptions, 1);
    assert_eq!(server.counts.get("WatchRevocations") - opened, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_outlives_the_request_timeout() {
    let server = TestServer::start().await;
    let client = server
        .client_builder()
        .request_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    subscribe(&client).await;
    let opened = client.feed_status().subscriptions;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = client.feed_status();
    assert!(status.subscribed, "{status:?}");
    assert_eq!(
        status.subscriptions, opened,
        "the stream was cut and reopened"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_clone_ends_the_stream() {
    let mut server = TestServer::start().await;
    let client = server.client();
    subscribe(&client).await;
    let opened = server.counts.get("WatchRevocations");
    let clone = client.clone();
    drop(client);
    // A clone keeps it: the stream is still open, so a shutdown has one to end.
    assert!(clone.feed_status().subscribed);
    drop(clone);

    // Were the stream still open, the server would end it as it stops and the client would
    // subscribe again within a second of it being back (backoff from 100 ms): it does not.
    server.stop().await;
    server.resume().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(server.counts.get("WatchRevocations"), opened);
}

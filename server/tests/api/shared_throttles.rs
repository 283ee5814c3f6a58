//! The attack tests against two replicas of one PostgreSQL database at once: the throttles
//! live in the database, so guesses spread over both replicas are locked after the same
//! number of attempts as on one (not twice as many), even when they race.
//!
//! Both replicas are the real server in-process, reading one manual clock and one TOTP key.
//! PostgreSQL only: ignored unless asked for (`--include-ignored`, as scripts/test.sh's
//! PostgreSQL pass does), and failing when asked for without a cluster.
use std::time::Duration;

use st_peter_proto::auth::v1 as pb;
use st_peter_proto::auth::v1::login_response::Result as Outcome;
use st_peter_server::clock::ManualClock;
use st_peter_server::domain::app::UserView;
use st_peter_testkit::TestServer;
use tonic::Code;

use crate::helpers::{
    Client, capture_logs, create_postgres_database, failed_reason, login, remember_secret,
    required_postgres_url, retry_after, second_factor, test_settings, token,
};

const PASSWORD: &str = "open sesame, said Ali Baba";

/// Two replicas of one fresh PostgreSQL database, one clock, one TOTP key.
struct Replicas {
    a: TestServer,
    /// Serves until dropped; reached through `clients[1]`.
    _b: TestServer,
    clients: [Client; 2],
    clock: ManualClock,
    database_url: String,
}

impl Replicas {
    async fn start() -> Self {
        capture_logs();
        let database_url = create_postgres_database(&required_postgres_url()).await;
        let clock = ManualClock::new();
        let settings = test_settings();
        let replica = || {
            TestServer::builder()
                .settings(settings.clone())
                .database_url(database_url.clone())
                .clock(clock.clone())
                .start()
        };
        let a = replica().await;
        let b = replica().await;
        assert!(
            a.app.shares_throttles() && b.app.shares_throttles(),
            "on PostgreSQL the throttles are the database's"
        );
        let clients = [a.grpc_client().await, b.grpc_client().await];
        remember_secret(PASSWORD);
        a.add_user("lead-baker", PASSWORD).await;
        Self {
            a,
            _b: b,
            clients,
            clock,
            database_url,
        }
    }

    /// Replica A for even `n`, B for odd.
    fn client(&self, n: usize) -> Client {
        self.clients[n % 2].clone()
    }

    /// A user who will flood lookups, and a session token of theirs.
    async fn scraper(&self) -> (UserView, String) {
        remember_secret("scraping every page it can");
        let user = self
            .a
            .add_user("scraper", "scraping every page it can")
            .await;
        let token = token(&mut self.client(0), "scraper", "scraping every page it can").await;
        (user, token)
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL: runs in the PostgreSQL pass (scripts/pg.sh run -- cargo test -p st-peter-server --test api -- --include-ignored)"]
async fn guesses_alternating_between_replicas_are_locked_as_on_one() {
    let replicas = Replicas::start().await;
    let mut throttled = 0;
    for attempt in 0..50 {
        let reply = login(
            &mut replicas.client(attempt),
            "lead-baker",
            &format!("guess-{attempt}"),
        )
        .await;
        match failed_reason(&reply) {
            pb::FailureReason::InvalidCredentials => {}
            pb::FailureReason::RateLimited => throttled += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    // As attacks::fifty_wrong_passwords_then_the_right_one on one server: five free
    // failures, the sixth starts the backoff. Per-replica throttles would allow twelve.
    assert_eq!(throttled, 50 - 6);

    // The right password during the backoff does not log in, on either replica, and both
    // give the same hint.
    let on_a = retry_after(&login(&mut replicas.client(0), "lead-baker", PASSWORD).await);
    let on_b = retry_after(&login(&mut replicas.client(1), "lead-baker", PASSWORD).await);
    assert_eq!(on_a, on_b);
    assert!(on_a > Duration::ZERO && on_a <= Duration::from_secs(5 * 60));

    // Once it has passed, the owner gets in through B, and a success on B forgives the
    // identifier for A too: a wrong guess on A is a plain failure again.
    replicas.clock.advance(on_b);
    assert!(matches!(
        login(&mut replicas.client(1), "lead-baker", PASSWORD).await,
        Outcome::Authenticated(_)
    ));
    assert_eq!(
        failed_reason(&login(&mut replicas.client(0), "lead-baker", "guess-again").await),
        pb::FailureReason::InvalidCredentials
    );
}

#[tokio::test]
#[ignore = "needs PostgreSQL: runs in the PostgreSQL pass (scripts/pg.sh run -- cargo test -p st-peter-server --test api -- --include-ignored)"]
async fn one_address_spraying_identifiers_over_both_replicas_is_throttled_as_on_one() {
    let replicas = Replicas::start().await;
    let mut replies = Vec::new();
    for n in 0..25 {
        replies.push(failed_reason(
            &login(&mut replicas.client(n), &format!("user-{n}"), "password1").await,
        ));
    }
    // As attacks::one_address_spraying_many_identifiers_is_throttled: twenty free failures
    // for the address, counted across both replicas.
    assert!(
        replies[..21]
            .iter()
            .all(|r| *r == pb::FailureReason::InvalidCredentials),
        "{replies:?}"
    );
    assert!(
        replies[21..]
            .iter()
            .all(|r| *r == pb::FailureReason::RateLimited),
        "{replies:?}"
    );
    for n in 0..2 {
        assert_eq!(
            failed_reason(&login(&mut replicas.client(n), "lead-baker", PASSWORD).await),
            pb::FailureReason::RateLimited,
            "the address waits on replica {n}"
        );
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL: runs in the PostgreSQL pass (scripts/pg.sh run -- cargo test -p st-peter-server --test api -- --include-ignored)"]
async fn guessing_a_second_factor_over_both_replicas_is_throttled_as_on_one() {
    let replicas = Replicas::start().await;
    let uri = replicas
        .a
        .app
        .enroll_totp("lead-baker")
        .await
        .unwrap()
        .otpauth_uri;
    remember_secret(&uri);
    let totp = totp_rs::TOTP::from_url(&uri).unwrap();
    let seconds = |clock: &ManualClock| {
        use st_peter_server::clock::Clock as _;
        (clock.now_millis() / 1000) as u64
    };
    let window: Vec<String> = (-1..=1)
        .map(|step: i64| totp.generate((seconds(&replicas.clock) as i64 + step * 30) as u64))
        .collect();
    let guesses: Vec<String> = (0..1_000_000)
        .map(|n| format!("{n:06}"))
        .filter(|c| !window.contains(c))
        .take(30)
        .collect();
    let challenge = match login(&mut replicas.client(0), "lead-baker", PASSWORD).await {
        Outcome::TwoFactor(two_factor) => two_factor.two_factor_id,
        other => panic!("expected two_factor, got {other:?}"),
    };

    // Per challenge: two free failures, the third starts the backoff, whichever replica
    // each guess goes to.
    let mut reasons = Vec::new();
    for (n, guess) in guesses.iter().take(10).enumerate() {
        reasons.push(failed_reason(
            &second_factor(&mut replicas.client(n), &challenge, guess).await,
        ));
    }
    assert_eq!(reasons[..3], [pb::FailureReason::InvalidCode; 3]);
    assert!(
        reasons[3..]
            .iter()
            .all(|r| *r == pb::FailureReason::RateLimited),
        "{reasons:?}"
    );

    // Per user, across fresh challenges: five free failures in all (three already spent on
    // the first challenge), the sixth starts the backoff; then both replicas refuse the
    // user's guesses, even on a challenge never guessed before.
    let mut per_user = Vec::new();
    for (n, guess) in guesses[10..13].iter().enumerate() {
        let challenge = match login(&mut replicas.client(n + 1), "lead-baker", PASSWORD).await {
            Outcome::TwoFactor(two_factor) => two_factor.two_factor_id,
            other => panic!("expected two_factor, got {other:?}"),
        };
        per_user.push(failed_reason(
            &second_factor(&mut replicas.client(n), &challenge, guess).await,
        ));
    }
    assert_eq!(per_user, [pb::FailureReason::InvalidCode; 3]);
    let fresh = match login(&mut replicas.client(1), "lead-baker", PASSWORD).await {
        Outcome::TwoFactor(two_factor) => two_factor.two_factor_id,
        other => panic!("expected two_factor, got {other:?}"),
    };
    for n in 0..2 {
        assert_eq!(
            failed_reason(&second_factor(&mut replicas.client(n), &fresh, &guesses[20]).await),
            pb::FailureReason::RateLimited,
            "replica {n}"
        );
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL: runs in the PostgreSQL pass (scripts/pg.sh run -- cargo test -p st-peter-server --test api -- --include-ignored)"]
async fn a_lookup_flood_over_both_replicas_gets_one_burst() {
    let replicas = Replicas::start().await;
    let (flooder, flooder_token) = replicas.scraper().await;
    let mut answered = 0;
    let mut refused = Vec::new();
    for n in 0..100 {
        let reply = replicas
            .client(n)
            .lookup_user(pb::LookupUserRequest {
                actor_id: flooder.user_id.clone(),
                actor_token: flooder_token.clone(),
                identifier: "lead-baker".into(),
            })
            .await;
        match reply {
            Ok(_) => answered += 1,
            Err(status) => refused.push(status),
        }
    }
    // As attacks::a_lookup_flood_by_one_actor_is_rate_limited: one burst of 20 in all.
    assert_eq!(answered, 20, "one burst shared by both replicas");
    assert!(refused.iter().all(|s| s.code() == Code::ResourceExhausted));
    assert!(
        refused[0].message().contains("retry after 1 s"),
        "{}",
        refused[0].message()
    );

    // The bucket refills with the shared clock: one more a second, on either replica.
    replicas.clock.advance(Duration::from_secs(1));
    for n in 0..2 {
        let reply = replicas
            .client(n)
            .lookup_user(pb::LookupUserRequest {
                actor_id: flooder.user_id.clone(),
                actor_token: flooder_token.clone(),
                identifier: "lead-baker".into(),
            })
            .await;
        assert_eq!(reply.is_ok(), n == 0, "replica {n}: {reply:?}");
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL: runs in the PostgreSQL pass (scripts/pg.sh run -- cargo test -p st-peter-server --test api -- --include-ignored)"]
async fn racing_guesses_over_both_replicas_never_get_more_than_the_free_attempts() {
    let replicas = Replicas::start().await;
    // Forty wrong passwords at once, half through each replica: each is counted before its
    // hash, so no more are checked than one at a time would be (five free and the sixth
    // that starts the backoff).
    let mut guesses = tokio::task::JoinSet::new();
    for n in 0..40 {
        let mut client = replicas.client(n);
        guesses.spawn(async move { login(&mut client, "lead-baker", &format!("race-{n}")).await });
    }
    let replies = guesses.join_all().await;
    let checked = replies
        .iter()
        .filter(|r| failed_reason(r) == pb::FailureReason::InvalidCredentials)
        .count();
    let throttled = replies
        .iter()
        .filter(|r| failed_reason(r) == pb::FailureReason::RateLimited)
        .count();
    assert_eq!((checked, throttled), (6, 34), "{replies:?}");
}

#[tokio::test]
#[ignore = "needs PostgreSQL: runs in the PostgreSQL pass (scripts/pg.sh run -- cargo test -p st-peter-server --test api -- --include-ignored)"]
async fn a_throttle_the_database_cannot_decide_refuses_the_login() {
    let replicas = Replicas::start().await;
    assert!(matches!(
        login(&mut replicas.client(0), "lead-baker", PASSWORD).await,
        Outcome::Authenticated(_)
    ));
    // The throttle's table is gone: the login fails closed, as unavailable, on both
    // replicas, even with the right password.
    use sqlx::Connection as _;
    let mut admin = sqlx::PgConnection::connect(&replicas.database_url)
        .await
        .unwrap();
    sqlx::query("DROP TABLE throttle_backoffs")
        .execute(&mut admin)
        .await
        .unwrap();
    for n in 0..2 {
        let status = replicas
            .client(n)
            .login(pb::LoginRequest {
                identifier: "lead-baker".into(),
                password: PASSWORD.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "replica {n}: {status:?}");
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL: runs in the PostgreSQL pass (scripts/pg.sh run -- cargo test -p st-peter-server --test api -- --include-ignored)"]
async fn the_shared_rows_hold_no_key_in_clear_and_the_purge_deletes_the_spent_ones() {
    let replicas = Replicas::start().await;
    let (flooder, flooder_token) = replicas.scraper().await;
    replicas
        .client(1)
        .lookup_user(pb::LookupUserRequest {
            actor_id: flooder.user_id.clone(),
            actor_token: flooder_token,
            identifier: "lead-baker".into(),
        })
        .await
        .unwrap();
    for n in 0..3 {
        login(&mut replicas.client(n), "lead-baker", "not the password").await;
    }
    use sqlx::Connection as _;
    let mut db = sqlx::PgConnection::connect(&replicas.database_url)
        .await
        .unwrap();
    let rows = |table: &'static str| format!("SELECT key FROM {table}");
    let backoffs: Vec<Vec<u8>> = sqlx::query_scalar(&rows("throttle_backoffs"))
        .fetch_all(&mut db)
        .await
        .unwrap();
    let rates: Vec<Vec<u8>> = sqlx::query_scalar(&rows("throttle_rates"))
        .fetch_all(&mut db)
        .await
        .unwrap();
    // The identifier and the address; the actor.
    assert_eq!((backoffs.len(), rates.len()), (2, 1));
    for key in backoffs.iter().chain(&rates) {
        assert_eq!(key.len(), 32, "a SHA-256, not the key itself");
        for clear in [&b"lead-baker"[..], b"127.0.0.1", flooder.user_id.as_bytes()] {
            assert!(!key.windows(clear.len()).any(|w| w == clear));
        }
    }

    // Still deciding something: kept.
    replicas.a.app.purge_expired().await.unwrap();
    assert_eq!(remaining(&mut db).await, (2, 1));
    // Past the quiet spell that forgets failures and the longest wait: deleted.
    replicas.clock.advance(Duration::from_secs(20 * 60 + 1));
    replicas.a.app.purge_expired().await.unwrap();
    assert_eq!(remaining(&mut db).await, (0, 0));
}

/// Rows in the two throttle tables.
async fn remaining(db: &mut sqlx::PgConnection) -> (i64, i64) {
    let backoffs: i64 = sqlx::query_scalar("SELECT count(*) FROM throttle_backoffs")
        .fetch_one(&mut *db)
        .await
        .unwrap();
    let rates: i64 = sqlx::query_scalar("SELECT count(*) FROM throttle_rates")
        .fetch_one(&mut *db)
        .await
        .unwrap();
    (backoffs, rates)
}

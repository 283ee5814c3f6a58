//! Several replicas on one PostgreSQL database behave as one service: two real `st-peter`
//! processes, the same database and TOTP key, requests alternating between them.
//! PostgreSQL only: ignored unless asked for (`--include-ignored`, as scripts/test.sh's
//! PostgreSQL pass does), and failing when asked for without a cluster.
use st_peter_proto::auth::v1 as pb;

use crate::helpers::{
    REVOCATION_BOUND, add_user_with_cli, admin, create_postgres_database, login, refused_within,
    remember_secret, required_postgres_url, second_factor, start_server, verify,
};

use pb::login_response::Result as Outcome;

/// A fresh database on the test cluster; a test that needs one fails without it.
pub async fn postgres_database() -> String {
    create_postgres_database(&required_postgres_url()).await
}

#[tokio::test]
#[ignore = "needs PostgreSQL: runs in the PostgreSQL pass (scripts/pg.sh run -- cargo test -p st-peter-server --test api -- --include-ignored)"]
async fn a_session_from_one_replica_is_honoured_and_revoked_on_the_other() {
    let url = postgres_database().await;
    add_user_with_cli(&url, "cashier", "knock knock, who goes there");
    admin(&url, &["user", "role", "grant", "cashier", "till"], "");
    let (a, b) = (start_server(&url), start_server(&url));
    let (mut on_a, mut on_b) = (a.grpc_client().await, b.grpc_client().await);

    // A login on A verifies on B, with the roles the database holds.
    let Outcome::Authenticated(session) =
        login(&mut on_a, "cashier", "knock knock, who goes there").await
    else {
        panic!("expected authenticated");
    };
    let verified = verify(&mut on_b, &session.token).await.unwrap();
    assert_eq!(verified.user.unwrap().handle, "cashier");
    assert_eq!(verified.roles, ["till"]);

    // Logout on A: B, which has the answer cached, refuses the token within the bound
    // (the revocation feed evicts it).
    on_a.logout(pb::LogoutRequest {
        token: session.token.clone(),
    })
    .await
    .unwrap();
    let took = refused_within(&mut on_b, &session.token, REVOCATION_BOUND).await;
    println!("logout on A refused by B after {took:?}");

    // `session revoke` through A's database: B rejects the next VerifyToken too.
    let Outcome::Authenticated(other) =
        login(&mut on_a, "cashier", "knock knock, who goes there").await
    else {
        panic!("expected authenticated");
    };
    verify(&mut on_b, &other.token).await.unwrap();
    verify(&mut on_a, &other.token).await.unwrap();
    let revoked = admin(&url, &["session", "revoke", "--user", "cashier"], "");
    assert!(revoked.contains("revoked 1 session"), "{revoked}");
    refused_within(&mut on_b, &other.token, REVOCATION_BOUND).await;
    refused_within(&mut on_a, &other.token, REVOCATION_BOUND).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: runs in the PostgreSQL pass (scripts/pg.sh run -- cargo test -p st-peter-server --test api -- --include-ignored)"]
async fn two_factor_logins_span_replicas_and_a_code_is_accepted_once_across_them() {
    let url = postgres_database().await;
    add_user_with_cli(&url, "lead-baker", "open sesame, said Ali Baba");
    let enrollment: serde_json::Value = serde_json::from_str(&admin(
        &url,
        &["--json", "user", "totp", "enroll", "lead-baker"],
        "",
    ))
    .unwrap();
    let uri = enrollment["otpauth_uri"].as_str().unwrap();
    remember_secret(uri);
    let totp = totp_rs::TOTP::from_url(uri).unwrap();
    // The servers use the real clock: so do the codes.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let code = totp.generate(now);
    let next_code = totp.generate(now + 30);
    remember_secret(&code);
    remember_secret(&next_code);

    let (a, b) = (start_server(&url), start_server(&url));
    let (mut on_a, mut on_b) = (a.grpc_client().await, b.grpc_client().await);

    // A code accepted on A...
    let Outcome::TwoFactor(first) =
        login(&mut on_a, "lead-baker", "open sesame, said Ali Baba").await
    else {
        panic!("expected a two-factor challenge");
    };
    let Outcome::Authenticated(_) = second_factor(&mut on_a, &first.two_factor_id, &code).await
    else {
        panic!("the current code was refused on A");
    };
    // ...is refused as a replay on B.
    let Outcome::TwoFactor(replayed) =
        login(&mut on_b, "lead-baker", "open sesame, said Ali Baba").await
    else {
        panic!("expected a two-factor challenge");
    };
    let outcome = second_factor(&mut on_b, &replayed.two_factor_id, &code).await;
    let Outcome::Failed(failed) = outcome else {
        panic!("a used code was accepted again on B: {outcome:?}");
    };
    assert_eq!(failed.reason(), pb::FailureReason::InvalidCode);

    // A challenge started on A completes on B (with the next step's code, not used yet),
    // and the token it yields verifies on A.
    let Outcome::TwoFactor(started) =
        login(&mut on_a, "lead-baker", "open sesame, said Ali Baba").await
    else {
        panic!("expected a two-factor challenge");
    };
    let outcome = second_factor(&mut on_b, &started.two_factor_id, &next_code).await;
    let Outcome::Authenticated(session) = outcome else {
        panic!("a challenge from A did not complete on B: {outcome:?}");
    };
    remember_secret(&session.token);
    let verified = verify(&mut on_a, &session.token).await.unwrap();
    assert_eq!(verified.user.unwrap().handle, "lead-baker");
    // The challenge was consumed on B: A does not know it any more.
    let outcome = second_factor(&mut on_a, &started.two_factor_id, &next_code).await;
    let Outcome::Failed(failed) = outcome else {
        panic!("a consumed challenge was accepted on A: {outcome:?}");
    };
    assert_eq!(failed.reason(), pb::FailureReason::ChallengeExpired);
}

use st_peter_server::Caller;
use std::time::Duration;
use tonic::Code;

use st_peter_proto::auth::v1 as pb;

use crate::helpers::spawn_app;

#[tokio::test]
async fn verify_token_returns_the_user_and_their_roles() {
    let app = spawn_app().await;
    let user = app
        .add_user("lead-baker", "open sesame, said Ali Baba")
        .await;
    app.app
        .grant_role("lead-baker", "ovens:admin")
        .await
        .unwrap();
    app.app.grant_role("lead-baker", "admin").await.unwrap();
    let token = app
        .token_for("lead-baker", "open sesame, said Ali Baba")
        .await;

    let verified = app.verify(&token).await.unwrap();
    let got = verified.user.unwrap();
    assert_eq!(got.user_id, user.user_id);
    assert_eq!(got.handle, "lead-baker");
    assert_eq!(got.email, "lead-baker@bakery.example");
    assert!(!got.disabled);
    assert_eq!(verified.roles, vec!["admin", "ovens:admin"]);
    let expires = verified.expires_at.unwrap();
    let expected = (app.app_now() + 24 * 3600 * 1000) / 1000;
    assert_eq!(expires.seconds, expected);

    app.app.revoke_role("lead-baker", "admin").await.unwrap();
    assert_eq!(app.verify(&token).await.unwrap().roles, vec!["ovens:admin"]);
    app.stop().await;
}

#[tokio::test]
async fn an_expired_token_is_unauthenticated() {
    let app = spawn_app().await;
    app.add_user("cashier", "knock knock, who goes there").await;
    let token = app
        .token_for("cashier", "knock knock, who goes there")
        .await;
    app.clock.advance(Duration::from_secs(24 * 3600 - 1));
    app.verify(&token).await.unwrap();
    app.clock.advance(Duration::from_secs(1));
    let status = app.verify(&token).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    app.stop().await;
}

#[tokio::test]
async fn a_logged_out_token_is_unauthenticated_and_logout_is_idempotent() {
    let app = spawn_app().await;
    app.add_user("cashier", "knock knock, who goes there").await;
    let token = app
        .token_for("cashier", "knock knock, who goes there")
        .await;
    let other = app
        .token_for("cashier", "knock knock, who goes there")
        .await;
    let mut client = app.client.clone();
    for _ in 0..2 {
        client
            .logout(pb::LogoutRequest {
                token: token.clone(),
            })
            .await
            .unwrap();
    }
    assert_eq!(
        app.verify(&token).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    app.verify(&other).await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn revoking_all_sessions_of_a_user_ends_each_of_them() {
    let app = spawn_app().await;
    let user = app.add_user("cashier", "knock knock, who goes there").await;
    let first = app
        .token_for("cashier", "knock knock, who goes there")
        .await;
    let second = app
        .token_for("cashier", "knock knock, who goes there")
        .await;
    assert_eq!(
        app.app
            .revoke_all_sessions(&Caller::CLI, &user.user_id)
            .await
            .unwrap(),
        2
    );
    for token in [first, second] {
        assert_eq!(
            app.verify(&token).await.unwrap_err().code(),
            Code::Unauthenticated
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn tokens_that_were_never_issued_are_unauthenticated() {
    let app = spawn_app().await;
    for token in [
        "stp_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_owned(),
        "not-a-token".to_owned(),
        "Bearer stp_x".to_owned(),
    ] {
        let status = app.verify(&token).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{token}");
    }
    app.stop().await;
}

use st_peter_proto::auth::v1 as pb;
use st_peter_server::Caller;
use st_peter_server::domain::accounts::NewAccount;
use st_peter_server::domain::app::{Settings, StPeter};
use st_peter_server::secrets::password::PasswordParams;
use std::sync::Arc;
use tonic::Code;

use crate::helpers::{failed_reason, remember_secret, spawn_app, test_settings};

#[tokio::test]
async fn login_by_handle_email_in_any_case_and_phone() {
    let app = spawn_app().await;
    let created = app
        .app
        .create_user(NewAccount {
            handle: "Lead-Baker".into(),
            email: Some("Lead.Baker@Bakery.Example".into()),
            phone: Some("+1 (555) 010-0001".into()),
            display_name: Some("Lead Baker".into()),
            password: "open sesame, said Ali Baba".into(),
        })
        .await
        .unwrap();
    assert_eq!(created.handle, "lead-baker");
    assert_eq!(created.email.as_deref(), Some("lead.baker@bakery.example"));
    assert_eq!(created.phone.as_deref(), Some("+15550100001"));

    for identifier in [
        "lead-baker",
        "LEAD-BAKER",
        "lead.baker@bakery.example",
        "LEAD.Baker@BAKERY.example",
        "+15550100001",
        "+1 555 010 0001",
    ] {
        match app.login(identifier, "open sesame, said Ali Baba").await {
            pb::login_response::Result::Authenticated(auth) => {
                let user = auth.user.unwrap();
                assert_eq!(user.user_id, created.user_id, "{identifier}");
                assert_eq!(user.display_name, "Lead Baker");
                assert!(auth.token.starts_with("stp_"));
                assert!(auth.expires_at.unwrap().seconds > 0);
            }
            other => panic!("{identifier}: expected authenticated, got {other:?}"),
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn wrong_password_and_unknown_identifier_get_the_same_reply() {
    let app = spawn_app().await;
    app.add_user("cashier", "knock knock, who goes there").await;
    let wrong_password = app.login("cashier", "knock-knock").await;
    let unknown_user = app
        .login("nobody-here", "knock knock, who goes there")
        .await;
    let unknown_email = app
        .login("nobody@bakery.example", "knock knock, who goes there")
        .await;
    assert_eq!(
        failed_reason(&wrong_password),
        pb::FailureReason::InvalidCredentials
    );
    assert_eq!(wrong_password, unknown_user);
    assert_eq!(wrong_password, unknown_email);
    app.stop().await;
}

#[tokio::test]
async fn disabled_user_cannot_log_in_and_their_tokens_stop_verifying() {
    let app = spawn_app().await;
    app.add_user("cashier", "knock knock, who goes there").await;
    let token = app
        .token_for("cashier", "knock knock, who goes there")
        .await;
    app.verify(&token).await.unwrap();

    app.app.set_disabled("cashier", true).await.unwrap();
    let reply = app.login("cashier", "knock knock, who goes there").await;
    assert_eq!(failed_reason(&reply), pb::FailureReason::InvalidCredentials);
    let status = app.verify(&token).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    // Enabling lets them log in again, but does not resurrect the revoked session.
    app.app.set_disabled("cashier", false).await.unwrap();
    let fresh = app
        .token_for("cashier", "knock knock, who goes there")
        .await;
    app.verify(&fresh).await.unwrap();
    assert_eq!(
        app.verify(&token).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    app.stop().await;
}

#[tokio::test]
async fn hashes_made_with_old_parameters_are_upgraded_at_the_next_good_login() {
    let app = spawn_app().await;
    app.add_user("cashier", "knock knock, who goes there").await;
    let before = app.app.find_user("cashier").await.unwrap().password_hash;
    assert!(before.contains("m=64,t=1,p=1"), "{before}");

    let stronger = PasswordParams {
        memory_kib: 256,
        iterations: 2,
        parallelism: 1,
    };
    let upgraded = StPeter::new(
        app.app_store(),
        Arc::new(app.clock.clone()),
        Settings {
            password_params: stronger,
            ..test_settings()
        },
    )
    .unwrap();
    assert!(matches!(
        upgraded
            .login(&Caller::CLI, "cashier", "wrong-password")
            .await
            .unwrap(),
        st_peter_server::domain::sessions::LoginOutcome::Failed { .. }
    ));
    assert_eq!(
        upgraded.find_user("cashier").await.unwrap().password_hash,
        before
    );

    upgraded
        .login(&Caller::CLI, "cashier", "knock knock, who goes there")
        .await
        .unwrap();
    let after = upgraded.find_user("cashier").await.unwrap().password_hash;
    assert!(after.contains("m=256,t=2,p=1"), "{after}");
    // The old server's parameters still verify the new hash (PHC strings carry them).
    app.token_for("cashier", "knock knock, who goes there")
        .await;
    app.stop().await;
}

#[tokio::test]
async fn new_users_with_taken_identifiers_are_refused_and_nothing_is_written() {
    let app = spawn_app().await;
    app.add_user("cashier", "knock knock, who goes there").await;
    let err = app
        .app
        .create_user(NewAccount {
            handle: "other".into(),
            email: Some("CASHIER@bakery.example".into()),
            password: "knock knock, who goes there".into(),
            ..NewAccount::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "email: already taken by another user");
    assert_eq!(app.app.list_users().await.unwrap().len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_rehash_never_overwrites_a_password_changed_since_the_login_that_proved_the_old_one() {
    let app = spawn_app().await;
    let user = app.add_user("cashier", "knock knock, who goes there").await;
    let proved = app.app.find_user("cashier").await.unwrap().password_hash;
    // The password changes between a login's check and its rehash of the old password.
    remember_secret("till roll and a pencil");
    app.app
        .set_password("cashier", "till roll and a pencil", false)
        .await
        .unwrap();
    let rehash_of_old = proved.clone();
    let replaced = app
        .app_store()
        .rehash_password(&user.user_id, &proved, &rehash_of_old, app.app_now())
        .await
        .unwrap();
    assert!(!replaced);
    assert!(matches!(
        app.login("cashier", "till roll and a pencil").await,
        pb::login_response::Result::Authenticated(_)
    ));
    assert_eq!(
        failed_reason(&app.login("cashier", "knock knock, who goes there").await),
        pb::FailureReason::InvalidCredentials
    );
    app.stop().await;
}

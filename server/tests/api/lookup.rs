use tonic::Code;

use st_peter_proto::auth::v1 as pb;

use crate::helpers::{TestApp, spawn_app};

async fn lookup(
    app: &TestApp,
    actor_id: &str,
    actor_token: &str,
    identifier: &str,
) -> Result<pb::User, tonic::Status> {
    app.client
        .clone()
        .lookup_user(pb::LookupUserRequest {
            actor_id: actor_id.into(),
            actor_token: actor_token.into(),
            identifier: identifier.into(),
        })
        .await
        .map(|r| r.into_inner().user.unwrap())
}

#[tokio::test]
async fn a_valid_actor_resolves_email_handle_and_phone() {
    let app = spawn_app().await;
    let actor = app
        .add_user("shift-manager", "clipboard and a pencil stub")
        .await;
    let token = app
        .token_for("shift-manager", "clipboard and a pencil stub")
        .await;
    let baker = app
        .app
        .create_user(st_peter_server::domain::accounts::NewAccount {
            handle: "lead-baker".into(),
            email: Some("lead@bakery.example".into()),
            phone: Some("+15550100001".into()),
            password: "open sesame, said Ali Baba".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    for identifier in ["LEAD@bakery.example", "lead-baker", "+1 555 010 0001"] {
        let found = lookup(&app, &actor.user_id, &token, identifier)
            .await
            .unwrap();
        assert_eq!(found.user_id, baker.user_id, "{identifier}");
        assert_eq!(found.email, "lead@bakery.example");
    }
    app.stop().await;
}

#[tokio::test]
async fn an_actor_token_that_is_not_the_actors_own_is_unauthenticated() {
    let app = spawn_app().await;
    let actor = app
        .add_user("shift-manager", "clipboard and a pencil stub")
        .await;
    app.add_user("cashier", "knock knock, who goes there").await;
    let cashier_token = app
        .token_for("cashier", "knock knock, who goes there")
        .await;
    let actor_token = app
        .token_for("shift-manager", "clipboard and a pencil stub")
        .await;

    let status = lookup(&app, &actor.user_id, &cashier_token, "cashier")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "actor_token does not belong to actor_id");

    let status = lookup(
        &app,
        &actor.user_id,
        "stp_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "cashier",
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    app.client
        .clone()
        .logout(pb::LogoutRequest {
            token: actor_token.clone(),
        })
        .await
        .unwrap();
    let status = lookup(&app, &actor.user_id, &actor_token, "cashier")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    app.stop().await;
}

#[tokio::test]
async fn an_identifier_that_matches_nobody_is_not_found() {
    let app = spawn_app().await;
    let actor = app
        .add_user("shift-manager", "clipboard and a pencil stub")
        .await;
    let token = app
        .token_for("shift-manager", "clipboard and a pencil stub")
        .await;
    let status = lookup(&app, &actor.user_id, &token, "ghost@bakery.example")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    app.stop().await;
}

#[tokio::test]
async fn a_malformed_actor_id_is_invalid_argument() {
    let app = spawn_app().await;
    app.add_user("shift-manager", "clipboard and a pencil stub")
        .await;
    let token = app
        .token_for("shift-manager", "clipboard and a pencil stub")
        .await;
    let status = lookup(&app, "shift-manager", &token, "cashier")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "actor_id: must be a user_id (a UUID)");
    app.stop().await;
}

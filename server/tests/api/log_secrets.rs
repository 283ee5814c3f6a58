//! No password, token, challenge id, TOTP secret or code ever reaches a log line.
//!
//! Every in-process server of this test binary logs into one capture (debug level for all
//! crates, trace for st-peter), and the real binaries' standard error is added to it; the
//! helpers remember each secret the tests use. This test drives every audited path once
//! more itself, then searches everything captured so far for every secret remembered.
use st_peter_proto::auth::v1 as pb;
use st_peter_proto::auth::v1::login_response::Result as Outcome;

use crate::account::Account;
use crate::helpers::{
    add_user_with_cli, admin, database_url, logs, remember_secret, secret_appears, secrets,
    spawn_app, start_server, token, verify,
};

#[tokio::test]
async fn secrets_never_reach_the_logs() {
    let app = spawn_app().await;
    let actor = app
        .add_user("shift-manager", "clipboard and a pencil stub")
        .await;
    app.add_user("lead-baker", "open sesame, said Ali Baba")
        .await;
    let uri = app.app.enroll_totp("lead-baker").await.unwrap().otpauth_uri;

    // Failures, throttling, bad input.
    for attempt in 0..8 {
        app.login("shift-manager", &format!("wrong-password-{attempt}"))
            .await;
    }
    let oversize = "secret-".repeat(200);
    remember_secret(&oversize);
    let _ = app
        .client
        .clone()
        .login(pb::LoginRequest {
            identifier: "lead-baker".into(),
            password: oversize,
        })
        .await;

    // Two factors: a wrong code, the right one, a replay.
    let Outcome::TwoFactor(challenge) = app.login("lead-baker", "open sesame, said Ali Baba").await
    else {
        panic!("expected two_factor");
    };
    let mut client = app.client.clone();
    let answer = |code: String| {
        let id = challenge.two_factor_id.clone();
        remember_secret(&code);
        let mut client = client.clone();
        async move {
            client
                .verify_two_factor(pb::VerifyTwoFactorRequest {
                    two_factor_id: id,
                    code,
                })
                .await
                .unwrap()
                .into_inner()
        }
    };
    let right = app.totp_code(&uri, 0);
    let wrong = if right == "999999" {
        "999998".to_owned()
    } else {
        "999999".to_owned()
    };
    answer(wrong).await;
    let reply = answer(right.clone()).await;
    let Some(Outcome::Authenticated(session)) = reply.result else {
        panic!("expected authenticated");
    };
    remember_secret(&session.token);
    let Outcome::TwoFactor(second) = app.login("lead-baker", "open sesame, said Ali Baba").await
    else {
        panic!("expected two_factor");
    };
    client
        .verify_two_factor(pb::VerifyTwoFactorRequest {
            two_factor_id: second.two_factor_id,
            code: right,
        })
        .await
        .unwrap();

    // Verify, lookup, logout.
    app.clock.advance(std::time::Duration::from_secs(60 * 60));
    let actor_token = app
        .token_for("shift-manager", "clipboard and a pencil stub")
        .await;
    app.verify(&session.token).await.unwrap();
    let _ = app.verify("stp_not-a-real-token").await;
    client
        .lookup_user(pb::LookupUserRequest {
            actor_id: actor.user_id.clone(),
            actor_token: actor_token.clone(),
            identifier: "lead-baker".into(),
        })
        .await
        .unwrap();
    client
        .logout(pb::LogoutRequest {
            token: session.token.clone(),
        })
        .await
        .unwrap();

    // Self-service: a wrong and a right current password, a weak and a strong new one, a
    // TOTP enrollment with a wrong and a right code, new recovery codes, the sessions.
    let account = Account::new(&app, &actor_token).await;
    let current = "clipboard and a pencil stub";
    let _ = account
        .change_password("not-the-password", "ledger, till and stamps", false)
        .await;
    let _ = account.change_password(current, "password1", false).await;
    account
        .change_password(current, "ledger, till and stamps", false)
        .await
        .unwrap();
    let begun = account.begin_totp().await.unwrap();
    let _ = account
        .confirm_totp(&begun.enrollment_id, "000000", false)
        .await;
    let code = app.totp_code(&begun.otpauth_uri, 0);
    account
        .confirm_totp(&begun.enrollment_id, &code, true)
        .await
        .unwrap();
    account
        .regenerate_codes("ledger, till and stamps")
        .await
        .unwrap();
    account.sessions().await.unwrap();
    account.revoke_others().await.unwrap();
    app.stop().await;

    // The real binary: admin commands and a server at debug level.
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(dir.path());
    add_user_with_cli(&url, "cashier", "knock knock, who goes there");
    let mut server = start_server(&url);
    let mut remote = server.grpc_client().await;
    let remote_token = token(&mut remote, "cashier", "knock knock, who goes there").await;
    verify(&mut remote, &remote_token).await.unwrap();
    admin(
        &url,
        &["session", "revoke", "--token-stdin"],
        &format!("{}\n", remote_token),
    );
    // A service account: its key made by the CLI, exchanged (and a wrong one refused), its
    // token verified, the key revoked.
    admin(&url, &["service", "add", "shift-board"], "");
    let created: serde_json::Value = serde_json::from_str(&admin(
        &url,
        &["--json", "service", "key", "create", "shift-board"],
        "",
    ))
    .unwrap();
    let api_key = created["api_key"].as_str().unwrap();
    remember_secret(api_key);
    let exchanged = remote
        .exchange_api_key(pb::ExchangeApiKeyRequest {
            api_key: api_key.into(),
        })
        .await
        .unwrap()
        .into_inner();
    remember_secret(&exchanged.token);
    verify(&mut remote, &exchanged.token).await.unwrap();
    let wrong_key = format!("stk_{}", "W".repeat(43));
    remember_secret(&wrong_key);
    let _ = remote
        .exchange_api_key(pb::ExchangeApiKeyRequest { api_key: wrong_key })
        .await;
    admin(
        &url,
        &[
            "service",
            "key",
            "revoke",
            created["key_id"].as_str().unwrap(),
        ],
        "",
    );
    server.kill();

    let logs = logs();
    assert!(
        logs.contains("event=\"login\"") || logs.contains("event=login"),
        "audit lines missing"
    );
    assert!(
        logs.contains("event=\"api_key\" outcome=\"exchanged\"")
            || logs.contains("event=api_key outcome=exchanged"),
        "API key audit lines missing"
    );
    let secrets = secrets();
    assert!(
        secrets.len() > 20,
        "the helpers remembered only {} secrets",
        secrets.len()
    );
    for secret in &secrets {
        assert!(
            !secret_appears(&logs, secret),
            "a secret reached the logs: {secret:?}"
        );
    }
}

//! Service accounts and API keys: a key exchanged for a token that VerifyToken verifies,
//! lookups as a service, expired, revoked and rotated keys, a service account refused at
//! Login, and `--require-caller-credentials` with a service token and with mutual TLS.
use std::time::Duration;

use st_peter_proto::auth::v1 as pb;
use st_peter_proto::auth::v1::auth_service_client::AuthServiceClient;
use st_peter_server::domain::service_accounts::{IssuedApiKey, LOOKUP_ROLE};
use st_peter_server::error::Error;
use st_peter_testkit::pki;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::helpers::{
    Client, REVOCATION_BOUND, TestApp, admin, database_url, failed_reason, login, refused_within,
    remember_secret, spawn_app, spawn_app_with, start_server_with, test_settings, verify,
};

const PERSON_PASSWORD: &str = "open sesame, said Ali Baba";

/// A service account `name` with one key (remembered as a secret), optionally expiring.
async fn service_with_key(app: &TestApp, name: &str, expires: Option<Duration>) -> IssuedApiKey {
    app.app.create_service_account(name, None).await.unwrap();
    let key = app.app.create_api_key(name, None, expires).await.unwrap();
    remember_secret(&key.api_key);
    key
}

/// One more key named `name` for the service account (remembered as a secret).
async fn another_key(app: &TestApp, service: &str, name: &str) -> IssuedApiKey {
    let key = app
        .app
        .create_api_key(service, Some(name), None)
        .await
        .unwrap();
    remember_secret(&key.api_key);
    key
}

async fn exchange(client: &Client, api_key: &str) -> Result<pb::Authenticated, tonic::Status> {
    let answer = client
        .clone()
        .exchange_api_key(pb::ExchangeApiKeyRequest {
            api_key: api_key.into(),
        })
        .await
        .map(tonic::Response::into_inner);
    if let Ok(session) = &answer {
        remember_secret(&session.token);
    }
    answer
}

async fn lookup(
    client: &Client,
    actor: &pb::Authenticated,
    identifier: &str,
) -> Result<pb::User, tonic::Status> {
    client
        .clone()
        .lookup_user(pb::LookupUserRequest {
            actor_id: actor.user.as_ref().unwrap().user_id.clone(),
            actor_token: actor.token.clone(),
            identifier: identifier.into(),
        })
        .await
        .map(|answer| answer.into_inner().user.unwrap())
}

/// A request carrying `authorization: Bearer <token>`.
fn with_bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

fn verify_request(token: &str) -> pb::VerifyTokenRequest {
    pb::VerifyTokenRequest {
        token: token.into(),
    }
}

#[tokio::test]
async fn a_key_is_exchanged_for_a_token_that_verifies_and_looks_users_up() {
    let app = spawn_app().await;
    let person = app.add_user("lead-baker", PERSON_PASSWORD).await;
    let key = service_with_key(&app, "shift-board", None).await;
    assert!(key.api_key.starts_with("stk_") && key.api_key.len() == 47);

    let session = exchange(&app.client, &key.api_key).await.unwrap();
    let service = session.user.clone().unwrap();
    assert_eq!(service.handle, "shift-board");
    assert_eq!(service.kind(), pb::UserKind::Service);
    assert!(session.token.starts_with("stp_"));
    let lifetime = session.expires_at.unwrap().seconds * 1000 - app.app_now();
    assert!(
        (lifetime - 15 * 60 * 1000).abs() < 2000,
        "default lifetime 15 min, got {lifetime} ms"
    );

    let verified = verify(&mut app.client.clone(), &session.token)
        .await
        .unwrap();
    assert_eq!(verified.user.unwrap().kind(), pb::UserKind::Service);
    assert!(verified.roles.is_empty());

    // No lookups without the role; with it, the service resolves people.
    let refused = lookup(&app.client, &session, "lead-baker")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains(LOOKUP_ROLE), "{refused:?}");
    app.app
        .grant_role("shift-board", LOOKUP_ROLE)
        .await
        .unwrap();
    let found = lookup(&app.client, &session, "LEAD-BAKER@bakery.example")
        .await
        .unwrap();
    assert_eq!(found.user_id, person.user_id);
    assert_eq!(found.kind(), pb::UserKind::Human);

    // The key's last use is noted; the key itself is never listed.
    let keys = app.app.list_api_keys("shift-board").await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].key_id, key.key_id);
    assert_eq!(keys[0].last_used_at, Some(app.app_now()));
    assert!(!format!("{keys:?}{key:?}").contains(&key.api_key));
}

#[tokio::test]
async fn the_token_lifetime_is_a_setting_and_the_token_dies_with_it() {
    let app = spawn_app_with(st_peter_server::Settings {
        api_token_ttl: Duration::from_secs(60),
        ..test_settings()
    })
    .await;
    let key = service_with_key(&app, "shift-board", None).await;
    let session = exchange(&app.client, &key.api_key).await.unwrap();
    assert_eq!(
        session.expires_at.unwrap().seconds * 1000,
        (app.app_now() + 60_000) / 1000 * 1000
    );
    app.advance(Duration::from_secs(59));
    verify(&mut app.client.clone(), &session.token)
        .await
        .unwrap();
    app.advance(Duration::from_secs(2));
    let expired = verify(&mut app.client.clone(), &session.token)
        .await
        .unwrap_err();
    assert_eq!(expired.code(), Code::Unauthenticated);
    // A new exchange gives a new token.
    let again = exchange(&app.client, &key.api_key).await.unwrap();
    assert_ne!(again.token, session.token);
    verify(&mut app.client.clone(), &again.token).await.unwrap();
}

#[tokio::test]
async fn unknown_malformed_and_expired_keys_are_unauthenticated() {
    let app = spawn_app().await;
    let key = service_with_key(&app, "shift-board", Some(Duration::from_secs(300))).await;
    // A token never outlives its key.
    let session = exchange(&app.client, &key.api_key).await.unwrap();
    assert_eq!(
        session.expires_at.unwrap().seconds * 1000,
        key.expires_at.unwrap() / 1000 * 1000
    );

    let unknown = format!("stk_{}", "A".repeat(43));
    for bad in [unknown.as_str(), "stk_short", "stp_not-a-key", "hunter2"] {
        let status = exchange(&app.client, bad).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{bad}: {status:?}");
    }
    for (bad, why) in [("", "must not be empty"), (&*"k".repeat(300), "at most")] {
        let status = exchange(&app.client, bad).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with("api_key: ") && status.message().contains(why));
    }

    app.advance(Duration::from_secs(301));
    let expired = exchange(&app.client, &key.api_key).await.unwrap_err();
    assert_eq!(expired.code(), Code::Unauthenticated);
    let gone = verify(&mut app.client.clone(), &session.token)
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn a_revoked_key_stops_at_once_and_takes_its_tokens_while_a_rotated_one_goes_on() {
    let app = spawn_app().await;
    let old = service_with_key(&app, "shift-board", None).await;
    let new = another_key(&app, "shift-board", "rotation-2").await;
    // Several keys at once: both work during the rotation.
    let old_session = exchange(&app.client, &old.api_key).await.unwrap();
    let new_session = exchange(&app.client, &new.api_key).await.unwrap();
    let mut client = app.client.clone();
    verify(&mut client, &old_session.token).await.unwrap();
    verify(&mut client, &new_session.token).await.unwrap();

    // A key that would be born expired is a mistake.
    assert!(matches!(
        app.app
            .create_api_key("shift-board", None, Some(Duration::ZERO))
            .await,
        Err(Error::InvalidArgument {
            field: "expires",
            ..
        })
    ));
    // A name picks one live key.
    let taken = app
        .app
        .create_api_key("shift-board", Some("rotation-2"), None)
        .await
        .unwrap_err();
    assert!(matches!(taken, Error::Conflict(_)), "{taken:?}");

    assert_eq!(app.app.revoke_api_key(&old.key_id).await.unwrap(), 1);
    let refused = exchange(&app.client, &old.api_key).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    refused_within(&mut client, &old_session.token, REVOCATION_BOUND).await;
    // The other key and its token are untouched.
    verify(&mut client, &new_session.token).await.unwrap();
    exchange(&app.client, &new.api_key).await.unwrap();

    // Revoking twice, or a key that never was, says so.
    assert!(matches!(
        app.app.revoke_api_key(&old.key_id).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        app.app.revoke_api_key("not-a-key-id").await,
        Err(Error::InvalidArgument {
            field: "key_id",
            ..
        })
    ));
    let listed = app.app.list_api_keys("shift-board").await.unwrap();
    let revoked_at = |key_id: &str| {
        let key = listed.iter().find(|key| key.key_id == key_id).unwrap();
        key.revoked_at
    };
    assert_eq!(revoked_at(&old.key_id), Some(app.app_now()));
    assert_eq!(revoked_at(&new.key_id), None);
}

#[tokio::test]
async fn a_disabled_service_account_cannot_exchange_and_its_tokens_die() {
    let app = spawn_app().await;
    let key = service_with_key(&app, "shift-board", None).await;
    let session = exchange(&app.client, &key.api_key).await.unwrap();
    app.app.set_disabled("shift-board", true).await.unwrap();
    refused_within(&mut app.client.clone(), &session.token, REVOCATION_BOUND).await;
    let refused = exchange(&app.client, &key.api_key).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn a_service_account_is_refused_at_login_and_has_no_password_or_account_to_run() {
    let app = spawn_app().await;
    let key = service_with_key(&app, "shift-board", None).await;
    for password in ["x", PERSON_PASSWORD] {
        let outcome = login(&mut app.client.clone(), "shift-board", password).await;
        assert_eq!(
            failed_reason(&outcome),
            pb::FailureReason::InvalidCredentials
        );
    }
    let person_only = [
        app.app
            .set_password("shift-board", "a long and unguessable passphrase", false)
            .await
            .unwrap_err(),
        app.app.enroll_totp("shift-board").await.unwrap_err(),
    ];
    for refused in person_only {
        assert!(
            matches!(&refused, Error::FailedPrecondition(why) if why.contains("service account")),
            "{refused:?}"
        );
    }
    // A person is no service account.
    app.add_user("lead-baker", PERSON_PASSWORD).await;
    assert!(matches!(
        app.app.create_api_key("lead-baker", None, None).await,
        Err(Error::FailedPrecondition(_))
    ));
    // Its name is a handle: a person cannot take it, nor it a person's.
    assert!(matches!(
        app.app.create_service_account("lead-baker", None).await,
        Err(Error::Conflict(_))
    ));

    let session = exchange(&app.client, &key.api_key).await.unwrap();
    let mut account =
        st_peter_proto::auth::v1::account_service_client::AccountServiceClient::connect(format!(
            "http://{}",
            app.addr
        ))
        .await
        .unwrap();
    let refused = account
        .get_account(with_bearer(pb::GetAccountRequest {}, &session.token))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
}

/// A key refused again and again waits on its own: another key from the same address
/// (a neighbour on the same host) is untouched.
#[tokio::test]
async fn a_key_refused_again_and_again_waits_alone() {
    let app = spawn_app().await;
    let good = service_with_key(&app, "shift-board", None).await;
    let revoked = another_key(&app, "shift-board", "old").await;
    app.app.revoke_api_key(&revoked.key_id).await.unwrap();
    let mut codes = Vec::new();
    for _ in 0..40 {
        codes.push(
            exchange(&app.client, &revoked.api_key)
                .await
                .unwrap_err()
                .code(),
        );
    }
    assert!(
        codes[..5].iter().all(|code| *code == Code::Unauthenticated),
        "{codes:?}"
    );
    assert_eq!(codes[39], Code::ResourceExhausted, "{codes:?}");
    exchange(&app.client, &good.api_key).await.unwrap();
}

/// Many different refused keys from one address: the address waits, whatever it sends,
/// until the wait is over.
#[tokio::test]
async fn many_different_refused_keys_from_one_address_make_it_wait() {
    let app = spawn_app().await;
    let key = service_with_key(&app, "shift-board", None).await;
    let mut codes = Vec::new();
    for attempt in 0..22 {
        let made_up = format!("stk_{:A>43}", attempt);
        codes.push(exchange(&app.client, &made_up).await.unwrap_err().code());
    }
    assert!(
        codes[..21]
            .iter()
            .all(|code| *code == Code::Unauthenticated),
        "{codes:?}"
    );
    assert_eq!(codes[21], Code::ResourceExhausted, "{codes:?}");
    let throttled = exchange(&app.client, &key.api_key).await.unwrap_err();
    assert_eq!(throttled.code(), Code::ResourceExhausted);
    app.advance(Duration::from_secs(5 * 60));
    exchange(&app.client, &key.api_key).await.unwrap();
}

#[tokio::test]
async fn caller_credentials_when_required_are_a_service_token() {
    let app = spawn_app_with(st_peter_server::Settings {
        require_caller_credentials: true,
        ..test_settings()
    })
    .await;
    let person = app.add_user("lead-baker", PERSON_PASSWORD).await;
    let key = service_with_key(&app, "shift-board", None).await;
    app.app
        .grant_role("shift-board", LOOKUP_ROLE)
        .await
        .unwrap();
    // Login and the exchange itself need no caller credentials.
    let person_token = app.token_for("lead-baker", PERSON_PASSWORD).await;
    let service = exchange(&app.client, &key.api_key).await.unwrap();
    let mut client = app.client.clone();

    // Anonymous, a person's token, a garbage token: refused, and never UNAUTHENTICATED.
    for bearer in [None, Some(person_token.as_str()), Some("stp_garbage")] {
        let request = match bearer {
            Some(token) => with_bearer(verify_request(&person_token), token),
            None => tonic::Request::new(verify_request(&person_token)),
        };
        let refused = client.verify_token(request).await.unwrap_err();
        assert_eq!(
            refused.code(),
            Code::PermissionDenied,
            "{bearer:?}: {refused:?}"
        );
        assert!(
            refused.message().starts_with("caller credentials:"),
            "{refused:?}"
        );
    }
    let lookup = pb::LookupUserRequest {
        actor_id: service.user.as_ref().unwrap().user_id.clone(),
        actor_token: service.token.clone(),
        identifier: "lead-baker".into(),
    };
    let refused = client.lookup_user(lookup.clone()).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let refused = client
        .watch_revocations(pb::WatchRevocationsRequest { after_sequence: 0 })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);

    // With the service token: answered as usual, UNAUTHENTICATED included.
    let verified = client
        .verify_token(with_bearer(verify_request(&person_token), &service.token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verified.user.unwrap().user_id, person.user_id);
    let invalid = client
        .verify_token(with_bearer(verify_request("stp_garbage"), &service.token))
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), Code::Unauthenticated);
    let found = client
        .lookup_user(with_bearer(lookup, &service.token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.user.unwrap().user_id, person.user_id);
    let mut feed = client
        .watch_revocations(with_bearer(
            pb::WatchRevocationsRequest { after_sequence: 0 },
            &service.token,
        ))
        .await
        .unwrap()
        .into_inner();
    let checkpoint = feed.message().await.unwrap().unwrap();
    assert!(checkpoint.change.is_none());

    // A revoked key's token is no credential any more, and the stream it opened ends
    // right after telling of the revocation.
    app.app.revoke_api_key(&key.key_id).await.unwrap();
    let refused = client
        .verify_token(with_bearer(verify_request(&person_token), &service.token))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let event = feed.message().await.unwrap().unwrap();
    assert_eq!(
        event.change,
        Some(pb::revocation_event::Change::UserId(
            service.user.unwrap().user_id
        ))
    );
    let ended = feed.message().await.unwrap_err();
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    assert!(
        ended.message().starts_with("caller credentials:"),
        "{ended:?}"
    );
}

#[tokio::test]
async fn a_feed_opened_with_a_service_token_ends_when_the_token_does() {
    let app = spawn_app_with(st_peter_server::Settings {
        require_caller_credentials: true,
        api_token_ttl: Duration::from_millis(300),
        ..test_settings()
    })
    .await;
    let key = service_with_key(&app, "shift-board", None).await;
    let service = exchange(&app.client, &key.api_key).await.unwrap();
    let started = std::time::Instant::now();
    let mut feed = app
        .client
        .clone()
        .watch_revocations(with_bearer(
            pb::WatchRevocationsRequest { after_sequence: 0 },
            &service.token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(feed.message().await.unwrap().unwrap().change.is_none());
    let ended = tokio::time::timeout(Duration::from_secs(5), feed.message())
        .await
        .expect("the stream outlived its credentials")
        .unwrap_err();
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    assert!(
        ended.message().starts_with("caller credentials:"),
        "{ended:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // Resubscribing with the dead token is refused (the app's clock is moved past its end
    // too: the stream's timer runs on real time, verification on the app's clock).
    app.advance(Duration::from_millis(301));
    let refused = app
        .client
        .clone()
        .watch_revocations(with_bearer(
            pb::WatchRevocationsRequest { after_sequence: 0 },
            &service.token,
        ))
        .await;
    assert_eq!(refused.unwrap_err().code(), Code::PermissionDenied);
}

/// The real binary with mutual TLS and `--require-caller-credentials`: a client
/// certificate, or a service token over plain (server-authenticated) TLS, gets in; an
/// anonymous TLS caller does not. Key material is made with the real CLI.
#[tokio::test]
async fn the_binary_accepts_a_client_certificate_or_a_service_token_and_refuses_anyone_else() {
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(dir.path());
    let pki = pki("shift-board");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let (ca, cert, key) = (
        write("ca.pem", &pki.ca_pem),
        write("server.pem", &pki.server.0),
        write("server.key", &pki.server.1),
    );
    let server = start_server_with(
        &url,
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &ca,
            "--require-caller-credentials",
            "--api-token-ttl",
            "2m",
        ],
    );
    admin(
        &url,
        &["user", "add", "--handle", "lead-baker", "--password-stdin"],
        &format!("{PERSON_PASSWORD}\n"),
    );
    let added: serde_json::Value = serde_json::from_str(&admin(
        &url,
        &["--json", "service", "add", "shift-board"],
        "",
    ))
    .unwrap();
    assert_eq!(added["kind"], "service");
    let created: serde_json::Value = serde_json::from_str(&admin(
        &url,
        &[
            "--json",
            "service",
            "key",
            "create",
            "shift-board",
            "--name",
            "ci",
        ],
        "",
    ))
    .unwrap();
    let api_key = created["api_key"].as_str().unwrap().to_owned();
    remember_secret(&api_key);
    let listed = admin(&url, &["service", "key", "list", "shift-board"], "");
    assert!(
        listed.contains("ci") && !listed.contains(&api_key),
        "{listed}"
    );

    let port = server.addr.port();
    let channel = |identity: Option<Identity>| {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&pki.ca_pem))
            .domain_name("localhost");
        if let Some(identity) = identity {
            tls = tls.identity(identity);
        }
        let endpoint = Channel::from_shared(format!("https://localhost:{port}"))
            .unwrap()
            .tls_config(tls)
            .unwrap();
        async move { AuthServiceClient::new(endpoint.connect().await.unwrap()) }
    };
    let mut anonymous = channel(None).await;
    let mut with_certificate =
        channel(Some(Identity::from_pem(&pki.client.0, &pki.client.1))).await;

    let person = login(&mut anonymous, "lead-baker", PERSON_PASSWORD).await;
    let pb::login_response::Result::Authenticated(person) = person else {
        panic!("expected authenticated, got {person:?}");
    };
    let refused = anonymous
        .verify_token(verify_request(&person.token))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    let by_certificate = with_certificate
        .verify_token(verify_request(&person.token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_certificate.user.unwrap().handle, "lead-baker");

    let service = exchange(&anonymous, &api_key).await.unwrap();
    let by_token = anonymous
        .verify_token(with_bearer(verify_request(&person.token), &service.token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_token.user.unwrap().handle, "lead-baker");

    // The CLI revokes the key: the exchange stops and its token is no credential.
    let key_id = created["key_id"].as_str().unwrap();
    admin(&url, &["service", "key", "revoke", key_id], "");
    assert_eq!(
        exchange(&anonymous, &api_key).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let start = std::time::Instant::now();
    loop {
        let answer = anonymous
            .verify_token(with_bearer(verify_request(&person.token), &service.token))
            .await;
        match answer {
            Err(status) if status.code() == Code::PermissionDenied => break,
            Ok(_) if start.elapsed() < REVOCATION_BOUND => {
                tokio::time::sleep(Duration::from_millis(5)).await
            }
            other => panic!("the revoked key's token still let the caller in: {other:?}"),
        }
    }
    drop(server);
}

/// `--lookups-per-minute` sets the per-actor lookup rate (bursts of a third of it), for
/// services that resolve users in bulk; past it, RESOURCE_EXHAUSTED.
#[tokio::test]
async fn the_lookup_rate_per_actor_is_a_setting() {
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(dir.path());
    admin(
        &url,
        &["user", "add", "--handle", "lead-baker", "--password-stdin"],
        &format!("{PERSON_PASSWORD}\n"),
    );
    admin(&url, &["service", "add", "shift-board"], "");
    admin(
        &url,
        &["user", "role", "grant", "shift-board", LOOKUP_ROLE],
        "",
    );
    let created: serde_json::Value = serde_json::from_str(&admin(
        &url,
        &["--json", "service", "key", "create", "shift-board"],
        "",
    ))
    .unwrap();
    let api_key = created["api_key"].as_str().unwrap().to_owned();
    remember_secret(&api_key);
    let server = start_server_with(&url, &["--lookups-per-minute", "6"]);
    let client = server.grpc_client().await;
    let service = exchange(&client, &api_key).await.unwrap();
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(match lookup(&client, &service, "lead-baker").await {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        });
    }
    assert_eq!(answers, [Code::Ok, Code::Ok, Code::ResourceExhausted]);
}

//! Service identity (`ClientBuilder::api_key`) against a st-peter that requires caller
//! credentials: verifying and looking up as the service, who the service is, refusals (no
//! key, no role, a revoked, made-up or malformed key, held for a second), the revocation
//! feed, and the real binary set up with the admin CLI.
//! Exchanges are counted by the server's `Calls` layer (or its audit log), never by the
//! client.
use std::time::Duration;

use st_peter_client::{Client, Error, LoginOutcome, Session, UserKind};
use st_peter_testkit::{ServerProcess, st_peter_binary};

use crate::helpers::{
    CASHIER_PASSWORD, StillClock, add_user, admin, eventually, login, refused, service_server,
    service_settings, settings, subscribe, uncached,
};

const LONG: Duration = Duration::from_secs(10 * 60);

async fn session(client: &Client) -> Session {
    match client.login("cashier", CASHIER_PASSWORD).await.unwrap() {
        LoginOutcome::Authenticated(session) => session,
        other => panic!("expected authenticated, got {other:?}"),
    }
}

fn is_caller_credentials(error: &Error) -> bool {
    matches!(error, Error::PermissionDenied(why) if why.starts_with("caller credentials:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_s_token_is_verified_through_a_service_identity() {
    let (server, key) = service_server(service_settings(), false).await;
    let client = server
        .client_builder()
        .api_key(&*key.api_key)
        .build()
        .unwrap();
    let token = login(&client, "cashier", CASHIER_PASSWORD).await;
    assert_eq!(
        server.exchanges(),
        0,
        "nothing is exchanged before a call needs it"
    );

    let verified = client.verify_token(&token).await.unwrap();
    assert_eq!(verified.user.handle, "cashier");
    assert_eq!(verified.user.kind, UserKind::Human);
    assert_eq!(server.exchanges(), 1);

    // The service token is kept: more calls (and the feed they start) need no exchange.
    let other = login(&client, "cashier", CASHIER_PASSWORD).await;
    client.verify_token(&other).await.unwrap();
    let bogus = format!("stp_{}", "B".repeat(43));
    assert_eq!(
        client.verify_token(&bogus).await.unwrap_err(),
        Error::InvalidToken,
        "a bad token is still the verdict on that token"
    );
    eventually("the revocation feed subscribed", || async {
        client.feed_status().subscribed
    })
    .await;
    assert_eq!(server.exchanges(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_an_api_key_is_refused_with_permission_denied() {
    let (server, _key) = service_server(service_settings(), true).await;
    let anonymous = server.client();
    let person = session(&anonymous).await;

    let error = anonymous.verify_token(&person.token).await.unwrap_err();
    assert!(is_caller_credentials(&error), "{error:?}");
    // No verdict on the token, so nothing cached: the next verify asks again.
    let before = server.verifies();
    let error = anonymous.verify_token(&person.token).await.unwrap_err();
    assert!(is_caller_credentials(&error), "{error:?}");
    assert_eq!(server.verifies(), before + 1);

    let error = anonymous
        .lookup_user(&person.user.user_id, &person.token, "cashier")
        .await
        .unwrap_err();
    assert!(is_caller_credentials(&error), "{error:?}");
    assert_eq!(
        anonymous
            .lookup_user_as_service("cashier")
            .await
            .unwrap_err(),
        Error::NoApiKey
    );
    assert_eq!(server.counts.get("LookupUser"), 1, "NoApiKey sends nothing");

    // The feed is refused each time it tries.
    eventually("the feed tried twice", || async {
        anonymous.feed_status().subscriptions >= 2
    })
    .await;
    assert!(!anonymous.feed_status().subscribed);
    assert_eq!(server.exchanges(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_looks_users_up_as_itself_and_for_a_person() {
    let (server, key) = service_server(service_settings(), true).await;
    let client = server
        .client_builder()
        .api_key(&*key.api_key)
        .build()
        .unwrap();

    let cashier = client
        .lookup_user_as_service("Cashier@Bakery.Example")
        .await
        .unwrap();
    assert_eq!(cashier.handle, "cashier");
    assert_eq!(cashier.kind, UserKind::Human);
    let itself = client.lookup_user_as_service("shift-board").await.unwrap();
    assert_eq!(itself.kind, UserKind::Service);
    assert_eq!(itself.email, None);
    assert!(matches!(
        client.lookup_user_as_service("nobody").await,
        Err(Error::NotFound(_))
    ));

    // A person as the actor, the service as the caller.
    let person = session(&client).await;
    let found = client
        .lookup_user(&person.user.user_id, &person.token, "shift-board")
        .await
        .unwrap();
    assert_eq!(found, itself);
    assert_eq!(server.exchanges(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_without_the_lookup_role_is_refused_at_lookup() {
    let (server, key) = service_server(service_settings(), false).await;
    let client = server
        .client_builder()
        .api_key(&*key.api_key)
        .build()
        .unwrap();

    let error = client.lookup_user_as_service("cashier").await.unwrap_err();
    match &error {
        Error::PermissionDenied(why) => {
            assert!(!why.starts_with("caller credentials:"), "{why}");
            assert!(why.contains("st-peter:lookup"), "{why}");
        }
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
    // A missing role is no reason to exchange again, nor to retry.
    assert_eq!(server.exchanges(), 1);
    assert_eq!(server.counts.get("LookupUser"), 1);
    // It may still verify.
    let token = login(&client, "cashier", CASHIER_PASSWORD).await;
    client.verify_token(&token).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_fails_with_api_key_rejected_once_its_token_is_gone() {
    let (server, key) = service_server(service_settings(), false).await;
    let client = uncached(server.client_builder().api_key(&*key.api_key))
        .build()
        .unwrap();
    let token = login(&client, "cashier", CASHIER_PASSWORD).await;
    client.verify_token(&token).await.unwrap();
    assert_eq!((server.exchanges(), server.verifies()), (1, 1));

    let ended = server.app.revoke_api_key(&key.key_id).await.unwrap();
    assert_eq!(ended, 1, "the service's one session");

    // Its token is refused as caller credentials, then the key at the exchange.
    let error = client.verify_token(&token).await.unwrap_err();
    assert!(matches!(error, Error::ApiKeyRejected(_)), "{error:?}");
    assert_eq!((server.exchanges(), server.verifies()), (2, 2));
    // Never InvalidToken, and held for a second: the next call is refused at once, and
    // sends no verify without a token; after the second the key is tried again.
    let held = client.verify_token(&token).await.unwrap_err();
    assert!(matches!(held, Error::ApiKeyRejected(_)), "{held:?}");
    assert_eq!((server.exchanges(), server.verifies()), (2, 2));
    server.advance(Duration::from_secs(1));
    let again = client.verify_token(&token).await.unwrap_err();
    assert!(matches!(again, Error::ApiKeyRejected(_)), "{again:?}");
    assert_eq!((server.exchanges(), server.verifies()), (3, 2));
    let by_hand = client.exchange_api_key(&key.api_key).await.unwrap_err();
    assert!(matches!(by_hand, Error::ApiKeyRejected(_)), "{by_hand:?}");
    let unknown = format!("stk_{}", "K".repeat(43));
    let error = client.exchange_api_key(&unknown).await.unwrap_err();
    assert!(matches!(error, Error::ApiKeyRejected(_)), "{error:?}");
    for error in [error, held, again, by_hand] {
        let printed = format!("{error} {error:?}");
        assert!(!printed.contains(&key.api_key), "{printed}");
        assert!(!printed.contains(&unknown), "{printed}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_revocation_feed_works_under_require_caller_credentials() {
    let (mut server, key) = service_server(service_settings(), false).await;
    // Answers kept for ten minutes, subscribed or not: only the feed can evict them.
    let caching = server
        .client_builder()
        .api_key(&*key.api_key)
        .cache_ttl(LONG)
        .fallback_ttl(LONG)
        .build()
        .unwrap();
    let elsewhere = server.client();
    subscribe(&caching).await;
    assert_eq!(server.counts.get("WatchRevocations"), 1);

    let token = login(&elsewhere, "cashier", CASHIER_PASSWORD).await;
    caching.verify_token(&token).await.unwrap();
    let before = server.verifies();
    caching.verify_token(&token).await.unwrap();
    assert_eq!(server.verifies(), before, "the answer is cached");
    elsewhere.logout(&token).await.unwrap();
    let took = refused(&caching, &token).await;
    println!("a logout elsewhere was refused through the service's feed after {took:?}");

    // A resubscription takes the token current then: past the first one's life (both
    // clocks), with st-peter restarted, the feed exchanges again and catches up.
    let exchanged = server.exchanges();
    server.advance(Duration::from_secs(4));
    server.stop().await;
    server.resume().await;
    eventually("the feed resubscribed", || async {
        let status = caching.feed_status();
        status.subscribed && status.subscriptions >= 2
    })
    .await;
    // One exchange, unless st-peter stopped with an exchange in flight.
    assert!(server.exchanges() > exchanged);
    let token = login(&elsewhere, "cashier", CASHIER_PASSWORD).await;
    caching.verify_token(&token).await.unwrap();
    elsewhere.logout(&token).await.unwrap();
    let took = refused(&caching, &token).await;
    println!("after the resubscription, a logout elsewhere was refused after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_identity_works_where_caller_credentials_are_not_required() {
    let (server, key) = service_server(settings(Duration::from_secs(3600)), true).await;
    let client = server
        .client_builder()
        .api_key(&*key.api_key)
        .build()
        .unwrap();
    let token = login(&client, "cashier", CASHIER_PASSWORD).await;
    assert_eq!(
        client.verify_token(&token).await.unwrap().user.handle,
        "cashier"
    );
    assert_eq!(
        client.lookup_user_as_service("cashier").await.unwrap().kind,
        UserKind::Human
    );
    assert_eq!(server.exchanges(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neither_the_key_nor_the_service_token_is_printed() {
    let (server, key) = service_server(service_settings(), true).await;
    let builder = server.client_builder().api_key(&*key.api_key);
    let printed_builder = format!("{builder:?}");
    let client = builder.build().unwrap();
    // One exchange by hand, and the client's own (through a lookup).
    let session = client.exchange_api_key(&key.api_key).await.unwrap();
    assert!(session.token.starts_with("stp_"));
    assert_eq!(session.user.kind, UserKind::Service);
    assert_eq!(session.user.handle, "shift-board");
    client.lookup_user_as_service("cashier").await.unwrap();
    // The exchanged token verifies like any other.
    let verified = client.verify_token(&session.token).await.unwrap();
    assert_eq!(verified.user, session.user);
    assert_eq!(verified.roles, ["st-peter:lookup"]);

    for printed in [
        printed_builder,
        format!("{client:?}"),
        format!("{session:?}"),
    ] {
        assert!(!printed.contains(&key.api_key), "{printed}");
        assert!(!printed.contains(&session.token), "{printed}");
        assert!(!printed.contains("stk_"), "{printed}");
    }
}

/// The real binary with `--api-token-ttl 3s --require-caller-credentials`, the service
/// account, its key and its role made with the admin CLI, and the key revoked with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_a_service_set_up_with_the_cli_until_its_key_is_revoked() {
    let server = ServerProcess::builder(st_peter_binary())
        .args(["--api-token-ttl", "3s", "--require-caller-credentials"])
        .start_async()
        .await
        .unwrap();
    add_user(&server, "cashier", CASHIER_PASSWORD);
    let json = |args: &[&str]| -> serde_json::Value {
        let args: Vec<&str> = ["--json"].iter().chain(args).copied().collect();
        serde_json::from_str(&admin(&server, &args, "")).unwrap()
    };
    let service = json(&["service", "add", "shift-board"]);
    assert_eq!(service["kind"], "service", "{service}");
    let key = json(&["service", "key", "create", "shift-board", "--name", "ci"]);
    let api_key = key["api_key"].as_str().unwrap().to_owned();
    assert!(api_key.starts_with("stk_"), "{key}");
    admin(
        &server,
        &["user", "role", "grant", "shift-board", "st-peter:lookup"],
        "",
    );

    let client = uncached(Client::builder(server.target()).api_key(&*api_key))
        .build()
        .unwrap();
    let anonymous = uncached(Client::builder(server.target())).build().unwrap();
    let token = login(&anonymous, "cashier", CASHIER_PASSWORD).await;
    let error = anonymous.verify_token(&token).await.unwrap_err();
    assert!(is_caller_credentials(&error), "{error:?}");
    let cashier = client.verify_token(&token).await.unwrap().user;
    assert_eq!(cashier.kind, UserKind::Human);
    assert_eq!(
        client.lookup_user_as_service("cashier").await.unwrap(),
        cashier
    );
    let itself = client.lookup_user_as_service("shift-board").await.unwrap();
    assert_eq!(itself.user_id, service["user_id"].as_str().unwrap());
    assert_eq!(itself.kind, UserKind::Service);

    let key_id = key["key_id"].as_str().unwrap();
    admin(&server, &["service", "key", "revoke", key_id], "");
    // The server learns of a revocation by another process through its feed: until then
    // the token may still pass, but no answer is ever another error.
    eventually("the revoked key refused", || async {
        match client.lookup_user_as_service("cashier").await {
            Err(Error::ApiKeyRejected(_)) => true,
            Ok(_) => false,
            Err(other) => panic!("lookup: {other:?}"),
        }
    })
    .await;
    let error = client.verify_token(&token).await.unwrap_err();
    assert!(matches!(error, Error::ApiKeyRejected(_)), "{error:?}");
}

/// The client's clock stands still while st-peter's moves past the token's life: st-peter
/// refuses a token the client holds for fresh, and the client exchanges again and retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_refused_as_caller_credentials_is_exchanged_again_and_the_call_retried_once() {
    let (server, key) = service_server(service_settings(), true).await;
    let client = uncached(
        Client::builder(server.target())
            .clock(StillClock::new())
            .api_key(&*key.api_key),
    )
    .build()
    .unwrap();
    let token = login(&client, "cashier", CASHIER_PASSWORD).await;
    client.verify_token(&token).await.unwrap();
    assert_eq!((server.exchanges(), server.verifies()), (1, 1));

    server.advance(Duration::from_secs(4));
    client.verify_token(&token).await.unwrap();
    assert_eq!(
        (server.exchanges(), server.verifies()),
        (2, 3),
        "refused once, exchanged, retried"
    );

    // A lookup as the service names its token twice (caller and actor): the same.
    server.advance(Duration::from_secs(4));
    client.lookup_user_as_service("cashier").await.unwrap();
    assert_eq!(
        (server.exchanges(), server.counts.get("LookupUser")),
        (3, 2)
    );
}

/// Without `--require-caller-credentials` st-peter does not read the header, so an expired
/// service token shows as the lookup's actor token: UNAUTHENTICATED, about the service's
/// own token, which is exchanged again (never reported as InvalidToken).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_as_the_service_with_its_token_expired_at_st_peter_exchanges_again() {
    let settings = st_peter_server::domain::app::Settings {
        api_token_ttl: Duration::from_secs(3),
        ..settings(Duration::from_secs(3600))
    };
    let (server, key) = service_server(settings, true).await;
    let client = Client::builder(server.target())
        .clock(StillClock::new())
        .api_key(&*key.api_key)
        .build()
        .unwrap();
    client.lookup_user_as_service("cashier").await.unwrap();
    server.advance(Duration::from_secs(4));
    client.lookup_user_as_service("cashier").await.unwrap();
    assert_eq!(
        (server.exchanges(), server.counts.get("LookupUser")),
        (2, 3)
    );
}

/// A made-up key is refused once, and that refusal answers every call for a second (by the
/// client's clock) without asking st-peter again, whichever call needs the token; then
/// the key is tried again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_key_is_held_for_a_second_with_one_exchange() {
    let (server, _key) = service_server(service_settings(), true).await;
    let made_up = format!("stk_{}", "M".repeat(43));
    let client = uncached(server.client_builder().api_key(&*made_up))
        .build()
        .unwrap();
    let token = login(&client, "cashier", CASHIER_PASSWORD).await;

    let rejected = |error: &Error| matches!(error, Error::ApiKeyRejected(_));
    for call in 0..20 {
        let error = match call % 3 {
            0 => client.verify_token(&token).await.unwrap_err(),
            1 => client.lookup_user_as_service("cashier").await.unwrap_err(),
            _ => client.service_account().await.unwrap_err(),
        };
        assert!(rejected(&error), "call {call}: {error:?}");
    }
    assert_eq!(
        server.exchanges(),
        1,
        "one exchange for the second's 20 calls"
    );
    assert_eq!((server.verifies(), server.counts.get("LookupUser")), (0, 0));

    server.advance(Duration::from_millis(999));
    let error = client.verify_token(&token).await.unwrap_err();
    assert!(rejected(&error), "{error:?}");
    assert_eq!(server.exchanges(), 1, "still held");

    server.advance(Duration::from_millis(1));
    let error = client.verify_token(&token).await.unwrap_err();
    assert!(rejected(&error), "{error:?}");
    assert_eq!(server.exchanges(), 2, "asked again after a second");
    let printed = format!("{error} {error:?}");
    assert!(!printed.contains(&made_up), "{printed}");
}

/// St-peter answers a key over 256 bytes INVALID_ARGUMENT. The client's own key is its
/// configuration, not the caller's request: ApiKeyRejected, held like any refusal. Passed
/// by hand to `exchange_api_key` it stays the caller's invalid argument.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_st_peter_finds_malformed_is_rejected_not_an_invalid_argument() {
    let (server, _key) = service_server(service_settings(), true).await;
    let long = format!("stk_{}", "L".repeat(300));
    let client = uncached(server.client_builder().api_key(&*long))
        .build()
        .unwrap();
    let token = login(&client, "cashier", CASHIER_PASSWORD).await;

    let error = client.verify_token(&token).await.unwrap_err();
    match &error {
        Error::ApiKeyRejected(why) => assert!(why.contains("api_key"), "{why}"),
        other => panic!("expected ApiKeyRejected, got {other:?}"),
    }
    let again = client.lookup_user_as_service("cashier").await.unwrap_err();
    assert_eq!(again, error);
    assert_eq!(server.exchanges(), 1, "held like any refusal");

    let by_hand = client.exchange_api_key(&long).await.unwrap_err();
    assert!(matches!(by_hand, Error::InvalidArgument(_)), "{by_hand:?}");
    for error in [error, by_hand] {
        let printed = format!("{error} {error:?}");
        assert!(!printed.contains(&"L".repeat(50)), "{printed}");
    }
}

/// `service_account` answers the service's own user from the exchange, which later calls
/// share; and makes no call while the token is fresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_account_is_known_from_the_one_exchange_calls_share() {
    let (server, key) = service_server(service_settings(), true).await;
    let client = uncached(server.client_builder().api_key(&*key.api_key))
        .build()
        .unwrap();

    let me = client.service_account().await.unwrap();
    assert_eq!(me.handle, "shift-board");
    assert_eq!(me.kind, UserKind::Service);
    assert_eq!(me.email, None);
    assert_eq!(server.exchanges(), 1);

    // Later calls use the same token: no exchange, and st-peter agrees who it is.
    let token = login(&client, "cashier", CASHIER_PASSWORD).await;
    client.verify_token(&token).await.unwrap();
    assert_eq!(
        client.lookup_user_as_service("shift-board").await.unwrap(),
        me
    );
    assert_eq!(client.service_account().await.unwrap(), me);
    assert_eq!(server.exchanges(), 1);

    // Due for refresh: the accessor refreshes like any call, and the account is the same.
    server.advance(Duration::from_millis(2100));
    assert_eq!(client.service_account().await.unwrap(), me);
    assert_eq!(server.exchanges(), 2);

    let anonymous = server.client();
    assert_eq!(anonymous.service_account().await, Err(Error::NoApiKey));
    assert_eq!(server.exchanges(), 2);
}

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use st_peter_client::Client;
use st_peter_telepact::{Error, OWNED_HEADERS_POLL, OnAuth};

use crate::helpers::{TestServer, headers, password, request, session, subscribed};

/// lead-baker with a full row, cashier with a row, stranger with none.
async fn bakery() -> (TestServer, String, String) {
    let server = TestServer::start().await;
    let baker = server
        .add_user("lead-baker", "open sesame, said Ali Baba")
        .await
        .user_id;
    let cashier = server
        .add_user("cashier", "knock knock, who goes there")
        .await
        .user_id;
    server
        .add_user("stranger", "a stranger at the back door")
        .await;
    let roles = server.roles().await;
    roles
        .grant(
            &baker,
            "lead-baker",
            &headers(&[("@employeeId", "baker-001"), ("@station", "oven")]),
            "test",
        )
        .await
        .unwrap();
    roles
        .grant(
            &cashier,
            "cashier",
            &headers(&[("@employeeId", "cashier-002")]),
            "test",
        )
        .await
        .unwrap();
    (server, baker, cashier)
}

fn identity(pairs: Value) -> serde_json::Map<String, Value> {
    pairs.as_object().unwrap().clone()
}

#[tokio::test]
async fn session_token_maps_to_the_users_headers() {
    let (server, _, _) = bakery().await;
    let token = server
        .token("lead-baker", "open sesame, said Ali Baba")
        .await;
    let got = server
        .on_auth()
        .await
        .on_auth(&session(&token))
        .await
        .unwrap();
    assert_eq!(
        got,
        identity(json!({"@employeeId": "baker-001", "@station": "oven"}))
    );
}

#[tokio::test]
async fn password_login_maps_to_the_users_headers() {
    let (server, _, _) = bakery().await;
    let adapter = server.on_auth().await;
    let got = adapter
        .on_auth(&password(
            "lead-baker@bakery.example",
            "open sesame, said Ali Baba",
        ))
        .await
        .unwrap();
    assert_eq!(
        got,
        identity(json!({"@employeeId": "baker-001", "@station": "oven"}))
    );
}

#[tokio::test]
async fn every_owned_header_is_returned_null_where_the_row_lacks_it() {
    let (server, _, _) = bakery().await;
    let adapter = server
        .on_auth()
        .await
        .owned_headers(["@shiftLead"])
        .unwrap();
    let got = adapter
        .on_auth(&password("cashier", "knock knock, who goes there"))
        .await
        .unwrap();
    assert_eq!(
        got,
        identity(json!({"@employeeId": "cashier-002", "@station": null, "@shiftLead": null}))
    );
}

#[tokio::test]
async fn wrong_password_and_unknown_user_are_refused() {
    let (server, _, _) = bakery().await;
    let adapter = server.on_auth().await;
    let wrong = adapter
        .on_auth(&password("lead-baker", "open sesame, said Ali Baba!"))
        .await;
    assert!(matches!(wrong, Err(Error::LoginRefused)), "{wrong:?}");
    let unknown = adapter
        .on_auth(&password("nobody", "open sesame, said Ali Baba"))
        .await;
    assert!(matches!(unknown, Err(Error::LoginRefused)), "{unknown:?}");
}

#[tokio::test]
async fn invalid_or_logged_out_tokens_are_refused() {
    let (server, _, _) = bakery().await;
    let adapter = server.on_auth().await;
    let made_up = format!("stp_{}", "A".repeat(43));
    let got = adapter.on_auth(&session(&made_up)).await;
    assert!(matches!(got, Err(Error::InvalidToken)), "{got:?}");

    let token = server
        .token("lead-baker", "open sesame, said Ali Baba")
        .await;
    // Logged out through the adapter's own client, so its cache forgets the token at once.
    adapter.client().logout(&token).await.unwrap();
    let got = adapter.on_auth(&session(&token)).await;
    assert!(matches!(got, Err(Error::InvalidToken)), "{got:?}");
}

#[tokio::test]
async fn a_verified_user_without_a_row_is_refused() {
    let (server, _, _) = bakery().await;
    let got = server
        .on_auth()
        .await
        .on_auth(&password("stranger", "a stranger at the back door"))
        .await;
    assert!(matches!(got, Err(Error::NoIdentity { .. })), "{got:?}");
}

#[tokio::test]
async fn revoking_the_row_refuses_the_next_request() {
    let (server, baker, _) = bakery().await;
    let adapter = server.on_auth().await;
    let token = server
        .token("lead-baker", "open sesame, said Ali Baba")
        .await;
    adapter.on_auth(&session(&token)).await.unwrap();
    assert!(server.roles().await.revoke(&baker).await.unwrap());
    let got = adapter.on_auth(&session(&token)).await;
    assert!(matches!(got, Err(Error::NoIdentity { .. })), "{got:?}");
}

#[tokio::test]
async fn a_client_sent_owned_header_is_refused_before_st_peter_is_asked() {
    let (mut server, _, _) = bakery().await;
    let adapter = server.on_auth().await;
    let token = server.token("cashier", "knock knock, who goes there").await;
    let mut forged = session(&token);
    forged.insert("@employeeId".into(), json!("baker-001"));
    let got = adapter.on_auth(&forged).await;
    assert!(
        matches!(got, Err(Error::ForgedHeader(ref k)) if k == "@employeeId"),
        "{got:?}"
    );

    // A key owned only by configuration, and a forged null, are refused the same way; with
    // st-peter gone the answer is still "forged", so the check runs before any RPC.
    server.stop().await;
    let adapter = adapter.owned_headers(["@shiftLead"]).unwrap();
    for (key, value) in [("@shiftLead", json!("yes")), ("@station", Value::Null)] {
        let mut forged = session(&token);
        forged.insert(key.into(), value);
        let got = adapter.on_auth(&forged).await;
        assert!(
            matches!(got, Err(Error::ForgedHeader(ref k)) if k == key),
            "{got:?}"
        );
    }
}

#[tokio::test]
async fn st_peter_unreachable_fails_closed_but_cached_answers_still_count() {
    let (mut server, _, _) = bakery().await;
    let adapter = server.on_auth().await;
    let cached = server
        .token("lead-baker", "open sesame, said Ali Baba")
        .await;
    let uncached = server.token("cashier", "knock knock, who goes there").await;
    adapter.on_auth(&session(&cached)).await.unwrap();
    // Cached again once subscribed (the feed's first checkpoint clears the cache); with
    // st-peter stopped it then serves for the fallback TTL (5 s).
    subscribed(&adapter).await;
    adapter.on_auth(&session(&cached)).await.unwrap();
    server.stop().await;

    let got = adapter.on_auth(&session(&cached)).await.unwrap();
    assert_eq!(got["@employeeId"], json!("baker-001"));
    let got = adapter.on_auth(&session(&uncached)).await;
    assert!(matches!(got, Err(Error::Unavailable(_))), "{got:?}");
    let got = adapter
        .on_auth(&password("lead-baker", "open sesame, said Ali Baba"))
        .await;
    assert!(matches!(got, Err(Error::Unavailable(_))), "{got:?}");
}

#[tokio::test]
async fn missing_or_malformed_auth_is_refused() {
    let (server, _, _) = bakery().await;
    let adapter = server.on_auth().await;
    let got = adapter.on_auth(&request(json!({"@id_": 1}))).await;
    assert!(matches!(got, Err(Error::MissingAuth)), "{got:?}");
    let got = adapter
        .on_auth(&request(json!({"@auth_": {"Bearer": {"token": "x"}}})))
        .await;
    assert!(matches!(got, Err(Error::MalformedAuth(_))), "{got:?}");
}

#[tokio::test]
async fn keys_granted_through_another_connection_become_owned_without_a_query_per_request() {
    let (server, baker, cashier) = bakery().await;
    let adapter = server.on_auth().await;
    // Another store on the same file, as the grant CLI in another process would be.
    let elsewhere = server.roles().await;

    // A row read while authenticating teaches the adapter its keys at once...
    elsewhere
        .grant(
            &baker,
            "lead-baker",
            &headers(&[("@employeeId", "baker-001"), ("@shiftLead", "yes")]),
            "test",
        )
        .await
        .unwrap();
    let got = adapter
        .on_auth(&password("lead-baker", "open sesame, said Ali Baba"))
        .await
        .unwrap();
    assert_eq!(got["@shiftLead"], json!("yes"));
    assert!(adapter.owned().contains("@shiftLead"));

    // ...and a key no request has shown yet is picked up by the store's watcher.
    elsewhere
        .grant(
            &cashier,
            "cashier",
            &headers(&[("@employeeId", "cashier-002"), ("@till", "2")]),
            "test",
        )
        .await
        .unwrap();
    let deadline = Instant::now() + OWNED_HEADERS_POLL * 8;
    while !adapter.owned().contains("@till") {
        assert!(Instant::now() < deadline, "@till never became owned");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut forged = password("lead-baker", "open sesame, said Ali Baba");
    forged.insert("@till".into(), json!("9"));
    let got = adapter.on_auth(&forged).await;
    assert!(
        matches!(got, Err(Error::ForgedHeader(ref k)) if k == "@till"),
        "{got:?}"
    );
    let got = adapter
        .on_auth(&password("lead-baker", "open sesame, said Ali Baba"))
        .await
        .unwrap();
    assert_eq!(got["@till"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_logged_out_elsewhere_is_refused_without_waiting_for_a_ttl() {
    let (server, _, _) = bakery().await;
    // Both TTLs far longer than the test: only the revocation feed can evict the answer.
    let long = Duration::from_secs(10 * 60);
    let client = Client::builder(server.target())
        .cache_ttl(long)
        .fallback_ttl(long)
        .build()
        .unwrap();
    let adapter = OnAuth::new(client, server.roles().await);
    let token = server
        .token("lead-baker", "open sesame, said Ali Baba")
        .await;
    // The first verification opens the feed; its first checkpoint clears the cache, so the
    // answer that counts is cached after that.
    adapter.on_auth(&session(&token)).await.unwrap();
    subscribed(&adapter).await;
    let got = adapter.on_auth(&session(&token)).await.unwrap();
    assert_eq!(got["@employeeId"], json!("baker-001"));

    // Logged out through another client, which caches nothing: this adapter's client
    // hears of it from the feed only.
    let other = Client::builder(server.target())
        .cache_ttl(Duration::ZERO)
        .build()
        .unwrap();
    other.logout(&token).await.unwrap();
    let logged_out = Instant::now();
    let patience = Duration::from_secs(10);
    loop {
        match adapter.on_auth(&session(&token)).await {
            Err(Error::InvalidToken) => break,
            Ok(_) => assert!(
                logged_out.elapsed() < patience,
                "still accepted {patience:?} after the logout"
            ),
            Err(other) => panic!("{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "a session logged out elsewhere was refused by on_auth after {:?}",
        logged_out.elapsed()
    );
}

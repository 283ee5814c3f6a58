use std::time::Duration;

use st_peter_client::{Client, Error};

use crate::helpers::{TestServer, subscribe};

#[tokio::test]
async fn connect_is_lazy_and_a_dead_server_is_unavailable_on_first_call() {
    // Bind and drop a listener to get a port nobody listens on.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let client = Client::builder(format!("http://{addr}"))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .expect("construction makes no round trip");
    let err = client
        .verify_token(&format!("stp_{}", "A".repeat(43)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    assert!(err.is_unavailable());
    let err = client
        .login("cashier", "knock knock, who goes there")
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
}

#[tokio::test]
async fn a_stopped_server_is_unavailable_but_cached_answers_still_serve() {
    let mut server = TestServer::start().await;
    server
        .add_user("cashier", "knock knock, who goes there")
        .await;
    let client = server.client();
    let cached = server
        .token(&client, "cashier", "knock knock, who goes there")
        .await;
    let uncached = server
        .token(&client, "cashier", "knock knock, who goes there")
        .await;
    // Filled once subscribed: the feed's first checkpoint clears the cache.
    subscribe(&client).await;
    client.verify_token(&cached).await.unwrap();

    // For the fallback TTL (5 s of the client's clock, which stands still here).
    server.stop().await;
    assert_eq!(
        client.verify_token(&cached).await.unwrap().user.handle,
        "cashier"
    );
    let err = client.verify_token(&uncached).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");

    // The transport error was not cached: once st-peter is back, the token verifies.
    server.resume().await;
    assert_eq!(
        client.verify_token(&uncached).await.unwrap().user.handle,
        "cashier"
    );
}

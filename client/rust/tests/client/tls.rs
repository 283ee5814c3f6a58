//! The client over TLS to the real server, with certificates from the test kit (rcgen).
use st_peter_client::{Client, ClientTlsConfig, Error, LoginOutcome};
use st_peter_server::grpc::serve::ServeOptions;
use st_peter_testkit::{TestServer, pki};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::helpers::settings;

/// The real server serving TLS; the target names `localhost`, as the certificate does.
async fn start(tls: ServerTlsConfig) -> (String, TestServer) {
    let server = TestServer::builder()
        .settings(settings(std::time::Duration::from_secs(3600)))
        .serve_options(ServeOptions {
            tls: Some(tls),
            ..ServeOptions::default()
        })
        .start()
        .await;
    server
        .add_user("cashier", "knock knock, who goes there")
        .await;
    (server.target(), server)
}

async fn login_and_verify(client: &Client) -> Result<(), Error> {
    let LoginOutcome::Authenticated(session) = client
        .login("cashier", "knock knock, who goes there")
        .await?
    else {
        panic!("expected authenticated");
    };
    assert_eq!(
        client.verify_token(&session.token).await?.user.handle,
        "cashier"
    );
    Ok(())
}

#[tokio::test]
async fn the_client_talks_tls_to_a_server_with_a_generated_certificate() {
    let pki = pki("bakery-service");
    let (target, _server) =
        start(ServerTlsConfig::new().identity(Identity::from_pem(&pki.server.0, &pki.server.1)))
            .await;

    let trusted = Client::builder(&target)
        .ca_certificate_pem(&pki.ca_pem)
        .build()
        .unwrap();
    login_and_verify(&trusted).await.unwrap();

    // The system roots do not know this CA: the handshake fails, reported as unavailable.
    let untrusting = Client::connect(&target).unwrap();
    let err = untrusting
        .login("cashier", "knock knock, who goes there")
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");

    // A plaintext client cannot talk to the TLS port either.
    let plain = Client::connect(target.replace("https://", "http://")).unwrap();
    assert!(
        plain
            .login("cashier", "knock knock, who goes there")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let pki = pki("bakery-service");
    let (target, _server) = start(
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&pki.server.0, &pki.server.1))
            .client_ca_root(Certificate::from_pem(&pki.ca_pem)),
    )
    .await;

    let with_identity = Client::builder(&target)
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&pki.ca_pem))
                .identity(Identity::from_pem(&pki.client.0, &pki.client.1)),
        )
        .build()
        .unwrap();
    login_and_verify(&with_identity).await.unwrap();

    let anonymous = Client::builder(&target)
        .ca_certificate_pem(&pki.ca_pem)
        .build()
        .unwrap();
    let err = anonymous
        .login("cashier", "knock knock, who goes there")
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
}

//! Graceful shutdown of the real binary under load: on SIGTERM, logins already in flight
//! finish with their real answer, new calls get UNAVAILABLE, the process exits cleanly, and
//! every session it handed out is there after a restart on the same database.
use std::time::{Duration, Instant};
use tonic::Code;

use st_peter_proto::auth::v1 as pb;
use st_peter_proto::auth::v1::login_response::Result as Outcome;

use crate::helpers::{
    add_user_with_cli, database_url, remember_secret, start_server, start_server_with,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_calls_in_flight_and_refuses_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(dir.path());
    // Twelve bakers, one login each: guesses at one identifier are counted while in flight,
    // so twelve logins of one person at once would be throttled, not queued.
    for n in 0..12 {
        add_user_with_cli(&url, &format!("baker-{n}"), "sourdough-starter");
    }
    // Production argon2 parameters on one hashing thread: a burst of logins queues for
    // a good fraction of a second, so some are in flight when the signal comes.
    let mut server = start_server_with(&url, &["--shutdown-grace", "20s"]);
    let client = server.grpc_client().await;

    let burst: Vec<_> = (0..12)
        .map(|n| {
            let mut client = client.clone();
            tokio::spawn(async move {
                client
                    .login(pb::LoginRequest {
                        identifier: format!("baker-{n}"),
                        password: "sourdough-starter".into(),
                    })
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    server.send_sigterm();
    let signalled = Instant::now();

    // A new connection made after the signal is refused.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut late = st_peter_proto::auth::v1::auth_service_client::AuthServiceClient::new(
        tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
            .unwrap()
            .connect_lazy(),
    );
    let refused = late
        .verify_token(pb::VerifyTokenRequest {
            token: "stp_not-a-real-token".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");

    // Every login sent before the signal finished with a real answer.
    let mut tokens = Vec::new();
    for call in burst {
        match call.await.unwrap() {
            Ok(reply) => match reply.into_inner().result.unwrap() {
                Outcome::Authenticated(session) => {
                    remember_secret(&session.token);
                    tokens.push(session.token);
                }
                other => panic!("unexpected outcome {other:?}"),
            },
            Err(status) => panic!("a login in flight at SIGTERM failed: {status:?}"),
        }
    }
    assert_eq!(tokens.len(), 12);

    // The process exits by itself, cleanly, once the calls are done.
    let status = loop {
        if let Some(status) = server.try_wait() {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(20),
            "still running after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status:?}");

    // Nothing half-written: every session handed out is valid on the next start.
    let restarted = start_server(&url);
    let mut client = restarted.grpc_client().await;
    for token in tokens {
        client
            .verify_token(pb::VerifyTokenRequest { token })
            .await
            .expect("a session issued during shutdown is missing after restart");
    }
}

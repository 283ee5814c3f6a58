//! A killed process loses nothing it acknowledged: a session is committed before its token
//! is answered. SQLite only on every backend: the embedded file is ours to get right,
//! PostgreSQL's durability is its own. (A SIGKILL cannot lose a committed WAL frame whatever
//! `synchronous` says; that setting, FULL, which also survives a power cut, is checked on
//! the pool's connections by a unit test in `store::sqlite`.)
use st_peter_proto::auth::v1 as pb;

use crate::helpers::{add_user_with_cli, sqlite_database_url, start_server, token};

#[tokio::test]
async fn sessions_acknowledged_before_sigkill_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_database_url(dir.path());
    add_user_with_cli(&url, "cashier", "knock knock, who goes there");

    let mut server = start_server(&url);
    let mut client = server.grpc_client().await;
    let mut tokens = Vec::new();
    for _ in 0..20 {
        tokens.push(token(&mut client, "cashier", "knock knock, who goes there").await);
    }
    // Kill straight after the last acknowledgement: no graceful shutdown, no checkpoint.
    server.kill();

    let restarted = start_server(&url);
    let mut client = restarted.grpc_client().await;
    for token in &tokens {
        let verified = client
            .verify_token(pb::VerifyTokenRequest {
                token: token.clone(),
            })
            .await
            .unwrap_or_else(|status| panic!("a session was lost: {status}"))
            .into_inner();
        assert_eq!(verified.user.unwrap().handle, "cashier");
    }
}

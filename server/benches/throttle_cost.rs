//! What the throttles add to one login: sequential Logins (one at a time, so each latency is
//! the request's own) against one in-process server on a fresh PostgreSQL database, where
//! the throttles are shared (in the database), and on SQLite, where they are in memory.
//! Cheap argon2 parameters (the tests'), so the throttle's statements are not lost in the
//! hash; default throttle policies, one user logging in with the right password.
//! Run: `scripts/pg.sh run -- cargo bench -p st-peter-server --bench throttle_cost`
use std::time::{Duration, Instant};

use st_peter_proto::auth::v1 as pb;
use st_peter_testkit::{TestServer, test_settings};

const WARM_UP: usize = 200;
const LOGINS: usize = 2000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut backends = vec![(
        "sqlite",
        format!("sqlite://{}", dir.path().join("bench.db").display()),
    )];
    match std::env::var("ST_PETER_TEST_POSTGRES_URL") {
        Ok(server) => backends.push(("postgres", fresh_database(&server).await?)),
        Err(_) => eprintln!("PostgreSQL skipped: run through scripts/pg.sh run -- ..."),
    }
    for (name, url) in backends {
        let mut latencies = logins(&url).await?;
        latencies.sort();
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
        println!(
            "{name:>8}: Login p50 {:?}  p90 {:?}  p99 {:?}  ({LOGINS} sequential)",
            at(0.5),
            at(0.9),
            at(0.99)
        );
    }
    Ok(())
}

async fn fresh_database(server: &str) -> anyhow::Result<String> {
    st_peter_testkit::create_postgres_database(server, "st_peter_bench").await
}

/// The latency of each of LOGINS sequential good logins, after a warm-up.
async fn logins(url: &str) -> anyhow::Result<Vec<Duration>> {
    let mut server = TestServer::builder()
        .settings(test_settings())
        .database_url(url)
        .start()
        .await;
    server
        .add_user("lead-baker", "open sesame, said Ali Baba")
        .await;
    let mut client = server.grpc_client().await;
    let request = pb::LoginRequest {
        identifier: "lead-baker".into(),
        password: "open sesame, said Ali Baba".into(),
    };
    let mut latencies = Vec::with_capacity(LOGINS);
    for n in 0..WARM_UP + LOGINS {
        let start = Instant::now();
        match client.login(request.clone()).await?.into_inner().result {
            Some(pb::login_response::Result::Authenticated(_)) => {}
            other => anyhow::bail!("expected authenticated, got {other:?}"),
        }
        if n >= WARM_UP {
            latencies.push(start.elapsed());
        }
    }
    server.stop().await;
    Ok(latencies)
}

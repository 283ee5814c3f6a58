//! VerifyToken and Login rates of the real server on each backend: SQLite always, and
//! PostgreSQL when ST_PETER_TEST_POSTGRES_URL names a cluster (a fresh database is made).
//! Production argon2 parameters, throttling off, clients on 127.0.0.1 sharing the machine.
//! Run: `scripts/pg.sh run -- cargo bench -p st-peter-server --bench backends`
use std::time::{Duration, Instant};

use st_peter_proto::auth::v1 as pb;
use st_peter_server::domain::app::Settings;
use st_peter_server::domain::throttle::ThrottlePolicies;
use st_peter_testkit::TestServer;

/// Requests in flight at once.
const CONCURRENCY: usize = 16;
const VERIFY_FOR: Duration = Duration::from_secs(5);
const LOGIN_FOR: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut backends = vec![(
        "sqlite",
        format!("sqlite://{}", dir.path().join("bench.db").display()),
    )];
    if let Ok(server) = std::env::var("ST_PETER_TEST_POSTGRES_URL") {
        backends.push(("postgres", fresh_database(&server).await?));
    } else {
        eprintln!("PostgreSQL skipped: set ST_PETER_TEST_POSTGRES_URL (scripts/pg.sh run -- ...)");
    }
    println!(
        "{} cores, {CONCURRENCY} concurrent requests",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for (name, url) in backends {
        let (verify, login) = measure(&url).await?;
        println!("{name:>8}: VerifyToken {verify:>8.0}/s   Login {login:>6.1}/s");
    }
    Ok(())
}

async fn fresh_database(server: &str) -> anyhow::Result<String> {
    st_peter_testkit::create_postgres_database(server, "st_peter_bench").await
}

/// Requests per second of VerifyToken and of Login against a server on `url`.
async fn measure(url: &str) -> anyhow::Result<(f64, f64)> {
    let settings = Settings {
        throttle: ThrottlePolicies::unlimited(),
        ..Settings::default()
    };
    let mut server = TestServer::builder()
        .settings(settings)
        .database_url(url)
        .start()
        .await;
    server
        .add_user("lead-baker", "open sesame, said Ali Baba")
        .await;
    let client = server.grpc_client().await;
    let login = pb::LoginRequest {
        identifier: "lead-baker".into(),
        password: "open sesame, said Ali Baba".into(),
    };
    let token = match client
        .clone()
        .login(login.clone())
        .await?
        .into_inner()
        .result
    {
        Some(pb::login_response::Result::Authenticated(auth)) => auth.token,
        other => anyhow::bail!("expected authenticated, got {other:?}"),
    };

    let verify_rate = rate(
        VERIFY_FOR,
        move |mut client: Client| {
            let request = pb::VerifyTokenRequest {
                token: token.clone(),
            };
            async move { client.verify_token(request).await.map(drop) }
        },
        &client,
    )
    .await?;
    let login_rate = rate(
        LOGIN_FOR,
        move |mut client: Client| {
            let request = login.clone();
            async move {
                match client.login(request).await?.into_inner().result {
                    Some(pb::login_response::Result::Authenticated(_)) => Ok(()),
                    other => Err(tonic::Status::internal(format!("{other:?}"))),
                }
            }
        },
        &client,
    )
    .await?;
    server.stop().await;
    Ok((verify_rate, login_rate))
}

type Client = st_peter_testkit::AuthClient;

/// Runs `call` from CONCURRENCY tasks for `duration`; successful calls per second.
async fn rate<F, Fut>(duration: Duration, call: F, client: &Client) -> anyhow::Result<f64>
where
    F: Fn(Client) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), tonic::Status>> + Send,
{
    let start = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let call = call.clone();
            let client = client.clone();
            tokio::spawn(async move {
                let mut done = 0u64;
                while start.elapsed() < duration {
                    call(client.clone()).await?;
                    done += 1;
                }
                Ok::<_, tonic::Status>(done)
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

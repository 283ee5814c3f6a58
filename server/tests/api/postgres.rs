//! Operating on PostgreSQL: clear start-up errors, replicas starting at once on an empty
//! database, the database restarted under traffic, and health following the database. The
//! tests that need a cluster are ignored unless asked for (`--include-ignored`, as
//! scripts/test.sh's PostgreSQL pass does), and fail when asked for without one.
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use st_peter_proto::auth::v1 as pb;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::{
    ServerProcess, add_user_with_cli, binary, create_postgres_database, logs,
    required_postgres_url, start_server, start_server_with, token, with_database,
};
use crate::replicas::postgres_database;

/// Runs the binary's `user list` against `url`; returns (success, stderr).
fn start_up(url: &str) -> (bool, String) {
    let output = Command::new(binary())
        .args(["user", "list", "--db-acquire-timeout", "3s"])
        .env("ST_PETER_DATABASE_URL", url)
        .env("ST_PETER_TOTP_KEY", crate::helpers::shared_totp_key())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_malformed_url_is_a_clear_start_up_error_without_the_password() {
    let (ok, stderr) = start_up("postgres://st_peter:hunter2-secret@127.0.0.1:notaport/auth");
    assert!(!ok);
    assert!(stderr.contains("database_url"), "{stderr}");
    assert!(!stderr.contains("hunter2-secret"), "{stderr}");

    let (ok, stderr) = start_up("mysql://st_peter:hunter2-secret@127.0.0.1/auth");
    assert!(!ok);
    assert!(stderr.contains("unsupported scheme"), "{stderr}");
    assert!(!stderr.contains("hunter2-secret"), "{stderr}");
}

#[test]
fn a_refused_connection_is_a_clear_start_up_error() {
    // A port nobody listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let (ok, stderr) = start_up(&format!(
        "postgres://st_peter:hunter2-secret@127.0.0.1:{port}/auth"
    ));
    assert!(!ok);
    assert!(
        stderr.contains(&format!("127.0.0.1:{port} refused the connection")),
        "{stderr}"
    );
    assert!(stderr.contains("st_peter:***@"), "{stderr}");
    assert!(!stderr.contains("hunter2-secret"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
#[ignore = "needs PostgreSQL: runs in the PostgreSQL pass (scripts/pg.sh run -- cargo test -p st-peter-server --test api -- --include-ignored)"]
async fn wrong_credentials_and_a_missing_database_are_clear_start_up_errors() {
    let server = required_postgres_url();
    let (scheme_user, rest) = server.rsplit_once('@').unwrap();
    let (user_part, password) = scheme_user.rsplit_once(':').unwrap();
    let wrong = format!("{user_part}:wrong-password-42@{rest}");
    let (ok, stderr) = start_up(&wrong);
    assert!(!ok);
    assert!(stderr.contains("wrong user name or password"), "{stderr}");
    assert!(!stderr.contains("wrong-password-42"), "{stderr}");

    let missing = with_database(&server, "st_peter_no_such_database");
    let (ok, stderr) = start_up(&missing);
    assert!(!ok);
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert!(!stderr.contains(password), "{stderr}");
}

#[tokio::test]
#[ignore = "needs PostgreSQL: runs in the PostgreSQL pass (scripts/pg.sh run -- cargo test -p st-peter-server --test api -- --include-ignored)"]
async fn replicas_starting_at_once_migrate_an_empty_database_once() {
    let url = postgres_database().await;
    // Two real processes and four in-process stores race for the same empty database.
    let servers: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || start_server(&url))
        })
        .collect();
    let stores: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { st_peter_server::store::connect(&url).await.map(drop) })
        })
        .collect();
    for store in stores {
        store.await.unwrap().expect("a concurrent start failed");
    }
    let servers: Vec<ServerProcess> = servers.into_iter().map(|t| t.join().unwrap()).collect();

    use sqlx::Connection;
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut db)
            .await
            .unwrap();
    // Each migration the binary embeds, applied once.
    let embedded = std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../migrations/postgres"
    ))
    .unwrap()
    .count();
    assert_eq!(applied, (1..=embedded as i64).collect::<Vec<_>>());

    add_user_with_cli(&url, "cashier", "knock knock, who goes there");
    for server in &servers {
        token(
            &mut server.grpc_client().await,
            "cashier",
            "knock knock, who goes there",
        )
        .await;
    }
}

/// A cluster of this test's own (the shared one must not go down under other tests).
struct OwnCluster {
    url: String,
    dir: String,
}

fn pg_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg.sh")
}

impl OwnCluster {
    fn start() -> Self {
        let output = Command::new(pg_script()).arg("start").output().unwrap();
        assert!(
            output.status.success(),
            "pg.sh start: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8(output.stdout).unwrap();
        let value = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(&format!("export {name}=")))
                .unwrap_or_else(|| panic!("{name} missing from pg.sh start: {text}"))
                .to_owned()
        };
        Self {
            url: value("ST_PETER_TEST_POSTGRES_URL"),
            dir: value("ST_PETER_TEST_PG_DIR"),
        }
    }

    fn ctl(&self, args: &[&str]) {
        let status = Command::new(pg_script())
            .arg("ctl")
            .args(args)
            .env("ST_PETER_TEST_PG_DIR", &self.dir)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pg_ctl {args:?} failed");
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = Command::new(pg_script()).args(["stop", &self.dir]).status();
    }
}

/// What one request of the traffic loop got, and when.
#[derive(Debug, Clone, Copy)]
struct Sample {
    started: Instant,
    took: Duration,
    /// `None`: no answer within the bound (a hang).
    code: Option<Code>,
}

/// The longest any request may take: the pool's acquire timeout (1 s) plus slack for a
/// busy test machine.
const BOUND: Duration = Duration::from_secs(8);

async fn traffic(
    mut clients: Vec<crate::helpers::Client>,
    token: String,
    running: Arc<AtomicBool>,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    // Bounded: at most this many rounds even if nobody stops the loop.
    for round in 0..2_000usize {
        if !running.load(Ordering::SeqCst) {
            break;
        }
        let client = &mut clients[round % 2];
        let started = Instant::now();
        let answer = if round % 3 == 2 {
            tokio::time::timeout(
                BOUND,
                client.login(pb::LoginRequest {
                    identifier: "cashier".into(),
                    password: "knock knock, who goes there".into(),
                }),
            )
            .await
            .map(|reply| reply.map(|_| ()))
        } else {
            tokio::time::timeout(
                BOUND,
                client.verify_token(pb::VerifyTokenRequest {
                    token: token.clone(),
                }),
            )
            .await
            .map(|reply| reply.map(|_| ()))
        };
        let code = match answer {
            Ok(Ok(())) => Some(Code::Ok),
            Ok(Err(status)) => Some(status.code()),
            Err(_elapsed) => None,
        };
        samples.push(Sample {
            started,
            took: started.elapsed(),
            code,
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: runs in the PostgreSQL pass (scripts/pg.sh run -- cargo test -p st-peter-server --test api -- --include-ignored)"]
async fn replicas_answer_unavailable_while_postgres_is_down_and_recover_without_a_restart() {
    required_postgres_url();
    let cluster = OwnCluster::start();
    let url = create_postgres_database(&cluster.url).await;
    add_user_with_cli(&url, "cashier", "knock knock, who goes there");
    let pool_args = ["--db-acquire-timeout", "1s", "--db-max-connections", "4"];
    let mut a = start_server_with(&url, &pool_args);
    let mut b = start_server_with(&url, &pool_args);
    let mut on_a = a.grpc_client().await;
    let session_token = token(&mut on_a, "cashier", "knock knock, who goes there").await;

    let running = Arc::new(AtomicBool::new(true));
    // Two loops, each alternating between the replicas.
    let on_b = b.grpc_client().await;
    let loads = [
        tokio::spawn(traffic(
            vec![on_a.clone(), on_b.clone()],
            session_token.clone(),
            running.clone(),
        )),
        tokio::spawn(traffic(
            vec![on_b, on_a],
            session_token.clone(),
            running.clone(),
        )),
    ];

    tokio::time::sleep(Duration::from_secs(2)).await;
    let stop_began = Instant::now();
    cluster.ctl(&["stop", "-m", "fast", "-w"]);
    let down_since = Instant::now();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let down_until = Instant::now();
    cluster.ctl(&["start", "-w"]);
    let up_again = Instant::now();
    tokio::time::sleep(Duration::from_secs(6)).await;
    running.store(false, Ordering::SeqCst);
    let mut samples = Vec::new();
    for load in loads {
        samples.extend(load.await.unwrap());
    }
    samples.sort_by_key(|s| s.started);

    // Neither process died or was restarted.
    assert!(a.try_wait().is_none(), "replica A exited");
    assert!(b.try_wait().is_none(), "replica B exited");

    for sample in &samples {
        assert!(
            sample.code.is_some() && sample.took < BOUND,
            "a request hung: {sample:?}"
        );
        assert!(
            matches!(sample.code, Some(Code::Ok | Code::Unavailable)),
            "neither OK nor UNAVAILABLE: {sample:?}; the servers logged:\n{}",
            failed_requests_logged()
        );
    }
    // Answered before the stop began (a request in flight at that moment may get either).
    let before: Vec<_> = samples
        .iter()
        .filter(|s| s.started + s.took < stop_began)
        .collect();
    assert!(before.len() >= 5, "too little traffic before the stop");
    assert!(
        before.iter().all(|s| s.code == Some(Code::Ok)),
        "{before:?}"
    );

    let down: Vec<_> = samples
        .iter()
        .filter(|s| s.started >= down_since && s.started + s.took <= down_until)
        .collect();
    assert!(
        down.len() >= 2,
        "too little traffic during the outage: {down:?}"
    );
    assert!(
        down.iter().all(|s| s.code == Some(Code::Unavailable)),
        "{down:?}"
    );

    // Recovered: the last requests after the restart (both replicas, verify and login).
    let after: Vec<_> = samples.iter().filter(|s| s.started >= up_again).collect();
    let tail = &after[after.len().saturating_sub(8)..];
    assert!(tail.len() == 8, "too little traffic after the restart");
    assert!(
        tail.iter().all(|s| s.code == Some(Code::Ok)),
        "not recovered: {after:?}"
    );
    eprintln!(
        "outage: {} requests before, {} during (all UNAVAILABLE, slowest {:?}), {} after",
        before.len(),
        down.len(),
        down.iter().map(|s| s.took).max().unwrap_or_default(),
        after.len()
    );
}

/// Polls `grpc.health.v1` (the overall status and the auth service's) until both report
/// `want`, for at most `within`; returns how long it took.
async fn health_becomes(
    health: &mut HealthClient<tonic::transport::Channel>,
    want: ServingStatus,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let mut statuses = Vec::new();
        for service in ["", "st_peter.auth.v1.AuthService"] {
            let reply = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .expect("the health service answers while the database is down");
            statuses.push(reply.into_inner().status());
        }
        if statuses.iter().all(|status| *status == want) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "health still {statuses:?}, not {want:?}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: runs in the PostgreSQL pass (scripts/pg.sh run -- cargo test -p st-peter-server --test api -- --include-ignored)"]
async fn health_is_not_serving_while_postgres_is_down_and_serving_when_it_is_back() {
    required_postgres_url();
    let cluster = OwnCluster::start();
    let url = create_postgres_database(&cluster.url).await;
    let server = start_server_with(&url, &["--db-acquire-timeout", "1s"]);
    let mut health = HealthClient::new(
        tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
            .unwrap()
            .connect_lazy(),
    );
    health_becomes(&mut health, ServingStatus::Serving, Duration::from_secs(5)).await;

    cluster.ctl(&["stop", "-m", "fast", "-w"]);
    let noticed = health_becomes(
        &mut health,
        ServingStatus::NotServing,
        Duration::from_secs(10),
    )
    .await;
    cluster.ctl(&["start", "-w"]);
    let recovered =
        health_becomes(&mut health, ServingStatus::Serving, Duration::from_secs(15)).await;
    eprintln!("NOT_SERVING {noticed:?} after the stop, SERVING {recovered:?} after the start");
}

/// The servers' log lines for requests answered INTERNAL, which say which fault it was.
fn failed_requests_logged() -> String {
    logs()
        .lines()
        .filter(|line| line.contains("request failed"))
        .collect::<Vec<_>>()
        .join("\n")
}

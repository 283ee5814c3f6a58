//! Prometheus metrics of the real binary: `--metrics-listen` serves `/metrics`, the calls
//! made here move the counters by exactly what they did, and the whole output passes the
//! Prometheus project's own linter (`promcheck`, built by scripts/test.sh from
//! client_golang's promlint and common/expfmt's text parser: what `promtool check metrics`
//! runs). Without the flag nothing is served; a bad value names the flag.
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use st_peter_proto::auth::v1 as pb;
use st_peter_proto::auth::v1::login_response::Result as Outcome;
use tonic::Code;

use crate::helpers::{
    add_user_with_cli, binary, database_url, go_tool, remember_secret, start_server,
    start_server_with,
};

const AUTH: &str = "st_peter.auth.v1.AuthService";

/// `GET /metrics` over plain HTTP/1.1; panics unless it answers 200 in the text format.
fn scrape(address: SocketAddr) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(head.contains("content-length:"), "{head}");
    body.to_owned()
}

/// The status line an HTTP/1.1 GET of `path` gets (empty if the server only hangs up, as
/// the HTTP/2-only gRPC port does).
fn status_of(address: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    // A server that hangs up at once may do so before the request is written (a broken
    // pipe): that is the same answer as no status line.
    let _ = write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    );
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    response.lines().next().unwrap_or_default().to_owned()
}

/// Every sample of a scrape: name and label set -> value.
type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

fn parse(text: &str) -> Samples {
    let mut samples = Samples::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let inner = rest.strip_suffix('}').unwrap();
                let labels = inner
                    .split("\",")
                    .filter(|pair| !pair.is_empty())
                    .map(|pair| {
                        let (key, value) = pair.split_once("=\"").unwrap();
                        (key.to_owned(), value.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (name.to_owned(), labels)
            }
            None => (series.to_owned(), BTreeMap::new()),
        };
        let value = match value {
            "+Inf" => f64::INFINITY,
            value => value.parse().unwrap(),
        };
        assert!(
            samples.insert((name, labels), value).is_none(),
            "a series twice: {line}"
        );
    }
    samples
}

/// The value of one series (0 when absent: a labelled series appears on first use).
fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    let labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples
        .get(&(name.to_owned(), labels))
        .copied()
        .unwrap_or(0.0)
}

/// How much a series moved between two scrapes.
fn moved(before: &Samples, after: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(after, name, labels) - value(before, name, labels)
}

fn rpcs(method: &str, code: &str) -> [(&'static str, String); 3] {
    [
        ("service", AUTH.to_owned()),
        ("method", method.to_owned()),
        ("code", code.to_owned()),
    ]
}

fn moved_rpcs(before: &Samples, after: &Samples, method: &str, code: &str) -> f64 {
    let labels = rpcs(method, code);
    let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
    moved(before, after, "st_peter_rpcs_total", &labels)
}

fn moved_latency_count(before: &Samples, after: &Samples, method: &str, code: &str) -> f64 {
    let labels = rpcs(method, code);
    let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
    moved(
        before,
        after,
        "st_peter_rpc_duration_seconds_count",
        &labels,
    )
}

fn login_outcome(samples: &Samples, outcome: &str) -> f64 {
    value(
        samples,
        "st_peter_login_outcomes_total",
        &[("step", "password"), ("outcome", outcome)],
    )
}

/// Scrapes until `done` holds for a scrape (a few seconds at most).
fn scrape_until(address: SocketAddr, what: &str, done: impl Fn(&Samples) -> bool) -> Samples {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let samples = parse(&scrape(address));
        if done(&samples) {
            return samples;
        }
        assert!(Instant::now() < deadline, "never saw {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the Prometheus linter on a scrape; panics with its findings.
fn promcheck(text: &str) {
    let output = crate::helpers::output_with_stdin(&mut Command::new(go_tool("promcheck")), text);
    assert!(
        output.status.success(),
        "promcheck found problems ({}):\n{}\n--- the scrape:\n{text}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_the_calls_did_and_pass_the_prometheus_linter() {
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(dir.path());
    add_user_with_cli(&url, "baker", "sourdough-starter");
    let server = start_server_with(
        &url,
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            "--db-max-connections",
            "7",
        ],
    );
    let metrics = server
        .metrics_addr
        .expect("the ready file names the metrics address");
    assert_ne!(metrics.port(), 0);
    assert!(
        status_of(metrics, "/").contains(" 404"),
        "only /metrics is served"
    );
    let mut client = server.grpc_client().await;

    let before = parse(&scrape(metrics));
    assert_eq!(
        value(
            &before,
            "st_peter_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );

    // A good login and a wrong password: two Login calls answered OK, two outcomes.
    let token = match client
        .login(pb::LoginRequest {
            identifier: "baker".into(),
            password: "sourdough-starter".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap()
    {
        Outcome::Authenticated(session) => session.token,
        other => panic!("expected a session, got {other:?}"),
    };
    remember_secret(&token);
    let wrong = client
        .login(pb::LoginRequest {
            identifier: "baker".into(),
            password: "not-the-starter".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        matches!(wrong.result, Some(Outcome::Failed(_))),
        "{wrong:?}"
    );

    // The same token verified until the cache answers it (it is trusted once the
    // revocation feed is caught up, moments after start): the first is a miss.
    let mut verified = 0;
    let hits_before = value(&before, "st_peter_verify_cache_hits_total", &[]);
    let after_verifies = loop {
        client
            .verify_token(pb::VerifyTokenRequest {
                token: token.clone(),
            })
            .await
            .unwrap();
        verified += 1;
        let samples = parse(&scrape(metrics));
        if value(&samples, "st_peter_verify_cache_hits_total", &[]) > hits_before {
            break samples;
        }
        assert!(verified < 50, "no verification was ever a cache hit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let hits = moved(
        &before,
        &after_verifies,
        "st_peter_verify_cache_hits_total",
        &[],
    );
    let misses = moved(
        &before,
        &after_verifies,
        "st_peter_verify_cache_misses_total",
        &[],
    );
    assert_eq!(hits, 1.0);
    assert_eq!(misses, f64::from(verified - 1));
    assert!(misses >= 1.0, "the first verification reads the database");

    // A malformed token is refused before the cache: UNAUTHENTICATED, no lookup.
    let refused = client
        .verify_token(pb::VerifyTokenRequest {
            token: "stp_not-a-token".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);

    // An open WatchRevocations stream is in flight until its caller drops it.
    let stream = client
        .watch_revocations(pb::WatchRevocationsRequest { after_sequence: 0 })
        .await
        .unwrap()
        .into_inner();
    let watching = [("service", AUTH), ("method", "WatchRevocations")];
    scrape_until(metrics, "the open stream in flight", |s| {
        value(s, "st_peter_rpcs_in_flight", &watching) == 1.0
    });

    // Logout writes a revocation, which the feed brings back: one lag sample.
    let lag_before = value(&before, "st_peter_revocation_feed_lag_seconds_count", &[]);
    client
        .logout(pb::LogoutRequest {
            token: token.clone(),
        })
        .await
        .unwrap();
    drop(stream);
    let after = scrape_until(metrics, "the logout's revocation applied", |s| {
        value(s, "st_peter_revocation_feed_lag_seconds_count", &[]) > lag_before
            && value(s, "st_peter_rpcs_in_flight", &watching) == 0.0
    });

    // RPCs by method and code, counted and timed alike.
    for (method, code, count) in [
        ("Login", "OK", 2.0),
        ("VerifyToken", "OK", f64::from(verified)),
        ("VerifyToken", "UNAUTHENTICATED", 1.0),
        ("Logout", "OK", 1.0),
        ("WatchRevocations", "CANCELLED", 1.0),
    ] {
        assert_eq!(
            moved_rpcs(&before, &after, method, code),
            count,
            "{method} {code}"
        );
        assert_eq!(
            moved_latency_count(&before, &after, method, code),
            count,
            "latency of {method} {code}"
        );
    }
    assert_eq!(moved_rpcs(&before, &after, "Login", "UNAVAILABLE"), 0.0);
    assert_eq!(
        value(
            &after,
            "st_peter_rpcs_in_flight",
            &[("service", AUTH), ("method", "Login")]
        ),
        0.0
    );
    let verify_ok = rpcs("VerifyToken", "OK");
    let verify_ok: Vec<(&str, &str)> = verify_ok.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut inf = verify_ok.clone();
    inf.push(("le", "+Inf"));
    assert_eq!(
        value(&after, "st_peter_rpc_duration_seconds_bucket", &inf),
        value(&after, "st_peter_rpc_duration_seconds_count", &verify_ok)
    );
    assert!(value(&after, "st_peter_rpc_duration_seconds_sum", &verify_ok) > 0.0);

    // Login outcomes by reason.
    assert_eq!(
        login_outcome(&after, "success") - login_outcome(&before, "success"),
        1.0
    );
    assert_eq!(
        login_outcome(&after, "failure") - login_outcome(&before, "failure"),
        1.0
    );
    assert_eq!(login_outcome(&after, "throttled"), 0.0);
    assert_eq!(login_outcome(&after, "shed"), 0.0);

    // Hashing: two checks, each waited in the queue once; nothing pending or shed.
    assert_eq!(
        moved(&before, &after, "st_peter_password_hashes_total", &[]),
        2.0
    );
    assert_eq!(
        moved(
            &before,
            &after,
            "st_peter_password_hash_queue_wait_seconds_count",
            &[]
        ),
        2.0
    );
    assert_eq!(value(&after, "st_peter_password_hash_pending", &[]), 0.0);
    assert_eq!(value(&after, "st_peter_password_hash_shed_total", &[]), 0.0);

    // The pool as configured; a connection in use or idle, never more than the maximum.
    assert_eq!(value(&after, "st_peter_db_pool_max_connections", &[]), 7.0);
    let in_use = value(
        &after,
        "st_peter_db_pool_connections",
        &[("state", "in_use")],
    );
    let idle = value(&after, "st_peter_db_pool_connections", &[("state", "idle")]);
    assert!(
        in_use + idle >= 1.0 && in_use + idle <= 7.0,
        "{in_use} + {idle}"
    );

    // No label carries an identifier, a token or an address.
    let text = scrape(metrics);
    for secret in ["baker", "sourdough", &token, "127.0.0.1"] {
        assert!(!text.contains(secret), "{secret} in the metrics");
    }
    promcheck(&text);
}

#[test]
fn a_broken_exposition_fails_the_linter() {
    // The checker the test above relies on does reject what Prometheus would: a counter
    // without `_total` and a sample that does not parse.
    let lint = Command::new(go_tool("promcheck"))
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .and_then(|mut child| {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(b"# HELP logins Logins.\n# TYPE logins counter\nlogins 1\n")?;
            child.wait_with_output()
        })
        .unwrap();
    assert_eq!(lint.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&lint.stderr).contains("_total"));
    let parse = Command::new(go_tool("promcheck"))
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .and_then(|mut child| {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(b"logins_total one\n")?;
            child.wait()
        })
        .unwrap();
    assert_eq!(parse.code(), Some(1));
}

#[test]
fn without_metrics_listen_no_metrics_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&database_url(dir.path()));
    assert_eq!(
        server.metrics_addr, None,
        "the ready file has no metrics line"
    );
    assert!(
        !server.log().contains("serving metrics"),
        "{}",
        server.log()
    );
    // The gRPC port serves gRPC only: no /metrics there either.
    let status = status_of(server.addr, "/metrics");
    assert!(!status.contains(" 200"), "{status}");
}

#[test]
fn a_bad_metrics_listen_value_is_refused_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(dir.path());
    let serve = |args: &[&str], env: Option<&str>| {
        let mut command = Command::new(binary());
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("ST_PETER_DATABASE_URL", &url)
            .env_remove("ST_PETER_METRICS_LISTEN");
        for (key, value) in crate::helpers::backend_env(&url) {
            command.env(key, value);
        }
        if let Some(value) = env {
            command.env("ST_PETER_METRICS_LISTEN", value);
        }
        let output = command.stdin(Stdio::null()).output().unwrap();
        assert!(
            !output.status.success(),
            "serve started with {args:?} {env:?}"
        );
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let not_an_address = serve(&["--metrics-listen", "localhost-ish"], None);
    assert!(
        not_an_address.contains("--metrics-listen") && not_an_address.contains("localhost-ish"),
        "{not_an_address}"
    );
    // From the environment, an address another process holds.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let busy = serve(&[], Some(&address));
    assert!(
        busy.contains("--metrics-listen") && busy.contains(&address),
        "{busy}"
    );
}

//! OpenTelemetry traces, read back from a real OTLP receiver: Jaeger (built by
//! `scripts/test.sh` with `go install`'s toolchain), receiving OTLP/gRPC and keeping the
//! traces in memory, which its query API answers.
//!
//! The real binary exports to it when `OTEL_EXPORTER_OTLP_ENDPOINT` is set: one span per
//! RPC, a child of the caller's span named by `traceparent`, with store and hashing spans
//! under it, and no secret anywhere. Without the variable it exports nothing.
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use st_peter_proto::auth::v1 as pb;

use crate::helpers::{
    ServerProcess, add_user_with_cli, backend_env, binary, database_url, go_tool, secret_appears,
    secrets,
};

const PATIENCE: Duration = Duration::from_secs(30);

/// A port free now, for Jaeger to bind (it runs once; no restart can lose it).
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Jaeger on free ports, with an in-memory store; killed when dropped.
struct Jaeger {
    child: Child,
    otlp: SocketAddr,
    query: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Jaeger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Jaeger {
    fn start(otlp: SocketAddr) -> Jaeger {
        let query = free_port();
        let query_grpc = free_port();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("jaeger.yaml");
        std::fs::write(
            &config,
            format!(
                "service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: []
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: error
extensions:
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: {query}
    grpc:
      endpoint: {query_grpc}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 10000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: {otlp}
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"
            ),
        )
        .unwrap();
        let child = Command::new(go_tool("jaeger"))
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let jaeger = Jaeger {
            child,
            otlp,
            query,
            _dir: dir,
        };
        let deadline = Instant::now() + PATIENCE;
        while jaeger.try_get("/api/services").is_none() || TcpStream::connect(jaeger.otlp).is_err()
        {
            assert!(Instant::now() < deadline, "jaeger did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        jaeger
    }

    /// The body of an HTTP GET on the query API (HTTP/1.0: no chunking, closed at the end).
    fn try_get(&self, path: &str) -> Option<String> {
        let mut stream = TcpStream::connect(self.query).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n",
            self.query
        )
        .ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        let (head, body) = answer.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.0 200")
            .then(|| body.to_owned())
            .or_else(|| head.starts_with("HTTP/1.1 200").then(|| body.to_owned()))
    }

    /// The trace as Jaeger's OTLP-shaped API v3 answers it: every span with its parent and
    /// attributes, waiting until `ready` holds (export is batched).
    fn trace(&self, trace_id: &str, ready: impl Fn(&[Span]) -> bool) -> (Vec<Span>, String) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(body) = self.try_get(&format!("/api/v3/traces/{trace_id}")) {
                let spans = spans_of(&serde_json::from_str(&body).unwrap());
                if ready(&spans) {
                    return (spans, body);
                }
            }
            assert!(
                Instant::now() < deadline,
                "trace {trace_id} incomplete in jaeger"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Everything Jaeger holds for `service` (API v1: every span with its tags).
    fn everything_of(&self, service: &str) -> String {
        self.try_get(&format!(
            "/api/traces?service={service}&limit=1000&lookback=1h"
        ))
        .unwrap_or_default()
    }

    fn services(&self) -> Value {
        serde_json::from_str(&self.try_get("/api/services").unwrap()).unwrap()
    }
}

#[derive(Debug, Clone)]
struct Span {
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    attributes: serde_json::Map<String, Value>,
}

impl Span {
    fn attribute(&self, key: &str) -> Option<String> {
        let value = self.attributes.get(key)?;
        // OTLP JSON: {"stringValue": ".."} or {"intValue": ".."} (64-bit ints are strings).
        let value = value.as_object()?.values().next()?;
        Some(match value {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        })
    }
}

/// Spans of an OTLP JSON answer (`result.resourceSpans[].scopeSpans[].spans[]`).
fn spans_of(answer: &Value) -> Vec<Span> {
    let mut spans = Vec::new();
    let resources = answer["result"]["resourceSpans"].as_array().cloned();
    for resource in resources.unwrap_or_default() {
        for scope in resource["scopeSpans"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            for span in scope["spans"].as_array().cloned().unwrap_or_default() {
                let attributes = span["attributes"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|kv| (kv["key"].as_str().unwrap().to_owned(), kv["value"].clone()))
                    .collect();
                let text = |key: &str| span[key].as_str().unwrap_or("").to_owned();
                spans.push(Span {
                    name: text("name"),
                    trace_id: text("traceId"),
                    span_id: text("spanId"),
                    parent: text("parentSpanId"),
                    attributes,
                });
            }
        }
    }
    spans
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

fn with_traceparent<T>(message: T, trace_id: &str, parent_id: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{parent_id}-01").parse().unwrap(),
    );
    request
}

/// A Login with a password and two VerifyToken calls (one good, one refused), all
/// carrying the caller's trace context; answers the token.
async fn traced_calls(
    server: &ServerProcess,
    handle: &str,
    password: &str,
    trace_id: &str,
    callers: [&str; 3],
) -> String {
    let mut client = server.grpc_client().await;
    let login = client
        .login(with_traceparent(
            pb::LoginRequest {
                identifier: handle.into(),
                password: password.into(),
            },
            trace_id,
            callers[0],
        ))
        .await
        .unwrap()
        .into_inner();
    let token = match login.result.unwrap() {
        pb::login_response::Result::Authenticated(auth) => auth.token,
        other => panic!("expected authenticated, got {other:?}"),
    };
    client
        .verify_token(with_traceparent(
            pb::VerifyTokenRequest {
                token: token.clone(),
            },
            trace_id,
            callers[1],
        ))
        .await
        .unwrap();
    let refused = client
        .verify_token(with_traceparent(
            pb::VerifyTokenRequest {
                token: format!("{token}x"),
            },
            trace_id,
            callers[2],
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    token
}

fn start_server(url: &str, envs: &[(&str, String)]) -> ServerProcess {
    let builder = ServerProcess::builder(binary())
        .database_url(url)
        .log_filter("debug");
    backend_env(url)
        .into_iter()
        .chain(envs.iter().map(|(key, value)| (*key, value.clone())))
        .fold(builder, |builder, (key, value)| builder.env(key, value))
        .start()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_store_and_hashing_spans_reach_a_real_otlp_receiver_without_secrets() {
    let jaeger = Jaeger::start(free_port());
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(dir.path());
    let handle = format!("tracee{}", random_hex(4));
    let password = format!("traced-password-{}", random_hex(8));
    add_user_with_cli(&url, &handle, &password);
    let service = format!("st-peter-test-{}", random_hex(4));
    let mut server = start_server(
        &url,
        &[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://{}", jaeger.otlp),
            ),
            ("OTEL_SERVICE_NAME", service.clone()),
        ],
    );

    let trace_id = random_hex(16);
    let callers = [random_hex(8), random_hex(8), random_hex(8)];
    let token = traced_calls(
        &server,
        &handle,
        &password,
        &trace_id,
        [&callers[0], &callers[1], &callers[2]],
    )
    .await;
    // The batch is exported when the server stops (graceful shutdown flushes it).
    assert!(server.terminate().await.success(), "{}", server.log());

    let rpc_named = |spans: &[Span], name: &str, parent: &str| {
        spans
            .iter()
            .find(|span| span.name == name && span.parent == parent)
            .cloned()
    };
    let (spans, body) = jaeger.trace(&trace_id, |spans| {
        rpc_named(spans, "st_peter.auth.v1.AuthService/Login", &callers[0]).is_some()
            && rpc_named(
                spans,
                "st_peter.auth.v1.AuthService/VerifyToken",
                &callers[2],
            )
            .is_some()
    });

    // The Login span: a server span, child of the caller's, with the RPC attributes.
    let login = rpc_named(&spans, "st_peter.auth.v1.AuthService/Login", &callers[0]).unwrap();
    assert_eq!(login.trace_id, trace_id);
    assert_eq!(login.attribute("rpc.system").as_deref(), Some("grpc"));
    assert_eq!(
        login.attribute("rpc.service").as_deref(),
        Some("st_peter.auth.v1.AuthService")
    );
    assert_eq!(login.attribute("rpc.method").as_deref(), Some("Login"));
    assert_eq!(
        login.attribute("rpc.grpc.status_code").as_deref(),
        Some("0")
    );

    // Under it: the store calls that found the user and made the session, and the hash.
    let children: Vec<&Span> = spans.iter().filter(|s| s.parent == login.span_id).collect();
    let names: Vec<&str> = children.iter().map(|span| span.name.as_str()).collect();
    assert!(names.contains(&"store.find_user"), "{names:?}");
    assert!(names.contains(&"store.create_session"), "{names:?}");
    let store = children
        .iter()
        .find(|span| span.name == "store.find_user")
        .unwrap();
    let system = if url.starts_with("postgres") {
        "postgresql"
    } else {
        "sqlite"
    };
    assert_eq!(store.attribute("db.system.name").as_deref(), Some(system));
    assert_eq!(
        store.attribute("db.operation.name").as_deref(),
        Some("find_user")
    );
    let hash = children
        .iter()
        .find(|span| span.name == "password.hash")
        .unwrap_or_else(|| panic!("no hashing span under Login: {names:?}"));
    let hash_ms: f64 = hash
        .attribute("st_peter.hash.hash_ms")
        .unwrap()
        .parse()
        .unwrap();
    assert!(hash_ms > 0.0, "{hash:?}");
    assert!(hash.attribute("st_peter.hash.queue_wait_ms").is_some());

    // VerifyToken: answered, then refused (a trailers-only answer) with UNAUTHENTICATED.
    let verified = rpc_named(
        &spans,
        "st_peter.auth.v1.AuthService/VerifyToken",
        &callers[1],
    )
    .unwrap();
    assert_eq!(
        verified.attribute("rpc.grpc.status_code").as_deref(),
        Some("0")
    );
    let refused = rpc_named(
        &spans,
        "st_peter.auth.v1.AuthService/VerifyToken",
        &callers[2],
    )
    .unwrap();
    assert_eq!(
        refused.attribute("rpc.grpc.status_code").as_deref(),
        Some("16")
    );

    // Jaeger knows the service by the configured name, and holds no secret and no user
    // identifier in anything it received from it.
    assert!(
        jaeger.services().to_string().contains(&service),
        "{}",
        jaeger.services()
    );
    let everything = format!("{body}\n{}", jaeger.everything_of(&service));
    assert!(everything.contains(&trace_id));
    let mut secrets = secrets();
    secrets.extend([password.clone(), token.clone(), handle.clone()]);
    for secret in secrets {
        assert!(
            !secret_appears(&everything, &secret),
            "the receiver got a secret or an identifier: {secret}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_nothing_is_exported() {
    // The receiver listens where an exporter with no endpoint configured would send
    // (OTLP/gRPC's default, 127.0.0.1:4317), and a server that is told the endpoint shows
    // that it would arrive there; the same server without the variable sends nothing.
    let jaeger = Jaeger::start("127.0.0.1:4317".parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(dir.path());
    let handle = format!("quiet{}", random_hex(4));
    let password = format!("quiet-password-{}", random_hex(8));
    add_user_with_cli(&url, &handle, &password);

    let mut runs = Vec::new();
    for endpoint in [None, Some(format!("http://{}", jaeger.otlp))] {
        let service = format!("st-peter-quiet-{}", random_hex(4));
        let mut envs = vec![
            ("OTEL_SERVICE_NAME", service.clone()),
            // Whatever the environment running the tests says.
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", String::new()),
        ];
        envs.push((
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            endpoint.clone().unwrap_or_default(),
        ));
        let mut server = start_server(&url, &envs);
        let trace_id = random_hex(16);
        let callers = [random_hex(8), random_hex(8), random_hex(8)];
        traced_calls(
            &server,
            &handle,
            &password,
            &trace_id,
            [&callers[0], &callers[1], &callers[2]],
        )
        .await;
        assert!(server.terminate().await.success(), "{}", server.log());
        runs.push((endpoint.is_some(), service, trace_id));
    }
    for (exported, service, trace_id) in runs {
        if exported {
            jaeger.trace(&trace_id, |spans| !spans.is_empty());
            assert!(jaeger.services().to_string().contains(&service));
        } else {
            // Exported at shutdown if at all, and the exporting run stopped after this
            // one: had this one exported, it would be there by now.
            assert!(!jaeger.services().to_string().contains(&service));
            assert!(
                jaeger
                    .try_get(&format!("/api/v3/traces/{trace_id}"))
                    .is_none()
            );
        }
    }
}

//! The README's walkthrough, as a new user runs it: the real binary, the admin CLI and
//! stock grpcurl through server reflection, with no proto files at hand.
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::helpers::{admin, database_url, go_tool, start_server};

fn grpcurl() -> PathBuf {
    go_tool("grpcurl")
}

fn run(args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new(grpcurl())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(stdin) = stdin {
        input.write_all(stdin.as_bytes()).unwrap();
    }
    drop(input);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "grpcurl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn readme_walkthrough_with_grpcurl() {
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(dir.path());
    let created = admin(
        &url,
        &[
            "user",
            "add",
            "--handle",
            "lead-baker",
            "--email",
            "lead@bakery.example",
            "--password-stdin",
            "--json",
        ],
        "open sesame, said Ali Baba\n",
    );
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    let user_id = created["user_id"].as_str().unwrap().to_owned();
    admin(&url, &["user", "role", "grant", "lead-baker", "admin"], "");

    let server = start_server(&url);
    let addr = server.addr.to_string();

    let services = run(&["-plaintext", &addr, "list"], None);
    for service in [
        "st_peter.auth.v1.AuthService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            services.lines().any(|l| l == service),
            "{service} missing from:\n{services}"
        );
    }

    let described = run(
        &[
            "-plaintext",
            &addr,
            "describe",
            "st_peter.auth.v1.LoginRequest",
        ],
        None,
    );
    assert!(described.contains("string identifier = 1;"), "{described}");
    assert!(
        described.contains("Email (any case), phone"),
        "comments missing:\n{described}"
    );
    let service = run(
        &[
            "-plaintext",
            &addr,
            "describe",
            "st_peter.auth.v1.AuthService",
        ],
        None,
    );
    assert!(service.contains("rpc VerifyToken"), "{service}");

    let health = run(&["-plaintext", &addr, "grpc.health.v1.Health/Check"], None);
    assert!(health.contains("SERVING"), "{health}");

    let login = run(
        &[
            "-plaintext",
            "-d",
            "@",
            &addr,
            "st_peter.auth.v1.AuthService/Login",
        ],
        Some(r#"{"identifier": "LEAD@bakery.example", "password": "open sesame, said Ali Baba"}"#),
    );
    let login: serde_json::Value = serde_json::from_str(&login).unwrap();
    let token = login["authenticated"]["token"]
        .as_str()
        .expect("token in reply")
        .to_owned();
    assert_eq!(login["authenticated"]["user"]["userId"], user_id.as_str());

    let verified = run(
        &[
            "-plaintext",
            "-d",
            "@",
            &addr,
            "st_peter.auth.v1.AuthService/VerifyToken",
        ],
        Some(&format!(r#"{{"token": "{token}"}}"#)),
    );
    let verified: serde_json::Value = serde_json::from_str(&verified).unwrap();
    assert_eq!(verified["user"]["handle"], "lead-baker");
    assert_eq!(verified["roles"], serde_json::json!(["admin"]));

    let failed = run(
        &[
            "-plaintext",
            "-d",
            "@",
            &addr,
            "st_peter.auth.v1.AuthService/Login",
        ],
        Some(r#"{"identifier": "lead-baker", "password": "wrong"}"#),
    );
    assert!(
        failed.contains("FAILURE_REASON_INVALID_CREDENTIALS"),
        "{failed}"
    );
}

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

/// grpcurl with `TOKEN` in its environment, the bearer header expanded from it (so the
/// token stays out of the argument list) as the README's account walkthrough has it.
fn account_call(addr: &str, token: &str, method: &str, body: &str) -> Result<String, String> {
    bearer_call(addr, token, &format!("AccountService/{method}"), body)
}

/// grpcurl calling `st_peter.auth.v1.{method}` with `authorization: Bearer ${TOKEN}`.
fn bearer_call(addr: &str, token: &str, method: &str, body: &str) -> Result<String, String> {
    let mut child = Command::new(grpcurl())
        .args([
            "-plaintext",
            "-expand-headers",
            "-H",
            "authorization: Bearer ${TOKEN}",
            "-d",
            "@",
            addr,
            &format!("st_peter.auth.v1.{method}"),
        ])
        .env("TOKEN", token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(body.as_bytes()).unwrap();
    drop(input);
    let output = child.wait_with_output().unwrap();
    if output.status.success() {
        Ok(String::from_utf8(output.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// The README's service account section: a key from the CLI exchanged with grpcurl, and
/// a server with `--require-caller-credentials` that answers VerifyToken only with the
/// service's token in the bearer header.
#[tokio::test]
async fn readme_service_walkthrough_with_grpcurl() {
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(dir.path());
    admin(
        &url,
        &["user", "add", "--handle", "lead-baker", "--password-stdin"],
        "open sesame, said Ali Baba\n",
    );
    admin(
        &url,
        &[
            "service",
            "add",
            "shift-board",
            "--display-name",
            "Shift board",
        ],
        "",
    );
    admin(
        &url,
        &["user", "role", "grant", "shift-board", "st-peter:lookup"],
        "",
    );
    let printed = admin(
        &url,
        &[
            "service",
            "key",
            "create",
            "shift-board",
            "--name",
            "prod",
            "--expires",
            "90days",
        ],
        "",
    );
    let api_key = printed
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with("stk_"))
        .unwrap_or_else(|| panic!("no key printed: {printed}"))
        .to_owned();
    crate::helpers::remember_secret(&api_key);
    let listed = admin(&url, &["service", "key", "list", "shift-board"], "");
    assert!(
        listed.contains("prod") && listed.contains("last used never"),
        "{listed}"
    );

    let server = crate::helpers::start_server_with(&url, &["--require-caller-credentials"]);
    let addr = server.addr.to_string();
    let exchanged = run(
        &[
            "-plaintext",
            "-d",
            "@",
            &addr,
            "st_peter.auth.v1.AuthService/ExchangeApiKey",
        ],
        Some(&format!("{{\"api_key\": \"{api_key}\"}}")),
    );
    let exchanged: serde_json::Value = serde_json::from_str(&exchanged).unwrap();
    assert_eq!(
        exchanged["user"]["kind"], "USER_KIND_SERVICE",
        "{exchanged}"
    );
    let service_token = exchanged["token"].as_str().unwrap().to_owned();
    crate::helpers::remember_secret(&service_token);

    let mut client = server.grpc_client().await;
    let user_token =
        crate::helpers::token(&mut client, "lead-baker", "open sesame, said Ali Baba").await;
    let body = format!("{{\"token\": \"{user_token}\"}}");
    let anonymous = Command::new(grpcurl())
        .args([
            "-plaintext",
            "-d",
            &body,
            &addr,
            "st_peter.auth.v1.AuthService/VerifyToken",
        ])
        .output()
        .unwrap();
    let refusal = String::from_utf8_lossy(&anonymous.stderr);
    assert!(
        !anonymous.status.success()
            && refusal.contains("PermissionDenied")
            && refusal.contains("caller credentials"),
        "{refusal}"
    );
    let verified = bearer_call(&addr, &service_token, "AuthService/VerifyToken", &body).unwrap();
    let verified: serde_json::Value = serde_json::from_str(&verified).unwrap();
    assert_eq!(verified["user"]["handle"], "lead-baker");
    assert_eq!(verified["user"]["kind"], "USER_KIND_HUMAN");
    let listed = admin(&url, &["service", "key", "list", "shift-board"], "");
    assert!(!listed.contains("last used never"), "{listed}");
}

#[tokio::test]
async fn readme_account_walkthrough_with_grpcurl() {
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(dir.path());
    admin(
        &url,
        &["user", "add", "--handle", "lead-baker", "--password-stdin"],
        "open sesame, said Ali Baba\n",
    );
    let server = start_server(&url);
    let addr = server.addr.to_string();
    let mut client = server.grpc_client().await;
    let token =
        crate::helpers::token(&mut client, "lead-baker", "open sesame, said Ali Baba").await;
    let other =
        crate::helpers::token(&mut client, "lead-baker", "open sesame, said Ali Baba").await;

    let services = run(&["-plaintext", &addr, "list"], None);
    assert!(
        services
            .lines()
            .any(|l| l == "st_peter.auth.v1.AccountService"),
        "{services}"
    );

    let listed: serde_json::Value =
        serde_json::from_str(&account_call(&addr, &token, "ListSessions", "{}").unwrap()).unwrap();
    let sessions = listed["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{listed}");
    let mine = sessions
        .iter()
        .find(|s| s["current"] == true)
        .expect("the caller's session");
    assert!(mine["lastSeenAt"].is_string(), "{mine}");

    let weak = account_call(
        &addr,
        &token,
        "ChangePassword",
        r#"{"current_password": "open sesame, said Ali Baba", "new_password": "password1"}"#,
    )
    .unwrap_err();
    assert!(weak.contains("InvalidArgument"), "{weak}");
    assert!(weak.contains("new_password: is too easy to guess (strength 0 of 4, needs 3): This is a very common password."), "{weak}");
    crate::helpers::remember_secret("knock knock, who goes there");
    let changed: serde_json::Value = serde_json::from_str(
        &account_call(
            &addr,
            &token,
            "ChangePassword",
            r#"{"current_password": "open sesame, said Ali Baba", "new_password": "knock knock, who goes there",
 "revoke_other_sessions": true}"#,
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(changed["revokedSessions"], 1);
    crate::helpers::refused_within(&mut client, &other, crate::helpers::REVOCATION_BOUND).await;

    let begun: serde_json::Value =
        serde_json::from_str(&account_call(&addr, &token, "BeginTotpEnrollment", "{}").unwrap())
            .unwrap();
    let uri = begun["otpauthUri"].as_str().unwrap();
    crate::helpers::remember_secret(uri);
    assert!(
        uri.starts_with("otpauth://totp/st-peter:lead-baker?secret="),
        "{uri}"
    );
    let totp = totp_rs::TOTP::from_url(uri).unwrap();
    let code = totp.generate_current().unwrap();
    crate::helpers::remember_secret(&code);
    let confirmed: serde_json::Value = serde_json::from_str(
        &account_call(
            &addr,
            &token,
            "ConfirmTotpEnrollment",
            &format!(
                r#"{{"enrollment_id": "{}", "code": "{code}"}}"#,
                begun["enrollmentId"].as_str().unwrap()
            ),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(confirmed["recoveryCodes"].as_array().unwrap().len(), 10);
    for code in confirmed["recoveryCodes"].as_array().unwrap() {
        crate::helpers::remember_secret(code.as_str().unwrap());
    }

    let newer =
        crate::helpers::login(&mut client, "lead-baker", "knock knock, who goes there").await;
    assert!(matches!(
        newer,
        st_peter_proto::auth::v1::login_response::Result::TwoFactor(_)
    ));

    let session_id = mine["sessionId"].as_str().unwrap();
    account_call(
        &addr,
        &token,
        "RevokeSession",
        &format!(r#"{{"session_id": "{session_id}"}}"#),
    )
    .unwrap();
    let gone = account_call(&addr, &token, "ListSessions", "{}").unwrap_err();
    assert!(gone.contains("Unauthenticated"), "{gone}");
}

//! The `st-peter-telepact` binary, run as a process against the in-process st-peter.
use std::process::Output;

use serde_json::{Value, json};

use crate::helpers::{TestServer, headers, telepact_command};

async fn run(server: &TestServer, args: &[&str], token: Option<&str>, stdin: &str) -> Output {
    let mut command = telepact_command(&server.target(), &server.roles_db());
    command
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(token) = token {
        command.env("ST_PETER_ACTOR_TOKEN", token);
    }
    let stdin = stdin.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = command.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

fn json_out(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn login_grant_list_revoke() {
    let server = TestServer::start().await;
    let admin = server
        .add_user("owner", "owner of the corner bakery")
        .await
        .user_id;
    let baker = server
        .add_user("lead-baker", "open sesame, said Ali Baba")
        .await
        .user_id;

    let login = json_out(
        &run(
            &server,
            &[
                "login",
                "--identifier",
                "owner",
                "--password-stdin",
                "--json",
            ],
            None,
            "owner of the corner bakery\n",
        )
        .await,
    );
    assert_eq!(login["user_id"], json!(admin));
    let token = login["token"].as_str().unwrap().to_owned();

    let grant_args = [
        "grant",
        "--identifier",
        "lead-baker@bakery.example",
        "--set",
        "@employeeId=baker-001",
        "--set",
        "@station=oven",
        "--actor-id",
        &admin,
        "--json",
    ];
    // No token in the environment: refused before anything is written.
    let refused = run(&server, &grant_args, None, "").await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("ST_PETER_ACTOR_TOKEN"));
    assert!(server.roles().await.list().await.unwrap().is_empty());
    // A token that is not the actor's: st-peter refuses the lookup.
    let wrong = run(&server, &grant_args, Some("stp_not-a-token"), "").await;
    assert!(!wrong.status.success());
    assert!(server.roles().await.list().await.unwrap().is_empty());

    let granted = json_out(&run(&server, &grant_args, Some(&token), "").await);
    assert_eq!(granted["user_id"], json!(baker));
    let stored = server.roles().await.headers_of(&baker).await.unwrap();
    assert_eq!(
        stored,
        Some(headers(&[
            ("@employeeId", "baker-001"),
            ("@station", "oven")
        ]))
    );

    let listed = json_out(&run(&server, &["list", "--json"], None, "").await);
    assert_eq!(listed[0]["handle"], json!("lead-baker"));
    assert_eq!(listed[0]["headers"]["@station"], json!("oven"));
    assert_eq!(listed[0]["granted_by"], json!(admin));

    let unknown = run(
        &server,
        &[
            "grant",
            "--identifier",
            "nobody",
            "--set",
            "@station=oven",
            "--actor-id",
            &admin,
        ],
        Some(&token),
        "",
    )
    .await;
    assert!(!unknown.status.success());

    let revoked = json_out(
        &run(
            &server,
            &[
                "revoke",
                "--identifier",
                "lead-baker",
                "--actor-id",
                &admin,
                "--json",
            ],
            Some(&token),
            "",
        )
        .await,
    );
    assert_eq!(revoked["revoked"], json!(true));
    assert_eq!(server.roles().await.headers_of(&baker).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn set_refuses_telepact_reserved_keys() {
    let server = TestServer::start().await;
    let out = run(
        &server,
        &[
            "grant",
            "--identifier",
            "x",
            "--set",
            "@auth_=x",
            "--actor-id",
            "a",
        ],
        Some("stp_x"),
        "",
    )
    .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("@auth_"));
}

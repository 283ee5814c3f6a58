//! Users exported from a REAL Keycloak realm move into st-peter with their passwords.
//!
//! `scripts/keycloak.sh` runs Keycloak (dev mode), lets it hash each user's password
//! (argon2, pbkdf2-sha256, pbkdf2-sha512), exports the realm with `kc.sh export` and
//! prints the export's path; `scripts/test.sh` puts that path in
//! `ST_PETER_KEYCLOAK_EXPORT` and runs this test with `--include-ignored`. Beside the
//! export lies `<export>.passwords.json`, the passwords Keycloak was given.
//!
//! The test converts the export with the `jq` line of README.md's "Moving users in from
//! Keycloak" (read from the README, so the documented command is the one tested), imports
//! the lines with the real `st-peter user import`, starts the real server and logs in.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use st_peter_proto::auth::v1 as pb;
use st_peter_testkit::ServerProcess;

const EXPORT_ENV: &str = "ST_PETER_KEYCLOAK_EXPORT";
const README_SECTION: &str = "### Moving users in from Keycloak";
/// The server's argon2id parameters in this test: not Keycloak's (m=7168, t=5, p=1), so
/// a rehash of an imported argon2 hash shows too.
const ARGON2_ARGS: [&str; 6] = [
    "--argon2-memory-kib",
    "8192",
    "--argon2-iterations",
    "2",
    "--argon2-parallelism",
    "1",
];
const CURRENT_PREFIX: &str = "$argon2id$v=19$m=8192,t=2,p=1$";

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_st-peter"))
}

/// The `jq` command of README.md's Keycloak section: the line that starts with `jq `.
fn readme_jq_line() -> String {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&readme).unwrap();
    let section = readme
        .split_once(README_SECTION)
        .unwrap_or_else(|| panic!("README.md has no section {README_SECTION:?}"))
        .1;
    let section = section.split("\n## ").next().unwrap();
    let lines: Vec<&str> = section
        .lines()
        .filter(|line| line.starts_with("jq "))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "README.md's Keycloak section should hold exactly one `jq ` line, has {lines:?}"
    );
    lines[0].to_owned()
}

fn stored_hash(database_url: &str, handle: &str) -> String {
    let url = database_url.to_owned();
    let handle = handle.to_owned();
    // A runtime of its own: called between async steps of the test.
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                use sqlx::Connection as _;
                let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
                sqlx::query_scalar::<_, String>("SELECT password_hash FROM users WHERE handle = $1")
                    .bind(&handle)
                    .fetch_one(&mut db)
                    .await
                    .unwrap()
            })
    })
    .join()
    .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

async fn login(
    client: &mut st_peter_testkit::AuthClient,
    handle: &str,
    password: &str,
) -> pb::login_response::Result {
    client
        .login(pb::LoginRequest {
            identifier: handle.into(),
            password: password.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap()
}

fn is_invalid_credentials(result: &pb::login_response::Result) -> bool {
    matches!(result, pb::login_response::Result::Failed(failed)
        if failed.reason() == pb::FailureReason::InvalidCredentials)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Keycloak realm export: run scripts/keycloak.sh, set ST_PETER_KEYCLOAK_EXPORT \
            to the path it prints, and pass --include-ignored (scripts/test.sh does)"]
async fn users_exported_from_keycloak_log_in_with_their_passwords() {
    let export = std::env::var(EXPORT_ENV).unwrap_or_else(|_| {
        panic!("{EXPORT_ENV} is not set: run scripts/keycloak.sh and set it to the path it prints")
    });
    let export = PathBuf::from(export);
    let passwords_file = export.with_extension("passwords.json");
    let passwords: BTreeMap<String, String> =
        serde_json::from_str(&std::fs::read_to_string(&passwords_file).unwrap()).unwrap();
    let realm: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&export).unwrap()).unwrap();
    // Keycloak's own secrets (hash values and salts) must not show up in any output.
    let mut secrets: Vec<String> = passwords.values().cloned().collect();
    for user in realm["users"].as_array().unwrap() {
        for credential in user["credentials"].as_array().into_iter().flatten() {
            let data: serde_json::Value =
                serde_json::from_str(credential["secretData"].as_str().unwrap()).unwrap();
            secrets.push(data["value"].as_str().unwrap().to_owned());
            secrets.push(data["salt"].as_str().unwrap().to_owned());
        }
    }
    // The export holds what scripts/keycloak.sh asked Keycloak for: each algorithm once.
    let algorithm_of = |handle: &str| -> String {
        let user = realm["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|user| user["username"] == handle)
            .unwrap_or_else(|| panic!("no user {handle} in the export"));
        let data: serde_json::Value =
            serde_json::from_str(user["credentials"][0]["credentialData"].as_str().unwrap())
                .unwrap();
        data["algorithm"].as_str().unwrap().to_owned()
    };
    assert_eq!(algorithm_of("ann"), "argon2");
    assert_eq!(algorithm_of("bob"), "pbkdf2-sha256");
    assert_eq!(algorithm_of("carol"), "pbkdf2-sha512");
    // ...and a service account's user, which the README's line leaves out.
    assert!(
        realm["users"]
            .as_array()
            .unwrap()
            .iter()
            .any(|user| user["serviceAccountClientId"] == "shift-board"),
        "the export lists no service account user"
    );

    // README's jq line, run as written, in a folder holding the export under the name the
    // README uses.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&export, dir.path().join("realm-export.json")).unwrap();
    let jq = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &readme_jq_line()])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        jq.status.success(),
        "README's jq line failed: {}",
        text(&jq)
    );
    let lines = std::fs::read_to_string(dir.path().join("users.jsonl")).unwrap();
    assert_eq!(
        lines.lines().count(),
        5,
        "README's jq line should give one import line per person (5; no service account)"
    );

    // The real binary imports the lines.
    let database_url = format!("sqlite://{}", dir.path().join("st-peter.db").display());
    let import = Command::new(binary())
        .args(["user", "import", "users.jsonl"])
        .env("ST_PETER_DATABASE_URL", &database_url)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let import_text = text(&import);
    assert!(import.status.success(), "user import failed: {import_text}");
    assert!(
        import_text.contains("imported 5, already present 0, failed 0"),
        "{import_text}"
    );
    // A second run changes nothing and says so.
    let again = Command::new(binary())
        .args(["user", "import", "users.jsonl"])
        .env("ST_PETER_DATABASE_URL", &database_url)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        text(&again).contains("imported 0, already present 5, failed 0"),
        "{}",
        text(&again)
    );
    let before: BTreeMap<&str, String> = ["ann", "bob", "carol"]
        .into_iter()
        .map(|handle| (handle, stored_hash(&database_url, handle)))
        .collect();
    for (handle, hash) in &before {
        assert!(
            !hash.starts_with(CURRENT_PREFIX),
            "{handle}'s imported hash is already at the current parameters"
        );
    }

    let mut server = ServerProcess::builder(binary())
        .database_url(database_url.clone())
        .args(ARGON2_ARGS)
        .start_async()
        .await
        .unwrap();
    let mut client = server.grpc_client().await;

    let expected = [
        ("ann", "Ann Andersen", vec!["auditor", "clerk"]),
        ("bob", "Bob Brown", vec!["clerk"]),
        ("carol", "Carol Cruz", vec!["auditor"]),
    ];
    for (handle, display_name, roles) in expected {
        let password = &passwords[handle];
        let wrong = login(&mut client, handle, &format!("{password}x")).await;
        assert!(
            is_invalid_credentials(&wrong),
            "{handle} with a wrong password: {wrong:?}"
        );
        let token = match login(&mut client, handle, password).await {
            pb::login_response::Result::Authenticated(auth) => {
                let user = auth.user.unwrap();
                assert_eq!(user.handle, handle);
                assert_eq!(user.email, format!("{handle}@example.com"));
                assert_eq!(user.display_name, display_name);
                assert!(!user.disabled);
                auth.token
            }
            other => panic!(
                "{handle} ({}) did not log in with Keycloak's password: {other:?}",
                algorithm_of(handle)
            ),
        };
        let verified = client
            .verify_token(pb::VerifyTokenRequest { token })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(verified.roles, roles, "{handle}'s roles");

        // The first good login stored the password again as argon2id at the server's
        // parameters, and the password still works from that hash.
        let after = stored_hash(&database_url, handle);
        assert!(
            after.starts_with(CURRENT_PREFIX),
            "{handle}'s hash was not rehashed to {CURRENT_PREFIX}... after a good login"
        );
        assert_ne!(after, before[handle]);
        assert!(matches!(
            login(&mut client, handle, password).await,
            pb::login_response::Result::Authenticated(_)
        ));
        assert_eq!(stored_hash(&database_url, handle), after, "rehashed twice");
    }

    // dave was disabled in Keycloak: his right password does not let him in until an
    // administrator enables him (then it does: his pbkdf2-sha512 hash came over too).
    let dave = login(&mut client, "dave", &passwords["dave"]).await;
    assert!(is_invalid_credentials(&dave), "disabled dave: {dave:?}");
    let enable = Command::new(binary())
        .args(["user", "enable", "dave"])
        .env("ST_PETER_DATABASE_URL", &database_url)
        .output()
        .unwrap();
    assert!(
        enable.status.success(),
        "user enable dave: {}",
        text(&enable)
    );
    let dave = login(&mut client, "dave", &passwords["dave"]).await;
    assert!(
        matches!(dave, pb::login_response::Result::Authenticated(_)),
        "dave once enabled: {dave:?}"
    );
    // erin had no password in Keycloak: she exists, but no password lets her in.
    let erin = login(&mut client, "erin", "any password at all").await;
    assert!(is_invalid_credentials(&erin), "erin: {erin:?}");

    server.terminate().await;
    let outputs = format!("{import_text}\n{}\n{}", text(&again), server.log());
    for secret in &secrets {
        assert!(
            !outputs.contains(secret.as_str()),
            "a Keycloak password or hash part appears in st-peter's output"
        );
    }
}

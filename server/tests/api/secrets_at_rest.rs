//! TOTP secrets are sealed at rest with a key the database does not hold, and a server
//! given the wrong key refuses to start instead of failing every two-factor login later.
use std::process::{Command, Stdio};

use base64::Engine;
use st_peter_server::secrets::totp_key::TotpKey;

use crate::helpers::{
    admin, binary, database_url, remember_secret, spawn_app, sqlite_database_url,
};

#[tokio::test]
async fn the_stored_totp_secret_is_sealed_and_bound_to_its_user() {
    let app = spawn_app().await;
    let baker = app
        .add_user("lead-baker", "open sesame, said Ali Baba")
        .await;
    let cashier = app.add_user("cashier", "knock knock, who goes there").await;
    let enrollment = app.app.enroll_totp("lead-baker").await.unwrap();
    let plain = totp_rs::TOTP::from_url(&enrollment.otpauth_uri)
        .unwrap()
        .secret;
    remember_secret(&enrollment.otpauth_uri);

    let stored = app
        .store
        .find_user_by_id(&baker.user_id)
        .await
        .unwrap()
        .unwrap()
        .totp_secret
        .unwrap();
    assert!(
        !stored.windows(plain.len()).any(|w| w == plain.as_slice()),
        "the plain secret is in the row"
    );
    let key = app.app.settings().totp_key.clone().unwrap();
    assert_eq!(key.open(&baker.user_id, &stored).unwrap(), plain);
    assert!(key.open(&cashier.user_id, &stored).is_err());
    assert!(TotpKey::generate().open(&baker.user_id, &stored).is_err());
    app.stop().await;
}

fn run(database_url: &str, envs: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    Command::new(binary())
        .args(args)
        .env("ST_PETER_DATABASE_URL", database_url)
        .env_remove("ST_PETER_TOTP_KEY")
        .env_remove("ST_PETER_TOTP_KEY_FILE")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

// SQLite only on every backend: the key file beside a database file is the embedded
// default's behaviour (PostgreSQL needs the key given).
#[test]
fn the_embedded_default_creates_a_private_key_file_beside_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_database_url(dir.path());
    admin(&url, &["user", "list"], "");
    let key_file = dir.path().join("st-peter.db.totp-key");
    let metadata = std::fs::metadata(&key_file).expect("key file beside the database");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
    }
    // The same key is found again: a second command on the database starts.
    let before = std::fs::read(&key_file).unwrap();
    admin(&url, &["user", "list"], "");
    assert_eq!(std::fs::read(&key_file).unwrap(), before);
}

#[test]
fn a_wrong_key_is_a_clear_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(dir.path());
    admin(&url, &["user", "list"], "");

    let other = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
    for args in [&["user", "list"][..], &["serve", "--listen", "127.0.0.1:0"]] {
        let output = run(&url, &[("ST_PETER_TOTP_KEY", &other)], args);
        assert!(
            !output.status.success(),
            "{args:?} started with a wrong key"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("not the key this database's TOTP secrets were sealed with"),
            "{stderr}"
        );
        assert!(!stderr.contains(&other), "the key is in the error");
    }

    let missing = dir.path().join("no-such.key");
    let output = run(
        &url,
        &[("ST_PETER_TOTP_KEY_FILE", missing.to_str().unwrap())],
        &["user", "list"],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no-such.key"), "{stderr}");

    let output = run(
        &url,
        &[("ST_PETER_TOTP_KEY", "c2hvcnQ=")],
        &["user", "list"],
    );
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("must be 32 bytes"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

// SQLite only: it checks that no key file appears beside the database file.
#[test]
fn the_key_from_the_environment_seals_secrets_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_database_url(dir.path());
    let key = base64::engine::general_purpose::STANDARD.encode([5u8; 32]);
    let with_key = [("ST_PETER_TOTP_KEY", key.as_str())];
    let output = Command::new(binary())
        .args([
            "user",
            "add",
            "--handle",
            "lead-baker",
            "--password-env",
            "PW",
        ])
        .env("ST_PETER_DATABASE_URL", &url)
        .env("ST_PETER_TOTP_KEY", &key)
        .env("PW", "open sesame, said Ali Baba")
        .output()
        .unwrap();
    assert!(output.status.success());
    let output = run(
        &url,
        &with_key,
        &["--json", "user", "totp", "enroll", "lead-baker"],
    );
    assert!(output.status.success());
    let enrollment: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    remember_secret(enrollment["otpauth_uri"].as_str().unwrap());
    assert_eq!(enrollment["recovery_codes"].as_array().unwrap().len(), 10);
    for code in enrollment["recovery_codes"].as_array().unwrap() {
        remember_secret(code.as_str().unwrap());
    }
    // No key file appeared: the key came from the environment.
    assert!(!dir.path().join("st-peter.db.totp-key").exists());
    // Without the key, the database refuses to open, and the key file it would have
    // created for a new database is not left behind.
    let output = run(&url, &[], &["user", "list"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("was moved or deleted"), "{stderr}");
    assert!(!dir.path().join("st-peter.db.totp-key").exists());
}

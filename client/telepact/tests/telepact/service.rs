//! Service identity against the real `st-peter` binary started with
//! `--require-caller-credentials --api-token-ttl 3s`: service accounts, keys and roles made
//! with its admin CLI, the adapter and the roles CLI (the real `st-peter-telepact` binary)
//! running as the service. st-peter's audit log counts the exchanges and the refusals.
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use st_peter_client::{Client, LoginOutcome};
use st_peter_telepact::{Error, OnAuth, RolesStore};
use st_peter_testkit::{ServerProcess, st_peter_binary};

use crate::helpers::{headers, session, telepact_command};

const BAKER_PASSWORD: &str = "open sesame, said Ali Baba";
const OWNER_PASSWORD: &str = "owner of the corner bakery";

/// st-peter answering verifications, lookups and the feed only for service accounts, with
/// 3 s service tokens; and a roles file of our own.
struct Guarded {
    server: ServerProcess,
    dir: tempfile::TempDir,
}

/// A service account and one API key of it.
struct Service {
    user_id: String,
    key_id: String,
    api_key: String,
}

impl Guarded {
    async fn start() -> Self {
        let server = ServerProcess::builder(st_peter_binary())
            .args(["--require-caller-credentials", "--api-token-ttl", "3s"])
            .log_filter("info")
            .env("ST_PETER_LOG_FORMAT", "text")
            .start_async()
            .await
            .unwrap();
        Self {
            server,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn target(&self) -> String {
        self.server.target()
    }

    fn roles_db(&self) -> PathBuf {
        self.dir.path().join("roles.db")
    }

    async fn roles(&self) -> RolesStore {
        RolesStore::open(self.roles_db()).await.unwrap()
    }

    /// `st-peter --json ARGS` on the server's database (blocking: run it with
    /// `block_in_place`, as `admin` does).
    fn admin_blocking(&self, args: &[&str], stdin: &str) -> Value {
        let mut child = Command::new(self.server.binary())
            .args(["--database-url", self.server.database_url(), "--json"])
            .args(args)
            .env_remove("ST_PETER_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "st-peter {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    fn admin(&self, args: &[&str], stdin: &str) -> Value {
        tokio::task::block_in_place(|| self.admin_blocking(args, stdin))
    }

    fn add_user(&self, handle: &str, password: &str) -> String {
        let email = format!("{handle}@bakery.example");
        let user = self.admin(
            &[
                "user",
                "add",
                "--handle",
                handle,
                "--email",
                &email,
                "--password-stdin",
            ],
            &format!("{password}\n"),
        );
        user["user_id"].as_str().unwrap().to_owned()
    }

    /// A service account `name` with a key, and the role `st-peter:lookup` if asked.
    fn add_service(&self, name: &str, lookup: bool) -> Service {
        let account = self.admin(&["service", "add", name], "");
        assert_eq!(account["kind"], json!("service"));
        let key = self.admin(&["service", "key", "create", name], "");
        if lookup {
            self.grant_lookup(name);
        }
        Service {
            user_id: account["user_id"].as_str().unwrap().to_owned(),
            key_id: key["key_id"].as_str().unwrap().to_owned(),
            api_key: key["api_key"].as_str().unwrap().to_owned(),
        }
    }

    fn grant_lookup(&self, name: &str) {
        self.admin(&["user", "role", "grant", name, "st-peter:lookup"], "");
    }

    async fn token(&self, handle: &str, password: &str) -> String {
        // Login is open to anyone, caller credentials or not.
        let client = Client::builder(self.target()).build().unwrap();
        match client.login(handle, password).await.unwrap() {
            LoginOutcome::Authenticated(session) => session.token,
            other => panic!("expected authenticated, got {other:?}"),
        }
    }

    /// st-peter's audit lines for `event` with `outcome`.
    fn audits(&self, event: &str, outcome: &str) -> usize {
        let (event, outcome) = (
            format!("event=\"{event}\""),
            format!("outcome=\"{outcome}\""),
        );
        self.server
            .log()
            .lines()
            .filter(|line| line.contains(" audit: ") && line.contains(&event))
            .filter(|line| line.contains(&outcome))
            .count()
    }

    /// Waits (a little: the log is read by another thread) until st-peter has logged at
    /// least `at_least` such lines, and returns how many it has.
    async fn audited(&self, event: &str, outcome: &str, at_least: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let count = self.audits(event, outcome);
            if count >= at_least || Instant::now() >= deadline {
                return count;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// An adapter on this st-peter whose client caches nothing (every request is a
    /// VerifyToken), as the service of `api_key` if given.
    async fn uncached_adapter(&self, api_key: Option<&str>) -> OnAuth {
        let mut builder = Client::builder(self.target())
            .cache_ttl(Duration::ZERO)
            .fallback_ttl(Duration::ZERO)
            .request_timeout(Duration::from_secs(5));
        if let Some(key) = api_key {
            builder = builder.api_key(key);
        }
        OnAuth::new(builder.build().unwrap(), self.roles().await)
    }

    /// `st-peter-telepact ARGS` with `env` and nothing of ours inherited.
    fn telepact_cli(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = telepact_command(&self.target(), &self.roles_db());
        command.args(args).stdin(Stdio::null());
        for (key, value) in env {
            command.env(key, value);
        }
        tokio::task::block_in_place(|| command.output().unwrap())
    }
}

/// A lead baker with a row in the roles file.
async fn with_baker(guarded: &Guarded) -> String {
    let baker = guarded.add_user("lead-baker", BAKER_PASSWORD);
    guarded
        .roles()
        .await
        .grant(
            &baker,
            "lead-baker",
            &headers(&[("@employeeId", "baker-001"), ("@station", "oven")]),
            "test",
        )
        .await
        .unwrap();
    baker
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Neither the key nor anything after its prefix shows up in `output`.
fn keeps_secret(output: &Output, api_key: &str) {
    for stream in [&output.stdout, &output.stderr] {
        assert!(
            !text(stream).contains(&api_key[4..]),
            "the key was printed: {}",
            text(stream)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_adapter_verifies_sessions_across_token_refreshes() {
    let guarded = Guarded::start().await;
    with_baker(&guarded).await;
    let service = guarded.add_service("shift-board", false);
    let token = guarded.token("lead-baker", BAKER_PASSWORD).await;
    let adapter = guarded.uncached_adapter(Some(&service.api_key)).await;
    assert!(!format!("{adapter:?}").contains(&service.api_key[4..]));

    // 10 s of requests on 3 s service tokens: the client exchanges again once a third of a
    // token's life is left (every ~2 s), before st-peter would refuse it.
    let started = Instant::now();
    let mut requests = 0;
    while started.elapsed() < Duration::from_secs(10) {
        let got = adapter.on_auth(&session(&token)).await;
        let got = got.unwrap_or_else(|e| panic!("request {requests} refused: {e}"));
        assert_eq!(got["@employeeId"], json!("baker-001"));
        requests += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let exchanges = guarded.audited("api_key", "exchanged", 4).await;
    println!("{requests} requests in 10 s on 3 s service tokens: {exchanges} exchanges");
    assert!(
        (4..=7).contains(&exchanges),
        "expected an exchange about every 2 s, got {exchanges}"
    );
    // Refreshed ahead of expiry, so no call was refused and retried behind our back.
    assert_eq!(
        guarded.audits("caller", "refused"),
        0,
        "{}",
        guarded.server.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_or_with_a_rejected_one_every_session_is_refused() {
    let guarded = Guarded::start().await;
    with_baker(&guarded).await;
    let token = guarded.token("lead-baker", BAKER_PASSWORD).await;

    let anonymous = guarded.uncached_adapter(None).await;
    let got = anonymous.on_auth(&session(&token)).await;
    assert!(matches!(got, Err(Error::CallerRefused(_))), "{got:?}");
    assert_eq!(guarded.audited("caller", "refused", 1).await, 1);

    // A key st-peter does not know, and a revoked one: the adapter's fault, not the token's.
    let made_up = format!("stk_{}", "A".repeat(43));
    let service = guarded.add_service("shift-board", false);
    guarded.admin(&["service", "key", "revoke", &service.key_id], "");
    for key in [made_up.as_str(), service.api_key.as_str()] {
        let adapter = guarded.uncached_adapter(Some(key)).await;
        let got = adapter.on_auth(&session(&token)).await;
        assert!(matches!(got, Err(Error::ApiKeyRejected(_))), "{got:?}");
        assert!(!got.unwrap_err().to_string().contains(&key[4..]));
    }

    // A key of the wrong shape never leaves the process.
    let pasted_token =
        OnAuth::connect_with_api_key(&guarded.target(), guarded.roles_db(), Some(token.as_str()))
            .await;
    match pasted_token {
        Err(e @ Error::InvalidApiKey(_)) => assert!(!e.to_string().contains(&token[4..])),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_revocation_feed_runs_as_the_service() {
    let guarded = Guarded::start().await;
    with_baker(&guarded).await;
    let service = guarded.add_service("shift-board", false);
    // Both TTLs far longer than the test: only the feed can evict the answer.
    let long = Duration::from_secs(10 * 60);
    let client = Client::builder(guarded.target())
        .api_key(service.api_key.clone())
        .cache_ttl(long)
        .fallback_ttl(long)
        .build()
        .unwrap();
    let adapter = OnAuth::new(client, guarded.roles().await);
    let token = guarded.token("lead-baker", BAKER_PASSWORD).await;
    adapter.on_auth(&session(&token)).await.unwrap();
    crate::helpers::subscribed(&adapter).await;
    adapter.on_auth(&session(&token)).await.unwrap();

    Client::builder(guarded.target())
        .build()
        .unwrap()
        .logout(&token)
        .await
        .unwrap();
    let logged_out = Instant::now();
    loop {
        match adapter.on_auth(&session(&token)).await {
            Err(Error::InvalidToken) => break,
            Ok(_) => assert!(
                logged_out.elapsed() < Duration::from_secs(5),
                "still accepted 5 s after the logout"
            ),
            Err(other) => panic!("{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        guarded.audits("caller", "refused"),
        0,
        "{}",
        guarded.server.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_as_a_service_needs_the_lookup_role() {
    let guarded = Guarded::start().await;
    let baker = guarded.add_user("lead-baker", BAKER_PASSWORD);
    let service = guarded.add_service("shift-board", false);
    let key = [("ST_PETER_API_KEY", service.api_key.as_str())];
    let grant = [
        "grant",
        "--identifier",
        "lead-baker@bakery.example",
        "--set",
        "@employeeId=baker-001",
        "--json",
    ];

    // Without the role: refused, saying which role, and nothing written.
    let refused = guarded.telepact_cli(&grant, &key);
    assert!(!refused.status.success());
    let why = text(&refused.stderr);
    assert!(
        why.contains("may not look users up") && why.contains("st-peter:lookup"),
        "{why}"
    );
    keeps_secret(&refused, &service.api_key);
    assert!(guarded.roles().await.list().await.unwrap().is_empty());

    guarded.grant_lookup("shift-board");
    let exchanged = guarded.audited("api_key", "exchanged", 1).await;
    let granted = guarded.telepact_cli(&grant, &key);
    assert!(granted.status.success(), "{}", text(&granted.stderr));
    keeps_secret(&granted, &service.api_key);
    // Who the service is comes from the exchange its lookup makes: one per run, and no
    // session of its own to end.
    assert_eq!(
        guarded.audited("api_key", "exchanged", exchanged + 1).await,
        exchanged + 1
    );
    assert_eq!(guarded.audits("logout", "revoked"), 0);
    let granted: Value = serde_json::from_slice(&granted.stdout).unwrap();
    assert_eq!(granted["user_id"], json!(baker));
    assert_eq!(granted["granted_by"], json!(service.user_id));
    let rows = guarded.roles().await.list().await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].granted_by, service.user_id);

    let revoked = guarded.telepact_cli(&["revoke", "--identifier", "lead-baker", "--json"], &key);
    assert!(revoked.status.success(), "{}", text(&revoked.stderr));
    let revoked: Value = serde_json::from_slice(&revoked.stdout).unwrap();
    assert_eq!(revoked, json!({"user_id": baker, "revoked": true}));

    // The key from the environment only.
    let with_flag = [&grant[..], &["--api-key", service.api_key.as_str()][..]].concat();
    let as_argument = guarded.telepact_cli(&with_flag, &[]);
    assert!(!as_argument.status.success());
    // Neither a key nor an actor: told both ways.
    let nobody = guarded.telepact_cli(&grant, &[]);
    assert!(!nobody.status.success());
    let why = text(&nobody.stderr);
    assert!(
        why.contains("--actor-id") && why.contains("ST_PETER_API_KEY"),
        "{why}"
    );
    // A revoked key: rejected, said so, nothing written.
    guarded.admin(&["service", "key", "revoke", &service.key_id], "");
    let rejected = guarded.telepact_cli(&grant, &key);
    assert!(!rejected.status.success());
    let why = text(&rejected.stderr);
    assert!(
        why.contains("rejected the API key in ST_PETER_API_KEY"),
        "{why}"
    );
    keeps_secret(&rejected, &service.api_key);
    // A session token pasted as the key: refused before st-peter is asked.
    let token = guarded.token("lead-baker", BAKER_PASSWORD).await;
    let pasted = guarded.telepact_cli(&grant, &[("ST_PETER_API_KEY", &token)]);
    assert!(!pasted.status.success());
    let why = text(&pasted.stderr);
    assert!(
        why.contains("ST_PETER_API_KEY does not start with stk_"),
        "{why}"
    );
    keeps_secret(&pasted, &token);
    assert!(guarded.roles().await.list().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_grants_there_with_the_key_as_caller_credentials() {
    let guarded = Guarded::start().await;
    let owner = guarded.add_user("owner", OWNER_PASSWORD);
    let baker = guarded.add_user("lead-baker", BAKER_PASSWORD);
    // No st-peter:lookup: the person is the actor, the service only the caller.
    let service = guarded.add_service("shift-board", false);
    let token = guarded.token("owner", OWNER_PASSWORD).await;
    let grant = [
        "grant",
        "--identifier",
        "lead-baker",
        "--set",
        "@station=oven",
        "--actor-id",
        owner.as_str(),
        "--json",
    ];

    let refused = guarded.telepact_cli(&grant, &[("ST_PETER_ACTOR_TOKEN", &token)]);
    assert!(!refused.status.success());
    let why = text(&refused.stderr);
    assert!(
        why.contains("requires caller credentials: set ST_PETER_API_KEY"),
        "{why}"
    );

    let granted = guarded.telepact_cli(
        &grant,
        &[
            ("ST_PETER_ACTOR_TOKEN", &token),
            ("ST_PETER_API_KEY", &service.api_key),
        ],
    );
    assert!(granted.status.success(), "{}", text(&granted.stderr));
    let granted: Value = serde_json::from_slice(&granted.stdout).unwrap();
    assert_eq!(granted["user_id"], json!(baker));
    assert_eq!(granted["granted_by"], json!(owner));
}

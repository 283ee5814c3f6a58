//! The shared conformance cases (proto/conformance/cases.json), which the Go and TypeScript
//! clients run too, against the real server.
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use st_peter_client::{Error, LoginOutcome, TwoFactorMethod, User};
use st_peter_server::clock::Clock as _;
use st_peter_server::domain::accounts::NewAccount;

use crate::helpers::TestServer;

struct Fixture {
    server: TestServer,
    client: st_peter_client::Client,
    passwords: HashMap<String, String>,
    user_ids: HashMap<String, String>,
    totp_uris: HashMap<String, String>,
}

/// What the client answered, in the vocabulary of cases.json.
#[derive(Debug, Default)]
struct Outcome {
    result: &'static str,
    user: Option<User>,
    roles: Option<Vec<String>>,
    methods: Vec<&'static str>,
    reason: Option<String>,
    retry_after: Option<Duration>,
    expires_at: Option<SystemTime>,
}

fn str_field<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

impl Fixture {
    async fn start(users: &[Value]) -> Self {
        let server = TestServer::start().await;
        let client = server.client();
        let mut fixture = Self {
            server,
            client,
            passwords: HashMap::new(),
            user_ids: HashMap::new(),
            totp_uris: HashMap::new(),
        };
        for user in users {
            let handle = str_field(user, "handle").unwrap().to_owned();
            let password = str_field(user, "password").unwrap().to_owned();
            let app = &fixture.server.app;
            let created = app
                .create_user(NewAccount {
                    handle: handle.clone(),
                    email: str_field(user, "email").map(str::to_owned),
                    phone: str_field(user, "phone").map(str::to_owned),
                    display_name: str_field(user, "display_name").map(str::to_owned),
                    password: password.clone(),
                })
                .await
                .unwrap();
            for role in user["roles"].as_array().into_iter().flatten() {
                app.grant_role(&handle, role.as_str().unwrap())
                    .await
                    .unwrap();
            }
            if user["totp"].as_bool() == Some(true) {
                let uri = app.enroll_totp(&handle).await.unwrap().otpauth_uri;
                fixture.totp_uris.insert(handle.clone(), uri);
            }
            if user["disabled"].as_bool() == Some(true) {
                app.set_disabled(&handle, true).await.unwrap();
            }
            fixture.user_ids.insert(handle.clone(), created.user_id);
            fixture.passwords.insert(handle, password);
        }
        fixture
    }

    fn totp_code(&self, handle: &str, offset_steps: i64) -> String {
        let totp = totp_rs::TOTP::from_url(&self.totp_uris[handle]).unwrap();
        let now = self.server.clock.now_millis() / 1000;
        totp.generate((now + offset_steps * 30) as u64)
    }

    /// Turns an input value (a string, or a reference such as `{"token_of": H}`) into the
    /// string to send.
    async fn resolve(&self, value: &Value) -> String {
        if let Some(literal) = value.as_str() {
            return literal.to_owned();
        }
        let (kind, handle) = value
            .as_object()
            .and_then(|o| o.iter().next())
            .unwrap_or_else(|| panic!("not a value or a reference: {value}"));
        let handle = handle.as_str().unwrap();
        match kind.as_str() {
            "user_id_of" => self.user_ids[handle].clone(),
            "token_of" | "logged_out_token_of" => {
                let token = self
                    .server
                    .token(&self.client, handle, &self.passwords[handle])
                    .await;
                if kind == "logged_out_token_of" {
                    self.client.logout(&token).await.unwrap();
                }
                token
            }
            "challenge_of" => match self
                .client
                .login(handle, &self.passwords[handle])
                .await
                .unwrap()
            {
                LoginOutcome::TwoFactor(challenge) => challenge.two_factor_id,
                other => panic!("setup: login of {handle}: {other:?}"),
            },
            "totp_code_of" => self.totp_code(handle, 0),
            "wrong_totp_code_of" => {
                let accepted: Vec<String> = (-1..=1).map(|s| self.totp_code(handle, s)).collect();
                (0..)
                    .map(|n| format!("{n:06}"))
                    .find(|code| !accepted.contains(code))
                    .unwrap()
            }
            other => panic!("unknown reference {other}"),
        }
    }

    async fn call(&self, call: &str, input: &HashMap<String, String>) -> Result<Outcome, Error> {
        let arg = |key: &str| input.get(key).map(String::as_str).unwrap_or_default();
        let client = &self.client;
        Ok(match call {
            "login" => from_login(client.login(arg("identifier"), arg("password")).await?),
            "verify_two_factor" => from_login(
                client
                    .verify_two_factor(arg("two_factor_id"), arg("code"))
                    .await?,
            ),
            "verify_token" => {
                let verified = client.verify_token(arg("token")).await?;
                Outcome {
                    result: "verified",
                    expires_at: Some(verified.expires_at),
                    user: Some(verified.user),
                    roles: Some(verified.roles),
                    ..Outcome::default()
                }
            }
            "lookup_user" => Outcome {
                result: "user",
                user: Some(
                    client
                        .lookup_user(arg("actor_id"), arg("actor_token"), arg("identifier"))
                        .await?,
                ),
                ..Outcome::default()
            },
            "logout" => {
                client.logout(arg("token")).await?;
                Outcome {
                    result: "ok",
                    ..Outcome::default()
                }
            }
            other => panic!("unknown call {other}"),
        })
    }
}

fn from_login(outcome: LoginOutcome) -> Outcome {
    match outcome {
        LoginOutcome::Authenticated(session) => Outcome {
            result: "authenticated",
            expires_at: Some(session.expires_at),
            user: Some(session.user),
            ..Outcome::default()
        },
        LoginOutcome::TwoFactor(challenge) => Outcome {
            result: "two_factor",
            expires_at: Some(challenge.expires_at),
            methods: challenge
                .methods
                .iter()
                .map(|m| match m {
                    TwoFactorMethod::Totp => "totp",
                    TwoFactorMethod::RecoveryCode => "recovery_code",
                    TwoFactorMethod::Passkey => "passkey",
                })
                .collect(),
            ..Outcome::default()
        },
        LoginOutcome::Failed(failure) => Outcome {
            result: "failed",
            reason: Some(
                match failure.reason {
                    st_peter_client::FailureReason::InvalidCredentials => "invalid_credentials",
                    st_peter_client::FailureReason::RateLimited => "rate_limited",
                    st_peter_client::FailureReason::InvalidCode => "invalid_code",
                    st_peter_client::FailureReason::ChallengeExpired => "challenge_expired",
                    st_peter_client::FailureReason::Unknown(_) => "unknown",
                }
                .to_owned(),
            ),
            retry_after: failure.retry_after,
            ..Outcome::default()
        },
    }
}

fn error_kind(error: &Error) -> (&'static str, Option<&str>) {
    match error {
        Error::InvalidToken => ("invalid_token", None),
        Error::InvalidArgument(message) => ("invalid_argument", Some(message)),
        Error::NotFound(message) => ("not_found", Some(message)),
        Error::Unavailable(message) => ("unavailable", Some(message)),
        _ => ("other", None),
    }
}

fn user_field(user: &User, key: &str) -> Value {
    match key {
        "user_id" => user.user_id.clone().into(),
        "handle" => user.handle.clone().into(),
        "email" => user.email.clone().into(),
        "phone" => user.phone.clone().into(),
        "display_name" => user.display_name.clone().into(),
        "disabled" => user.disabled.into(),
        other => panic!("unknown user field {other}"),
    }
}

#[tokio::test]
async fn conformance_cases() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../proto/conformance/cases.json"
    );
    let file: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let fixture = Fixture::start(file["users"].as_array().unwrap()).await;
    let mut failures = Vec::new();

    for case in file["cases"].as_array().unwrap() {
        let name = str_field(case, "name").unwrap();
        let expect = &case["expect"];
        let mut input = HashMap::new();
        for (key, value) in case["input"].as_object().unwrap() {
            input.insert(key.clone(), fixture.resolve(value).await);
        }
        let outcome = fixture.call(str_field(case, "call").unwrap(), &input).await;
        let mut problems = Vec::new();
        match (outcome, str_field(expect, "error")) {
            (Err(error), Some(kind)) => {
                let (got, message) = error_kind(&error);
                if got != kind {
                    problems.push(format!("error {error:?}, want {kind}"));
                }
                if let Some(want) = str_field(expect, "message") {
                    if message != Some(want) {
                        problems.push(format!("message {message:?}, want {want:?}"));
                    }
                }
            }
            (Err(error), None) => problems.push(format!("error {error:?}, want {expect}")),
            (Ok(outcome), Some(kind)) => problems.push(format!("{outcome:?}, want error {kind}")),
            (Ok(outcome), None) => {
                if Some(outcome.result) != str_field(expect, "result") {
                    problems.push(format!("{outcome:?}, want {}", expect["result"]));
                }
                if let Some(want_user) = expect.get("user").and_then(Value::as_object) {
                    let user = outcome.user.as_ref().unwrap();
                    for (key, want) in want_user {
                        let want = if want.is_object() {
                            Value::from(fixture.resolve(want).await)
                        } else {
                            want.clone()
                        };
                        let got = user_field(user, key);
                        if got != want {
                            problems.push(format!("user.{key} = {got}, want {want}"));
                        }
                    }
                }
                if let Some(roles) = expect.get("roles") {
                    let want: Vec<String> = serde_json::from_value(roles.clone()).unwrap();
                    if outcome.roles.as_ref() != Some(&want) {
                        problems.push(format!("roles {:?}, want {want:?}", outcome.roles));
                    }
                }
                for method in expect["methods_include"].as_array().into_iter().flatten() {
                    if !outcome.methods.contains(&method.as_str().unwrap()) {
                        problems.push(format!("methods {:?} lack {method}", outcome.methods));
                    }
                }
                if let Some(reason) = str_field(expect, "reason") {
                    if outcome.reason.as_deref() != Some(reason) {
                        problems.push(format!("reason {:?}, want {reason}", outcome.reason));
                    }
                }
                if expect.get("retry_after") == Some(&Value::Null) && outcome.retry_after.is_some()
                {
                    problems.push(format!("retry_after {:?}, want none", outcome.retry_after));
                }
                if let Some(expires_at) = outcome.expires_at {
                    if expires_at <= SystemTime::now() {
                        problems.push("expires_at is not in the future".into());
                    }
                }
            }
        }
        if !problems.is_empty() {
            failures.push(format!("{name}: {}", problems.join("; ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

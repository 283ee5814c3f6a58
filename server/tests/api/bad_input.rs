//! Malformed requests get a clear error naming the field, fast, and the server goes on.
use std::time::Duration;
use tonic::Code;

use st_peter_proto::auth::v1 as pb;

use crate::helpers::{TestApp, spawn_app};

/// Fails the test if a bad request hangs instead of being refused.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

async fn login_status(app: &TestApp, identifier: &str, password: &str) -> tonic::Status {
    tokio::time::timeout(
        ANSWER_WITHIN,
        app.client.clone().login(pb::LoginRequest {
            identifier: identifier.into(),
            password: password.into(),
        }),
    )
    .await
    .expect("bad login request was not answered")
    .unwrap_err()
}

async fn assert_still_serving(app: &TestApp) {
    app.token_for("cashier", "knock knock, who goes there")
        .await;
}

#[tokio::test]
async fn empty_and_oversize_login_fields_name_the_field() {
    let app = spawn_app().await;
    app.add_user("cashier", "knock knock, who goes there").await;
    let cases = [
        (
            "",
            "knock knock, who goes there",
            "identifier: must not be empty",
        ),
        (
            "   ",
            "knock knock, who goes there",
            "identifier: must not be empty",
        ),
        ("cashier", "", "password: must not be empty"),
        (
            &"a".repeat(321),
            "knock knock, who goes there",
            "identifier: must be at most 320 bytes",
        ),
        (
            "cashier",
            &"p".repeat(1025),
            "password: must be at most 1024 bytes",
        ),
        (
            "cash\u{0}ier",
            "knock knock, who goes there",
            "identifier: must not contain control characters",
        ),
    ];
    for (identifier, password, message) in cases {
        let status = login_status(&app, identifier, password).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{message}");
        assert_eq!(status.message(), message);
    }
    assert_still_serving(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn a_ten_megabyte_password_is_refused_before_it_is_read() {
    let app = spawn_app().await;
    app.add_user("cashier", "knock knock, who goes there").await;
    let status = login_status(&app, "cashier", &"p".repeat(10 * 1024 * 1024)).await;
    // Over the 64 KiB request limit: tonic refuses it from the length prefix alone.
    assert_eq!(status.code(), Code::OutOfRange);
    assert!(
        status.message().contains("message length too large") && status.message().contains("65536"),
        "{}",
        status.message()
    );
    assert_still_serving(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn empty_and_oversize_tokens_are_invalid_argument() {
    let app = spawn_app().await;
    app.add_user("cashier", "knock knock, who goes there").await;
    for (token, message) in [
        (String::new(), "token: must not be empty"),
        (
            format!("stp_{}", "A".repeat(300)),
            "token: must be at most 256 bytes",
        ),
    ] {
        let status = app.verify(&token).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), message);
        let status = app
            .client
            .clone()
            .logout(pb::LogoutRequest {
                token: token.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), message);
    }
    assert_still_serving(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn unknown_and_malformed_two_factor_ids() {
    let app = spawn_app().await;
    app.add_user("cashier", "knock knock, who goes there").await;
    let mut client = app.client.clone();

    // Well formed but never issued: the challenge is as good as expired.
    let reply = client
        .verify_two_factor(pb::VerifyTwoFactorRequest {
            two_factor_id: format!("stc_{}", "A".repeat(43)),
            code: "123456".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        crate::helpers::failed_reason(&reply.result.unwrap()),
        pb::FailureReason::ChallengeExpired
    );

    for (id, message) in [
        ("", "two_factor_id: must not be empty"),
        (
            "made-up",
            "two_factor_id: is not a two-factor id issued by Login (expected 'stc_' and 43 characters)",
        ),
    ] {
        let status = client
            .verify_two_factor(pb::VerifyTwoFactorRequest {
                two_factor_id: id.into(),
                code: "123456".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), message);
    }
    assert_still_serving(&app).await;
    app.stop().await;
}

/// The same field numbers as `LoginRequest`, as bytes, so the test can send what a
/// `string` field must never hold.
#[derive(Clone, PartialEq, prost::Message)]
struct RawLoginRequest {
    #[prost(bytes = "vec", tag = "1")]
    identifier: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    password: Vec<u8>,
}

#[tokio::test]
async fn invalid_utf8_is_invalid_argument_naming_the_field() {
    let app = spawn_app().await;
    app.add_user("cashier", "knock knock, who goes there").await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let request = RawLoginRequest {
        identifier: vec![b'c', 0xff, 0xfe, b'x'],
        password: b"knock knock, who goes there".to_vec(),
    };
    let status = grpc
        .unary::<_, pb::LoginResponse, _>(
            tonic::Request::new(request),
            tonic::codegen::http::uri::PathAndQuery::from_static(
                "/st_peter.auth.v1.AuthService/Login",
            ),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("LoginRequest.identifier") && status.message().contains("UTF-8"),
        "{}",
        status.message()
    );
    assert_still_serving(&app).await;
    app.stop().await;
}

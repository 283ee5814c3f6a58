use axum::{Extension, Router, routing::get};
use http::{Request, StatusCode};
use tower::ServiceExt;

use st_peter_client::{GuardLayer, SESSION_COOKIE, VerifiedUser, bearer};

use crate::helpers::TestServer;

fn app(server: &TestServer) -> Router {
    Router::new()
        .route(
            "/whoami",
            get(|Extension(user): Extension<VerifiedUser>| async move { user.user.handle }),
        )
        .layer(GuardLayer::new(server.client()))
}

async fn call(
    router: &Router,
    headers: &[(&str, String)],
) -> (StatusCode, http::HeaderMap, String) {
    let mut request = Request::get("/whoami");
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = router
        .clone()
        .oneshot(request.body(axum::body::Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 1024)
        .await
        .unwrap();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn the_guard_admits_verified_callers_by_bearer_or_cookie() {
    let server = TestServer::start().await;
    server
        .add_user("cashier", "knock knock, who goes there")
        .await;
    let router = app(&server);
    let token = server
        .token(&server.client(), "cashier", "knock knock, who goes there")
        .await;

    let (status, _, body) = call(&router, &[("authorization", bearer(&token))]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "cashier"));
    let cookie = format!("theme=dark; {SESSION_COOKIE}={token}");
    let (status, _, body) = call(&router, &[("cookie", cookie)]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "cashier"));
}

#[tokio::test]
async fn the_guard_rejects_missing_and_invalid_tokens() {
    let server = TestServer::start().await;
    let router = app(&server);
    let (status, headers, _) = call(&router, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["www-authenticate"], "Bearer");
    let (status, _, _) = call(&router, &[("authorization", bearer("stp_forged"))]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = call(&router, &[("authorization", bearer(&"x".repeat(300)))]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // A gRPC caller gets a gRPC status, not an HTTP error page.
    let grpc = [
        ("content-type", "application/grpc".to_owned()),
        ("authorization", bearer("stp_forged")),
    ];
    let (status, headers, _) = call(&router, &grpc).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers["grpc-status"],
        (tonic::Code::Unauthenticated as i32).to_string().as_str()
    );
}

#[tokio::test]
async fn the_guard_reports_st_peter_unavailable() {
    let mut server = TestServer::start().await;
    server
        .add_user("cashier", "knock knock, who goes there")
        .await;
    let router = app(&server);
    let token = server
        .token(&server.client(), "cashier", "knock knock, who goes there")
        .await;
    server.stop().await;

    let (status, _, _) = call(&router, &[("authorization", bearer(&token))]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let grpc = [
        ("content-type", "application/grpc".to_owned()),
        ("authorization", bearer(&token)),
    ];
    let (status, headers, _) = call(&router, &grpc).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers["grpc-status"],
        (tonic::Code::Unavailable as i32).to_string().as_str()
    );
}

//! A small consuming service protected by st-peter.
//!
//! ```sh
//! cargo run --release -p st-peter-server -- serve          # st-peter on :50051
//! cargo run -p st-peter-client --example guarded_service   # this service on :8080
//! curl -H "authorization: Bearer $TOKEN" http://127.0.0.1:8080/whoami
//! ```
//!
//! Without a valid token the service answers 401; with st-peter down, 503 (fail closed),
//! except for tokens it verified within the fallback TTL (5 s).
use axum::{Extension, Json, Router, routing::get};
use st_peter_client::{Client, GuardLayer, VerifiedUser};

async fn whoami(Extension(caller): Extension<VerifiedUser>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "user_id": caller.user.user_id,
        "handle": caller.user.handle,
        "roles": caller.roles,
        // Local authorization: this service decides what its callers may do.
        "may_bake": caller.has_role("admin"),
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let target =
        std::env::var("ST_PETER_TARGET").unwrap_or_else(|_| "http://127.0.0.1:50051".into());
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let st_peter = Client::connect(target)?;
    let app = Router::new()
        .route("/whoami", get(whoami))
        .layer(GuardLayer::new(st_peter));
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("guarded service on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

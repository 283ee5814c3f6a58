//! A `tower` layer that lets only verified callers through, for tonic and axum services.
//!
//! It takes the token from `authorization: Bearer …` or the `aura_session` cookie,
//! verifies it through the cached [`Client`], and puts the [`VerifiedUser`] into the
//! request's extensions for handlers to read. Missing or invalid token: 401 (gRPC:
//! UNAUTHENTICATED). st-peter unreachable: 503 (gRPC: UNAVAILABLE) — it fails closed.
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response, StatusCode};

use crate::client::Client;
use crate::error::Error;
use crate::model::VerifiedUser;
use crate::token::token_from_header_map;

/// Wraps services in [`Guard`].
#[derive(Clone, Debug)]
pub struct GuardLayer {
    client: Client,
}

impl GuardLayer {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

impl<S> tower::Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Guard {
            inner,
            client: self.client.clone(),
        }
    }
}

/// The service [`GuardLayer`] makes.
#[derive(Clone, Debug)]
pub struct Guard<S> {
    inner: S,
    client: Client,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for Guard<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // The clone that was polled ready serves this request; a fresh clone stays behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let client = self.client.clone();
        Box::pin(async move {
            let grpc = is_grpc(&request);
            let Some(token) = token_from_header_map(request.headers()).map(str::to_owned) else {
                return Ok(refusal(
                    grpc,
                    Refusal::Unauthenticated("missing bearer token or session cookie"),
                ));
            };
            match client.verify_token(&token).await {
                Ok(user) => {
                    request.extensions_mut().insert::<VerifiedUser>(user);
                    inner.call(request).await
                }
                Err(Error::InvalidToken | Error::InvalidArgument(_)) => Ok(refusal(
                    grpc,
                    Refusal::Unauthenticated("token is not valid"),
                )),
                Err(_) => Ok(refusal(grpc, Refusal::Unavailable)),
            }
        })
    }
}

enum Refusal {
    Unauthenticated(&'static str),
    Unavailable,
}

fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// A 401/503 for HTTP, or a trailers-only gRPC answer (HTTP 200 with `grpc-status`).
fn refusal<B: Default>(grpc: bool, refusal: Refusal) -> Response<B> {
    let (http_status, grpc_status, message) = match refusal {
        Refusal::Unauthenticated(message) => (
            StatusCode::UNAUTHORIZED,
            tonic::Code::Unauthenticated,
            message,
        ),
        Refusal::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            tonic::Code::Unavailable,
            "authentication service unavailable",
        ),
    };
    let mut response = Response::new(B::default());
    if grpc {
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert("grpc-status", HeaderValue::from(grpc_status as i32));
        headers.insert("grpc-message", HeaderValue::from_static(message));
    } else {
        *response.status_mut() = http_status;
        if http_status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer"),
            );
        }
    }
    response
}

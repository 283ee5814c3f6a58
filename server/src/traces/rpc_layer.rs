//! One server span per RPC: a tower layer around the served routes.
//!
//! The span is named after the gRPC path (`st_peter.auth.v1.AuthService/Login`) and
//! carries `rpc.system`, `rpc.service`, `rpc.method` and, once the call has ended,
//! `rpc.grpc.status_code` (from the response headers for a trailers-only answer, from the
//! trailers otherwise). Its parent is the caller's span when the request carries W3C
//! trace context (`traceparent`, `tracestate`). It ends when the response body has been
//! sent, so streaming calls are measured whole. Nothing of the request or response body
//! and no other metadata is recorded.
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::service::Routes;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::TARGET;

/// Wraps the served routes in [`RpcSpanLayer`] when tracing is on; unchanged otherwise.
pub fn wrap_routes(routes: Routes) -> Routes {
    if super::enabled() {
        Routes::from(routes.into_axum_router().layer(RpcSpanLayer))
    } else {
        routes
    }
}

/// The layer that opens a span per call.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcSpanLayer;

impl<S> tower::Layer<S> for RpcSpanLayer {
    type Service = RpcSpan<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcSpan { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RpcSpan<S> {
    inner: S,
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|key| key.as_str()).collect()
    }
}

/// The span of one call, with the caller's context as its parent.
fn rpc_span<B>(request: &http::Request<B>) -> Span {
    let path = request.uri().path();
    let name = path.strip_prefix('/').unwrap_or(path);
    let (service, method) = name.split_once('/').unwrap_or((name, ""));
    let span = tracing::info_span!(
        target: TARGET,
        "rpc",
        otel.name = name,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
    );
    let parent = TraceContextPropagator::new().extract(&Headers(request.headers()));
    // A call without trace context starts a trace of its own.
    let _ = span.set_parent(parent);
    span
}

/// Records the gRPC status code; the codes the semantic conventions count as server
/// faults also mark the span as an error.
fn record_status(span: &Span, code: &[u8]) {
    let Some(code) = std::str::from_utf8(code)
        .ok()
        .and_then(|code| code.trim().parse::<i64>().ok())
    else {
        return;
    };
    span.record("rpc.grpc.status_code", code);
    // UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS.
    if matches!(code, 2 | 4 | 12 | 13 | 14 | 15) {
        span.record("otel.status_code", "ERROR");
    }
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for RpcSpan<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<TracedBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let span = rpc_span(&request);
        let future = span.in_scope(|| self.inner.call(request));
        Box::pin(async move {
            let response = tracing::Instrument::instrument(future, span.clone()).await?;
            // A trailers-only answer (every error tonic returns) has the status here.
            if let Some(code) = response.headers().get("grpc-status") {
                record_status(&span, code.as_bytes());
            }
            Ok(response.map(|body| TracedBody { inner: body, span }))
        })
    }
}

/// The response body; holds the call's span open until the body ends, and records the
/// status from the trailers.
pub struct TracedBody<B> {
    inner: B,
    span: Span,
}

impl<B: Body + Unpin> Body for TracedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let _entered = this.span.enter();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            let code = frame.trailers_ref().and_then(|t| t.get("grpc-status"));
            if let Some(code) = code {
                record_status(&this.span, code.as_bytes());
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

//! A tower layer around every served gRPC route that counts calls and times them by
//! service, method and status code.
//!
//! The code is the response's `grpc-status`: from the headers of a trailers-only answer
//! (most errors), else from the trailers at the end of the body. So a call is recorded when
//! its response ends, and its duration runs from the request to that end: for a
//! server-streaming call (WatchRevocations, health Watch) that is the stream's whole life,
//! and it is counted when the stream ends. While it is open it shows in
//! `st_peter_rpcs_in_flight`. A call whose caller went away before the end (a dropped
//! response or body) is recorded as `CANCELLED`; a body that ended without a status, as
//! `UNKNOWN`.
//!
//! Label handles are resolved ahead: the method from a table built once from the served
//! services' descriptors (a path outside them is `unknown`), and each method's handle per
//! code on its first use, so a call does one map lookup and no label hashing.
use axum::body::{Body, Bytes};
use http_body::Frame;
use prometheus::{Histogram, IntCounter, IntGauge, IntGaugeVec};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Instant;

use super::Metrics;

/// gRPC status codes by number, as the gRPC specification names them.
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];
const CANCELLED: usize = 1;
const UNKNOWN: usize = 2;

/// The file descriptor sets of everything `serve` serves.
fn served_descriptor_sets() -> [&'static [u8]; 4] {
    [
        st_peter_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ]
}

/// One method's label values and handles.
pub(crate) struct Method {
    service: String,
    method: String,
    in_flight: OnceLock<IntGauge>,
    by_code: [OnceLock<(IntCounter, Histogram)>; 17],
}

impl Method {
    fn new(service: &str, method: &str) -> Self {
        Self {
            service: service.to_owned(),
            method: method.to_owned(),
            in_flight: OnceLock::new(),
            by_code: Default::default(),
        }
    }
}

/// Every served method by its HTTP/2 path (`/package.Service/Method`), and `unknown`.
pub(crate) struct Methods {
    by_path: HashMap<String, usize>,
    entries: Vec<Method>,
    in_flight: IntGaugeVec,
}

impl Methods {
    pub(crate) fn new(in_flight: &IntGaugeVec) -> Self {
        use prost::Message;
        let mut by_path = HashMap::new();
        let mut entries = Vec::new();
        for encoded in served_descriptor_sets() {
            let set = prost_types::FileDescriptorSet::decode(encoded)
                .expect("a served descriptor set decodes");
            for file in &set.file {
                for service in &file.service {
                    let service_name = format!("{}.{}", file.package(), service.name());
                    for method in &service.method {
                        let path = format!("/{service_name}/{}", method.name());
                        by_path.entry(path).or_insert_with(|| {
                            entries.push(Method::new(&service_name, method.name()));
                            entries.len() - 1
                        });
                    }
                }
            }
        }
        entries.push(Method::new("unknown", "unknown"));
        Self {
            by_path,
            entries,
            in_flight: in_flight.clone(),
        }
    }

    fn resolve(&self, path: &str) -> &Method {
        let index = self
            .by_path
            .get(path)
            .copied()
            .unwrap_or(self.entries.len() - 1);
        &self.entries[index]
    }

    fn in_flight<'a>(&self, method: &'a Method) -> &'a IntGauge {
        method.in_flight.get_or_init(|| {
            self.in_flight
                .with_label_values(&[&method.service, &method.method])
        })
    }
}

/// Wraps each route in a [`Metered`] service; see the module doc.
#[derive(Clone, Copy)]
pub struct RpcMetricsLayer {
    metrics: &'static Metrics,
}

impl RpcMetricsLayer {
    pub fn new(metrics: &'static Metrics) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = Metered<S>;

    fn layer(&self, inner: S) -> Metered<S> {
        Metered {
            inner,
            metrics: self.metrics,
        }
    }
}

#[derive(Clone)]
pub struct Metered<S> {
    inner: S,
    metrics: &'static Metrics,
}

impl<S, B> tower::Service<http::Request<B>> for Metered<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let metrics = self.metrics;
        let method = metrics.methods.resolve(request.uri().path());
        metrics.methods.in_flight(method).inc();
        let call = Call {
            metrics,
            method,
            started: Instant::now(),
            finished: false,
        };
        let answer = self.inner.call(request);
        Box::pin(async move {
            // Dropped here (the caller went away before the headers): CANCELLED.
            let mut call = call;
            let response = answer.await?;
            if let Some(code) = grpc_status(response.headers()) {
                call.finish(code);
                return Ok(response);
            }
            Ok(response.map(|body| Body::new(MeteredBody { inner: body, call })))
        })
    }
}

/// A call not yet recorded; recorded once, when it finishes or is dropped.
struct Call {
    metrics: &'static Metrics,
    method: &'static Method,
    started: Instant,
    finished: bool,
}

impl Call {
    fn finish(&mut self, code: usize) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let method = self.method;
        let (count, seconds) = method.by_code[code].get_or_init(|| {
            let labels = [method.service.as_str(), method.method.as_str(), CODES[code]];
            (
                self.metrics.rpcs.with_label_values(&labels),
                self.metrics.rpc_seconds.with_label_values(&labels),
            )
        });
        count.inc();
        seconds.observe(self.started.elapsed().as_secs_f64());
        self.metrics.methods.in_flight(method).dec();
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish(CANCELLED);
    }
}

/// The number in a `grpc-status` header or trailer; `UNKNOWN` for a value out of range.
fn grpc_status(headers: &http::HeaderMap) -> Option<usize> {
    let value = headers.get("grpc-status")?;
    Some(
        std::str::from_utf8(value.as_bytes())
            .ok()
            .and_then(|text| text.parse::<usize>().ok())
            .filter(|code| *code < CODES.len())
            .unwrap_or(UNKNOWN),
    )
}

/// A response body that records its call when the trailers pass (or the body ends).
struct MeteredBody {
    inner: Body,
    call: Call,
}

impl http_body::Body for MeteredBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                    this.call.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) | Poll::Ready(None) => this.call.finish(UNKNOWN),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// `routes` wrapped in the RPC metrics layer when metrics are on; as they are otherwise.
pub fn wrap_if_enabled(routes: tonic::service::Routes) -> tonic::service::Routes {
    match super::get() {
        Some(metrics) => tonic::service::Routes::from(
            routes
                .into_axum_router()
                .layer(RpcMetricsLayer::new(metrics)),
        ),
        None => routes,
    }
}

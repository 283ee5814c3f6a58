//! The span of one password hash or check: opened where the work is queued (a child of
//! the RPC's span), ended on the hashing thread when the work is done. It records how long
//! the work waited for a hashing thread and how long the hash took, nothing else.
use std::time::Instant;

use tracing::Span;

use super::TARGET;

/// A span for work about to be queued; `Span::none()` when traces are off.
pub fn hash_span() -> Span {
    if !super::enabled() {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "password_hash",
        otel.name = "password.hash",
        st_peter.hash.queue_wait_ms = tracing::field::Empty,
        st_peter.hash.hash_ms = tracing::field::Empty,
    )
}

/// Called on the hashing thread as the work starts; records the time it waited and, when
/// dropped at the end of the work, the time it took.
pub fn on_hashing_thread(span: Span, queued_at: Instant) -> HashTiming {
    let started = Instant::now();
    if !span.is_none() {
        span.record(
            "st_peter.hash.queue_wait_ms",
            started.duration_since(queued_at).as_secs_f64() * 1e3,
        );
    }
    HashTiming { span, started }
}

/// Ends the hashing span (see [`on_hashing_thread`]).
pub struct HashTiming {
    span: Span,
    started: Instant,
}

impl Drop for HashTiming {
    fn drop(&mut self) {
        if !self.span.is_none() {
            self.span.record(
                "st_peter.hash.hash_ms",
                self.started.elapsed().as_secs_f64() * 1e3,
            );
        }
    }
}

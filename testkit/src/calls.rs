//! A tower layer for [`TestServer`](crate::TestServer) that counts calls by method and can
//! hold one call at a chosen point: it stands for a slow network or a slow server at a
//! chosen moment, which a real server cannot be asked to be.
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::sync::Semaphore;

/// RPCs the test server received, by method name (`VerifyToken`, `Login`, ...).
#[derive(Clone, Default)]
pub struct RpcCounts(Arc<Mutex<HashMap<String, usize>>>);

impl RpcCounts {
    pub fn get(&self, method: &str) -> usize {
        self.0.lock().unwrap().get(method).copied().unwrap_or(0)
    }

    fn record(&self, path: &str) {
        *self
            .0
            .lock()
            .unwrap()
            .entry(method(path).to_owned())
            .or_default() += 1;
    }
}

/// `/pkg.Service/Method` -> `Method`.
fn method(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Where a held call waits: before the server handles it, or after it has answered (the
/// answer is decided but not yet sent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldPoint {
    BeforeHandling,
    AfterAnswer,
}

/// One call held at the server until the test releases it.
pub struct Hold {
    point: HoldPoint,
    reached: Semaphore,
    release: Semaphore,
}

impl Hold {
    /// Waits until the held call has reached its hold point.
    pub async fn reached(&self) {
        self.reached.acquire().await.unwrap().forget();
    }

    /// Lets the held call go on.
    pub fn release(&self) {
        self.release.add_permits(1);
    }

    async fn wait_here(&self) {
        self.reached.add_permits(1);
        self.release.acquire().await.unwrap().forget();
    }
}

/// The layer: give a clone to [`TestServerBuilder::layer`](crate::TestServerBuilder::layer)
/// and keep one to read [`Calls::counts`] and arm holds.
#[derive(Clone, Default)]
pub struct Calls {
    pub counts: RpcCounts,
    /// Holds armed by `hold_next`, by method name; each catches one call.
    holds: Arc<Mutex<HashMap<String, Arc<Hold>>>>,
}

impl Calls {
    /// Holds the next call of `method` (`VerifyToken`, `Logout`, ...) at `point` until the
    /// returned hold is released.
    pub fn hold_next(&self, method: &str, point: HoldPoint) -> Arc<Hold> {
        let hold = Arc::new(Hold {
            point,
            reached: Semaphore::new(0),
            release: Semaphore::new(0),
        });
        let previous = self
            .holds
            .lock()
            .unwrap()
            .insert(method.to_owned(), hold.clone());
        assert!(previous.is_none(), "{method} is already held");
        hold
    }

    fn take_hold(&self, path: &str) -> Option<Arc<Hold>> {
        self.holds.lock().unwrap().remove(method(path))
    }
}

impl<S> tower::Layer<S> for Calls {
    type Service = Counting<S>;

    fn layer(&self, inner: S) -> Counting<S> {
        Counting {
            inner,
            calls: self.clone(),
        }
    }
}

/// The service [`Calls`] wraps each route in.
#[derive(Clone)]
pub struct Counting<S> {
    inner: S,
    calls: Calls,
}

impl<S, B> tower::Service<http::Request<B>> for Counting<S>
where
    S: tower::Service<http::Request<B>> + Clone + Send + 'static,
    S::Response: Send,
    S::Error: Send,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        self.calls.counts.record(request.uri().path());
        let Some(hold) = self.calls.take_hold(request.uri().path()) else {
            return Box::pin(self.inner.call(request));
        };
        // The clone that was made ready serves this call; the fresh clone stays behind.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        Box::pin(async move {
            if hold.point == HoldPoint::BeforeHandling {
                hold.wait_here().await;
            }
            let response = inner.call(request).await;
            if hold.point == HoldPoint::AfterAnswer {
                hold.wait_here().await;
            }
            response
        })
    }
}

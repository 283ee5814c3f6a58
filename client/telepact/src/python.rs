//! The Python extension module `st_peter_telepact._native`. The Python package wraps it in
//! an async callable (see python/st_peter_telepact/__init__.py).
//!
//! Everything runs on one process-wide Tokio runtime, so requests on many threads (each with
//! its own `asyncio.run()`) share one st-peter connection and one verification cache. The
//! async path never blocks the caller: `start_authenticate` spawns the work and returns, and
//! the runtime thread hands the answer back through a callback that the Python side turns
//! into `loop.call_soon_threadsafe`. No thread waits per request, and no event loop thread
//! ever waits on SQLite or st-peter. `owned_headers` reads memory only.
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use tokio::runtime::Runtime;
use tokio::task::AbortHandle;

use crate::{Error, Headers, OnAuth, RolesStore};

create_exception!(
    _native,
    AuthError,
    PyException,
    "The request is refused: Telepact answers ErrorUnauthenticated_."
);

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

fn runtime() -> PyResult<&'static Runtime> {
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("st-peter-telepact")
        .enable_all()
        .build()
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start the Tokio runtime: {e}")))?;
    // A racing thread may have won; its runtime is used and ours is dropped.
    Ok(RUNTIME.get_or_init(|| runtime))
}

fn seconds_arg(name: &str, seconds: f64) -> Result<Duration, Error> {
    Duration::try_from_secs_f64(seconds).map_err(|e| {
        Error::StPeter(st_peter_client::Error::InvalidArgument(format!(
            "{name}: {e}"
        )))
    })
}

fn refused(error: Error) -> PyErr {
    AuthError::new_err(error.to_string())
}

fn parse_headers(headers_json: &str) -> PyResult<Headers> {
    serde_json::from_str(headers_json)
        .map_err(|e| AuthError::new_err(format!("headers are not a JSON object: {e}")))
}

#[pyclass(frozen, name = "OnAuth", module = "st_peter_telepact._native")]
struct NativeOnAuth {
    inner: Arc<OnAuth>,
}

/// One authentication started by `start_authenticate`.
#[pyclass(frozen, module = "st_peter_telepact._native")]
struct Pending {
    task: AbortHandle,
}

#[pymethods]
impl Pending {
    /// Stops the work if it is still running (the caller stopped waiting); `settle` is then
    /// not called unless it already was. A no-op once the work has finished.
    fn cancel(&self) {
        self.task.abort();
    }
}

#[pymethods]
impl NativeOnAuth {
    #[new]
    #[pyo3(signature = (
        target,
        roles_db,
        owned_headers = Vec::new(),
        cache_ttl = None,
        request_timeout = None,
        fallback_ttl = None,
        revocation_feed = true,
        api_key = None,
    ))]
    #[expect(
        clippy::too_many_arguments,
        reason = "Python keyword arguments, one per option"
    )]
    fn new(
        py: Python<'_>,
        target: String,
        roles_db: String,
        owned_headers: Vec<String>,
        cache_ttl: Option<f64>,
        request_timeout: Option<f64>,
        fallback_ttl: Option<f64>,
        revocation_feed: bool,
        api_key: Option<String>,
    ) -> PyResult<Self> {
        let runtime = runtime()?;
        let inner = py.detach(|| {
            runtime.block_on(async {
                let mut builder =
                    st_peter_client::Client::builder(target).revocation_feed(revocation_feed);
                // Given, else ST_PETER_API_KEY, else no service identity.
                if let Some(key) = crate::api_key_or_env(api_key.as_deref())? {
                    builder = builder.api_key(key);
                }
                if let Some(seconds) = cache_ttl {
                    builder = builder.cache_ttl(seconds_arg("cache_ttl", seconds)?);
                }
                if let Some(seconds) = fallback_ttl {
                    builder = builder.fallback_ttl(seconds_arg("fallback_ttl", seconds)?);
                }
                if let Some(seconds) = request_timeout {
                    builder = builder.request_timeout(seconds_arg("request_timeout", seconds)?);
                }
                let client = builder.build()?;
                let store = RolesStore::open(roles_db).await?;
                OnAuth::new(client, store).owned_headers(owned_headers)
            })
        });
        inner
            .map(|inner| Self {
                inner: Arc::new(inner),
            })
            .map_err(|e| match e {
                Error::InvalidApiKey(_) => PyValueError::new_err(e.to_string()),
                e => PyRuntimeError::new_err(e.to_string()),
            })
    }

    /// Takes the request headers as a JSON object, returns the identity headers as JSON.
    /// Blocks the calling thread (with the GIL released) until st-peter has answered.
    fn authenticate(&self, py: Python<'_>, headers_json: String) -> PyResult<String> {
        let runtime = runtime()?;
        let headers = parse_headers(&headers_json)?;
        let identity = py
            .detach(|| runtime.block_on(self.inner.on_auth(&headers)))
            .map_err(refused)?;
        Ok(serde_json::Value::Object(identity).to_string())
    }

    /// Starts authenticating and returns at once. When done, a runtime thread calls
    /// `settle(False, identity_json)` or `settle(True, refusal_message)`; `settle` must be
    /// safe to call from any thread. A malformed `headers_json` raises here instead.
    fn start_authenticate(&self, headers_json: String, settle: Py<PyAny>) -> PyResult<Pending> {
        let runtime = runtime()?;
        let headers = parse_headers(&headers_json)?;
        let inner = Arc::clone(&self.inner);
        let task = runtime.spawn(async move {
            let outcome = match inner.on_auth(&headers).await {
                Ok(identity) => (false, serde_json::Value::Object(identity).to_string()),
                Err(error) => (true, error.to_string()),
            };
            // None: the interpreter is shutting down, and nobody is left waiting. `settle`
            // moves in, so its last reference goes while attached.
            Python::try_attach(move |py| {
                if let Err(e) = settle.call1(py, outcome) {
                    e.write_unraisable(py, Some(settle.bind(py)));
                }
            });
        });
        Ok(Pending {
            task: task.abort_handle(),
        })
    }

    /// The header keys the adapter owns, sorted. From memory: never waits on anything.
    fn owned_headers(&self) -> Vec<String> {
        self.inner.owned().into_iter().collect()
    }

    /// The revocation feed's state: (subscribed, last sequence, streams opened). From
    /// memory.
    fn feed_status(&self) -> (bool, u64, u64) {
        let status = self.inner.client().feed_status();
        (
            status.subscribed,
            status.last_sequence,
            status.subscriptions,
        )
    }
}

/// Runs the `st-peter-telepact` command line with `argv` (program name first).
#[pyfunction]
fn cli_main(py: Python<'_>, argv: Vec<String>) -> PyResult<i32> {
    let runtime = runtime()?;
    Ok(py.detach(|| runtime.block_on(crate::cli::main_with_args(argv))))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeOnAuth>()?;
    m.add_class::<Pending>()?;
    m.add("AuthError", m.py().get_type::<AuthError>())?;
    m.add_function(wrap_pyfunction!(cli_main, m)?)?;
    Ok(())
}

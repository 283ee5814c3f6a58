//! The Python extension module `st_peter_telepact._native`. The Python package wraps it in
//! an async callable (see python/st_peter_telepact/__init__.py).
//!
//! Every call releases the GIL and runs on one process-wide Tokio runtime, so requests on
//! many threads (each with its own `asyncio.run()`) share one st-peter connection and one
//! verification cache.
use std::sync::OnceLock;
use std::time::Duration;

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyRuntimeError};
use pyo3::prelude::*;
use tokio::runtime::Runtime;

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

#[pyclass(frozen, name = "OnAuth", module = "st_peter_telepact._native")]
struct NativeOnAuth {
    inner: OnAuth,
}

#[pymethods]
impl NativeOnAuth {
    #[new]
    #[pyo3(signature = (target, roles_db, owned_headers = Vec::new(), cache_ttl = None, request_timeout = None))]
    fn new(
        py: Python<'_>,
        target: String,
        roles_db: String,
        owned_headers: Vec<String>,
        cache_ttl: Option<f64>,
        request_timeout: Option<f64>,
    ) -> PyResult<Self> {
        let runtime = runtime()?;
        let inner = py.detach(|| {
            runtime.block_on(async {
                let mut builder = st_peter_client::Client::builder(target);
                if let Some(seconds) = cache_ttl {
                    builder = builder.cache_ttl(seconds_arg("cache_ttl", seconds)?);
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
            .map(|inner| Self { inner })
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))
    }

    /// Takes the request headers as a JSON object, returns the identity headers as JSON.
    fn authenticate(&self, py: Python<'_>, headers_json: String) -> PyResult<String> {
        let runtime = runtime()?;
        let headers: Headers = serde_json::from_str(&headers_json)
            .map_err(|e| AuthError::new_err(format!("headers are not a JSON object: {e}")))?;
        let identity = py
            .detach(|| runtime.block_on(self.inner.on_auth(&headers)))
            .map_err(refused)?;
        Ok(serde_json::Value::Object(identity).to_string())
    }

    /// The header keys the adapter owns, sorted.
    fn owned_headers(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let runtime = runtime()?;
        py.detach(|| runtime.block_on(self.inner.owned()))
            .map(|owned| owned.into_iter().collect())
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))
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
    m.add("AuthError", m.py().get_type::<AuthError>())?;
    m.add_function(wrap_pyfunction!(cli_main, m)?)?;
    Ok(())
}

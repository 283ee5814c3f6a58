//! Start-up: from configuration to a running st-peter, in one place that `st-peter serve`,
//! the admin commands and the tests share. [`open`] connects and migrates the store,
//! resolves the TOTP key and checks it against the database, and builds the domain;
//! [`Application`] binds a listener for it and serves until a shutdown future resolves.
use anyhow::{Context, bail};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::domain::app::{Settings, StPeter};
use crate::error::Error;
use crate::grpc::serve::ServeOptions;
use crate::secrets::totp_key::{self, TotpKey};
use crate::store::{self, PoolSettings, Store};

/// The environment variable that may hold the TOTP key itself (base64).
pub const TOTP_KEY_ENV: &str = "ST_PETER_TOTP_KEY";

/// Where the key that seals TOTP secrets comes from.
#[derive(Debug, Clone)]
pub enum TotpKeySource {
    /// The key itself, base64 (from `ST_PETER_TOTP_KEY`).
    Base64(String),
    /// A file holding it (`--totp-key-file`).
    File(PathBuf),
    /// The embedded default: `DATABASE.totp-key` beside a SQLite file, created on first
    /// start. A database that is not a local file has no default.
    BesideDatabase,
}

/// Everything start-up needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    pub pool: PoolSettings,
    pub totp_key: TotpKeySource,
    /// The domain's settings; `totp_key` is filled in from `totp_key` above.
    pub settings: Settings,
}

/// Opens the store named by the configuration (creating and migrating it as needed),
/// resolves the TOTP key and checks it against the database, and builds the domain.
pub async fn open(config: Config) -> anyhow::Result<StPeter> {
    let store = store::connect_with(&config.database_url, &config.pool)
        .await
        .with_context(|| format!("opening {}", store::redact_url(&config.database_url)))?;
    let store = crate::traces::wrap_store(store, &config.database_url);
    let (key, created_file) = resolve_totp_key(&config.totp_key, &config.database_url)?;
    if let Err(error) = check_totp_key(&key, store.as_ref()).await {
        // A key file made just now cannot be the one the database was sealed with: the
        // real one was moved or deleted. Take the new file away again and say so.
        if let Some(path) = created_file {
            let _ = std::fs::remove_file(&path);
            bail!(
                "{error}; the key file {} was missing, so the key these secrets were sealed \
                 with was moved or deleted: restore it, or give --totp-key-file / \
                 {TOTP_KEY_ENV}",
                path.display()
            );
        }
        return Err(error.into());
    }
    let settings = Settings {
        totp_key: Some(key),
        ..config.settings
    };
    Ok(StPeter::new(store, StPeter::system_clock(), settings)?)
}

/// The first key to meet a database stores a sealed check value; any other key fails
/// here, at start-up, with a clear error (never the key itself).
async fn check_totp_key(key: &TotpKey, store: &dyn Store) -> crate::error::Result<()> {
    let stored = store
        .key_check_or_insert(totp_key::CHECK_NAME, &key.check_value()?)
        .await?;
    if key.opens_check_value(&stored) {
        Ok(())
    } else {
        Err(Error::Config(
            "TOTP key: this is not the key this database's TOTP secrets were sealed with \
             (check --totp-key-file / ST_PETER_TOTP_KEY)"
                .into(),
        ))
    }
}

/// The key, and the key file's path when this call created it.
fn resolve_totp_key(
    source: &TotpKeySource,
    database_url: &str,
) -> anyhow::Result<(TotpKey, Option<PathBuf>)> {
    match source {
        TotpKeySource::Base64(text) => {
            let key =
                TotpKey::from_base64(text).with_context(|| format!("reading ${TOTP_KEY_ENV}"))?;
            Ok((key, None))
        }
        TotpKeySource::File(path) => Ok((TotpKey::from_file(path)?, None)),
        TotpKeySource::BesideDatabase => match totp_key::default_key_file(database_url) {
            Some(path) => {
                let (key, created) = TotpKey::load_or_create_file(&path)?;
                Ok((key, created.then_some(path)))
            }
            None => bail!(
                "a database that is not a local SQLite file needs a TOTP key: give \
                 --totp-key-file PATH or set {TOTP_KEY_ENV} (base64 of 32 random bytes, e.g. \
                 `openssl rand -base64 32`)"
            ),
        },
    }
}

/// A built st-peter bound to its listener, ready to serve.
pub struct Application {
    app: Arc<StPeter>,
    listener: tokio::net::TcpListener,
    options: ServeOptions,
}

impl Application {
    /// Binds `listen` (port 0 picks a free one: see [`Application::local_addr`]). `app`
    /// may be shared (an `Arc`), so a test can serve one domain again after a stop.
    pub async fn bind(
        app: impl Into<Arc<StPeter>>,
        listen: SocketAddr,
        options: ServeOptions,
    ) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        Ok(Self {
            app: app.into(),
            listener,
            options,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound TCP listener has a local address")
    }

    pub fn app(&self) -> &Arc<StPeter> {
        &self.app
    }

    pub fn tls(&self) -> bool {
        self.options.tls.is_some()
    }

    /// Serves until `shutdown` resolves, then drains (see `server`).
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        crate::grpc::serve::run_with(self.listener, self.app, self.options, shutdown).await
    }
}

/// Writes the address a server listens on to `path`, whole or not at all (written beside
/// it, then renamed), so a process that waits for the file never reads half an address.
/// The first line is the gRPC address alone; with metrics on, a second line
/// `metrics HOST:PORT` gives the metrics listener's.
pub fn write_ready_file(
    path: &Path,
    address: SocketAddr,
    metrics: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let partial = path.with_extension("partial");
    let mut text = format!("{address}\n");
    if let Some(metrics) = metrics {
        text.push_str(&format!("metrics {metrics}\n"));
    }
    std::fs::write(&partial, text).with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, path).with_context(|| format!("writing {}", path.display()))
}

//! `StPeter`: the domain operations that both faces (gRPC and the admin CLI) call. Its
//! methods live beside what they act on: `accounts`, `sessions`, `two_factor`.
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock, UnixMillis};
use crate::error::Result;
use crate::password::{PasswordParams, Passwords};
use crate::store::{Store, UserRecord};
use crate::throttle::{ThrottlePolicies, Throttles};
use crate::totp_key::TotpKey;

/// Who is on the other end of a request: throttling and audit lines use it.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub address: Option<IpAddr>,
    /// How the request arrived when there is no address (`grpc`, `cli`).
    pub via: &'static str,
}

impl Caller {
    pub fn grpc(address: Option<IpAddr>) -> Self {
        Self {
            address,
            via: "grpc",
        }
    }

    /// The admin command line on the server's own machine.
    pub const CLI: Self = Self {
        address: None,
        via: "cli",
    };
}

/// Tunables of the domain, with production defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a session token lives.
    pub session_ttl: Duration,
    /// How long a two-factor challenge lives.
    pub challenge_ttl: Duration,
    /// Codes a challenge accepts before it dies.
    pub challenge_max_attempts: u32,
    /// Issuer shown by authenticator apps.
    pub totp_issuer: String,
    pub password_params: PasswordParams,
    /// argon2 computations running at once; defaults to all cores but one.
    pub hash_concurrency: usize,
    pub throttle: ThrottlePolicies,
    /// Seals TOTP secrets at rest. `None` refuses TOTP enrollment and TOTP logins.
    pub totp_key: Option<TotpKey>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            session_ttl: Duration::from_secs(24 * 60 * 60),
            challenge_ttl: Duration::from_secs(5 * 60),
            challenge_max_attempts: 5,
            totp_issuer: "st-peter".into(),
            password_params: PasswordParams::OWASP,
            hash_concurrency: crate::password::default_concurrency(),
            throttle: ThrottlePolicies::default(),
            totp_key: None,
        }
    }
}

/// A user as callers may see them: no secrets.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UserView {
    pub user_id: String,
    pub handle: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub display_name: String,
    pub disabled: bool,
}

impl From<&UserRecord> for UserView {
    fn from(user: &UserRecord) -> Self {
        Self {
            user_id: user.id.clone(),
            handle: user.handle.clone(),
            email: user.email.clone(),
            phone: user.phone.clone(),
            display_name: user.display_name.clone(),
            disabled: user.disabled,
        }
    }
}

pub struct StPeter {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) passwords: Passwords,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) settings: Settings,
    pub(crate) throttles: Throttles,
}

impl StPeter {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, settings: Settings) -> Result<Self> {
        let passwords = Passwords::new(settings.password_params, settings.hash_concurrency)?;
        Ok(Self {
            store,
            passwords,
            throttles: Throttles::new(&settings.throttle, clock.clone()),
            clock,
            settings,
        })
    }

    /// The production clock.
    pub fn system_clock() -> Arc<dyn Clock> {
        Arc::new(SystemClock)
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub(crate) fn now(&self) -> UnixMillis {
        self.clock.now_millis()
    }

    /// Deletes expired sessions and challenges; run now and then by the server.
    pub async fn purge_expired(&self) -> Result<u64> {
        // Keep a day of ended sessions around for forensics before deleting them.
        let grace = 24 * 60 * 60 * 1000;
        self.store.purge_expired(self.now() - grace).await
    }
}

//! Service accounts and their API keys: machines that authenticate to st-peter (and to
//! each other through it) with an identity of their own. A service account is a user of
//! kind `service`: platform roles and sessions like a person, but no password and no TOTP.
//! It exchanges an API key for a short-lived session token (`ExchangeApiKey`), which
//! `VerifyToken` verifies like any other and which serves as the caller credentials that
//! `--require-caller-credentials` asks for.
use std::time::Duration;

use crate::clock::{UnixMillis, millis};
use crate::domain::accounts::{check_display_name, check_short_name};
use crate::domain::app::{Caller, StPeter, UserKind, UserView};
use crate::domain::audit::{self, Event};
use crate::domain::identifier;
use crate::domain::sessions::{IssuedSession, check_token_size, new_session_id};
use crate::domain::throttle;
use crate::error::{Error, Result, invalid};
use crate::secrets::token::{self, API_KEY_PREFIX, SESSION_PREFIX, SecretHash};
use crate::store::{ApiKeyExchange, ApiKeyRecord, NewApiKey, NewUser, UserRecord};

/// The platform role that lets a service account resolve users with `LookupUser`.
pub const LOOKUP_ROLE: &str = "st-peter:lookup";

const MAX_KEY_NAME_CHARS: usize = 64;

/// A new API key: the key itself is shown this once and never stored.
#[derive(Clone, serde::Serialize)]
pub struct IssuedApiKey {
    pub key_id: String,
    pub name: String,
    pub api_key: String,
    pub expires_at: Option<UnixMillis>,
}

impl std::fmt::Debug for IssuedApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedApiKey")
            .field("key_id", &self.key_id)
            .field("name", &self.name)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// An API key as its administrator sees it listed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApiKeyView {
    pub key_id: String,
    pub name: String,
    pub created_at: UnixMillis,
    pub expires_at: Option<UnixMillis>,
    pub last_used_at: Option<UnixMillis>,
    pub revoked_at: Option<UnixMillis>,
}

impl From<ApiKeyRecord> for ApiKeyView {
    fn from(key: ApiKeyRecord) -> Self {
        Self {
            key_id: key.id,
            name: key.name,
            created_at: key.created_at,
            expires_at: key.expires_at,
            last_used_at: key.last_used_at,
            revoked_at: key.revoked_at,
        }
    }
}

/// What a caller of VerifyToken, LookupUser or WatchRevocations presented about itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallerCredentials<'a> {
    /// The token of `authorization: Bearer <token>`, if the header was sent.
    pub bearer: Option<&'a str>,
    /// The caller presented a client certificate that the TLS layer verified against the
    /// client CA (mutual TLS).
    pub client_certificate: bool,
}

/// A caller let in by its service account's token: what ends that token's validity.
#[derive(Debug, Clone)]
pub struct ServiceCaller {
    pub user_id: String,
    pub token_hash: SecretHash,
    pub expires_at: UnixMillis,
}

impl StPeter {
    /// Creates a service account named `name` (a handle: the same namespace as people's).
    pub async fn create_service_account(
        &self,
        name: &str,
        display_name: Option<String>,
    ) -> Result<UserView> {
        let handle = identifier::normalize_handle(name)?;
        let display_name = check_display_name(display_name)?;
        let user = self
            .insert_user(NewUser {
                id: uuid::Uuid::new_v4().to_string(),
                handle,
                email: None,
                phone: None,
                display_name,
                // No password verifies against an empty hash; logins never get that far
                // for a service account anyway.
                password_hash: String::new(),
                kind: UserKind::Service,
                created_at: self.now(),
            })
            .await?;
        audit::record(
            Event::ApiKey,
            "account_created",
            Some(&user.user_id),
            &Caller::CLI,
        );
        Ok(user)
    }

    /// A new API key for a service account (by name or id). `name` tells the account's
    /// keys apart (a default one is made from the key id); `valid_for` bounds its life.
    pub async fn create_api_key(
        &self,
        service: &str,
        name: Option<&str>,
        valid_for: Option<Duration>,
    ) -> Result<IssuedApiKey> {
        if valid_for.is_some_and(|ttl| ttl.is_zero()) {
            return Err(invalid(
                "expires",
                "must be longer than zero (or left out: never)",
            ));
        }
        let account = self.find_service_account(service).await?;
        let key_id = uuid::Uuid::new_v4().to_string();
        let name = match name {
            Some(name) => check_key_name(name)?,
            None => format!("key-{}", &key_id[..8]),
        };
        let now = self.now();
        let expires_at = valid_for.map(|ttl| now.saturating_add(millis(ttl)));
        let minted = token::mint(API_KEY_PREFIX);
        self.store
            .create_api_key(NewApiKey {
                id: &key_id,
                key_hash: &minted.hash,
                user_id: &account.owner.id,
                name: &name,
                created_at: now,
                expires_at,
            })
            .await?;
        audit::record(
            Event::ApiKey,
            "created",
            Some(&account.owner.id),
            &Caller::CLI,
        );
        Ok(IssuedApiKey {
            key_id,
            name,
            api_key: minted.secret,
            expires_at,
        })
    }

    /// A service account's keys, revoked and expired ones included, oldest first.
    pub async fn list_api_keys(&self, service: &str) -> Result<Vec<ApiKeyView>> {
        let account = self.find_service_account(service).await?;
        let keys = self.store.api_keys(&account.owner.id).await?;
        Ok(keys.into_iter().map(ApiKeyView::from).collect())
    }

    /// Revokes a key at once, and every session exchanged from it (through the revocation
    /// feed). Answers how many sessions ended; an unknown or already revoked key is
    /// `NotFound`.
    pub async fn revoke_api_key(&self, key_id: &str) -> Result<u64> {
        let key_id = uuid::Uuid::parse_str(key_id.trim())
            .map_err(|_| {
                invalid(
                    "key_id",
                    "must be a key_id from `service key list` (a UUID)",
                )
            })?
            .to_string();
        let Some((user_id, ended)) = self.store.revoke_api_key(&key_id, self.now()).await? else {
            return Err(Error::NotFound(format!("live API key {key_id}")));
        };
        if ended > 0 {
            self.changed_user(&user_id);
        }
        audit::record(Event::ApiKey, "revoked", Some(&user_id), &Caller::CLI);
        Ok(ended)
    }

    /// Exchanges an API key for a new session of its service account, living
    /// `Settings::api_token_ttl` (never past the key). Unknown, expired and revoked keys, and
    /// keys of disabled accounts, are `Unauthenticated`. No hash work: a key is 32 random
    /// bytes, so its SHA-256 is looked up directly.
    ///
    /// Refusals are throttled twice, before any store work: one key refused again and again
    /// waits (a revoked key left in a deployment troubles no other key), and an address
    /// that sends many different refused keys waits, whatever key it sends next (a flood of
    /// made-up keys); a key sent again counts once towards its address.
    pub async fn exchange_api_key(&self, caller: &Caller, api_key: &str) -> Result<IssuedSession> {
        check_token_size("api_key", api_key)?;
        let now = self.now();
        let key_hash = token::hash(api_key);
        let throttles = &self.throttles;
        let address = caller.address.map(throttle::address);
        let address_wait = match &address {
            Some(address) => throttles.api_key_address.wait(address, now).await?,
            None => None,
        };
        let wait = throttles
            .api_key
            .wait(&key_hash, now)
            .await?
            .max(address_wait);
        if let Some(wait) = wait {
            audit::record(Event::ApiKey, "throttled", None, caller);
            return Err(Error::RateLimited(wait));
        }
        let exchanged = if token::is_well_formed(API_KEY_PREFIX, api_key) {
            let minted = token::mint(SESSION_PREFIX);
            let exchanged = self
                .store
                .exchange_api_key(ApiKeyExchange {
                    key_hash: &key_hash,
                    session_id: &new_session_id(),
                    token_hash: &minted.hash,
                    now,
                    session_ttl: millis(self.settings.api_token_ttl),
                })
                .await?;
            exchanged.map(|session| (minted.secret, session))
        } else {
            None
        };
        let Some((token, session)) = exchanged else {
            let now = self.now();
            let first_refusal = throttles.api_key.fail(&key_hash, now).await? == 1;
            if let Some(address) = address.filter(|_| first_refusal) {
                throttles.api_key_address.fail(&address, now).await?;
            }
            audit::record(Event::ApiKey, "refused", None, caller);
            return Err(Error::Unauthenticated("api_key is not valid"));
        };
        throttles.api_key.forgive(&key_hash).await;
        audit::record(Event::ApiKey, "exchanged", Some(&session.user.id), caller);
        Ok(IssuedSession {
            token,
            expires_at: session.expires_at,
            user: UserView::from(session.user),
        })
    }

    /// Lets a caller of VerifyToken, LookupUser or WatchRevocations through when the server
    /// does not ask for caller credentials, or when it presented a client certificate or a
    /// live service account's token (answered, so a long-lived call can end with it).
    /// Refusals are `PermissionDenied`, never `Unauthenticated`: that answer is about the
    /// token a call asks about.
    pub async fn check_caller(
        &self,
        caller: &Caller,
        credentials: CallerCredentials<'_>,
    ) -> Result<Option<ServiceCaller>> {
        if !self.settings.require_caller_credentials || credentials.client_certificate {
            return Ok(None);
        }
        let refusal = match credentials.bearer {
            None => {
                "caller credentials: required; send a service account's token (from \
                 ExchangeApiKey) as `authorization: Bearer <token>`, or a client certificate"
            }
            Some(bearer) => match self.session_owner_of(bearer).await {
                Ok((token_hash, owner)) if owner.user.kind == UserKind::Service => {
                    return Ok(Some(ServiceCaller {
                        user_id: owner.user.id,
                        token_hash,
                        expires_at: owner.expires_at,
                    }));
                }
                Ok(_) => {
                    "caller credentials: the bearer token is a person's; callers authenticate \
                     as a service account (ExchangeApiKey) or with a client certificate"
                }
                Err(Error::Unauthenticated(_) | Error::InvalidArgument { .. }) => {
                    "caller credentials: the bearer token is not a live service account token; \
                     exchange the API key again"
                }
                Err(other) => return Err(other),
            },
        };
        audit::record(Event::Caller, "refused", None, caller);
        Err(Error::PermissionDenied(refusal.into()))
    }

    /// A service account by name or id; a person is `FailedPrecondition`.
    async fn find_service_account(&self, identifier: &str) -> Result<UserRecord> {
        let user = self.find_user(identifier).await?;
        if user.owner.kind != UserKind::Service {
            return Err(Error::FailedPrecondition(format!(
                "{} is a person, not a service account (st-peter service add NAME makes one)",
                user.owner.handle
            )));
        }
        Ok(user)
    }
}

/// A key's name: short, printable, so `service key list` stays readable.
fn check_key_name(name: &str) -> Result<String> {
    check_short_name(name, MAX_KEY_NAME_CHARS)
}

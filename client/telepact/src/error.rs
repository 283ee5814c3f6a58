//! One error type for the adapter. Every variant means "refuse the request": Telepact
//! answers `ErrorUnauthenticated_` whatever the hook raises, so the variants exist for logs
//! and for callers of the Rust API, not for the wire.
use crate::api_key::API_KEY_ENV;

/// How st-peter begins a refusal of the caller itself (not of the token asked about).
const CALLER_REFUSED: &str = "caller credentials:";

/// Why `on_auth` refused, or why a roles-store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request carries no `@auth_` header.
    #[error("no @auth_ header")]
    MissingAuth,
    /// `@auth_` is not a `Session { token }` or `Password { username, password }` value.
    #[error("malformed @auth_ header: {0}")]
    MalformedAuth(String),
    /// st-peter refused the password login (wrong password, unknown user, disabled user,
    /// rate limited: deliberately not told apart).
    #[error("login refused")]
    LoginRefused,
    /// The password was right but the user has a second factor, which a single Telepact
    /// request cannot complete: log in elsewhere and send the `Session` variant.
    #[error("two-factor login required: use the Session variant")]
    TwoFactorRequired,
    /// The session token is unknown, expired or revoked.
    #[error("invalid session token")]
    InvalidToken,
    /// st-peter could not be asked. The adapter fails closed.
    #[error("st-peter is unavailable: {0}")]
    Unavailable(String),
    /// st-peter answers only callers with credentials (`--require-caller-credentials`) and
    /// refused this adapter: it has no API key, or its service token was refused twice.
    #[error(
        "st-peter refused this adapter as a caller (give it a service account's API key: \
         api_key or {API_KEY_ENV}): {0}"
    )]
    CallerRefused(String),
    /// st-peter refused the adapter's own API key at `ExchangeApiKey` (unknown, expired or
    /// revoked, or its service account disabled). No verdict on the request's token: the
    /// adapter is misconfigured, and refuses every request until it has a working key.
    #[error("st-peter rejected this adapter's API key: {0}")]
    ApiKeyRejected(String),
    /// The user is verified but has no row in the local roles table.
    #[error("no local identity for user {user_id}")]
    NoIdentity { user_id: String },
    /// The client sent a header that only the adapter may set.
    #[error("client sent adapter-owned header {0}")]
    ForgedHeader(String),
    /// A header key or value the roles table does not accept.
    #[error("invalid identity header: {0}")]
    InvalidHeader(String),
    /// The API key given to the adapter (or in `ST_PETER_API_KEY`) is not shaped like one;
    /// the message says where it came from and why, never the key.
    #[error("invalid API key: {0}")]
    InvalidApiKey(String),
    /// Any other answer from st-peter (lookup of an unknown identifier, a bad target, ...).
    #[error(transparent)]
    StPeter(st_peter_client::Error),
    /// The roles database failed.
    #[error("roles database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("roles database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl From<st_peter_client::Error> for Error {
    fn from(error: st_peter_client::Error) -> Self {
        match error {
            st_peter_client::Error::InvalidToken => Error::InvalidToken,
            st_peter_client::Error::Unavailable(why) => Error::Unavailable(why),
            st_peter_client::Error::ApiKeyRejected(why) => Error::ApiKeyRejected(why),
            st_peter_client::Error::PermissionDenied(why) if why.starts_with(CALLER_REFUSED) => {
                Error::CallerRefused(why)
            }
            other => Error::StPeter(other),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

//! One error type for the adapter. Every variant means "refuse the request": Telepact
//! answers `ErrorUnauthenticated_` whatever the hook raises, so the variants exist for logs
//! and for callers of the Rust API, not for the wire.

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
    /// The user is verified but has no row in the local roles table.
    #[error("no local identity for user {user_id}")]
    NoIdentity { user_id: String },
    /// The client sent a header that only the adapter may set.
    #[error("client sent adapter-owned header {0}")]
    ForgedHeader(String),
    /// A header key or value the roles table does not accept.
    #[error("invalid identity header: {0}")]
    InvalidHeader(String),
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
            other => Error::StPeter(other),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

//! The errors of st-peter's domain operations. The gRPC face maps them to `tonic::Status`
//! in one place (`grpc/mod.rs`); the admin CLI prints them.
use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    /// The caller sent something malformed: names the field and the reason.
    #[error("{field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    /// The token (or the actor's token) is unknown, expired or revoked.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// Too many requests from this actor: wait this long.
    #[error("rate limited: retry after {} ms", .0.as_millis())]
    RateLimited(std::time::Duration),
    /// The server cannot do this work in time now (the password-hashing queue is full):
    /// the caller may retry after this long. Answered at once, never queued.
    #[error("server busy: retry after {} ms", .retry_after.as_millis())]
    Overloaded { retry_after: std::time::Duration },
    /// The caller is who they say, but may not do this: the current password they gave
    /// for a sensitive change is wrong.
    #[error("{0}")]
    PermissionDenied(String),
    /// The request is well-formed but the account is not in the state it needs (TOTP
    /// already enrolled, an enrollment expired): names what to do instead.
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0} not found")]
    NotFound(String),
    /// A unique value (handle, email, phone) is taken.
    #[error("{0}")]
    Conflict(String),
    /// The database cannot be reached right now (the request may succeed later). The
    /// store classifies its own faults: see `From<sqlx::Error>` in `store`.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// Any other database fault: a bug or a broken database, not the caller's doing.
    #[error("storage: {0}")]
    Storage(#[source] sqlx::Error),
    /// This server lost the revocation feed and is catching up: it cannot serve a
    /// subscriber yet.
    #[error("the revocation feed is catching up: retry shortly")]
    FeedResyncing,
    #[error("migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// The server's configuration is unusable (a missing or wrong key, say): a start-up
    /// error for the operator.
    #[error("configuration: {0}")]
    Config(String),
    #[error("internal: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidArgument {
        field,
        reason: reason.into(),
    }
}

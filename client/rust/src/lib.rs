//! # st-peter-client
//!
//! The Rust client of [st-peter], the central authentication service: verify tokens
//! (cached, and kept honest by st-peter's revocation feed), log users in, resolve users,
//! and guard your own service.
//!
//! ```no_run
//! use st_peter_client::{Client, Error, LoginOutcome};
//!
//! # async fn demo() -> Result<(), Error> {
//! // Lazy: no round trip until the first call.
//! let st_peter = Client::connect("http://127.0.0.1:50051")?;
//!
//! if let LoginOutcome::Authenticated(session) = st_peter.login("lead-baker", "open sesame, said Ali Baba").await? {
//!     let who = st_peter.verify_token(&session.token).await?; // one RPC
//!     let again = st_peter.verify_token(&session.token).await?; // from the cache
//!     assert_eq!(who, again);
//!     println!("{} has roles {:?}", who.user.handle, who.roles);
//! }
//! # Ok(()) }
//! ```
//!
//! ## Errors
//! [`Error`] keeps apart the three things a caller handles differently:
//! [`Error::InvalidToken`] (answer 401), [`Error::Unavailable`] (answer 503, retry; never
//! a verdict on the token) and [`Error::InvalidArgument`] (you sent something malformed).
//!
//! ## The cache and revocation
//! `verify_token` answers are cached, never past the token's own expiry, keyed by a SHA-256
//! of the token. The first `verify_token` opens one `WatchRevocations` stream for the client
//! (its clones share it): every logout, session revocation, role change or disabled user,
//! made anywhere, evicts what it makes stale, within about a second. While that stream is
//! caught up, answers are served for up to [`ClientBuilder::cache_ttl`] (5 minutes); while
//! it is not (not yet, between streams, st-peter unreachable, or
//! [`ClientBuilder::revocation_feed`] off) only for [`ClientBuilder::fallback_ttl`] (5 s),
//! which is then how long a token revoked elsewhere can still pass here. A stream that ends
//! is reopened with backoff from the last sequence seen, so nothing is missed;
//! [`Client::feed_status`] shows its state. `logout` through this client evicts its own
//! entry at once: once it has returned, this client answers the token as invalid, even if
//! a `verify_token` of it was in flight meanwhile (an answer fetched across an eviction is
//! never cached). UNAUTHENTICATED answers are cached for 5 s
//! ([`ClientBuilder::invalid_token_ttl`]); transport errors are never cached.
//!
//! ## Guarding a service
//! [`GuardLayer`] is a `tower` layer for tonic and axum: see `examples/guarded_service.rs`.
//!
//! [st-peter]: https://example.invalid/st-peter
mod account;
mod cache;
mod client;
mod clock;
mod error;
mod feed;
mod flight;
mod guard;
mod model;
mod token;

pub use account::{Account, SessionInfo, TotpEnabled, TotpEnrollment};
pub use cache::CacheSettings;
pub use client::{Client, ClientBuilder};
pub use clock::{Clock, SystemClock};
pub use error::Error;
pub use feed::FeedStatus;
pub use guard::{Guard, GuardLayer};
pub use model::{
    FailureReason, LoginFailure, LoginOutcome, Session, TwoFactorChallenge, TwoFactorMethod, User,
    VerifiedUser,
};
pub use token::{SESSION_COOKIE, bearer, token_from_headers, token_from_http};
pub use tonic::transport::ClientTlsConfig;

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
//! A client with an API key adds [`Error::ApiKeyRejected`]: its own key was refused, which
//! is no verdict on the token either.
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
//! ## Account self-service
//! [`Client::account`] binds a user's session token to their account
//! (`st_peter.auth.v1.AccountService`): see who it is and whether TOTP is on
//! ([`Account::get`]), change the password, enroll or remove TOTP,
//! regenerate recovery codes, register, list and remove passkeys (see below), list and end
//! sessions. The token goes as
//! `authorization: Bearer <token>` over the client's connection; it is not printed by
//! `Debug`, nor is an enrollment's otpauth URI (it holds the TOTP secret) or a
//! confirmation's recovery codes.
//!
//! ```no_run
//! use st_peter_client::{Client, Error};
//!
//! # async fn demo(st_peter: Client, token: String, code_from_the_app: &str) -> Result<(), Error> {
//! let account = st_peter.account(token);
//!
//! match account
//!     .change_password("open sesame, said Ali Baba", "correct horse battery staple", true)
//!     .await
//! {
//!     Ok(ended) => println!("password changed, {ended} other sessions ended"),
//!     Err(Error::PermissionDenied(_)) => println!("the current password is wrong"),
//!     Err(Error::InvalidArgument(why)) => println!("refused: {why}"), // "new_password: is too easy to guess ..."
//!     Err(Error::RateLimited(why)) => println!("too many tries: {why}"),
//!     Err(other) => return Err(other),
//! }
//!
//! // TOTP: show the QR code (an <svg> element), then confirm with a code from the app.
//! if !account.get().await?.totp_enabled {
//!     let enrollment = account.begin_totp_enrollment().await?;
//!     let page = format!("<p>Scan this:</p>{}", enrollment.qr_svg());
//! #   drop(page);
//!     let enabled = account
//!         .confirm_totp_enrollment(enrollment.enrollment_id(), code_from_the_app, false)
//!         .await?;
//!     println!("write these down: {:?}", enabled.recovery_codes); // shown this once
//! }
//!
//! // Sessions, newest first; the caller's own is `current`.
//! for session in account.list_sessions().await? {
//!     if !session.current {
//!         account.revoke_session(&session.session_id).await?;
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! Refusals have their own [`Error`] kinds and keep st-peter's message, which names the
//! field: [`Error::PermissionDenied`] (wrong current password; it counts towards the login
//! throttles), [`Error::RateLimited`] (throttled), [`Error::InvalidArgument`] (a weak new
//! password, a wrong confirmation code), [`Error::FailedPrecondition`] (TOTP already on or
//! not on; an unknown, expired or used enrollment), [`Error::NotFound`] (a session id that
//! is not one of the caller's live sessions). A bad token is [`Error::InvalidToken`].
//! Calls are not retried.
//!
//! Calls that end sessions (`change_password` or `confirm_totp_enrollment` with
//! `revoke_other_sessions`, `revoke_session`, `revoke_other_sessions`) drop this client's
//! cached answers for the user as they return, as a revocation feed event for the user
//! would, so a revoked token is refused here at once. The user is known from the cached
//! answer for the account's token; when that is not cached, the revocation feed does it
//! (within about a second). `revoke_session` also drops the account's own token, since the
//! session it ended may be its own.
//!
//! ## Passkeys (WebAuthn)
//! st-peter keeps the passkeys; the web app relays the browser's WebAuthn ceremony to it
//! and back. The JSON is passed through as it is, under two types so that neither can go
//! where the other belongs: [`PasskeyOptionsJson`] from st-peter to the page,
//! [`PasskeyCredentialJson`] (the page's `credential.toJSON()`) from the page to st-peter.
//! A st-peter started without `--webauthn-rp-id` and `--webauthn-origin` answers the
//! ceremonies (beginning and finishing a registration or a sign-in) with
//! [`Error::FailedPrecondition`]; `list_passkeys` and `remove_passkey` still work.
//!
//! ```no_run
//! use st_peter_client::{
//!     Client, Error, LoginOutcome, PasskeyCredentialJson, PasskeyLogin, TwoFactorMethod,
//! };
//!
//! # async fn demo(st_peter: Client, token: String, posted_by_the_page: String) -> Result<(), Error> {
//! // Registration, by the signed-in user (their current password again).
//! let account = st_peter.account(token);
//! let registration = account.begin_passkey_registration("open sesame, said Ali Baba").await?;
//! // ... the page runs navigator.credentials.create with registration.options_json, posts back:
//! let credential = PasskeyCredentialJson::new(posted_by_the_page.clone());
//! let passkey = account
//!     .finish_passkey_registration(&registration.registration_id, &credential, "work laptop")
//!     .await?;
//! assert_eq!(account.list_passkeys().await?.last(), Some(&passkey));
//!
//! // Sign-in with a discoverable passkey (or PasskeyLogin::Identifier(..)).
//! let challenge = st_peter.begin_passkey_login(PasskeyLogin::Discoverable).await?;
//! // ... the page runs navigator.credentials.get with challenge.options_json, posts back:
//! let assertion = PasskeyCredentialJson::new(posted_by_the_page);
//! match st_peter.finish_passkey_login(&challenge.challenge_id, &assertion).await? {
//!     LoginOutcome::Authenticated(session) => println!("welcome, {}", session.user.handle),
//!     LoginOutcome::Failed(failure) => println!("refused: {:?}", failure.reason),
//!     LoginOutcome::TwoFactor(_) => unreachable!("a passkey is the second factor itself"),
//! }
//!
//! // A password login of a user with a passkey asks for a second factor, which it gives.
//! if let LoginOutcome::TwoFactor(second) = st_peter.login("lead-baker", "open sesame, said Ali Baba").await? {
//!     if second.methods.contains(&TwoFactorMethod::Passkey) {
//!         let challenge = st_peter
//!             .begin_passkey_login(PasskeyLogin::TwoFactor(second.two_factor_id))
//!             .await?;
//!         # drop(challenge);
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! ## Service identity (API keys)
//! A service can act as a st-peter service account: give the client the account's API
//! key and it does the rest. St-peter started with `--require-caller-credentials`
//! answers `verify_token`, `lookup_user` and the revocation feed only for such callers.
//!
//! ```no_run
//! use st_peter_client::{Client, Error};
//!
//! # async fn demo(token_from_the_request: &str, api_key: String) -> Result<(), Error> {
//! // `api_key`: printed once by `st-peter service key create billing`; keep it in your
//! // secret store, not in the code.
//! let st_peter = Client::builder("http://127.0.0.1:50051")
//!     .api_key(api_key)
//!     .build()?;
//!
//! // Verified as the service: the call carries its token.
//! match st_peter.verify_token(token_from_the_request).await {
//!     Ok(who) => println!("{} ({:?})", who.user.handle, who.user.kind),
//!     Err(Error::InvalidToken) => println!("401: the user's token is not valid"),
//!     Err(Error::ApiKeyRejected(why)) => println!("503, and page someone: {why}"),
//!     Err(other) => return Err(other),
//! }
//!
//! // The service as the actor (its account needs the role `st-peter:lookup`).
//! let baker = st_peter.lookup_user_as_service("lead-baker@bakery.example").await?;
//! # drop(baker);
//!
//! // Who the service is: from the exchange already made, no extra call.
//! let me = st_peter.service_account().await?;
//! println!("acting as {} ({})", me.handle, me.user_id);
//! # Ok(()) }
//! ```
//!
//! The key is exchanged (`ExchangeApiKey`) for a short-lived session token of the service
//! account when a call first needs one (`--api-token-ttl` at st-peter, 15 minutes by
//! default). The token is kept, and exchanged again by the first call after less than a
//! third of its lifetime is left, so calls do not meet an expired one; callers that need
//! it during an exchange wait for that one exchange. It goes as
//! `authorization: Bearer <token>` on `verify_token`, `lookup_user` (also with an explicit
//! actor) and each revocation feed subscription (a resubscription takes the token current
//! then; st-peter ends a stream when its token expires, and the feed resubscribes). When
//! st-peter refuses it (`PERMISSION_DENIED` `caller credentials: ...`, say after a
//! revocation of the key) the client drops it, exchanges the key again and retries the
//! call once. A refresh that fails without a verdict on the key (st-peter unreachable, or
//! `RESOURCE_EXHAUSTED` throttling) leaves the old token in use while it has not expired;
//! only then do calls fail ([`Error::Unavailable`], [`Error::RateLimited`]).
//!
//! A key st-peter refuses (`UNAUTHENTICATED`; for the client's own key also
//! `INVALID_ARGUMENT`, a malformed key being the same misconfiguration) is
//! [`Error::ApiKeyRejected`], never [`Error::InvalidToken`] nor
//! [`Error::InvalidArgument`]: it is this service's fault, not the user's. The refusal is
//! answered again for one second without asking st-peter (which throttles refused keys),
//! then the next call exchanges again, as the Go and TypeScript clients do. [`Client::service_account`] answers the service's
//! own [`User`] from the current token's exchange. [`Client::exchange_api_key`] makes one
//! exchange by hand (there a malformed key stays [`Error::InvalidArgument`]: the caller
//! passed it); neither the key nor the token is printed by `Debug`.
//!
//! Without an API key a client calling a st-peter that requires caller credentials gets
//! [`Error::PermissionDenied`] (`caller credentials: ...`).
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
mod identity;
mod model;
mod passkey;
mod token;

pub use account::{Account, AccountInfo, SessionInfo, TotpEnabled, TotpEnrollment};
pub use cache::CacheSettings;
pub use client::{Client, ClientBuilder};
pub use clock::{Clock, SystemClock};
pub use error::Error;
pub use feed::FeedStatus;
pub use guard::{Guard, GuardLayer};
pub use model::{
    FailureReason, LoginFailure, LoginOutcome, Session, TwoFactorChallenge, TwoFactorMethod, User,
    UserKind, VerifiedUser,
};
pub use passkey::{
    Passkey, PasskeyCredentialJson, PasskeyLogin, PasskeyLoginChallenge, PasskeyOptionsJson,
    PasskeyRegistration,
};
pub use token::{SESSION_COOKIE, bearer, token_from_headers, token_from_http};
pub use tonic::transport::ClientTlsConfig;

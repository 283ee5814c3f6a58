//! # st-peter-telepact
//!
//! The `on_auth` hook of a [Telepact] server, answered by st-peter. The hook reads the
//! `@auth_` header (the schema's `union.Auth_`):
//!
//! - `{"Session": {"token": "stp_..."}}` is checked with the st-peter client's cached
//!   `verify_token`;
//! - `{"Password": {"username": ..., "password": ...}}` goes through `Login` (a second
//!   factor or a failure refuses the request);
//!
//! then maps the verified `user_id` through a local roles table ([`RolesStore`], its own
//! SQLite file) onto identity headers such as `@employeeId` and `@station`.
//!
//! ## Header ownership
//! The adapter *owns* every header key it has ever granted plus any configured with
//! [`OnAuth::owned_headers`]. On success it returns every owned key: the user's value, or
//! JSON `null` where the user's row has none (a handler reads "not set", never a client's
//! value). A request that carries an owned key itself is refused. A function declared
//! `$authenticated: false` never reaches the hook, so the Python package ships a middleware
//! that strips owned keys from requests that did not pass through it.
//!
//! The owned set is kept in memory, so reading it ([`OnAuth::owned`]) costs no I/O and is
//! safe on an event loop's thread for every request. Writes through the store update it at
//! once; keys granted by another process (the `grant` CLI) are seen within
//! [`OWNED_HEADERS_POLL`].
//!
//! ## Refusals
//! Missing or malformed `@auth_`, a refused login, a two-factor login, an invalid token, no
//! local row, a forged owned header, and st-peter being unreachable (fail closed; an answer
//! the client cached within its fallback TTL is still honoured) are all [`Error`]s.
//!
//! ## The verification cache
//! Session tokens are verified through the [`st_peter_client::Client`] the adapter is given,
//! whose cache follows st-peter's revocation feed: a logout, revoked session or disabled user
//! made anywhere stops passing here within about a second. Its options are the client's:
//! [`OnAuth::new`] takes a client built with `Client::builder(target)` and its
//! `cache_ttl` (kept while the feed is subscribed, default 5 minutes), `fallback_ttl` (kept
//! while it is not, default 5 s) and `revocation_feed` (default on); [`OnAuth::connect`]
//! uses the defaults. `adapter.client().feed_status()` shows the feed's state.
//!
//! ## Service identity
//! A st-peter started with `--require-caller-credentials` answers verifications and the
//! revocation feed only for callers that present a service account's token. Give the
//! adapter the account's API key and it is such a caller, with no other code:
//! [`OnAuth::connect_with_api_key`], [`OnAuth::connect`] with the key in
//! [`API_KEY_ENV`] (`ST_PETER_API_KEY`), or [`OnAuth::new`] with a client built with
//! `Client::builder(target).api_key(key)`. The client exchanges the key for a short-lived
//! token and refreshes it before it expires. A key st-peter refuses is
//! [`Error::ApiKeyRejected`]; an adapter without a key there is refused as
//! [`Error::CallerRefused`]. Either way every request is refused (fail closed), and
//! neither the key nor the token is ever printed.
//!
//! [Telepact]: https://github.com/Telepact/telepact
mod api_key;
mod error;
mod on_auth;
mod roles;

pub mod cli;
#[cfg(feature = "python")]
mod python;

pub use api_key::{API_KEY_ENV, api_key_from_env, api_key_or_env, check_api_key};
pub use error::{Error, Result};
pub use on_auth::{AUTH_HEADER, Headers, OnAuth};
pub use roles::{Identity, IdentityHeaders, OWNED_HEADERS_POLL, RolesStore, check_header_key};

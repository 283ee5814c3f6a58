//! Service identity: a client built with an API key acts as its service account. The key
//! is exchanged (`ExchangeApiKey`) for a short-lived session token of the account when a
//! call first needs one; the token is kept and exchanged again once less than a third of
//! its lifetime is left, so a steady stream of calls never meets an expired one. Callers
//! that need a token while it is being exchanged wait for that one exchange.
//!
//! The token goes as `authorization: Bearer <token>` (the caller's credentials) on the
//! calls st-peter may require them for: VerifyToken, LookupUser and WatchRevocations.
//!
//! As in the Go and TypeScript clients: a refused key is answered again for
//! [`REJECTED_FOR`] without asking st-peter, and a refresh that fails without a verdict on
//! the key (st-peter unreachable, or throttling) leaves the old token in use until it
//! expires.
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use st_peter_proto::auth::v1 as pb;
use st_peter_proto::auth::v1::auth_service_client::AuthServiceClient;
use tonic::Code;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

use crate::clock::Clock;
use crate::error::{Error, is_caller_credentials};
use crate::flight::Flight;
use crate::model::{Session, User};

/// How long a refused key is answered without asking st-peter again: a busy service with a
/// revoked key would otherwise exchange on every call and run into st-peter's throttle of
/// refused keys.
pub(crate) const REJECTED_FOR: Duration = Duration::from_secs(1);

/// An API key (`stk_...`): a secret, so `Debug` does not show it.
#[derive(Clone)]
pub(crate) struct ApiKey(Arc<str>);

impl ApiKey {
    pub(crate) fn new(key: impl Into<String>) -> Self {
        Self(key.into().into())
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `ExchangeApiKey`: the key's service account and a session token for it. A refused key
/// is [`Error::ApiKeyRejected`], never [`Error::InvalidToken`]: it says nothing about the
/// tokens this service verifies.
pub(crate) async fn exchange(
    mut grpc: AuthServiceClient<Channel>,
    api_key: &str,
) -> Result<Session, Error> {
    let response = grpc
        .exchange_api_key(pb::ExchangeApiKeyRequest {
            api_key: api_key.to_owned(),
        })
        .await
        .map_err(|status| match status.code() {
            Code::Unauthenticated => Error::ApiKeyRejected(status.message().to_owned()),
            _ => Error::from_status(status),
        })?;
    Ok(response.into_inner().into())
}

/// Whose token a call asks st-peter about, which decides what a refusal of the service's
/// own token looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Asking {
    /// About someone else's (VerifyToken, a lookup for a person): only a PERMISSION_DENIED
    /// `caller credentials: ...` is about the service token; UNAUTHENTICATED is the verdict
    /// on the other token.
    AboutOthers,
    /// About the service's own (a lookup with the service as actor): UNAUTHENTICATED is
    /// about the service token too.
    AboutItself,
}

impl Asking {
    fn refuses_own_token(self, status: &tonic::Status) -> bool {
        is_caller_credentials(status)
            || (self == Asking::AboutItself && status.code() == Code::Unauthenticated)
    }
}

/// The client's service account and its current token, shared by the client's clones and
/// its revocation feed.
pub(crate) struct ServiceIdentity {
    api_key: ApiKey,
    grpc: AuthServiceClient<Channel>,
    clock: Arc<dyn Clock>,
    slot: Mutex<Slot>,
}

/// One exchanged token. `Debug` does not show it.
pub(crate) struct ServiceToken {
    token: String,
    bearer: MetadataValue<Ascii>,
    /// The service account, as the exchange answered it.
    user: User,
    /// By the client's clock: from here on the next caller exchanges again.
    refresh_at: SystemTime,
    /// As st-peter set it: a token due for refresh still serves until then when the
    /// refresh cannot be made.
    expires_at: SystemTime,
}

type Exchanged = Result<Arc<ServiceToken>, Error>;

#[derive(Default)]
struct Slot {
    /// The last token exchanged, until it is dropped or replaced; kept past its refresh
    /// point, as the fallback of a refresh that fails.
    current: Option<Arc<ServiceToken>>,
    exchanging: Option<Arc<Flight<Exchanged>>>,
    /// The last refusal of the key ([`Error::ApiKeyRejected`]), answered again until then.
    rejected: Option<(Error, SystemTime)>,
}

enum Join<'a> {
    Ready(Arc<ServiceToken>),
    Rejected(Error),
    Follow(Arc<Flight<Exchanged>>),
    Lead(Lead<'a>),
}

/// The caller that runs the exchange for everyone waiting. Its flight lands exactly once:
/// with the outcome, or abandoned when the caller's future is dropped mid-exchange, so
/// that a follower takes over rather than waits forever.
struct Lead<'a> {
    identity: &'a ServiceIdentity,
    flight: Arc<Flight<Exchanged>>,
    landed: bool,
}

impl ServiceIdentity {
    pub(crate) fn new(
        api_key: ApiKey,
        grpc: AuthServiceClient<Channel>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            api_key,
            grpc,
            clock,
            slot: Mutex::new(Slot::default()),
        }
    }

    /// Runs `call` with the service token. When st-peter refuses the token itself (expired
    /// or revoked meanwhile, or a clock that disagrees), drops it, exchanges the key again
    /// and runs `call` once more; a second refusal is the caller's error.
    pub(crate) async fn call<T, F, Fut>(&self, asking: Asking, mut call: F) -> Result<T, Error>
    where
        F: FnMut(&ServiceToken) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let token = self.token().await?;
        match call(&token).await {
            Err(status) if asking.refuses_own_token(&status) => {
                self.forget(&token);
                let token = self.token().await?;
                call(&token).await.map_err(Error::from_status)
            }
            result => result.map_err(Error::from_status),
        }
    }

    /// The current token, exchanged first when there is none or it is due for refresh. A
    /// refusal of the key less than [`REJECTED_FOR`] ago is answered again at once.
    pub(crate) async fn token(&self) -> Exchanged {
        let outcome = loop {
            match self.join() {
                Join::Ready(token) => return Ok(token),
                Join::Rejected(error) => return Err(error),
                Join::Follow(flight) => match flight.outcome().await {
                    Some(outcome) => break outcome,
                    // The leading caller gave up (its future was dropped): take over.
                    None => continue,
                },
                Join::Lead(mut lead) => {
                    let outcome = self.exchange().await;
                    lead.land(Some(outcome.clone()));
                    break outcome;
                }
            }
        };
        outcome.or_else(|error| self.fall_back(error))
    }

    /// A refresh that could not reach st-peter, or was throttled, says nothing about the
    /// key: the token it was to replace serves while it has not expired (unless dropped
    /// meanwhile as refused).
    fn fall_back(&self, error: Error) -> Exchanged {
        if matches!(error, Error::Unavailable(_) | Error::RateLimited(_)) {
            let slot = self.lock();
            if let Some(token) = &slot.current {
                if self.clock.now() < token.expires_at {
                    return Ok(token.clone());
                }
            }
        }
        Err(error)
    }

    /// Drops `used` if it is still the current token (a newer one, exchanged by another
    /// caller meanwhile, stays), so that the next caller exchanges again.
    pub(crate) fn forget(&self, used: &ServiceToken) {
        let mut slot = self.lock();
        if matches!(&slot.current, Some(current) if std::ptr::eq(&**current, used)) {
            slot.current = None;
        }
    }

    fn join(&self) -> Join<'_> {
        let mut slot = self.lock();
        let now = self.clock.now();
        if let Some(token) = &slot.current {
            if now < token.refresh_at {
                return Join::Ready(token.clone());
            }
        }
        if let Some((error, until)) = &slot.rejected {
            if now < *until {
                return Join::Rejected(error.clone());
            }
        }
        if let Some(flight) = &slot.exchanging {
            return Join::Follow(flight.clone());
        }
        let flight = Arc::new(Flight::new());
        slot.exchanging = Some(flight.clone());
        Join::Lead(Lead {
            identity: self,
            flight,
            landed: false,
        })
    }

    async fn exchange(&self) -> Exchanged {
        let session = exchange(self.grpc.clone(), &self.api_key.0)
            .await
            .map_err(|error| match error {
                // The key is configuration, not input of the call that needed the token:
                // one st-peter finds malformed is refused like an unknown one.
                Error::InvalidArgument(why) => Error::ApiKeyRejected(why),
                other => other,
            })?;
        let bearer =
            MetadataValue::try_from(format!("Bearer {}", session.token)).map_err(|_| {
                Error::Status {
                    code: Code::Internal,
                    message: "ExchangeApiKey answered a token that is not a header value".into(),
                }
            })?;
        // The lifetime is judged from when the answer came, by this client's clock: a
        // clock that disagrees with st-peter's shifts it, but the expiry st-peter set is
        // the one compared.
        let now = self.clock.now();
        let lifetime = session
            .expires_at
            .duration_since(now)
            .unwrap_or(Duration::ZERO);
        Ok(Arc::new(ServiceToken {
            token: session.token,
            bearer,
            user: session.user,
            refresh_at: now + lifetime * 2 / 3,
            expires_at: session.expires_at,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Slot> {
        // The slot is consistent between statements, so a panic elsewhere leaves it usable.
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ServiceToken {
    /// `message` as a request carrying this token as the caller's credentials.
    pub(crate) fn request<M>(&self, message: M) -> tonic::Request<M> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.bearer.clone());
        request
    }

    /// The token itself, for a call that names the service as its actor.
    pub(crate) fn secret(&self) -> &str {
        &self.token
    }

    /// The service account's user id.
    pub(crate) fn user_id(&self) -> &str {
        &self.user.user_id
    }

    /// The service account, as st-peter answered the exchange of this token.
    pub(crate) fn user(&self) -> &User {
        &self.user
    }
}

impl fmt::Debug for ServiceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceToken")
            .field("token", &"<redacted>")
            .field("user_id", &self.user.user_id)
            .field("refresh_at", &self.refresh_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl Lead<'_> {
    /// Keeps a new token for later callers, or a refusal of the key for [`REJECTED_FOR`]
    /// (its tokens are revoked with it, so the old one goes too); any other failure keeps
    /// the old token as a fallback and the next caller tries again. Hands the outcome
    /// (`None`: abandoned) to the followers.
    fn land(&mut self, outcome: Option<Exchanged>) {
        self.landed = true;
        {
            let mut slot = self.identity.lock();
            if matches!(&slot.exchanging, Some(f) if Arc::ptr_eq(f, &self.flight)) {
                slot.exchanging = None;
                match &outcome {
                    Some(Ok(token)) => {
                        slot.current = Some(token.clone());
                        slot.rejected = None;
                    }
                    Some(Err(error @ Error::ApiKeyRejected(_))) => {
                        slot.current = None;
                        let until = self.identity.clock.now() + REJECTED_FOR;
                        slot.rejected = Some((error.clone(), until));
                    }
                    Some(Err(_)) | None => {}
                }
            }
        }
        self.flight.land(outcome);
    }
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        if !self.landed {
            self.land(None);
        }
    }
}

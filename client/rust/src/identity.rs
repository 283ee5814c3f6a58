//! Service identity: a client built with an API key acts as its service account. The key
//! is exchanged (`ExchangeApiKey`) for a short-lived session token of the account when a
//! call first needs one; the token is kept and exchanged again once less than a third of
//! its lifetime is left, so a steady stream of calls never meets an expired one. Callers
//! that need a token while it is being exchanged wait for that one exchange.
//!
//! The token goes as `authorization: Bearer <token>` (the caller's credentials) on the
//! calls st-peter may require them for: VerifyToken, LookupUser and WatchRevocations.
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
use crate::model::Session;

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
    user_id: String,
    /// By the client's clock: from here on the next caller exchanges again.
    refresh_at: SystemTime,
}

type Exchanged = Result<Arc<ServiceToken>, Error>;

enum Slot {
    Empty,
    Ready(Arc<ServiceToken>),
    Exchanging(Arc<Flight<Exchanged>>),
}

enum Join<'a> {
    Ready(Arc<ServiceToken>),
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
            slot: Mutex::new(Slot::Empty),
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

    /// The current token, exchanged first when there is none or it is due for refresh.
    pub(crate) async fn token(&self) -> Exchanged {
        loop {
            match self.join() {
                Join::Ready(token) => return Ok(token),
                Join::Follow(flight) => match flight.outcome().await {
                    Some(outcome) => return outcome,
                    // The leading caller gave up (its future was dropped): take over.
                    None => continue,
                },
                Join::Lead(mut lead) => {
                    let outcome = self.exchange().await;
                    lead.land(Some(outcome.clone()));
                    return outcome;
                }
            }
        }
    }

    /// Drops `used` if it is still the current token (a newer one, exchanged by another
    /// caller meanwhile, stays), so that the next caller exchanges again.
    pub(crate) fn forget(&self, used: &ServiceToken) {
        let mut slot = self.lock();
        if matches!(&*slot, Slot::Ready(current) if std::ptr::eq(&**current, used)) {
            *slot = Slot::Empty;
        }
    }

    fn join(&self) -> Join<'_> {
        let mut slot = self.lock();
        match &*slot {
            Slot::Ready(token) if self.clock.now() < token.refresh_at => {
                return Join::Ready(token.clone());
            }
            Slot::Exchanging(flight) => return Join::Follow(flight.clone()),
            Slot::Ready(_) | Slot::Empty => {}
        }
        let flight = Arc::new(Flight::new());
        *slot = Slot::Exchanging(flight.clone());
        Join::Lead(Lead {
            identity: self,
            flight,
            landed: false,
        })
    }

    async fn exchange(&self) -> Exchanged {
        let session = exchange(self.grpc.clone(), &self.api_key.0).await?;
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
            user_id: session.user.user_id,
            refresh_at: now + lifetime * 2 / 3,
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
        &self.user_id
    }
}

impl fmt::Debug for ServiceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceToken")
            .field("token", &"<redacted>")
            .field("user_id", &self.user_id)
            .field("refresh_at", &self.refresh_at)
            .finish()
    }
}

impl Lead<'_> {
    /// Keeps a new token for later callers (a failure keeps nothing, so the next caller
    /// tries again), and hands the outcome (`None`: abandoned) to the followers.
    fn land(&mut self, outcome: Option<Exchanged>) {
        self.landed = true;
        {
            let mut slot = self.identity.lock();
            if matches!(&*slot, Slot::Exchanging(f) if Arc::ptr_eq(f, &self.flight)) {
                *slot = match &outcome {
                    Some(Ok(token)) => Slot::Ready(token.clone()),
                    Some(Err(_)) | None => Slot::Empty,
                };
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

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use st_peter_proto::auth::v1 as pb;
use st_peter_proto::auth::v1::account_service_client::AccountServiceClient;
use st_peter_proto::auth::v1::auth_service_client::AuthServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::account::Account;
use crate::cache::{CacheSettings, VerifyCache};
use crate::clock::{Clock, SystemClock};
use crate::error::Error;
use crate::feed::{Feed, FeedStatus};
use crate::identity::{self, ApiKey, Asking, ServiceIdentity};
use crate::model::{LoginOutcome, Session, User, VerifiedUser};
use crate::passkey::{PasskeyCredentialJson, PasskeyLogin, PasskeyLoginChallenge};

/// A client of st-peter. Cheap to clone: clones share one connection, one cache and one
/// revocation feed subscription, which stops when the last clone is dropped.
#[derive(Clone)]
pub struct Client {
    grpc: AuthServiceClient<Channel>,
    /// On the same connection.
    account: AccountServiceClient<Channel>,
    cache: Arc<VerifyCache>,
    /// `None` when turned off, or when nothing valid is cached for it to keep honest.
    feed: Option<Arc<Feed>>,
    /// `Some` with an API key: the service account this client acts as.
    service: Option<Arc<ServiceIdentity>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

/// Settings for a [`Client`]; start from [`Client::builder`].
pub struct ClientBuilder {
    target: String,
    cache: CacheSettings,
    revocation_feed: bool,
    request_timeout: Duration,
    connect_timeout: Duration,
    tls: Option<ClientTlsConfig>,
    clock: Arc<dyn Clock>,
    api_key: Option<ApiKey>,
}

impl std::fmt::Debug for ClientBuilder {
    // The API key is a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("target", &self.target)
            .field("cache", &self.cache)
            .field("revocation_feed", &self.revocation_feed)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("api_key", &self.api_key)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `target` (`http://host:port`, or `https://…` for TLS with the
    /// system's roots) with default settings. Lazy: nothing is dialled until the first
    /// call, so a dead server surfaces as [`Error::Unavailable`] then, not here.
    /// Must be called inside a Tokio runtime.
    pub fn connect(target: impl Into<String>) -> Result<Self, Error> {
        Self::builder(target).build()
    }

    pub fn builder(target: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            target: target.into(),
            cache: CacheSettings::default(),
            revocation_feed: true,
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            tls: None,
            clock: Arc::new(SystemClock),
            api_key: None,
        }
    }

    /// Who is this token? Answers from the cache when it can (see [`CacheSettings`]);
    /// concurrent misses for one token make a single RPC. The first call starts the
    /// client's revocation feed subscription. With an API key the call carries the
    /// service's token (see [`ClientBuilder::api_key`]).
    pub async fn verify_token(&self, token: &str) -> Result<VerifiedUser, Error> {
        if let Some(feed) = &self.feed {
            feed.start();
        }
        self.cache
            .get_or_fetch(token, async {
                let request = pb::VerifyTokenRequest {
                    token: token.to_owned(),
                };
                let response = self
                    .as_caller(request, |mut grpc, request| async move {
                        grpc.verify_token(request).await
                    })
                    .await?;
                Ok(VerifiedUser::from(response))
            })
            .await
    }

    /// Exchanges a service account's API key (`stk_...`) for a session token of that
    /// account. A client built with [`ClientBuilder::api_key`] does this itself; this is
    /// for services that manage the token on their own. A refused key is
    /// [`Error::ApiKeyRejected`]; a key st-peter finds malformed (empty, over 256 bytes) is
    /// [`Error::InvalidArgument`] here, since the caller passed it (the client's own
    /// key, exchanged automatically, is [`Error::ApiKeyRejected`] then). Never held or
    /// cached: each call asks st-peter.
    pub async fn exchange_api_key(&self, api_key: &str) -> Result<Session, Error> {
        identity::exchange(self.grpc.clone(), api_key).await
    }

    /// The service account this client acts as ([`ClientBuilder::api_key`]), as st-peter
    /// answered the exchange of its current token: `user_id` (what `lookup_user_as_service`
    /// sends as the actor), `handle`, `kind` [`UserKind::Service`](crate::UserKind). Exchanges the
    /// key first when the client holds no usable token (that one exchange then serves later
    /// calls too), else makes no call. A refused key is [`Error::ApiKeyRejected`]; no key,
    /// [`Error::NoApiKey`].
    pub async fn service_account(&self) -> Result<User, Error> {
        let service = self.service.as_ref().ok_or(Error::NoApiKey)?;
        Ok(service.token().await?.user().clone())
    }

    /// Sends `message` through `call`, as the service when the client has an API key (a
    /// refused service token is exchanged again and the call retried once), plainly
    /// otherwise.
    async fn as_caller<M, T, F, Fut>(&self, message: M, call: F) -> Result<T, Error>
    where
        M: Clone,
        F: Fn(AuthServiceClient<Channel>, tonic::Request<M>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let response = match &self.service {
            None => call(self.grpc.clone(), tonic::Request::new(message))
                .await
                .map_err(Error::from_status)?,
            Some(service) => {
                service
                    .call(Asking::AboutOthers, |token| {
                        call(self.grpc.clone(), token.request(message.clone()))
                    })
                    .await?
            }
        };
        Ok(response.into_inner())
    }

    /// The account of the user whose session token this is: their password, TOTP,
    /// passkeys and sessions (see [`Account`]). No round trip; a bad token surfaces as
    /// [`Error::InvalidToken`] from the first call.
    pub fn account(&self, token: impl Into<String>) -> Account {
        Account::new(self.clone(), token.into())
    }

    pub(crate) fn account_grpc(&self) -> AccountServiceClient<Channel> {
        self.account.clone()
    }

    pub(crate) fn cache(&self) -> &VerifyCache {
        &self.cache
    }

    /// How many answers the cache holds now (after settling pending evictions).
    pub async fn cached_answers(&self) -> u64 {
        self.cache.len()
    }

    /// What the revocation feed is doing: subscribed or not, the last sequence it saw, and
    /// how many streams it has opened. All zero while it is off or not started yet.
    pub fn feed_status(&self) -> FeedStatus {
        self.feed
            .as_ref()
            .map(|feed| feed.status())
            .unwrap_or_default()
    }

    /// Logs in with an email, phone or handle and a password. A refused login is
    /// `Ok(LoginOutcome::Failed(..))`, not an error.
    pub async fn login(&self, identifier: &str, password: &str) -> Result<LoginOutcome, Error> {
        let response = self
            .grpc
            .clone()
            .login(pb::LoginRequest {
                identifier: identifier.to_owned(),
                password: password.to_owned(),
            })
            .await
            .map_err(Error::from_status)?;
        Ok(response.into_inner().into())
    }

    /// Finishes a login that answered [`LoginOutcome::TwoFactor`].
    pub async fn verify_two_factor(
        &self,
        two_factor_id: &str,
        code: &str,
    ) -> Result<LoginOutcome, Error> {
        let response = self
            .grpc
            .clone()
            .verify_two_factor(pb::VerifyTwoFactorRequest {
                two_factor_id: two_factor_id.to_owned(),
                code: code.to_owned(),
            })
            .await
            .map_err(Error::from_status)?;
        Ok(response.into_inner().into())
    }

    /// Starts a passkey sign-in: send the answer's `options_json` to the page for
    /// `navigator.credentials.get`, then its answer with the `challenge_id` to
    /// [`finish_passkey_login`](Self::finish_passkey_login). [`PasskeyLogin`] says for whom:
    /// anyone with a discoverable passkey, a user by identifier, or the second factor of a
    /// login that answered [`LoginOutcome::TwoFactor`]. [`Error::FailedPrecondition`] when
    /// st-peter has no WebAuthn settings (`--webauthn-rp-id`, `--webauthn-origin`);
    /// [`Error::RateLimited`] while the login throttles hold.
    pub async fn begin_passkey_login(
        &self,
        login: PasskeyLogin,
    ) -> Result<PasskeyLoginChallenge, Error> {
        let (identifier, two_factor_id) = match login {
            PasskeyLogin::Discoverable => (String::new(), String::new()),
            PasskeyLogin::Identifier(identifier) => (identifier, String::new()),
            PasskeyLogin::TwoFactor(two_factor_id) => (String::new(), two_factor_id),
        };
        let response = self
            .grpc
            .clone()
            .begin_passkey_login(pb::BeginPasskeyLoginRequest {
                identifier,
                two_factor_id,
            })
            .await
            .map_err(Error::from_status)?;
        Ok(response.into_inner().into())
    }

    /// Finishes a passkey sign-in with the browser's answer. Answers like
    /// [`login`](Self::login): [`LoginOutcome::Authenticated`], or
    /// [`LoginOutcome::Failed`] with [`FailureReason::InvalidCredentials`](crate::FailureReason::InvalidCredentials)
    /// (the assertion does not verify: an unknown passkey, a wrong origin or signature, a
    /// replay, a sign counter that went backwards), `ChallengeExpired` (an unknown, used or
    /// expired `challenge_id`) or `RateLimited`. Malformed JSON is
    /// [`Error::InvalidArgument`] naming `credential_json`.
    pub async fn finish_passkey_login(
        &self,
        challenge_id: &str,
        credential: &PasskeyCredentialJson,
    ) -> Result<LoginOutcome, Error> {
        let response = self
            .grpc
            .clone()
            .finish_passkey_login(pb::FinishPasskeyLoginRequest {
                challenge_id: challenge_id.to_owned(),
                credential_json: credential.as_str().to_owned(),
            })
            .await
            .map_err(Error::from_status)?;
        Ok(response.into_inner().into())
    }

    /// Resolves an email, phone or handle to a user, on behalf of an actor whose own
    /// token proves who is asking. Not cached. With an API key the call also carries the
    /// service's token as its caller credentials.
    pub async fn lookup_user(
        &self,
        actor_id: &str,
        actor_token: &str,
        identifier: &str,
    ) -> Result<User, Error> {
        let request = pb::LookupUserRequest {
            actor_id: actor_id.to_owned(),
            actor_token: actor_token.to_owned(),
            identifier: identifier.to_owned(),
        };
        let response = self
            .as_caller(request, |mut grpc, request| async move {
                grpc.lookup_user(request).await
            })
            .await?;
        Ok(response.user.unwrap_or_default().into())
    }

    /// Resolves an email, phone or handle to a user with the service itself as the actor
    /// (its account needs the platform role `st-peter:lookup`; without it
    /// [`Error::PermissionDenied`]). Needs [`ClientBuilder::api_key`], else
    /// [`Error::NoApiKey`]. Not cached.
    pub async fn lookup_user_as_service(&self, identifier: &str) -> Result<User, Error> {
        let service = self.service.as_ref().ok_or(Error::NoApiKey)?;
        let response = service
            .call(Asking::AboutItself, |token| {
                let mut grpc = self.grpc.clone();
                let request = token.request(pb::LookupUserRequest {
                    actor_id: token.user_id().to_owned(),
                    actor_token: token.secret().to_owned(),
                    identifier: identifier.to_owned(),
                });
                async move { grpc.lookup_user(request).await }
            })
            .await?;
        Ok(response.into_inner().user.unwrap_or_default().into())
    }

    /// Revokes the token at st-peter and drops it from this client's cache. Once it has
    /// returned, this client does not answer the token as valid from its cache, even if a
    /// `verify_token` of it was in flight. Other clients drop it when their revocation feed
    /// brings the change (within about a second), or after their fallback TTL where they
    /// are not subscribed.
    pub async fn logout(&self, token: &str) -> Result<(), Error> {
        self.cache.evict_token(token);
        let revoked = self
            .grpc
            .clone()
            .logout(pb::LogoutRequest {
                token: token.to_owned(),
            })
            .await;
        // Again after the revocation, also when the call failed (it may have been applied):
        // an answer fetched before it is then never stored, nor shared with later callers.
        self.cache.evict_token(token);
        revoked.map_err(Error::from_status)?;
        Ok(())
    }
}

impl ClientBuilder {
    /// How long a valid answer is cached while the revocation feed is subscribed (never
    /// past the token's expiry). Default 5 minutes. Zero caches no valid answer (and then
    /// the client does not subscribe).
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache.ttl = ttl;
        self
    }

    /// How long a valid answer is served while the feed is not subscribed: before its first
    /// stream has caught up, between streams, with st-peter unreachable, or with the feed
    /// off. A token revoked elsewhere can pass here for up to this long. Default 5 s.
    pub fn fallback_ttl(mut self, ttl: Duration) -> Self {
        self.cache.fallback_ttl = ttl;
        self
    }

    /// Subscribe to st-peter's revocation feed (default `true`): one stream per client,
    /// opened by the first `verify_token`, that evicts what every logout, revocation, role
    /// change or disabled user makes stale. Off, answers are cached for `fallback_ttl`.
    pub fn revocation_feed(mut self, subscribe: bool) -> Self {
        self.revocation_feed = subscribe;
        self
    }

    /// How long an UNAUTHENTICATED answer is cached. Default 5 s.
    pub fn invalid_token_ttl(mut self, ttl: Duration) -> Self {
        self.cache.invalid_ttl = ttl;
        self
    }

    /// Most tokens cached at once. Default 10 000.
    pub fn cache_capacity(mut self, capacity: u64) -> Self {
        self.cache.capacity = capacity;
        self
    }

    /// Deadline for each call. Default 5 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Deadline for establishing the connection. Default 3 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Trust this CA (PEM) for an `https://` target instead of the system roots.
    pub fn ca_certificate_pem(self, pem: impl AsRef<[u8]>) -> Self {
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
        self.tls_config(tls)
    }

    /// Full TLS settings (client certificates for mutual TLS, a domain name override).
    pub fn tls_config(mut self, tls: ClientTlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Act as a service account: `api_key` (`stk_...`, from `st-peter service key create`)
    /// is exchanged for a short-lived token of the account when a call first needs one,
    /// and again once less than a third of the token's lifetime is left (concurrent
    /// callers share one exchange). The token goes as `authorization: Bearer <token>` on
    /// `verify_token`, `lookup_user` and the revocation feed, as a st-peter started with
    /// `--require-caller-credentials` demands; a token it refuses is exchanged again and
    /// the call retried once. A refused key is [`Error::ApiKeyRejected`] (also when
    /// st-peter finds it malformed), answered again for a second without asking st-peter.
    /// A refresh that cannot reach st-peter, or is throttled, leaves the old token in use
    /// until it expires. [`Client::service_account`] tells who the service is. Neither the
    /// key nor the token is printed by `Debug`.
    pub fn api_key(mut self, api_key: impl Into<String>) -> Self {
        self.api_key = Some(ApiKey::new(api_key));
        self
    }

    /// The clock the cache judges freshness by, and the service token's age (tests move
    /// it).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn build(self) -> Result<Client, Error> {
        let invalid = |reason: String| Error::InvalidTarget {
            target: self.target.clone(),
            reason,
        };
        let mut endpoint = Endpoint::from_shared(self.target.clone())
            .map_err(|e| invalid(e.to_string()))?
            .connect_timeout(self.connect_timeout)
            .timeout(self.request_timeout);
        let https = self.target.starts_with("https://");
        if let Some(tls) = self
            .tls
            .clone()
            .or_else(|| https.then(|| ClientTlsConfig::new().with_native_roots()))
        {
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| invalid(e.to_string()))?;
        }
        let channel = endpoint.connect_lazy();
        let grpc = AuthServiceClient::new(channel.clone());
        let account = AccountServiceClient::new(channel);
        let service = self
            .api_key
            .map(|key| Arc::new(ServiceIdentity::new(key, grpc.clone(), self.clock.clone())));
        let cache = Arc::new(VerifyCache::new(self.cache, self.clock));
        let feed = (self.revocation_feed && !self.cache.ttl.is_zero())
            .then(|| Arc::new(Feed::new(grpc.clone(), cache.clone(), service.clone())));
        Ok(Client {
            grpc,
            account,
            cache,
            feed,
            service,
        })
    }
}

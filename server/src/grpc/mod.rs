//! The gRPC face: `st_peter.auth.v1.AuthService` (and `AccountService`, in `account`) over the domain operations, and the one
//! place where domain errors become `tonic::Status`. [`serve`] puts it on a listener beside
//! health and reflection.
pub mod account;
pub mod serve;
pub mod watch;

use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use st_peter_proto::auth::v1 as pb;
use st_peter_proto::auth::v1::auth_service_server::AuthService;

use crate::clock::UnixMillis;
use crate::domain::app::{Caller, StPeter, UserKind, UserView};
use crate::domain::service_accounts::{CallerCredentials, ServiceCaller};
use crate::domain::sessions::{FailureReason, IssuedSession, LoginOutcome, SecondFactors};
use crate::error::Error;

pub struct AuthGrpc {
    app: Arc<StPeter>,
}

impl AuthGrpc {
    pub fn new(app: Arc<StPeter>) -> Self {
        Self { app }
    }
}

#[tonic::async_trait]
impl AuthService for AuthGrpc {
    type WatchRevocationsStream = watch::EventStream;

    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let caller = caller(&request);
        let request = request.into_inner();
        let outcome = self
            .app
            .login(&caller, &request.identifier, &request.password)
            .await
            .map_err(status)?;
        Ok(Response::new(login_response(outcome)))
    }

    async fn verify_two_factor(
        &self,
        request: Request<pb::VerifyTwoFactorRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let caller = caller(&request);
        let request = request.into_inner();
        let outcome = self
            .app
            .verify_two_factor(&caller, &request.two_factor_id, &request.code)
            .await
            .map_err(status)?;
        Ok(Response::new(login_response(outcome)))
    }

    async fn verify_token(
        &self,
        request: Request<pb::VerifyTokenRequest>,
    ) -> Result<Response<pb::VerifyTokenResponse>, Status> {
        self.check_caller(&request).await?;
        let verified = self
            .app
            .verify_token(&request.get_ref().token)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::VerifyTokenResponse {
            user: Some(user(verified.user)),
            roles: verified.roles,
            expires_at: Some(timestamp(verified.expires_at)),
        }))
    }

    async fn lookup_user(
        &self,
        request: Request<pb::LookupUserRequest>,
    ) -> Result<Response<pb::LookupUserResponse>, Status> {
        self.check_caller(&request).await?;
        let caller = caller(&request);
        let request = request.into_inner();
        let found = self
            .app
            .lookup_user(
                &caller,
                &request.actor_id,
                &request.actor_token,
                &request.identifier,
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::LookupUserResponse {
            user: Some(user(found)),
        }))
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        self.app
            .logout(&caller(&request), &request.get_ref().token)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn watch_revocations(
        &self,
        request: Request<pb::WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        let credential = self.check_caller(&request).await?;
        let stream = watch::watch(&self.app, request.get_ref().after_sequence, credential).await?;
        Ok(Response::new(stream))
    }

    async fn exchange_api_key(
        &self,
        request: Request<pb::ExchangeApiKeyRequest>,
    ) -> Result<Response<pb::Authenticated>, Status> {
        let session = self
            .app
            .exchange_api_key(&caller(&request), &request.get_ref().api_key)
            .await
            .map_err(status)?;
        Ok(Response::new(authenticated(session)))
    }

    async fn begin_passkey_login(
        &self,
        request: Request<pb::BeginPasskeyLoginRequest>,
    ) -> Result<Response<pb::BeginPasskeyLoginResponse>, Status> {
        let caller = caller(&request);
        let request = request.into_inner();
        let begun = self
            .app
            .begin_passkey_login(&caller, &request.identifier, &request.two_factor_id)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::BeginPasskeyLoginResponse {
            challenge_id: begun.id,
            options_json: begun.options_json,
        }))
    }

    async fn finish_passkey_login(
        &self,
        request: Request<pb::FinishPasskeyLoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let caller = caller(&request);
        let request = request.into_inner();
        let outcome = self
            .app
            .finish_passkey_login(&caller, &request.challenge_id, &request.credential_json)
            .await
            .map_err(status)?;
        Ok(Response::new(login_response(outcome)))
    }
}

impl AuthGrpc {
    /// With `--require-caller-credentials`, refuses a caller that presents neither a
    /// service account's token nor a client certificate (PERMISSION_DENIED). Without it,
    /// costs one flag check.
    async fn check_caller<T>(&self, request: &Request<T>) -> Result<Option<ServiceCaller>, Status> {
        if !self.app.settings().require_caller_credentials {
            return Ok(None);
        }
        let credentials = CallerCredentials {
            bearer: bearer_token(request.metadata()),
            client_certificate: request.peer_certs().is_some_and(|certs| !certs.is_empty()),
        };
        self.app
            .check_caller(&caller(request), credentials)
            .await
            .map_err(status)
    }
}

/// The token of an `authorization: Bearer <token>` header (the scheme in any case, as
/// RFC 7235 has it); `None` when there is no such header.
pub(crate) fn bearer_token(metadata: &MetadataMap) -> Option<&str> {
    let value = metadata.get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

pub(crate) fn caller<T>(request: &Request<T>) -> Caller {
    Caller::grpc(
        request.remote_addr().map(|address| address.ip()),
        deadline(request.metadata()),
    )
}

/// When the caller stops waiting, from its `grpc-timeout` header (tonic's server enforces
/// the same header by dropping the request; this lets work that cannot finish in time be
/// refused before it starts).
fn deadline(metadata: &MetadataMap) -> Option<Instant> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    Instant::now().checked_add(parse_grpc_timeout(value)?)
}

/// `grpc-timeout`: at most 8 digits and a unit (H, M, S, m, u, n), per the gRPC spec.
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let unit = value.chars().last()?;
    let digits = &value[..value.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(amount * 3600),
        'M' => Duration::from_secs(amount * 60),
        'S' => Duration::from_secs(amount),
        'm' => Duration::from_millis(amount),
        'u' => Duration::from_micros(amount),
        'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Domain errors to gRPC statuses. Storage and internal faults are logged here with
/// their detail and answered without it.
pub(crate) fn status(error: Error) -> Status {
    match error {
        Error::InvalidArgument { .. } => Status::invalid_argument(error.to_string()),
        Error::Unauthenticated(why) => Status::unauthenticated(why),
        Error::RateLimited(wait) => Status::resource_exhausted(format!(
            "too many requests: retry after {} s",
            wait.as_secs_f64().ceil()
        )),
        Error::Overloaded { retry_after } => {
            // The hint twice: in the message for people, and as grpc-go's retry pushback
            // trailer for clients that honour it.
            let millis = retry_after.as_millis().max(1);
            let mut metadata = MetadataMap::new();
            if let Ok(value) = millis.to_string().parse() {
                metadata.insert("grpc-retry-pushback-ms", value);
            }
            Status::with_metadata(
                tonic::Code::Unavailable,
                format!("server busy checking passwords: retry after {millis} ms"),
                metadata,
            )
        }
        Error::NotFound(what) => Status::not_found(format!("{what} not found")),
        Error::PermissionDenied(why) => Status::permission_denied(why),
        Error::FailedPrecondition(why) => Status::failed_precondition(why),
        Error::Conflict(why) => Status::already_exists(why),
        Error::Unavailable(_) => {
            tracing::error!(%error, "database unavailable");
            Status::unavailable("database unavailable")
        }
        Error::FeedResyncing => Status::unavailable(error.to_string()),
        Error::Storage(_) | Error::Migration(_) | Error::Config(_) | Error::Internal(_) => {
            tracing::error!(%error, "request failed");
            Status::internal("internal error")
        }
    }
}

fn login_response(outcome: LoginOutcome) -> pb::LoginResponse {
    use pb::login_response::Result as Outcome;
    let result = match outcome {
        LoginOutcome::Authenticated(session) => Outcome::Authenticated(authenticated(session)),
        LoginOutcome::TwoFactor {
            two_factor_id,
            expires_at,
            methods,
        } => Outcome::TwoFactor(pb::TwoFactorRequired {
            two_factor_id,
            expires_at: Some(timestamp(expires_at)),
            methods: two_factor_methods(methods),
        }),
        LoginOutcome::Failed {
            reason,
            retry_after,
        } => Outcome::Failed(pb::Failed {
            reason: failure_reason(reason) as i32,
            retry_after: retry_after.and_then(|d| prost_types::Duration::try_from(d).ok()),
        }),
    };
    pb::LoginResponse {
        result: Some(result),
    }
}

fn two_factor_methods(methods: SecondFactors) -> Vec<i32> {
    let mut offered = Vec::new();
    if methods.totp {
        offered.push(pb::TwoFactorMethod::Totp as i32);
        offered.push(pb::TwoFactorMethod::RecoveryCode as i32);
    }
    if methods.passkey {
        offered.push(pb::TwoFactorMethod::Passkey as i32);
    }
    offered
}

fn authenticated(session: IssuedSession) -> pb::Authenticated {
    pb::Authenticated {
        token: session.token,
        expires_at: Some(timestamp(session.expires_at)),
        user: Some(user(session.user)),
    }
}

fn failure_reason(reason: FailureReason) -> pb::FailureReason {
    match reason {
        FailureReason::InvalidCredentials => pb::FailureReason::InvalidCredentials,
        FailureReason::RateLimited => pb::FailureReason::RateLimited,
        FailureReason::InvalidCode => pb::FailureReason::InvalidCode,
        FailureReason::ChallengeExpired => pb::FailureReason::ChallengeExpired,
    }
}

pub(crate) fn user(user: UserView) -> pb::User {
    pb::User {
        user_id: user.user_id,
        handle: user.handle,
        email: user.email.unwrap_or_default(),
        phone: user.phone.unwrap_or_default(),
        display_name: user.display_name,
        disabled: user.disabled,
        kind: match user.kind {
            UserKind::Human => pb::UserKind::Human,
            UserKind::Service => pb::UserKind::Service,
        } as i32,
    }
}

pub fn timestamp(millis: UnixMillis) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: (millis.rem_euclid(1000) * 1_000_000) as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::parse_grpc_timeout;
    use std::time::Duration;

    #[test]
    fn grpc_timeouts_parse_per_the_spec() {
        assert_eq!(parse_grpc_timeout("1S"), Some(Duration::from_secs(1)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(
            parse_grpc_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in ["", "S", "1", "1s", "123456789S", "-1S", "1.5S", "é"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }
}

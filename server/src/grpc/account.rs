//! `st_peter.auth.v1.AccountService`: self-service for the user whose session token comes
//! as `authorization: Bearer <token>`. The token is read here and handed to the domain,
//! which decides everything else.
use std::sync::Arc;
use tonic::{Request, Response, Status};

use st_peter_proto::auth::v1 as pb;
use st_peter_proto::auth::v1::account_service_server::AccountService;

use crate::domain::app::StPeter;
use crate::domain::passkeys::PasskeyView;
use crate::domain::sessions::SessionView;
use crate::grpc::{bearer_token, caller, status, timestamp, user};

pub struct AccountGrpc {
    app: Arc<StPeter>,
}

impl AccountGrpc {
    pub fn new(app: Arc<StPeter>) -> Self {
        Self { app }
    }
}

/// The session token of `authorization: Bearer <token>`; UNAUTHENTICATED without one.
fn bearer<T>(request: &Request<T>) -> Result<String, Status> {
    bearer_token(request.metadata())
        .map(str::to_owned)
        .ok_or_else(|| {
            Status::unauthenticated(
                "authorization: missing; send the session token as `authorization: Bearer <token>`",
            )
        })
}

fn count(revoked: u64) -> u32 {
    u32::try_from(revoked).unwrap_or(u32::MAX)
}

fn session(view: SessionView) -> pb::Session {
    pb::Session {
        session_id: view.session_id,
        created_at: Some(timestamp(view.created_at)),
        expires_at: Some(timestamp(view.expires_at)),
        last_seen_at: view.last_seen_at.map(timestamp),
        current: view.current,
    }
}

fn passkey(view: PasskeyView) -> pb::Passkey {
    pb::Passkey {
        passkey_id: view.passkey_id,
        name: view.name,
        created_at: Some(timestamp(view.created_at)),
        last_used_at: view.last_used_at.map(timestamp),
    }
}

#[tonic::async_trait]
impl AccountService for AccountGrpc {
    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::GetAccountResponse>, Status> {
        let token = bearer(&request)?;
        let account = self.app.own_account(&token).await.map_err(status)?;
        Ok(Response::new(pb::GetAccountResponse {
            user: Some(user(account.user)),
            totp_enabled: account.totp_enabled,
            recovery_codes_left: count(account.recovery_codes_left),
            passkeys: count(account.passkeys),
        }))
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let (caller, token) = (caller(&request), bearer(&request)?);
        let request = request.into_inner();
        let revoked = self
            .app
            .change_own_password(
                &caller,
                &token,
                &request.current_password,
                &request.new_password,
                request.revoke_other_sessions,
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ChangePasswordResponse {
            revoked_sessions: count(revoked),
        }))
    }

    async fn begin_totp_enrollment(
        &self,
        request: Request<pb::BeginTotpEnrollmentRequest>,
    ) -> Result<Response<pb::BeginTotpEnrollmentResponse>, Status> {
        let (caller, token) = (caller(&request), bearer(&request)?);
        let pending = self
            .app
            .begin_totp_enrollment(&caller, &token)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::BeginTotpEnrollmentResponse {
            enrollment_id: pending.enrollment_id,
            otpauth_uri: pending.otpauth_uri,
            expires_at: Some(timestamp(pending.expires_at)),
        }))
    }

    async fn confirm_totp_enrollment(
        &self,
        request: Request<pb::ConfirmTotpEnrollmentRequest>,
    ) -> Result<Response<pb::ConfirmTotpEnrollmentResponse>, Status> {
        let (caller, token) = (caller(&request), bearer(&request)?);
        let request = request.into_inner();
        let confirmed = self
            .app
            .confirm_totp_enrollment(
                &caller,
                &token,
                &request.enrollment_id,
                &request.code,
                request.revoke_other_sessions,
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ConfirmTotpEnrollmentResponse {
            recovery_codes: confirmed.recovery_codes,
            revoked_sessions: count(confirmed.revoked_sessions),
        }))
    }

    async fn disable_totp(
        &self,
        request: Request<pb::DisableTotpRequest>,
    ) -> Result<Response<pb::DisableTotpResponse>, Status> {
        let (caller, token) = (caller(&request), bearer(&request)?);
        self.app
            .disable_own_totp(&caller, &token, &request.get_ref().current_password)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DisableTotpResponse {}))
    }

    async fn regenerate_recovery_codes(
        &self,
        request: Request<pb::RegenerateRecoveryCodesRequest>,
    ) -> Result<Response<pb::RegenerateRecoveryCodesResponse>, Status> {
        let (caller, token) = (caller(&request), bearer(&request)?);
        let recovery_codes = self
            .app
            .regenerate_own_recovery_codes(&caller, &token, &request.get_ref().current_password)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RegenerateRecoveryCodesResponse {
            recovery_codes,
        }))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let token = bearer(&request)?;
        let sessions = self.app.list_own_sessions(&token).await.map_err(status)?;
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: sessions.into_iter().map(session).collect(),
        }))
    }

    async fn revoke_session(
        &self,
        request: Request<pb::RevokeSessionRequest>,
    ) -> Result<Response<pb::RevokeSessionResponse>, Status> {
        let (caller, token) = (caller(&request), bearer(&request)?);
        self.app
            .revoke_own_session(&caller, &token, &request.get_ref().session_id)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RevokeSessionResponse {}))
    }

    async fn revoke_other_sessions(
        &self,
        request: Request<pb::RevokeOtherSessionsRequest>,
    ) -> Result<Response<pb::RevokeOtherSessionsResponse>, Status> {
        let (caller, token) = (caller(&request), bearer(&request)?);
        let revoked = self
            .app
            .revoke_own_other_sessions(&caller, &token)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RevokeOtherSessionsResponse {
            revoked_sessions: count(revoked),
        }))
    }

    async fn begin_passkey_registration(
        &self,
        request: Request<pb::BeginPasskeyRegistrationRequest>,
    ) -> Result<Response<pb::BeginPasskeyRegistrationResponse>, Status> {
        let (caller, token) = (caller(&request), bearer(&request)?);
        let begun = self
            .app
            .begin_passkey_registration(&caller, &token, &request.get_ref().current_password)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::BeginPasskeyRegistrationResponse {
            registration_id: begun.id,
            options_json: begun.options_json,
        }))
    }

    async fn finish_passkey_registration(
        &self,
        request: Request<pb::FinishPasskeyRegistrationRequest>,
    ) -> Result<Response<pb::FinishPasskeyRegistrationResponse>, Status> {
        let (caller, token) = (caller(&request), bearer(&request)?);
        let request = request.into_inner();
        let registered = self
            .app
            .finish_passkey_registration(
                &caller,
                &token,
                &request.registration_id,
                &request.credential_json,
                &request.name,
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::FinishPasskeyRegistrationResponse {
            passkey: Some(passkey(registered)),
        }))
    }

    async fn list_passkeys(
        &self,
        request: Request<pb::ListPasskeysRequest>,
    ) -> Result<Response<pb::ListPasskeysResponse>, Status> {
        let token = bearer(&request)?;
        let passkeys = self.app.list_own_passkeys(&token).await.map_err(status)?;
        Ok(Response::new(pb::ListPasskeysResponse {
            passkeys: passkeys.into_iter().map(passkey).collect(),
        }))
    }

    async fn remove_passkey(
        &self,
        request: Request<pb::RemovePasskeyRequest>,
    ) -> Result<Response<pb::RemovePasskeyResponse>, Status> {
        let (caller, token) = (caller(&request), bearer(&request)?);
        let request = request.into_inner();
        self.app
            .remove_own_passkey(
                &caller,
                &token,
                &request.passkey_id,
                &request.current_password,
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RemovePasskeyResponse {}))
    }
}

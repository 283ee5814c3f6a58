//! Account self-service (`st_peter.auth.v1.AccountService`): the user whose session token
//! the handle holds changes their password, enrolls or removes TOTP, registers, lists and
//! removes passkeys, and sees and ends their sessions.
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use qrcode::QrCode;
use qrcode::render::svg;
use st_peter_proto::auth::v1 as pb;
use tonic::metadata::{Ascii, MetadataValue};

use crate::cache::Eviction;
use crate::client::Client;
use crate::error::Error;
use crate::model::{User, system_time};
use crate::passkey::{Passkey, PasskeyCredentialJson, PasskeyRegistration};

/// One user's account, acting with their session token; from [`Client::account`]. Cheap
/// to clone. Every call sends the token as `authorization: Bearer <token>` over the
/// client's connection, with its deadline and TLS settings; none is retried.
///
/// Calls that end sessions (`change_password` and `confirm_totp_enrollment` with
/// `revoke_other_sessions`, `revoke_session`, `revoke_other_sessions`) drop this client's
/// cached `verify_token` answers of the user when they return (when the user is known from
/// a cached answer for this token; otherwise the revocation feed does it within about a
/// second), and `revoke_session` always drops this token's own answer, since the session
/// it ended may be this one.
#[derive(Clone)]
pub struct Account {
    client: Client,
    token: Arc<str>,
    /// `None` when the token cannot be a header value (so it cannot be a token either).
    bearer: Option<MetadataValue<Ascii>>,
}

impl fmt::Debug for Account {
    // The token is a secret: keep it out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// The account's user and second factors, from [`Account::get`]: what an account page
/// should offer (set TOTP up, or turn it off and renew the recovery codes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountInfo {
    /// The user the token belongs to.
    pub user: User,
    /// TOTP is enrolled and confirmed: logins need a second factor.
    pub totp_enabled: bool,
    /// Recovery codes not used yet (0 without TOTP).
    pub recovery_codes_left: u32,
    /// How many passkeys the user has registered ([`Account::list_passkeys`] lists them).
    pub passkeys: u32,
}

/// A pending TOTP enrollment, from [`Account::begin_totp_enrollment`]: show its QR code
/// (or the URI's `secret` for typing in), then confirm with a code from the app.
#[derive(Clone)]
pub struct TotpEnrollment {
    enrollment_id: String,
    otpauth_uri: String,
    expires_at: SystemTime,
    qr: QrCode,
}

impl TotpEnrollment {
    /// Send this with a code to [`Account::confirm_totp_enrollment`].
    pub fn enrollment_id(&self) -> &str {
        &self.enrollment_id
    }

    /// `otpauth://totp/...` with the secret. A secret: never log it.
    pub fn otpauth_uri(&self) -> &str {
        &self.otpauth_uri
    }

    /// When the enrollment dies unconfirmed.
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }

    /// The otpauth URI as a QR code: an `<svg …>…</svg>` element (no XML declaration, so
    /// it can go straight into an HTML page), black on white with a quiet zone, at least
    /// 256 px square. It holds the secret like the URI does.
    pub fn qr_svg(&self) -> String {
        let document = self
            .qr
            .render::<svg::Color<'_>>()
            .min_dimensions(256, 256)
            .build();
        match document.find("<svg") {
            Some(start) => document[start..].to_owned(),
            None => document,
        }
    }
}

impl fmt::Debug for TotpEnrollment {
    // The URI holds the TOTP secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TotpEnrollment")
            .field("enrollment_id", &self.enrollment_id)
            .field("otpauth_uri", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl PartialEq for TotpEnrollment {
    fn eq(&self, other: &Self) -> bool {
        // The QR code is made from the URI.
        (&self.enrollment_id, &self.otpauth_uri, self.expires_at)
            == (&other.enrollment_id, &other.otpauth_uri, other.expires_at)
    }
}

impl Eq for TotpEnrollment {}

impl TryFrom<pb::BeginTotpEnrollmentResponse> for TotpEnrollment {
    type Error = Error;

    fn try_from(response: pb::BeginTotpEnrollmentResponse) -> Result<Self, Error> {
        // Made here so that `qr_svg` cannot fail: a URI too long for any QR code is a
        // server fault.
        let qr = QrCode::new(response.otpauth_uri.as_bytes()).map_err(|e| Error::Status {
            code: tonic::Code::Internal,
            message: format!("otpauth_uri does not fit a QR code: {e}"),
        })?;
        Ok(Self {
            enrollment_id: response.enrollment_id,
            otpauth_uri: response.otpauth_uri,
            expires_at: system_time(response.expires_at),
            qr,
        })
    }
}

/// TOTP is on: the answer to [`Account::confirm_totp_enrollment`].
#[derive(Clone, PartialEq, Eq)]
pub struct TotpEnabled {
    /// One-time recovery codes (`xxxx-xxxx-xxxx-xxxx`), each accepted once in place of a
    /// TOTP code. Shown this once: st-peter keeps only their hashes.
    pub recovery_codes: Vec<String>,
    /// How many other sessions were ended (0 unless asked to).
    pub revoked_sessions: u32,
}

impl fmt::Debug for TotpEnabled {
    // Recovery codes are secrets too.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TotpEnabled")
            .field(
                "recovery_codes",
                &format_args!("<{} redacted>", self.recovery_codes.len()),
            )
            .field("revoked_sessions", &self.revoked_sessions)
            .finish()
    }
}

/// One live session of the user, from [`Account::list_sessions`]. Its id is not a token:
/// it names the session for [`Account::revoke_session`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// A UUID.
    pub session_id: String,
    /// When it was opened (the login).
    pub created_at: SystemTime,
    /// When it ends unless revoked first.
    pub expires_at: SystemTime,
    /// When st-peter last saw its token (accurate to a few minutes); `None` when not since
    /// the login.
    pub last_seen_at: Option<SystemTime>,
    /// The session of the handle's own token.
    pub current: bool,
}

impl From<pb::Session> for SessionInfo {
    fn from(session: pb::Session) -> Self {
        Self {
            session_id: session.session_id,
            created_at: system_time(session.created_at),
            expires_at: system_time(session.expires_at),
            last_seen_at: session.last_seen_at.map(|at| system_time(Some(at))),
            current: session.current,
        }
    }
}

/// Which of this client's cached answers a session-ending call makes stale.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ends {
    Nothing,
    /// Other sessions of the user.
    Others,
    /// One session, which may be the caller's own.
    Any,
}

impl Account {
    pub(crate) fn new(client: Client, token: String) -> Self {
        let bearer = MetadataValue::try_from(format!("Bearer {token}"))
            .ok()
            .map(|mut value| {
                value.set_sensitive(true);
                value
            });
        Self {
            client,
            token: token.into(),
            bearer,
        }
    }

    /// Who the user is and which second factors they have. Not cached.
    pub async fn get(&self) -> Result<AccountInfo, Error> {
        let request = self.request(pb::GetAccountRequest {})?;
        let response = self
            .client
            .account_grpc()
            .get_account(request)
            .await
            .map_err(Error::from_status)?
            .into_inner();
        Ok(AccountInfo {
            user: response.user.unwrap_or_default().into(),
            totp_enabled: response.totp_enabled,
            recovery_codes_left: response.recovery_codes_left,
            passkeys: response.passkeys,
        })
    }

    /// Sets a new password, checked for length and strength by st-peter (a weak one is
    /// [`Error::InvalidArgument`] naming `new_password` and saying why; a wrong `current`
    /// is [`Error::PermissionDenied`]). With `revoke_other_sessions`, every other session
    /// of the user ends; this one stays. Answers how many sessions ended.
    pub async fn change_password(
        &self,
        current: &str,
        new: &str,
        revoke_other_sessions: bool,
    ) -> Result<u32, Error> {
        let ends = if revoke_other_sessions {
            Ends::Others
        } else {
            Ends::Nothing
        };
        let request = self.request(pb::ChangePasswordRequest {
            current_password: current.to_owned(),
            new_password: new.to_owned(),
            revoke_other_sessions,
        })?;
        let mut grpc = self.client.account_grpc();
        let response = self
            .ending(ends, async { grpc.change_password(request).await })
            .await?;
        Ok(response.revoked_sessions)
    }

    /// Starts enrolling a TOTP authenticator. TOTP is not on until confirmed; a new begin
    /// replaces a pending enrollment. [`Error::FailedPrecondition`] when TOTP is on already.
    pub async fn begin_totp_enrollment(&self) -> Result<TotpEnrollment, Error> {
        let request = self.request(pb::BeginTotpEnrollmentRequest {})?;
        let response = self
            .client
            .account_grpc()
            .begin_totp_enrollment(request)
            .await
            .map_err(Error::from_status)?;
        response.into_inner().try_into()
    }

    /// Turns TOTP on with a code the authenticator shows now (that code is then spent).
    /// A wrong code is [`Error::InvalidArgument`] (`code`); an unknown, expired or already
    /// confirmed enrollment is [`Error::FailedPrecondition`] (`enrollment_id`). With
    /// `revoke_other_sessions`, the user's other sessions (opened with the password alone)
    /// end.
    pub async fn confirm_totp_enrollment(
        &self,
        enrollment_id: &str,
        code: &str,
        revoke_other_sessions: bool,
    ) -> Result<TotpEnabled, Error> {
        let ends = if revoke_other_sessions {
            Ends::Others
        } else {
            Ends::Nothing
        };
        let request = self.request(pb::ConfirmTotpEnrollmentRequest {
            enrollment_id: enrollment_id.to_owned(),
            code: code.to_owned(),
            revoke_other_sessions,
        })?;
        let mut grpc = self.client.account_grpc();
        let response = self
            .ending(ends, async { grpc.confirm_totp_enrollment(request).await })
            .await?;
        Ok(TotpEnabled {
            recovery_codes: response.recovery_codes,
            revoked_sessions: response.revoked_sessions,
        })
    }

    /// Removes TOTP and its recovery codes. [`Error::FailedPrecondition`] when TOTP is
    /// not on; [`Error::PermissionDenied`] for a wrong password.
    pub async fn disable_totp(&self, current_password: &str) -> Result<(), Error> {
        let request = self.request(pb::DisableTotpRequest {
            current_password: current_password.to_owned(),
        })?;
        self.client
            .account_grpc()
            .disable_totp(request)
            .await
            .map_err(Error::from_status)?;
        Ok(())
    }

    /// Replaces the recovery codes (the old ones stop working) and answers the new ones,
    /// shown this once. [`Error::FailedPrecondition`] when TOTP is not on;
    /// [`Error::PermissionDenied`] for a wrong password.
    pub async fn regenerate_recovery_codes(
        &self,
        current_password: &str,
    ) -> Result<Vec<String>, Error> {
        let request = self.request(pb::RegenerateRecoveryCodesRequest {
            current_password: current_password.to_owned(),
        })?;
        let response = self
            .client
            .account_grpc()
            .regenerate_recovery_codes(request)
            .await
            .map_err(Error::from_status)?;
        Ok(response.into_inner().recovery_codes)
    }

    /// Starts registering a passkey: send the answer's `options_json` to the page for
    /// `navigator.credentials.create`, then its answer with the `registration_id` to
    /// [`finish_passkey_registration`](Self::finish_passkey_registration). Takes the
    /// current password ([`Error::PermissionDenied`] when wrong).
    /// [`Error::FailedPrecondition`] when st-peter has no WebAuthn settings
    /// (`--webauthn-rp-id`, `--webauthn-origin`).
    pub async fn begin_passkey_registration(
        &self,
        current_password: &str,
    ) -> Result<PasskeyRegistration, Error> {
        let request = self.request(pb::BeginPasskeyRegistrationRequest {
            current_password: current_password.to_owned(),
        })?;
        let response = self
            .client
            .account_grpc()
            .begin_passkey_registration(request)
            .await
            .map_err(Error::from_status)?;
        Ok(response.into_inner().into())
    }

    /// Stores the passkey the browser created under `name` (1 to 100 characters), and
    /// answers it. From then on a password login asks for a second factor, which the
    /// passkey can give. A credential that does not verify (a wrong origin or challenge, no
    /// user verification) or is malformed is [`Error::InvalidArgument`] naming
    /// `credential_json`; an unknown, used or expired `registration_id` (or another
    /// user's) is [`Error::FailedPrecondition`].
    pub async fn finish_passkey_registration(
        &self,
        registration_id: &str,
        credential: &PasskeyCredentialJson,
        name: &str,
    ) -> Result<Passkey, Error> {
        let request = self.request(pb::FinishPasskeyRegistrationRequest {
            registration_id: registration_id.to_owned(),
            credential_json: credential.as_str().to_owned(),
            name: name.to_owned(),
        })?;
        let response = self
            .client
            .account_grpc()
            .finish_passkey_registration(request)
            .await
            .map_err(Error::from_status)?;
        Ok(response.into_inner().passkey.unwrap_or_default().into())
    }

    /// The user's passkeys, oldest first.
    pub async fn list_passkeys(&self) -> Result<Vec<Passkey>, Error> {
        let request = self.request(pb::ListPasskeysRequest {})?;
        let response = self
            .client
            .account_grpc()
            .list_passkeys(request)
            .await
            .map_err(Error::from_status)?;
        Ok(response
            .into_inner()
            .passkeys
            .into_iter()
            .map(Passkey::from)
            .collect())
    }

    /// Removes one of the user's passkeys by its `passkey_id`. Takes the current password
    /// ([`Error::PermissionDenied`] when wrong); an unknown passkey, or another user's, is
    /// [`Error::NotFound`].
    pub async fn remove_passkey(
        &self,
        passkey_id: &str,
        current_password: &str,
    ) -> Result<(), Error> {
        let request = self.request(pb::RemovePasskeyRequest {
            passkey_id: passkey_id.to_owned(),
            current_password: current_password.to_owned(),
        })?;
        self.client
            .account_grpc()
            .remove_passkey(request)
            .await
            .map_err(Error::from_status)?;
        Ok(())
    }

    /// The user's live sessions, newest first; the one of this handle's token is
    /// `current`.
    pub async fn list_sessions(&self) -> Result<Vec<SessionInfo>, Error> {
        let request = self.request(pb::ListSessionsRequest {})?;
        let response = self
            .client
            .account_grpc()
            .list_sessions(request)
            .await
            .map_err(Error::from_status)?;
        Ok(response
            .into_inner()
            .sessions
            .into_iter()
            .map(SessionInfo::from)
            .collect())
    }

    /// Ends one of the user's sessions by its `session_id` (this one's too: that is a
    /// logout). Another user's session, or an unknown or ended one, is
    /// [`Error::NotFound`].
    pub async fn revoke_session(&self, session_id: &str) -> Result<(), Error> {
        let request = self.request(pb::RevokeSessionRequest {
            session_id: session_id.to_owned(),
        })?;
        let mut grpc = self.client.account_grpc();
        self.ending(Ends::Any, async { grpc.revoke_session(request).await })
            .await?;
        Ok(())
    }

    /// Ends every session of the user but this one; answers how many ended.
    pub async fn revoke_other_sessions(&self) -> Result<u32, Error> {
        let request = self.request(pb::RevokeOtherSessionsRequest {})?;
        let mut grpc = self.client.account_grpc();
        let response = self
            .ending(Ends::Others, async {
                grpc.revoke_other_sessions(request).await
            })
            .await?;
        Ok(response.revoked_sessions)
    }

    fn request<T>(&self, message: T) -> Result<tonic::Request<T>, Error> {
        let bearer = self.bearer.clone().ok_or(Error::InvalidToken)?;
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert("authorization", bearer);
        Ok(request)
    }

    /// Runs a call that may end sessions, then evicts what it made stale from the cache:
    /// also when it failed in a way that does not prove it was not applied.
    async fn ending<T>(
        &self,
        ends: Ends,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, Error> {
        // Read before the call: the feed may evict the entry meanwhile.
        let user = (ends != Ends::Nothing)
            .then(|| self.client.cache().user_of(&self.token))
            .flatten();
        let result = call
            .await
            .map(tonic::Response::into_inner)
            .map_err(Error::from_status);
        let maybe_applied = match &result {
            Ok(_) => true,
            Err(error) => error.is_unavailable() || matches!(error, Error::Status { .. }),
        };
        if maybe_applied {
            let cache = self.client.cache();
            if let Some(user) = user {
                cache.evict(Eviction::User(&user));
            }
            if ends == Ends::Any {
                cache.evict_token(&self.token);
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enrollment(uri: String) -> Result<TotpEnrollment, Error> {
        pb::BeginTotpEnrollmentResponse {
            enrollment_id: "ste_x".into(),
            otpauth_uri: uri,
            expires_at: None,
        }
        .try_into()
    }

    #[test]
    fn the_qr_code_is_an_svg_element_and_debug_hides_the_uri() {
        let uri = "otpauth://totp/st-peter:lead-baker?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&issuer=st-peter";
        let enrollment = enrollment(uri.into()).unwrap();
        let svg = enrollment.qr_svg();
        assert!(
            svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
            "{svg}"
        );
        assert!(svg.ends_with("</svg>"), "{svg}");
        assert!(!format!("{enrollment:?}").contains("JBSWY3DP"));
    }

    #[test]
    fn a_uri_too_long_for_a_qr_code_is_a_server_fault_not_a_panic() {
        let error =
            enrollment(format!("otpauth://totp/x?secret={}", "A".repeat(8000))).unwrap_err();
        assert!(
            matches!(
                error,
                Error::Status {
                    code: tonic::Code::Internal,
                    ..
                }
            ),
            "{error:?}"
        );
    }
}

use tonic::Code;

/// What went wrong. Three kinds every call can answer and a caller handles differently
/// (`InvalidToken`, `Unavailable`, `InvalidArgument`), and the refusals of particular calls.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// *This token is not valid*: unknown, expired, revoked, or its user is disabled (for
    /// `lookup_user`: the actor's token is not valid or not the actor's own).
    /// Answer 401 / UNAUTHENTICATED; asking again will not help.
    #[error("token is not valid")]
    InvalidToken,
    /// *st-peter could not be asked*: connection refused, timeout, server unavailable.
    /// Answer 503 / UNAVAILABLE and retry later; never treat it as a verdict on the token.
    #[error("st-peter is unavailable: {0}")]
    Unavailable(String),
    /// *You sent something malformed*: the message names the field and the reason.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// `lookup_user` found nobody for the identifier; `Account::revoke_session` found no
    /// live session of the caller's with that id; `Account::remove_passkey` no passkey of
    /// the caller's with that id.
    #[error("not found: {0}")]
    NotFound(String),
    /// The current password given to an account call is wrong. It counts towards the
    /// user's login throttles, like a failed login. Also: st-peter requires caller
    /// credentials (the message starts with `caller credentials:`) and this client has no
    /// API key, or its key's service token was refused twice; or the service account
    /// lacks the role a call needs (`st-peter:lookup` for `lookup_user`).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// st-peter refused the client's API key at `ExchangeApiKey`: unknown, expired or
    /// revoked, or its service account is disabled (or, for the client's own key, malformed:
    /// INVALID_ARGUMENT). Says nothing about any token being verified, so never answer a
    /// user 401 for it: this service is misconfigured. The client answers it again for a
    /// second without asking st-peter.
    #[error("api key rejected: {0}")]
    ApiKeyRejected(String),
    /// A call that acts as the service (`lookup_user_as_service`, `service_account`) on a
    /// client built without [`ClientBuilder::api_key`](crate::ClientBuilder::api_key).
    #[error("this client has no api key (ClientBuilder::api_key)")]
    NoApiKey,
    /// The account is not in the state the call needs (TOTP already on, or not on; an
    /// enrollment unknown, expired or already confirmed; a passkey registration unknown,
    /// used or expired), or st-peter is not (a passkey registration or sign-in with a
    /// server without `--webauthn-rp-id` and `--webauthn-origin`). The message says which.
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// Too many attempts (st-peter's throttles); the message says when to retry.
    #[error("rate limited: {0}")]
    RateLimited(String),
    /// The target given to `Client::connect` is not a usable URI.
    #[error("invalid target {target:?}: {reason}")]
    InvalidTarget { target: String, reason: String },
    /// Any other answer from st-peter (a server fault, usually).
    #[error("st-peter answered {code:?}: {message}")]
    Status { code: Code, message: String },
}

impl Error {
    /// True for the errors that say nothing about the token: retry or fail closed.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }

    pub(crate) fn from_status(status: tonic::Status) -> Self {
        let message = status.message().to_owned();
        match status.code() {
            Code::Unauthenticated => Error::InvalidToken,
            Code::InvalidArgument | Code::OutOfRange => Error::InvalidArgument(message),
            Code::NotFound => Error::NotFound(message),
            Code::PermissionDenied => Error::PermissionDenied(message),
            Code::FailedPrecondition => Error::FailedPrecondition(message),
            Code::ResourceExhausted => Error::RateLimited(message),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                Error::Unavailable(transport_detail(&status))
            }
            // A status made on this side from a failed connection carries its cause; one sent
            // by a server does not. tonic gives such a status whichever code fits the cause:
            // UNKNOWN for a refused TLS client certificate, INTERNAL ("h2 protocol error")
            // for a stream reset as the server restarts. None says anything about the token.
            _ if std::error::Error::source(&status).is_some() => {
                Error::Unavailable(transport_detail(&status))
            }
            code => Error::Status { code, message },
        }
    }
}

/// A refusal of the caller's own credentials (the service token in `authorization`), as
/// opposed to a verdict on the token or actor a call asks about.
pub(crate) fn is_caller_credentials(status: &tonic::Status) -> bool {
    status.code() == Code::PermissionDenied && status.message().starts_with("caller credentials:")
}

/// tonic reports a refused connection as UNAVAILABLE with the cause in its source chain.
fn transport_detail(status: &tonic::Status) -> String {
    let mut detail = status.message().to_owned();
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        detail.push_str(": ");
        detail.push_str(&cause.to_string());
        source = cause.source();
    }
    detail
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_status_made_here_from_a_broken_connection_is_unavailable_whatever_its_code() {
        for code in [Code::Internal, Code::Unknown, Code::Unavailable] {
            let mut status = tonic::Status::new(code, "h2 protocol error: http2 error");
            status.set_source(Arc::new(std::io::Error::other("stream reset")));
            let error = Error::from_status(status);
            assert!(error.is_unavailable(), "{code:?}: {error:?}");
        }
    }

    #[test]
    fn the_refusals_of_account_calls_have_their_own_kinds_and_keep_the_message() {
        let cases = [
            (
                tonic::Status::permission_denied("current_password: is wrong"),
                Error::PermissionDenied("current_password: is wrong".into()),
            ),
            (
                tonic::Status::failed_precondition("totp: not enrolled"),
                Error::FailedPrecondition("totp: not enrolled".into()),
            ),
            (
                tonic::Status::resource_exhausted("too many requests: retry after 30 s"),
                Error::RateLimited("too many requests: retry after 30 s".into()),
            ),
            (
                tonic::Status::not_found("session not found"),
                Error::NotFound("session not found".into()),
            ),
        ];
        for (status, expected) in cases {
            assert_eq!(Error::from_status(status), expected);
        }
    }

    #[test]
    fn only_a_permission_denied_naming_caller_credentials_is_about_the_caller() {
        assert!(is_caller_credentials(&tonic::Status::permission_denied(
            "caller credentials: a service account token or a client certificate is required"
        )));
        assert!(!is_caller_credentials(&tonic::Status::permission_denied(
            "actor: lacks the role st-peter:lookup"
        )));
        assert!(!is_caller_credentials(&tonic::Status::unauthenticated(
            "caller credentials: whatever"
        )));
    }

    #[test]
    fn an_internal_error_sent_by_the_server_stays_a_status() {
        let error = Error::from_status(tonic::Status::internal("internal error"));
        assert!(
            matches!(
                error,
                Error::Status {
                    code: Code::Internal,
                    ..
                }
            ),
            "{error:?}"
        );
    }
}

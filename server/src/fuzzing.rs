//! The properties the fuzz targets (`fuzz/`, run by `scripts/fuzz.sh` under cargo-fuzz)
//! check, kept here so `scripts/test.sh` can run the same checks as a smoke over generated
//! inputs without an instrumented build. Each panics when a property fails.
use prost::Message;
use st_peter_proto::auth::v1 as pb;

use crate::domain::two_factor::SecondFactorCode;
use crate::domain::{identifier, self_service, sessions};
use crate::error::Error;
use crate::secrets::password;
use crate::secrets::password_strength;
use crate::secrets::token::{
    API_KEY_PREFIX, CHALLENGE_PREFIX, ENROLLMENT_PREFIX, SESSION_PREFIX, hash, is_well_formed,
};

/// The token parser takes any string without panicking and accepts only the one shape.
pub fn token_parser(data: &[u8]) {
    let Ok(candidate) = std::str::from_utf8(data) else {
        return;
    };
    for prefix in [
        SESSION_PREFIX,
        CHALLENGE_PREFIX,
        ENROLLMENT_PREFIX,
        API_KEY_PREFIX,
    ] {
        if is_well_formed(prefix, candidate) {
            assert!(candidate.starts_with(prefix));
            assert_eq!(candidate.len(), prefix.len() + 43);
            assert!(candidate.is_ascii());
        }
    }
    let _ = hash(candidate);
    let _ = sessions::check_token_size("token", candidate);
}

/// Any bytes decoded as any request, then every field validated as the server does: no
/// panic, and every refusal names the field it refuses.
pub fn request_validation(data: &[u8]) {
    if let Ok(login) = pb::LoginRequest::decode(data) {
        named(
            identifier::parse("identifier", &login.identifier),
            "identifier",
        );
        named(password::check_login(&login.password), "password");
        named(password::check_new("password", &login.password), "password");
        named(identifier::normalize_handle(&login.identifier), "handle");
        named(identifier::normalize_email(&login.identifier), "email");
        named(identifier::normalize_phone(&login.identifier), "phone");
    }
    if let Ok(two_factor) = pb::VerifyTwoFactorRequest::decode(data) {
        named(SecondFactorCode::parse(&two_factor.code), "code");
    }
    if let Ok(verify) = pb::VerifyTokenRequest::decode(data) {
        named(sessions::check_token_size("token", &verify.token), "token");
    }
    if let Ok(exchange) = pb::ExchangeApiKeyRequest::decode(data) {
        named(
            sessions::check_token_size("api_key", &exchange.api_key),
            "api_key",
        );
    }
    if let Ok(lookup) = pb::LookupUserRequest::decode(data) {
        named(
            sessions::check_token_size("actor_token", &lookup.actor_token),
            "actor_token",
        );
        named(
            identifier::parse("identifier", &lookup.identifier),
            "identifier",
        );
    }
    if let Ok(change) = pb::ChangePasswordRequest::decode(data) {
        named(
            password::check_given("current_password", &change.current_password),
            "current_password",
        );
        // zxcvbn over any text, with any context: no panic, and a refusal names the field.
        named(
            password_strength::check(
                "new_password",
                &change.new_password,
                &[&change.current_password],
                password_strength::DEFAULT_MIN_SCORE,
            ),
            "new_password",
        );
    }
    if let Ok(confirm) = pb::ConfirmTotpEnrollmentRequest::decode(data) {
        named(
            self_service::check_enrollment_id(&confirm.enrollment_id),
            "enrollment_id",
        );
        named(
            crate::secrets::totp::check_code_shape(&confirm.code),
            "code",
        );
    }
    if let Ok(revoke) = pb::RevokeSessionRequest::decode(data) {
        named(sessions::check_session_id(&revoke.session_id), "session_id");
    }
}

fn named(result: Result<impl Sized, Error>, field: &str) {
    if let Err(error) = result {
        assert!(
            error.to_string().starts_with(field),
            "{error} does not name {field}"
        );
    }
}

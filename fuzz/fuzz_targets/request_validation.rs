//! Any bytes decoded as any request, then every field validated as the server does: no
//! panic, and every refusal names the field it refuses.
#![no_main]
use libfuzzer_sys::fuzz_target;
use prost::Message;
use st_peter_proto::auth::v1 as pb;
use st_peter_server::two_factor::SecondFactorCode;
use st_peter_server::{identifier, password, sessions};

fn named(result: Result<impl Sized, st_peter_server::error::Error>, field: &str) {
    if let Err(error) = result {
        assert!(error.to_string().starts_with(field), "{error} does not name {field}");
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(login) = pb::LoginRequest::decode(data) {
        named(identifier::parse("identifier", &login.identifier), "identifier");
        named(password::check_login(&login.password), "password");
        named(password::check_new(&login.password), "password");
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
    if let Ok(lookup) = pb::LookupUserRequest::decode(data) {
        named(sessions::check_token_size("actor_token", &lookup.actor_token), "actor_token");
        named(identifier::parse("identifier", &lookup.identifier), "identifier");
    }
});

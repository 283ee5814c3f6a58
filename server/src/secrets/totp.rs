//! Time-based one-time passwords per RFC 6238: SHA-1, 6 digits, 30 s steps, one step of
//! skew either way. The code maths is totp-rs's; what this module adds is telling which
//! step matched, so a code accepted once can be refused forever after (replay).
use rand::RngCore;
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, TOTP};

use crate::clock::UnixMillis;
use crate::error::{Error, Result, invalid};

pub const DIGITS: usize = 6;
pub const STEP_SECONDS: u64 = 30;
const SKEW_STEPS: i64 = 1;
/// 160 bits, the secret size RFC 4226 recommends.
const SECRET_BYTES: usize = 20;

pub fn new_secret() -> Vec<u8> {
    let mut secret = vec![0u8; SECRET_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    secret
}

fn totp(secret: &[u8], issuer: &str, account: &str) -> Result<TOTP> {
    TOTP::new(
        Algorithm::SHA1,
        DIGITS,
        0,
        STEP_SECONDS,
        secret.to_vec(),
        Some(issuer.to_owned()),
        account.to_owned(),
    )
    .map_err(|e| Error::Internal(format!("totp: {e}")))
}

/// The `otpauth://totp/...` URI an authenticator app enrolls from.
pub fn otpauth_uri(secret: &[u8], issuer: &str, account: &str) -> Result<String> {
    Ok(totp(secret, issuer, account)?.get_url())
}

/// The step a code belongs to: seconds since the epoch divided by 30.
pub fn step_at(now: UnixMillis) -> i64 {
    now.div_euclid(1000) / STEP_SECONDS as i64
}

/// The code for one step (tests and enrollment checks compute codes with this).
pub fn code_at_step(secret: &[u8], step: i64) -> Result<String> {
    let seconds = u64::try_from(step).unwrap_or(0) * STEP_SECONDS;
    Ok(totp(secret, "st-peter", "user")?.generate(seconds))
}

/// Checks the shape of a code sent by a caller.
pub fn check_code_shape(code: &str) -> Result<()> {
    if code.is_empty() {
        return Err(invalid("code", "must not be empty"));
    }
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid("code", format!("must be {DIGITS} digits")));
    }
    Ok(())
}

/// The step within the skew window whose code equals `code`, compared in constant time.
pub fn matching_step(secret: &[u8], code: &str, now: UnixMillis) -> Result<Option<i64>> {
    let current = step_at(now);
    let mut found = None;
    for step in (current - SKEW_STEPS)..=(current + SKEW_STEPS) {
        let expected = code_at_step(secret, step)?;
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) && found.is_none() {
            found = Some(step);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_sha1_vector() {
        // RFC 6238 appendix B: secret "12345678901234567890", T = 59 s -> 94287082 (8 digits);
        // the 6-digit code is its last six digits.
        let secret = b"12345678901234567890";
        assert_eq!(code_at_step(secret, 59 / 30).unwrap(), "287082");
        assert_eq!(code_at_step(secret, 1_111_111_109 / 30).unwrap(), "081804");
    }

    #[test]
    fn skew_window_is_one_step() {
        let secret = new_secret();
        let now = 1_700_000_000_000;
        let step = step_at(now);
        let code = code_at_step(&secret, step - 1).unwrap();
        assert_eq!(matching_step(&secret, &code, now).unwrap(), Some(step - 1));
        let stale = code_at_step(&secret, step - 2).unwrap();
        assert_ne!(matching_step(&secret, &stale, now).unwrap(), Some(step - 2));
    }

    #[test]
    fn uri_names_issuer_and_account() {
        let uri = otpauth_uri(&new_secret(), "st-peter", "lead-baker").unwrap();
        assert!(
            uri.starts_with("otpauth://totp/st-peter:lead-baker?"),
            "{uri}"
        );
        assert!(uri.contains("issuer=st-peter"));
    }

    #[test]
    fn code_shape() {
        assert!(check_code_shape("123456").is_ok());
        assert!(check_code_shape("").is_err());
        assert!(check_code_shape("12345a").is_err());
        assert!(check_code_shape("1234567").is_err());
    }
}

//! Opaque bearer secrets: session tokens, two-factor challenge ids, TOTP enrollment ids and
//! service accounts' API keys.
//!
//! Each is a fixed prefix and 32 random bytes in base64url. Only a SHA-256 of the secret
//! is stored, so a database leak yields nothing usable.
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::{Result, invalid};

/// Session tokens: `stp_` + 43 base64url characters.
pub const SESSION_PREFIX: &str = "stp_";
/// Two-factor challenge ids: `stc_` + 43 base64url characters.
pub const CHALLENGE_PREFIX: &str = "stc_";
/// Pending TOTP enrollment ids: `ste_` + 43 base64url characters.
pub const ENROLLMENT_PREFIX: &str = "ste_";
/// Passkey (WebAuthn) registration and sign-in ceremony ids: `stw_` + 43 base64url
/// characters.
pub const CEREMONY_PREFIX: &str = "stw_";

/// Service accounts' API keys: `stk_` + 43 base64url characters.
pub const API_KEY_PREFIX: &str = "stk_";

const RANDOM_BYTES: usize = 32;
const ENCODED_LEN: usize = 43;

/// SHA-256 of a secret: the only form in which it is stored or used as a key.
pub type SecretHash = [u8; 32];

/// A freshly minted secret and its hash.
pub struct Minted {
    pub secret: String,
    pub hash: SecretHash,
}

pub fn mint(prefix: &str) -> Minted {
    let mut bytes = [0u8; RANDOM_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let secret = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = hash(&secret);
    Minted { secret, hash }
}

/// Checks an id a caller sent back in `field`: present, and of the shape `prefix` mints
/// (`issued_as` says what it should be, for the refusal). Anything else cannot match.
pub fn check_issued(
    field: &'static str,
    prefix: &str,
    candidate: &str,
    issued_as: &str,
) -> Result<()> {
    if candidate.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if !is_well_formed(prefix, candidate) {
        return Err(invalid(
            field,
            format!("is not {issued_as} (expected '{prefix}' and {ENCODED_LEN} characters)"),
        ));
    }
    Ok(())
}

pub fn hash(secret: &str) -> SecretHash {
    Sha256::digest(secret.as_bytes()).into()
}

/// True when `candidate` has the shape of a secret with this prefix. A string of any other
/// shape was not minted here and cannot match a stored hash.
pub fn is_well_formed(prefix: &str, candidate: &str) -> bool {
    candidate.strip_prefix(prefix).is_some_and(|body| {
        body.len() == ENCODED_LEN
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_are_well_formed_and_distinct() {
        let a = mint(SESSION_PREFIX);
        let b = mint(SESSION_PREFIX);
        assert!(is_well_formed(SESSION_PREFIX, &a.secret));
        assert_ne!(a.secret, b.secret);
        assert_eq!(a.hash, hash(&a.secret));
        assert!(!is_well_formed(CHALLENGE_PREFIX, &a.secret));
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        assert!(!is_well_formed(SESSION_PREFIX, ""));
        assert!(!is_well_formed(SESSION_PREFIX, "stp_"));
        assert!(!is_well_formed(
            SESSION_PREFIX,
            &format!("stp_{}", "a".repeat(42))
        ));
        assert!(!is_well_formed(
            SESSION_PREFIX,
            &format!("stp_{}", "a".repeat(44))
        ));
        assert!(!is_well_formed(
            SESSION_PREFIX,
            &format!("stp_{}=", "a".repeat(42))
        ));
        assert!(is_well_formed(
            SESSION_PREFIX,
            &format!("stp_{}", "a".repeat(43))
        ));
    }
}

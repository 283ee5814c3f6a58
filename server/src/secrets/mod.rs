//! Secrets and the primitives that make, seal and check them: session tokens, password
//! hashing, TOTP codes, the key that seals TOTP secrets, recovery codes. Each module owns
//! the rule for its secret (stored as a hash or sealed, compared in constant time), so the
//! domain never handles the raw material itself.
pub mod calibrate;
pub mod keycloak_credential;
pub mod password;
pub mod password_strength;
pub(crate) mod recovery_codes;
pub mod stored_hash;
pub mod token;
pub(crate) mod totp;
pub mod totp_key;

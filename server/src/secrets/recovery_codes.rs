//! One-time recovery codes: issued with a TOTP enrollment for the day the phone is lost,
//! each accepted once by `VerifyTwoFactor` in place of a TOTP code.
//!
//! A code is 16 characters of base32 (80 random bits), shown as `xxxx-xxxx-xxxx-xxxx`.
//! Only a SHA-256 of the user id and the normalized code is stored: with 80 bits of
//! entropy a leaked hash cannot be searched back to its code.
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::secrets::token::SecretHash;

/// Codes issued per enrollment.
pub const COUNT: usize = 10;
const CHARS: usize = 16;
const GROUP: usize = 4;
/// RFC 4648 base32, lowercase: no 0/1/8/9, so no O/0 or l/1 mix-ups when typed.
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// New codes for a user: as shown to people, and the hashes to store.
pub fn issue(user_id: &str) -> (Vec<String>, Vec<SecretHash>) {
    let mut rng = rand::rngs::OsRng;
    (0..COUNT)
        .map(|_| {
            let raw: String = (0..CHARS)
                .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
                .collect();
            (format_code(&raw), hash(user_id, &raw))
        })
        .unzip()
}

fn format_code(raw: &str) -> String {
    raw.as_bytes()
        .chunks(GROUP)
        .map(|chunk| std::str::from_utf8(chunk).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("-")
}

/// The code in its one stored form (lowercase, no dashes or spaces), or `None` when the
/// text is not shaped like a recovery code.
pub fn normalize(code: &str) -> Option<String> {
    if code.len() > 2 * CHARS {
        return None;
    }
    let normalized: String = code
        .chars()
        .filter(|c| *c != '-' && *c != ' ')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (normalized.len() == CHARS && normalized.bytes().all(|b| ALPHABET.contains(&b)))
        .then_some(normalized)
}

/// The stored hash of a normalized code for one user.
pub fn hash(user_id: &str, normalized: &str) -> SecretHash {
    let mut digest = Sha256::new();
    digest.update(b"st-peter recovery code\0");
    digest.update(user_id.as_bytes());
    digest.update(b"\0");
    digest.update(normalized.as_bytes());
    digest.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_codes_are_distinct_and_normalize() {
        let (codes, hashes) = issue("user");
        assert_eq!(codes.len(), COUNT);
        for (code, stored) in codes.iter().zip(&hashes) {
            assert_eq!(code.len(), CHARS + CHARS / GROUP - 1, "{code}");
            assert_eq!(normalize(code).unwrap(), code.replace('-', ""));
            assert_eq!(hash("user", &normalize(code).unwrap()), *stored);
        }
        let mut unique = codes.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), COUNT);
    }

    #[test]
    fn typing_variants_normalize_to_one_form() {
        assert_eq!(
            normalize("ABCD-efgh-2345-67ab").as_deref(),
            Some("abcdefgh234567ab")
        );
        assert_eq!(
            normalize("abcd efgh 2345 67ab").as_deref(),
            Some("abcdefgh234567ab")
        );
        assert_eq!(normalize("123456"), None);
        assert_eq!(normalize("abcd-efgh-2345-67a0"), None);
        assert_eq!(normalize(&"a".repeat(1000)), None);
    }

    #[test]
    fn hashes_differ_per_user() {
        assert_ne!(hash("a", "abcdefgh234567ab"), hash("b", "abcdefgh234567ab"));
    }
}

//! What a stored password hash may be: st-peter's own argon2id, or a hash brought in from
//! another system by `user import` (argon2i/d/id PHC, bcrypt, PBKDF2-SHA256/512 in PHC or
//! passlib form, scrypt; Keycloak's credentials are turned into these by
//! `keycloak_credential`), checked as it is until the next good login replaces it.
//!
//! Every format's cost is bounded, when it is imported and again when it is checked, so a
//! hash planted in the database cannot make one login take minutes: see [`Bounds`]. No
//! error here ever quotes the hash.
use argon2::password_hash::PasswordHash;
use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use subtle::ConstantTimeEq;

use crate::secrets::password::PasswordParams;

/// The cost limits of a hash st-peter agrees to check. Measured on the development machine
/// (README, "Moving users in"): each format at its limit takes about a second or less for
/// one check; typical parameters take tens of milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds;

impl Bounds {
    /// argon2: memory (KiB), passes, and memory × passes (the work: 64 MiB × 4 passes).
    pub const ARGON2_MAX_MEMORY_KIB: u32 = 256 * 1024;
    pub const ARGON2_MAX_ITERATIONS: u32 = 10;
    pub const ARGON2_MAX_PARALLELISM: u32 = 16;
    pub const ARGON2_MAX_WORK_KIB: u64 = 1024 * 1024;
    /// bcrypt: 2^cost rounds.
    pub const BCRYPT_MAX_COST: u32 = 14;
    /// PBKDF2: iterations (Keycloak's 27,500, 210,000 and 600,000 fit).
    pub const PBKDF2_MAX_ITERATIONS: u32 = 1_300_000;
    /// scrypt: log2(N), memory 128·N·r bytes, and the work N·r·p.
    pub const SCRYPT_MAX_LOG_N: u8 = 20;
    pub const SCRYPT_MAX_MEMORY_BYTES: u64 = 256 * 1024 * 1024;
    pub const SCRYPT_MAX_WORK: u64 = 1 << 21;
}

/// Salt and output sizes accepted from other systems.
const MAX_SALT_BYTES: usize = 64;
const MIN_OUTPUT_BYTES: usize = 16;
const MAX_OUTPUT_BYTES: usize = 64;

/// Why a hash cannot be stored or checked. Never carries the hash itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    #[error(
        "not a supported hash (argon2 PHC, bcrypt $2a$/$2b$/$2y$, $pbkdf2-sha256$, \
         $pbkdf2-sha512$, $scrypt$, or a Keycloak password credential)"
    )]
    Unsupported,
    #[error("malformed {scheme} hash: {reason}")]
    Malformed {
        scheme: &'static str,
        reason: String,
    },
    #[error("{scheme} {what} {value} is above the limit {limit}")]
    TooCostly {
        scheme: &'static str,
        what: &'static str,
        value: u64,
        limit: u64,
    },
}

pub(crate) fn malformed(scheme: &'static str, reason: impl Into<String>) -> HashError {
    HashError::Malformed {
        scheme,
        reason: reason.into(),
    }
}

fn bound(
    scheme: &'static str,
    what: &'static str,
    value: u64,
    limit: u64,
) -> Result<(), HashError> {
    if value > limit {
        return Err(HashError::TooCostly {
            scheme,
            what,
            value,
            limit,
        });
    }
    Ok(())
}

/// A stored hash, parsed and within [`Bounds`].
pub enum StoredHash<'a> {
    Argon2(PasswordHash<'a>),
    /// Checked by the `bcrypt` crate from the string itself.
    Bcrypt(&'a str),
    Pbkdf2 {
        sha512: bool,
        iterations: u32,
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
    Scrypt {
        log_n: u8,
        r: u32,
        p: u32,
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
}

impl<'a> StoredHash<'a> {
    /// Parses a hash and checks it against [`Bounds`].
    pub fn parse(stored: &'a str) -> Result<Self, HashError> {
        Self::parse_allowing(stored, None)
    }

    /// As [`StoredHash::parse`], but an argon2id hash made with `current` (the server's own
    /// parameters, which its operator may set above the import bounds) is always accepted.
    pub fn parse_allowing(
        stored: &'a str,
        current: Option<PasswordParams>,
    ) -> Result<Self, HashError> {
        let scheme = stored
            .strip_prefix('$')
            .and_then(|rest| rest.split('$').next());
        match scheme {
            Some("argon2id" | "argon2i" | "argon2d") => parse_argon2(stored, current),
            Some("2a" | "2b" | "2y") => parse_bcrypt(stored),
            Some("pbkdf2-sha256") => parse_pbkdf2(stored, false),
            Some("pbkdf2-sha512") => parse_pbkdf2(stored, true),
            Some("scrypt") => parse_scrypt(stored),
            _ => Err(HashError::Unsupported),
        }
    }

    /// Whether this is argon2id made with `params`: anything else is replaced at the next
    /// good login.
    pub fn is_current(&self, params: PasswordParams) -> bool {
        match self {
            StoredHash::Argon2(hash) => made_with(hash, params),
            _ => false,
        }
    }

    /// Recomputes the hash of `password` and compares in constant time. argon2 works in
    /// `memory` (a hashing thread's, kept between checks) when it is large enough for the
    /// current parameters' needs, `keep_blocks`; a larger imported hash gets memory of its
    /// own, freed after, so one such login does not pin it to the thread for good.
    pub fn verify(
        &self,
        password: &[u8],
        memory: &mut Vec<Block>,
        keep_blocks: usize,
    ) -> Result<bool, HashError> {
        match self {
            StoredHash::Argon2(hash) => verify_argon2(hash, password, memory, keep_blocks),
            StoredHash::Bcrypt(stored) => {
                bcrypt::verify(password, stored).map_err(|e| malformed("bcrypt", e.to_string()))
            }
            StoredHash::Pbkdf2 {
                sha512,
                iterations,
                salt,
                hash,
            } => {
                let mut output = vec![0u8; hash.len()];
                if *sha512 {
                    pbkdf2::pbkdf2_hmac::<sha2::Sha512>(password, salt, *iterations, &mut output);
                } else {
                    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password, salt, *iterations, &mut output);
                }
                Ok(bool::from(output.ct_eq(hash)))
            }
            StoredHash::Scrypt {
                log_n,
                r,
                p,
                salt,
                hash,
            } => {
                let params = scrypt::Params::new(*log_n, *r, *p, hash.len())
                    .map_err(|e| malformed("scrypt", e.to_string()))?;
                let mut output = vec![0u8; hash.len()];
                scrypt::scrypt(password, salt, &params, &mut output)
                    .map_err(|e| malformed("scrypt", e.to_string()))?;
                Ok(bool::from(output.ct_eq(hash)))
            }
        }
    }
}

fn parse_argon2<'a>(
    stored: &'a str,
    current: Option<PasswordParams>,
) -> Result<StoredHash<'a>, HashError> {
    let hash = PasswordHash::new(stored).map_err(|e| malformed("argon2", e.to_string()))?;
    Algorithm::try_from(hash.algorithm).map_err(|e| malformed("argon2", e.to_string()))?;
    hash.version
        .map_or(Ok(Version::V0x13), Version::try_from)
        .map_err(|e| malformed("argon2", e.to_string()))?;
    let output = hash
        .hash
        .ok_or_else(|| malformed("argon2", "no hash output"))?;
    hash.salt.ok_or_else(|| malformed("argon2", "no salt"))?;
    let params = Params::try_from(&hash).map_err(|e| malformed("argon2", e.to_string()))?;
    if current.is_some_and(|current| made_with(&hash, current)) {
        return Ok(StoredHash::Argon2(hash));
    }
    let (m, t, p) = (params.m_cost(), params.t_cost(), params.p_cost());
    bound(
        "argon2",
        "memory (KiB)",
        m.into(),
        Bounds::ARGON2_MAX_MEMORY_KIB.into(),
    )?;
    bound(
        "argon2",
        "iterations",
        t.into(),
        Bounds::ARGON2_MAX_ITERATIONS.into(),
    )?;
    bound(
        "argon2",
        "parallelism",
        p.into(),
        Bounds::ARGON2_MAX_PARALLELISM.into(),
    )?;
    bound(
        "argon2",
        "memory × iterations (KiB)",
        u64::from(m) * u64::from(t),
        Bounds::ARGON2_MAX_WORK_KIB,
    )?;
    if output.len() < MIN_OUTPUT_BYTES {
        return Err(malformed(
            "argon2",
            format!("hash output shorter than {MIN_OUTPUT_BYTES} bytes"),
        ));
    }
    Ok(StoredHash::Argon2(hash))
}

fn parse_bcrypt(stored: &str) -> Result<StoredHash<'_>, HashError> {
    // $2b$12$ then 22 characters of salt and 31 of hash.
    let parts: Vec<&str> = stored.split('$').collect();
    let [_, _, cost, rest] = parts[..] else {
        return Err(malformed("bcrypt", "expected $2b$COST$SALTHASH"));
    };
    if cost.len() != 2 || !cost.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("bcrypt", "the cost must be two digits"));
    }
    let cost: u32 = cost
        .parse()
        .map_err(|_| malformed("bcrypt", "the cost must be two digits"))?;
    if cost < 4 {
        return Err(malformed("bcrypt", "the cost must be at least 4"));
    }
    bound(
        "bcrypt",
        "cost",
        cost.into(),
        Bounds::BCRYPT_MAX_COST.into(),
    )?;
    if rest.len() != 53
        || !rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/')
    {
        return Err(malformed(
            "bcrypt",
            "expected 53 characters of salt and hash after the cost",
        ));
    }
    Ok(StoredHash::Bcrypt(stored))
}

/// `$pbkdf2-sha256$i=N,l=L$SALT$HASH` (PHC, B64) or passlib's `$pbkdf2-sha256$N$SALT$HASH`
/// (its adapted base64: `.` for `+`). Both decode the same way once `.` is `+`.
fn parse_pbkdf2(stored: &str, sha512: bool) -> Result<StoredHash<'static>, HashError> {
    let scheme = if sha512 {
        "pbkdf2-sha512"
    } else {
        "pbkdf2-sha256"
    };
    let parts: Vec<&str> = stored.split('$').collect();
    let [_, _, params, salt, hash] = parts[..] else {
        return Err(malformed(scheme, "expected $SCHEME$PARAMS$SALT$HASH"));
    };
    let mut iterations = None;
    let mut length = None;
    if params.bytes().all(|b| b.is_ascii_digit()) {
        iterations = Some(number(scheme, "iterations", params)?);
    } else {
        for pair in params.split(',') {
            match pair.split_once('=') {
                Some(("i", value)) => iterations = Some(number(scheme, "i", value)?),
                Some(("l", value)) => length = Some(number(scheme, "l", value)?),
                _ => return Err(malformed(scheme, "parameters are i=ITERATIONS[,l=LENGTH]")),
            }
        }
    }
    let iterations = iterations.ok_or_else(|| malformed(scheme, "no iteration count"))?;
    if iterations == 0 {
        return Err(malformed(scheme, "the iteration count must be positive"));
    }
    bound(
        scheme,
        "iterations",
        iterations.into(),
        Bounds::PBKDF2_MAX_ITERATIONS.into(),
    )?;
    let salt = decode_b64(scheme, "salt", salt)?;
    let hash = decode_b64(scheme, "hash", hash)?;
    check_sizes(scheme, &salt, &hash)?;
    if length.is_some_and(|length| length as usize != hash.len()) {
        return Err(malformed(scheme, "l= does not match the hash's length"));
    }
    Ok(StoredHash::Pbkdf2 {
        sha512,
        iterations,
        salt,
        hash,
    })
}

/// `$scrypt$ln=L,r=R,p=P$SALT$HASH` (PHC and passlib).
fn parse_scrypt(stored: &str) -> Result<StoredHash<'static>, HashError> {
    const SCHEME: &str = "scrypt";
    let parts: Vec<&str> = stored.split('$').collect();
    let [_, _, params, salt, hash] = parts[..] else {
        return Err(malformed(
            SCHEME,
            "expected $scrypt$ln=..,r=..,p=..$SALT$HASH",
        ));
    };
    let (mut log_n, mut r, mut p) = (None, None, None);
    for pair in params.split(',') {
        match pair.split_once('=') {
            Some(("ln", value)) => log_n = Some(number(SCHEME, "ln", value)?),
            Some(("r", value)) => r = Some(number(SCHEME, "r", value)?),
            Some(("p", value)) => p = Some(number(SCHEME, "p", value)?),
            _ => return Err(malformed(SCHEME, "parameters are ln=..,r=..,p=..")),
        }
    }
    let (Some(log_n), Some(r), Some(p)) = (log_n, r, p) else {
        return Err(malformed(SCHEME, "parameters are ln=..,r=..,p=.."));
    };
    if log_n == 0 || r == 0 || p == 0 {
        return Err(malformed(SCHEME, "ln, r and p must be positive"));
    }
    bound(
        SCHEME,
        "ln (log2 N)",
        log_n.into(),
        Bounds::SCRYPT_MAX_LOG_N.into(),
    )?;
    let n = 1u64 << log_n;
    bound(
        SCHEME,
        "memory 128·N·r (bytes)",
        128 * n * u64::from(r),
        Bounds::SCRYPT_MAX_MEMORY_BYTES,
    )?;
    bound(
        SCHEME,
        "work N·r·p",
        n * u64::from(r) * u64::from(p),
        Bounds::SCRYPT_MAX_WORK,
    )?;
    let salt = decode_b64(SCHEME, "salt", salt)?;
    let hash = decode_b64(SCHEME, "hash", hash)?;
    check_sizes(SCHEME, &salt, &hash)?;
    Ok(StoredHash::Scrypt {
        log_n: log_n as u8,
        r,
        p,
        salt,
        hash,
    })
}

fn number(scheme: &'static str, what: &str, text: &str) -> Result<u32, HashError> {
    text.parse()
        .map_err(|_| malformed(scheme, format!("{what} is not a number")))
}

/// Standard base64 with or without padding, `.` read as `+` (passlib's adapted base64).
pub(crate) fn decode_b64(
    scheme: &'static str,
    what: &str,
    text: &str,
) -> Result<Vec<u8>, HashError> {
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    LENIENT
        .decode(text.replace('.', "+"))
        .map_err(|_| malformed(scheme, format!("the {what} is not base64")))
}

fn check_sizes(scheme: &'static str, salt: &[u8], hash: &[u8]) -> Result<(), HashError> {
    if salt.is_empty() || salt.len() > MAX_SALT_BYTES {
        return Err(malformed(
            scheme,
            format!("the salt must be 1 to {MAX_SALT_BYTES} bytes"),
        ));
    }
    if !(MIN_OUTPUT_BYTES..=MAX_OUTPUT_BYTES).contains(&hash.len()) {
        return Err(malformed(
            scheme,
            format!("the hash must be {MIN_OUTPUT_BYTES} to {MAX_OUTPUT_BYTES} bytes"),
        ));
    }
    Ok(())
}

pub(crate) fn made_with(hash: &PasswordHash<'_>, params: PasswordParams) -> bool {
    hash.algorithm == Algorithm::Argon2id.ident()
        && Params::try_from(hash).is_ok_and(|p| {
            p.m_cost() == params.memory_kib
                && p.t_cost() == params.iterations
                && p.p_cost() == params.parallelism
        })
}

/// Recomputes an argon2 hash and compares the outputs in constant time.
fn verify_argon2(
    hash: &PasswordHash<'_>,
    password: &[u8],
    memory: &mut Vec<Block>,
    keep_blocks: usize,
) -> Result<bool, HashError> {
    let unreadable = |reason: String| malformed("argon2", reason);
    let algorithm = Algorithm::try_from(hash.algorithm).map_err(|e| unreadable(e.to_string()))?;
    let version = hash
        .version
        .map_or(Ok(Version::V0x13), Version::try_from)
        .map_err(|e| unreadable(e.to_string()))?;
    let expected = hash
        .hash
        .ok_or_else(|| unreadable("no hash output".into()))?;
    let salt = hash.salt.ok_or_else(|| unreadable("no salt".into()))?;
    let mut salt_bytes = [0u8; 64];
    let salt = salt
        .decode_b64(&mut salt_bytes)
        .map_err(|e| unreadable(e.to_string()))?;
    let params = Params::try_from(hash).map_err(|e| unreadable(e.to_string()))?;
    let params = Params::new(
        params.m_cost(),
        params.t_cost(),
        params.p_cost(),
        Some(expected.len()),
    )
    .map_err(|e| unreadable(e.to_string()))?;
    let blocks = params.block_count();
    let mut own = Vec::new();
    let memory = if blocks <= memory.len().max(keep_blocks) {
        if memory.len() < blocks {
            memory.resize(blocks, Block::default());
        }
        memory
    } else {
        own.resize(blocks, Block::default());
        &mut own
    };
    let mut output = vec![0u8; expected.len()];
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password, salt, &mut output, &mut memory[..blocks])
        .map_err(|e| unreadable(e.to_string()))?;
    Ok(bool::from(output.ct_eq(expected.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(stored: &str, password: &str) -> bool {
        let mut memory = Vec::new();
        StoredHash::parse(stored)
            .unwrap()
            .verify(password.as_bytes(), &mut memory, 0)
            .unwrap()
    }

    #[test]
    fn rfc_and_reference_vectors_verify() {
        // bcrypt's own test vector (OpenBSD), and passlib's documented examples.
        assert!(check(
            "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW",
            "U*U"
        ));
        assert!(!check(
            "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW",
            "U*V"
        ));
    }

    #[test]
    fn bounds_are_refused_with_the_limit_named() {
        let too = |stored: &str| StoredHash::parse(stored).err().unwrap().to_string();
        assert_eq!(
            too("$2b$15$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW"),
            "bcrypt cost 15 is above the limit 14"
        );
        assert!(
            too("$pbkdf2-sha256$1300001$c2FsdHNhbHQ$YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWE")
                .contains("iterations 1300001 is above the limit 1300000")
        );
        assert!(
            too("$scrypt$ln=21,r=8,p=1$c2FsdHNhbHQ$YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWE")
                .contains("ln (log2 N) 21 is above the limit 20")
        );
        assert!(
            too("$argon2id$v=19$m=262145,t=1,p=1$c2FsdHNhbHQ$YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWE")
                .contains("memory (KiB) 262145 is above the limit 262144")
        );
        assert_eq!(
            too("$md5$abc"),
            HashError::Unsupported.to_string(),
            "an unknown scheme"
        );
    }

    #[test]
    fn the_servers_own_parameters_pass_above_the_bounds() {
        let big = PasswordParams {
            memory_kib: 512 * 1024,
            iterations: 1,
            parallelism: 1,
        };
        let stored = "$argon2id$v=19$m=524288,t=1,p=1$c2FsdHNhbHQ$YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWE";
        assert!(StoredHash::parse(stored).is_err());
        assert!(StoredHash::parse_allowing(stored, Some(big)).is_ok());
    }

    #[test]
    fn errors_never_quote_the_hash() {
        for stored in [
            "$2b$12$short",
            "$pbkdf2-sha256$i=10$!!!$!!!",
            "$scrypt$ln=4,r=8$c2FsdA$c2FsdA",
            "$argon2id$v=19$m=64,t=1,p=1$!!$!!",
        ] {
            let message = StoredHash::parse(stored).err().unwrap().to_string();
            assert!(!message.contains(stored), "{message}");
            assert!(!message.contains("!!"), "{message}");
        }
    }

    /// Run by hand to measure the bounds: `cargo test --release -p st-peter-server --lib
    /// stored_hash::tests::cost_at_the_bounds -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn cost_at_the_bounds() {
        let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
        let salt = b64.encode([7u8; 16]);
        let out32 = b64.encode([9u8; 32]);
        let out64 = b64.encode([9u8; 64]);
        let cases = [
            (
                "argon2id OWASP m=19456,t=2,p=1",
                format!("$argon2id$v=19$m=19456,t=2,p=1${salt}${out32}"),
            ),
            (
                "argon2id argon2-cffi default m=65536,t=3,p=4",
                format!("$argon2id$v=19$m=65536,t=3,p=4${salt}${out32}"),
            ),
            (
                "argon2id Keycloak default m=7168,t=5,p=1",
                format!("$argon2id$v=19$m=7168,t=5,p=1${salt}${out32}"),
            ),
            (
                "argon2id bound m=262144,t=4,p=1",
                format!("$argon2id$v=19$m=262144,t=4,p=1${salt}${out32}"),
            ),
            (
                "argon2id bound m=104857,t=10,p=1",
                format!("$argon2id$v=19$m=104857,t=10,p=1${salt}${out32}"),
            ),
            (
                "bcrypt cost 10",
                "$2b$10$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW".into(),
            ),
            (
                "bcrypt cost 12",
                "$2b$12$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW".into(),
            ),
            (
                "bcrypt bound cost 14",
                "$2b$14$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW".into(),
            ),
            (
                "pbkdf2-sha256 passlib 29000",
                format!("$pbkdf2-sha256$29000${salt}${out32}"),
            ),
            (
                "pbkdf2-sha256 Keycloak 27500 l=64",
                format!("$pbkdf2-sha256$i=27500,l=64${salt}${out64}"),
            ),
            (
                "pbkdf2-sha256 Keycloak 600000",
                format!("$pbkdf2-sha256$i=600000,l=32${salt}${out32}"),
            ),
            (
                "pbkdf2-sha512 Keycloak 210000",
                format!("$pbkdf2-sha512$i=210000,l=64${salt}${out64}"),
            ),
            (
                "pbkdf2-sha256 bound 1300000 l=32",
                format!("$pbkdf2-sha256$i=1300000,l=32${salt}${out32}"),
            ),
            (
                "pbkdf2-sha256 bound 1300000 l=64",
                format!("$pbkdf2-sha256$i=1300000,l=64${salt}${out64}"),
            ),
            (
                "pbkdf2-sha512 bound 1300000 l=64",
                format!("$pbkdf2-sha512$i=1300000,l=64${salt}${out64}"),
            ),
            (
                "scrypt passlib ln=16,r=8,p=1",
                format!("$scrypt$ln=16,r=8,p=1${salt}${out32}"),
            ),
            (
                "scrypt bound ln=18,r=8,p=1 (256 MiB)",
                format!("$scrypt$ln=18,r=8,p=1${salt}${out32}"),
            ),
            (
                "scrypt bound ln=14,r=8,p=16",
                format!("$scrypt$ln=14,r=8,p=16${salt}${out32}"),
            ),
        ];
        let mut memory = Vec::new();
        for (name, stored) in cases {
            let parsed = StoredHash::parse(&stored).unwrap();
            // A warm-up, then the fastest and the median of three: the machine is shared.
            parsed.verify(b"password", &mut memory, 0).unwrap();
            let mut times: Vec<f64> = (0..3)
                .map(|_| {
                    let started = std::time::Instant::now();
                    parsed.verify(b"password", &mut memory, 0).unwrap();
                    started.elapsed().as_secs_f64() * 1000.0
                })
                .collect();
            times.sort_by(f64::total_cmp);
            println!(
                "{name:48} fastest {:>8.1} ms  median {:>8.1} ms",
                times[0], times[1]
            );
        }
    }
}

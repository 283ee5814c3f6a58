//! Password hashing with argon2id, off the async runtime and bounded to the cores, so a
//! login storm queues here instead of stalling token verification.
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use std::sync::Arc;
use tokio::sync::Semaphore;

use crate::error::{Error, Result, invalid};

/// Longest password accepted, checked before any hashing work.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Shortest password an administrator may set.
pub const MIN_NEW_PASSWORD_CHARS: usize = 8;

/// argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl PasswordParams {
    /// OWASP's recommendation: m = 19456 KiB, t = 2, p = 1.
    pub const OWASP: Self = Self {
        memory_kib: 19_456,
        iterations: 2,
        parallelism: 1,
    };

    /// Cheap parameters for tests only: never use them for real passwords.
    pub const INSECURE_FOR_TESTS: Self = Self {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    fn argon2(&self) -> Result<Argon2<'static>> {
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|e| Error::Internal(format!("argon2 parameters: {e}")))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

impl Default for PasswordParams {
    fn default() -> Self {
        Self::OWASP
    }
}

/// The result of checking a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verification {
    pub matches: bool,
    /// The stored hash was made with other parameters: store a new one.
    pub needs_rehash: bool,
}

pub struct Passwords {
    params: PasswordParams,
    argon2: Argon2<'static>,
    permits: Arc<Semaphore>,
    /// Verified against when the identifier matches nobody, so an unknown identifier
    /// costs the same work as a wrong password.
    dummy_hash: String,
}

impl Passwords {
    /// `max_concurrency` hashes run at once; more wait their turn.
    pub fn new(params: PasswordParams, max_concurrency: usize) -> Result<Self> {
        let argon2 = params.argon2()?;
        let dummy_hash = hash_with(&argon2, &uuid::Uuid::new_v4().to_string())?;
        Ok(Self {
            params,
            argon2,
            permits: Arc::new(Semaphore::new(max_concurrency.max(1))),
            dummy_hash,
        })
    }

    pub fn params(&self) -> PasswordParams {
        self.params
    }

    /// Hashes a new password into a PHC string after checking its length.
    pub async fn hash_new(&self, password: &str) -> Result<String> {
        check_new(password)?;
        self.hash(password).await
    }

    /// Hashes a password already known to be acceptable (a rehash at login).
    pub async fn hash(&self, password: &str) -> Result<String> {
        let argon2 = self.argon2.clone();
        let password = password.to_owned();
        self.blocking(move || hash_with(&argon2, &password)).await?
    }

    /// Checks `password` against `stored`, or against the dummy hash when there is no
    /// stored hash (unknown user): the work is the same either way.
    pub async fn verify(&self, password: &str, stored: Option<&str>) -> Result<Verification> {
        let known = stored.is_some();
        let stored = stored.unwrap_or(&self.dummy_hash).to_owned();
        let password = password.to_owned();
        let argon2 = self.argon2.clone();
        let params = self.params;
        self.blocking(move || {
            let parsed = PasswordHash::new(&stored)
                .map_err(|e| Error::Internal(format!("stored password hash unreadable: {e}")))?;
            let matches = argon2.verify_password(password.as_bytes(), &parsed).is_ok() && known;
            let needs_rehash = matches && !made_with(&parsed, params);
            Ok(Verification {
                matches,
                needs_rehash,
            })
        })
        .await?
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Error::Internal("password hasher closed".into()))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| Error::Internal(format!("password task failed: {e}")))
    }
}

/// Length check for a password given at login, before any hashing.
pub fn check_login(password: &str) -> Result<()> {
    if password.is_empty() {
        return Err(invalid("password", "must not be empty"));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(invalid(
            "password",
            format!("must be at most {MAX_PASSWORD_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// Length check for a password being set.
pub fn check_new(password: &str) -> Result<()> {
    check_login(password)?;
    if password.chars().count() < MIN_NEW_PASSWORD_CHARS {
        return Err(invalid(
            "password",
            format!("must be at least {MIN_NEW_PASSWORD_CHARS} characters"),
        ));
    }
    Ok(())
}

fn hash_with(argon2: &Argon2<'_>, password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    argon2
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| Error::Internal(format!("argon2: {e}")))
}

fn made_with(hash: &PasswordHash<'_>, params: PasswordParams) -> bool {
    hash.algorithm == Algorithm::Argon2id.ident()
        && Params::try_from(hash).is_ok_and(|p| {
            p.m_cost() == params.memory_kib
                && p.t_cost() == params.iterations
                && p.p_cost() == params.parallelism
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_report_rehash() {
        let old = Passwords::new(PasswordParams::INSECURE_FOR_TESTS, 2).unwrap();
        let hash = old.hash_new("correct horse").await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        let same = old.verify("correct horse", Some(&hash)).await.unwrap();
        assert_eq!(
            same,
            Verification {
                matches: true,
                needs_rehash: false
            }
        );
        assert!(
            !old.verify("wrong horse", Some(&hash))
                .await
                .unwrap()
                .matches
        );

        let newer = Passwords::new(
            PasswordParams {
                memory_kib: 128,
                iterations: 1,
                parallelism: 1,
            },
            2,
        )
        .unwrap();
        let check = newer.verify("correct horse", Some(&hash)).await.unwrap();
        assert_eq!(
            check,
            Verification {
                matches: true,
                needs_rehash: true
            }
        );
        let wrong = newer.verify("wrong", Some(&hash)).await.unwrap();
        assert_eq!(
            wrong,
            Verification {
                matches: false,
                needs_rehash: false
            }
        );
    }

    #[tokio::test]
    async fn unknown_user_never_matches() {
        let passwords = Passwords::new(PasswordParams::INSECURE_FOR_TESTS, 1).unwrap();
        let check = passwords.verify("anything", None).await.unwrap();
        assert!(!check.matches);
    }

    #[test]
    fn production_defaults_are_owasp() {
        assert_eq!(
            PasswordParams::default(),
            PasswordParams {
                memory_kib: 19_456,
                iterations: 2,
                parallelism: 1
            }
        );
    }

    #[test]
    fn lengths_are_checked_before_hashing() {
        assert_eq!(
            check_login("").unwrap_err().to_string(),
            "password: must not be empty"
        );
        let long = "x".repeat(MAX_PASSWORD_BYTES + 1);
        assert!(
            check_login(&long)
                .unwrap_err()
                .to_string()
                .contains("at most 1024 bytes")
        );
        assert!(
            check_new("short")
                .unwrap_err()
                .to_string()
                .contains("at least 8")
        );
    }
}

//! Password hashing with argon2id on a few dedicated threads, off the async runtime, so a
//! login storm queues here instead of stalling token verification.
//!
//! Each hashing thread keeps its argon2 working memory (19 MiB with the OWASP parameters)
//! and reuses it for every verification: allocating it per login made the allocator keep
//! one such block per thread arena, hundreds of MiB under a storm.
use argon2::password_hash::{PasswordHash, PasswordHasher as _, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use subtle::ConstantTimeEq;

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

/// Work for a hashing thread: runs with that thread's reusable argon2 memory.
type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

pub struct Passwords {
    params: PasswordParams,
    argon2: Argon2<'static>,
    jobs: mpsc::Sender<Job>,
    /// Verified against when the identifier matches nobody, so an unknown identifier
    /// costs the same work as a wrong password.
    dummy_hash: String,
}

/// Hashing threads to use by default: all cores but one, so verification always has a
/// core to run on while logins queue (one on a single-core machine).
pub fn default_concurrency() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
}

impl Passwords {
    /// `max_concurrency` hashing threads; more requests wait their turn. The threads end
    /// when the `Passwords` is dropped.
    pub fn new(params: PasswordParams, max_concurrency: usize) -> Result<Self> {
        let argon2 = params.argon2()?;
        let dummy_hash = hash_with(&argon2, &uuid::Uuid::new_v4().to_string())?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for index in 0..max_concurrency.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{index}"))
                .spawn(move || {
                    // Logins yield to verification: under a login storm the scheduler
                    // runs token checks first. Lowering one's own priority needs no
                    // privilege; if it fails anyway, hashing still works.
                    if let Err(error) = thread_priority::set_current_thread_priority(
                        thread_priority::ThreadPriority::Min,
                    ) {
                        tracing::debug!(?error, "could not lower the hashing thread's priority");
                    }
                    let mut memory = Vec::new();
                    loop {
                        // The lock is held only while waiting for the next job.
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(&mut memory),
                            Err(_) => return,
                        }
                    }
                })
                .map_err(|e| Error::Internal(format!("starting a hashing thread: {e}")))?;
        }
        Ok(Self {
            params,
            argon2,
            jobs,
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
        self.on_hashing_thread(move |_| hash_with(&argon2, &password))
            .await?
    }

    /// Checks `password` against `stored`, or against the dummy hash when there is no
    /// stored hash (unknown user): the work is the same either way.
    pub async fn verify(&self, password: &str, stored: Option<&str>) -> Result<Verification> {
        let known = stored.is_some();
        let stored = stored.unwrap_or(&self.dummy_hash).to_owned();
        let password = password.to_owned();
        let params = self.params;
        self.on_hashing_thread(move |memory| {
            let parsed = PasswordHash::new(&stored)
                .map_err(|e| Error::Internal(format!("stored password hash unreadable: {e}")))?;
            let matches = verify_with_memory(&parsed, password.as_bytes(), memory)? && known;
            let needs_rehash = matches && !made_with(&parsed, params);
            Ok(Verification {
                matches,
                needs_rehash,
            })
        })
        .await?
    }

    async fn on_hashing_thread<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    ) -> Result<T> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |memory| {
            let _ = done.send(work(memory));
        });
        self.jobs
            .send(job)
            .map_err(|_| Error::Internal("password hasher stopped".into()))?;
        result
            .await
            .map_err(|_| Error::Internal("password hashing thread failed".into()))
    }
}

/// Recomputes a stored argon2 hash with the password in `memory` (grown when the stored
/// parameters need more) and compares the outputs in constant time.
fn verify_with_memory(
    hash: &PasswordHash<'_>,
    password: &[u8],
    memory: &mut Vec<Block>,
) -> Result<bool> {
    let unreadable =
        |what: &str| Error::Internal(format!("stored password hash unreadable: {what}"));
    let algorithm = Algorithm::try_from(hash.algorithm).map_err(|e| unreadable(&e.to_string()))?;
    let version = hash
        .version
        .map_or(Ok(Version::V0x13), Version::try_from)
        .map_err(|e| unreadable(&e.to_string()))?;
    let expected = hash.hash.ok_or_else(|| unreadable("no hash output"))?;
    let salt = hash.salt.ok_or_else(|| unreadable("no salt"))?;
    let mut salt_bytes = [0u8; 64];
    let salt = salt
        .decode_b64(&mut salt_bytes)
        .map_err(|e| unreadable(&e.to_string()))?;
    let params = Params::try_from(hash).map_err(|e| unreadable(&e.to_string()))?;
    let params = Params::new(
        params.m_cost(),
        params.t_cost(),
        params.p_cost(),
        Some(expected.len()),
    )
    .map_err(|e| unreadable(&e.to_string()))?;
    if memory.len() < params.block_count() {
        memory.resize(params.block_count(), Block::default());
    }
    let mut output = vec![0u8; expected.len()];
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password, salt, &mut output, &mut memory[..])
        .map_err(|e| unreadable(&e.to_string()))?;
    Ok(bool::from(output.ct_eq(expected.as_bytes())))
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

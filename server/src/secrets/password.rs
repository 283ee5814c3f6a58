//! Password hashing with argon2id on a few dedicated threads, off the async runtime, so a
//! login storm queues here instead of stalling token verification.
//!
//! The queue in front of those threads is bounded by time: a password check is admitted
//! only if the work already queued, plus its own, can finish before the caller's deadline
//! (or [`AdmissionSettings::max_wait`] when the caller set none). Otherwise it is shed at
//! once with [`Error::Overloaded`], before any database or hash work, and a job whose caller
//! has gone away (deadline passed, connection closed) is skipped when its turn comes.
//!
//! Each hashing thread keeps its argon2 working memory (19 MiB with the OWASP parameters)
//! and reuses it for every verification: allocating it per login made the allocator keep
//! one such block per thread arena, hundreds of MiB under a storm.
use argon2::password_hash::{PasswordHasher as _, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result, invalid};
use crate::secrets::stored_hash::StoredHash;

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

    /// The argon2 memory blocks one hash with these parameters needs.
    pub fn block_count(&self) -> Result<usize> {
        Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map(|params| params.block_count())
            .map_err(|e| Error::Internal(format!("argon2 parameters: {e}")))
    }

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

/// How long password work may wait for a hashing thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionSettings {
    /// The longest expected wait (queue plus own hash) for a caller that set no deadline.
    pub max_wait: Duration,
}

impl Default for AdmissionSettings {
    fn default() -> Self {
        Self {
            max_wait: Duration::from_secs(2),
        }
    }
}

/// Work for a hashing thread: runs with that thread's reusable argon2 memory, or is told
/// its caller's deadline has passed (`None`). Returns whether it hashed: a job whose caller
/// has gone returns at once.
/// A queued check: given the thread's memory it hashes and returns the answer's delivery,
/// run only after the thread has done its bookkeeping, so a caller that has its answer
/// never sees its own check still counted as pending. Given `None` (the caller's deadline
/// passed) or with its caller gone, it does nothing and returns `None`.
type Job = Box<dyn FnOnce(Option<&mut Vec<Block>>) -> Option<Deliver> + Send>;
type Deliver = Box<dyn FnOnce() + Send>;

struct Queued {
    job: Job,
    /// Past this the caller no longer waits: the job is skipped.
    deadline: Option<Instant>,
}

pub struct Passwords {
    params: PasswordParams,
    argon2: Argon2<'static>,
    jobs: mpsc::Sender<Queued>,
    load: Arc<Load>,
    admission: AdmissionSettings,
    /// Verified against when the identifier matches nobody, so an unknown identifier
    /// costs the same work as a wrong password.
    dummy_hash: String,
    /// argon2 blocks a hashing thread keeps between checks: the current parameters' need.
    keep_blocks: usize,
}

/// What the hashing threads have to do, shared with them.
struct Load {
    threads: usize,
    /// Admitted checks not finished (queued or running).
    pending: AtomicUsize,
    /// A moving average of one hash's duration, in nanoseconds.
    hash_nanos: AtomicU64,
    /// Hashes computed; checks refused at admission; jobs skipped because their caller
    /// had gone.
    hashed: AtomicU64,
    shed: AtomicU64,
    skipped: AtomicU64,
}

impl Load {
    /// When a check admitted now would expect to finish: every thread takes its share of
    /// the pending work, then this one.
    fn expected_wait(&self) -> Duration {
        let rounds = self.pending.load(Ordering::Relaxed) / self.threads + 1;
        self.hash_time() * rounds as u32
    }

    fn hash_time(&self) -> Duration {
        Duration::from_nanos(self.hash_nanos.load(Ordering::Relaxed))
    }

    fn record_hash(&self, took: Duration) {
        // EWMA with weight 1/8: follows a change of machine load within a few logins.
        let sample = took.as_nanos().min(u128::from(u64::MAX)) as u64;
        let old = self.hash_nanos.load(Ordering::Relaxed);
        let new = old - old / 8 + sample / 8;
        self.hash_nanos.store(new.max(1), Ordering::Relaxed);
        self.hashed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counters of the hashing queue, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStats {
    pub pending: usize,
    pub hash_time: Duration,
    pub hashed: u64,
    pub shed: u64,
    pub skipped: u64,
}

/// A place in the hashing queue, taken before any other work for a login so a shed
/// login costs no database round trip. Dropping it unused gives the place back.
pub struct Admitted<'a> {
    passwords: &'a Passwords,
    deadline: Option<Instant>,
    used: bool,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if !self.used {
            self.passwords.load.pending.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Hashing threads to use by default: all cores but one, so verification always has a
/// core to run on while logins queue (one on a single-core machine).
pub fn default_concurrency() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
}

impl Passwords {
    /// `max_concurrency` hashing threads with the default admission settings.
    pub fn new(params: PasswordParams, max_concurrency: usize) -> Result<Self> {
        Self::with_admission(params, max_concurrency, AdmissionSettings::default())
    }

    /// `max_concurrency` hashing threads; more requests wait their turn, as long as
    /// `admission` allows. The threads end when the `Passwords` is dropped.
    pub fn with_admission(
        params: PasswordParams,
        max_concurrency: usize,
        admission: AdmissionSettings,
    ) -> Result<Self> {
        let argon2 = params.argon2()?;
        // The dummy hash also gives the first estimate of a hash's duration.
        let started = Instant::now();
        let dummy_hash = hash_with(&argon2, &uuid::Uuid::new_v4().to_string())?;
        let threads = max_concurrency.max(1);
        let load = Arc::new(Load {
            threads,
            pending: AtomicUsize::new(0),
            hash_nanos: AtomicU64::new((started.elapsed().as_nanos() as u64).max(1)),
            hashed: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        });
        let (jobs, queue) = mpsc::channel::<Queued>();
        let queue = Arc::new(Mutex::new(queue));
        for index in 0..threads {
            let queue = queue.clone();
            let load = load.clone();
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
                        let Ok(queued) = job else { return };
                        let expired = queued
                            .deadline
                            .is_some_and(|deadline| Instant::now() >= deadline);
                        let started = Instant::now();
                        let deliver = (queued.job)((!expired).then_some(&mut memory));
                        if deliver.is_some() {
                            load.record_hash(started.elapsed());
                        } else {
                            load.skipped.fetch_add(1, Ordering::Relaxed);
                        }
                        load.pending.fetch_sub(1, Ordering::Relaxed);
                        if let Some(deliver) = deliver {
                            deliver();
                        }
                    }
                })
                .map_err(|e| Error::Internal(format!("starting a hashing thread: {e}")))?;
        }
        Ok(Self {
            params,
            argon2,
            jobs,
            load,
            admission,
            dummy_hash,
            keep_blocks: params.block_count()?,
        })
    }

    pub fn params(&self) -> PasswordParams {
        self.params
    }

    pub fn queue_stats(&self) -> QueueStats {
        QueueStats {
            pending: self.load.pending.load(Ordering::Relaxed),
            hash_time: self.load.hash_time(),
            hashed: self.load.hashed.load(Ordering::Relaxed),
            shed: self.load.shed.load(Ordering::Relaxed),
            skipped: self.load.skipped.load(Ordering::Relaxed),
        }
    }

    /// Takes a place in the hashing queue if the check can finish before `deadline` (or
    /// within the configured `max_wait`); else `Error::Overloaded` with a retry hint.
    pub fn admit(&self, deadline: Option<Instant>) -> Result<Admitted<'_>> {
        // A caller's own deadline is the bound, longer or shorter than max_wait.
        let budget = deadline.map_or(self.admission.max_wait, |deadline| {
            deadline.saturating_duration_since(Instant::now())
        });
        // A tenth of the budget is kept back for the rest of the call (the user lookup, the
        // session insert, the answer) and for an estimate that lags a machine turning busy.
        let budget = budget.mul_f64(0.9);
        let expected = self.load.expected_wait();
        if expected > budget {
            self.load.shed.fetch_add(1, Ordering::Relaxed);
            let hash_time = self.load.hash_time();
            // The queue has room for this caller after about `expected - budget`; spread
            // over up to one more queue length, so a crowd shed together does not come back
            // together (measured: 7,700 shed answers a second from 200 callers without it).
            let spread = expected.mul_f64(rand::random::<f64>());
            return Err(Error::Overloaded {
                retry_after: (expected - budget).max(hash_time) + spread,
            });
        }
        self.load.pending.fetch_add(1, Ordering::Relaxed);
        Ok(Admitted {
            passwords: self,
            deadline,
            used: false,
        })
    }

    /// Hashes a new password into a PHC string after checking its length.
    pub async fn hash_new(&self, password: &str) -> Result<String> {
        check_new("password", password)?;
        self.hash(password).await
    }

    /// Hashes a password already known to be acceptable (a rehash at login).
    pub async fn hash(&self, password: &str) -> Result<String> {
        self.admit(None)?.hash(password).await
    }

    /// [`Admitted::verify`] for a caller without a deadline.
    pub async fn verify(&self, password: &str, stored: Option<&str>) -> Result<Verification> {
        self.admit(None)?.verify(password, stored).await
    }
}

impl Admitted<'_> {
    /// Hashes a password already known to be acceptable.
    pub async fn hash(self, password: &str) -> Result<String> {
        let argon2 = self.passwords.argon2.clone();
        let password = password.to_owned();
        self.on_hashing_thread(move |_| hash_with(&argon2, &password))
            .await?
    }

    /// Checks `password` against `stored`, or against the dummy hash when there is no
    /// stored hash (unknown user): the work is the same either way.
    pub async fn verify(self, password: &str, stored: Option<&str>) -> Result<Verification> {
        // An empty hash (a service account, an imported user without a password) matches
        // nothing, at the cost of an unknown identifier.
        let stored = stored.filter(|stored| !stored.is_empty());
        let known = stored.is_some();
        let stored = stored.unwrap_or(&self.passwords.dummy_hash).to_owned();
        let password = password.to_owned();
        let params = self.passwords.params;
        let keep_blocks = self.passwords.keep_blocks;
        self.on_hashing_thread(move |memory| {
            // Bounded again here, not only at import: a hash planted some other way must
            // not hold a hashing thread for minutes.
            let parsed = StoredHash::parse_allowing(&stored, Some(params))
                .map_err(|e| Error::Internal(format!("stored password hash refused: {e}")))?;
            let matches = parsed
                .verify(password.as_bytes(), memory, keep_blocks)
                .map_err(|e| Error::Internal(format!("stored password hash refused: {e}")))?
                && known;
            let needs_rehash = matches && !parsed.is_current(params);
            Ok(Verification {
                matches,
                needs_rehash,
            })
        })
        .await?
    }

    async fn on_hashing_thread<T: Send + 'static>(
        mut self,
        work: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    ) -> Result<T> {
        let (done, result) = tokio::sync::oneshot::channel();
        let queued_at = Instant::now();
        let span = crate::traces::hash_span();
        let job: Job = Box::new(move |memory| {
            let _span = crate::traces::on_hashing_thread(span, queued_at);
            crate::metrics::hash_job_started(queued_at);
            // A caller that went away (its request future dropped: deadline passed, stream
            // reset, connection closed) closed the channel: skip the hash.
            match memory {
                Some(memory) if !done.is_closed() => {
                    let answer = work(memory);
                    Some(Box::new(move || {
                        let _ = done.send(answer);
                    }) as Deliver)
                }
                _ => None,
            }
        });
        let queued = Queued {
            job,
            deadline: self.deadline,
        };
        // From here the hashing thread gives the place back when the job is done.
        self.used = true;
        if self.passwords.jobs.send(queued).is_err() {
            self.passwords.load.pending.fetch_sub(1, Ordering::Relaxed);
            return Err(Error::Internal("password hasher stopped".into()));
        }
        result.await.map_err(|_| Error::Overloaded {
            retry_after: self.passwords.load.hash_time(),
        })
    }
}

/// Length check for a password given at login, before any hashing.
pub fn check_login(password: &str) -> Result<()> {
    check_given("password", password)
}

/// Length check for a password a caller gives in `field` (a login's, or the current one
/// a sensitive change asks for), before any hashing.
pub fn check_given(field: &'static str, password: &str) -> Result<()> {
    if password.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(invalid(
            field,
            format!("must be at most {MAX_PASSWORD_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// Length check for a password being set (its strength is `password_strength`'s).
pub fn check_new(field: &'static str, password: &str) -> Result<()> {
    check_given(field, password)?;
    if password.chars().count() < MIN_NEW_PASSWORD_CHARS {
        return Err(invalid(
            field,
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

    /// Parameters slow enough (a few ms a hash) that a queue builds up in a test.
    const SLOW: PasswordParams = PasswordParams {
        memory_kib: 8 * 1024,
        iterations: 2,
        parallelism: 1,
    };

    #[tokio::test]
    async fn work_that_cannot_finish_in_time_is_shed_at_once_with_a_hint() {
        let passwords = Passwords::with_admission(
            SLOW,
            1,
            AdmissionSettings {
                max_wait: Duration::from_secs(60),
            },
        )
        .unwrap();
        let hash_time = passwords.queue_stats().hash_time;
        // A deadline shorter than one hash can never be met: refused without queueing.
        let too_soon = Instant::now() + hash_time / 4;
        let Err(Error::Overloaded { retry_after }) = passwords.admit(Some(too_soon)) else {
            panic!("a check that cannot finish in time was admitted");
        };
        assert!(
            retry_after >= hash_time / 2,
            "{retry_after:?} vs {hash_time:?}"
        );
        assert_eq!(
            passwords.queue_stats().pending,
            0,
            "a shed check holds no place"
        );
        assert_eq!(passwords.queue_stats().shed, 1);

        // Places taken and given back unused (a login that failed before hashing).
        let places: Vec<_> = (0..5).map(|_| passwords.admit(None).unwrap()).collect();
        assert_eq!(passwords.queue_stats().pending, 5);
        drop(places);
        assert_eq!(passwords.queue_stats().pending, 0);
    }

    #[tokio::test]
    async fn the_queue_is_bounded_by_the_longest_wait() {
        let passwords = Passwords::with_admission(
            SLOW,
            1,
            AdmissionSettings {
                max_wait: Duration::from_millis(1),
            },
        )
        .unwrap();
        // With a wait bound below one hash, even an idle hasher refuses work: the bound is
        // the expected finish, queue included.
        assert!(matches!(
            passwords.verify("pw", None).await,
            Err(Error::Overloaded { .. })
        ));
        // A caller's own longer deadline is honoured instead.
        let later = Instant::now() + Duration::from_secs(30);
        let admitted = passwords.admit(Some(later)).unwrap();
        assert!(!admitted.verify("pw", None).await.unwrap().matches);
    }

    #[tokio::test]
    async fn a_check_whose_caller_went_away_is_skipped_not_hashed() {
        let passwords = Arc::new(Passwords::new(SLOW, 1).unwrap());
        // Occupy the only thread, then queue checks whose callers give up at once.
        let busy = {
            let passwords = passwords.clone();
            tokio::spawn(async move {
                for _ in 0..3 {
                    passwords.verify("pw", None).await.unwrap();
                }
            })
        };
        tokio::task::yield_now().await;
        for _ in 0..20 {
            // Polled once (admitted and queued), then dropped: the caller has gone.
            let check = std::pin::pin!(passwords.verify("pw", None));
            tokio::select! {
                biased;
                _ = check => panic!("the check should still be queued"),
                () = std::future::ready(()) => {}
            }
        }
        busy.await.unwrap();
        // The queue drains: every abandoned job was counted as skipped, none was hashed.
        for _ in 0..500 {
            if passwords.queue_stats().pending == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let stats = passwords.queue_stats();
        assert_eq!(stats.pending, 0);
        assert_eq!(stats.skipped, 20, "{stats:?}");
        assert_eq!(stats.hashed, 3, "{stats:?}");
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
            check_new("password", "short")
                .unwrap_err()
                .to_string()
                .contains("at least 8")
        );
    }
}

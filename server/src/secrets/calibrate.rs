//! `st-peter hash calibrate`: what argon2id costs on this machine, as Kratos's
//! `hashers argon2 calibrate` shows it. Each candidate is hashed a few times on one thread,
//! with its memory reused as the hashing threads reuse theirs, and the median kept: one
//! hash's time is also the inverse of the logins a second one core can check.
use std::time::{Duration, Instant};

use argon2::{Algorithm, Argon2, Block, Params, Version};

use crate::error::{Error, Result};
use crate::secrets::password::PasswordParams;

/// One measured candidate.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Measured {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// Where the candidate comes from: `owasp`, `owasp-alternative`, `step`, `current`
    /// (the `--argon2-*` flags in force), `given`, `fitted` (memory scaled towards the
    /// target).
    pub source: &'static str,
    /// The median time of one hash, in milliseconds.
    pub millis: f64,
    /// 1 / time: password checks one core does in a second.
    pub logins_per_second_per_core: f64,
}

impl Measured {
    pub fn params(&self) -> PasswordParams {
        PasswordParams {
            memory_kib: self.memory_kib,
            iterations: self.iterations,
            parallelism: self.parallelism,
        }
    }

    /// The `serve` flags that select these parameters.
    pub fn flags(&self) -> String {
        format!(
            "--argon2-memory-kib {} --argon2-iterations {} --argon2-parallelism {}",
            self.memory_kib, self.iterations, self.parallelism
        )
    }
}

/// OWASP's recommended argon2id configurations (all equal in strength), then steps of
/// memory and passes around the default.
pub fn candidates() -> Vec<(PasswordParams, &'static str)> {
    let p = |memory_kib, iterations| PasswordParams {
        memory_kib,
        iterations,
        parallelism: 1,
    };
    vec![
        (PasswordParams::OWASP, "owasp"),
        (p(47_104, 1), "owasp-alternative"),
        (p(12_288, 3), "owasp-alternative"),
        (p(9_216, 4), "owasp-alternative"),
        (p(7_168, 5), "owasp-alternative"),
        (p(9_728, 2), "step"),
        (p(19_456, 3), "step"),
        (p(38_912, 2), "step"),
        (p(65_536, 2), "step"),
        (p(65_536, 3), "step"),
    ]
}

/// The median of `runs` hashes with `params`.
pub fn measure(params: PasswordParams, runs: usize) -> Result<Duration> {
    let argon2_params = Params::new(
        params.memory_kib,
        params.iterations,
        params.parallelism,
        Some(32),
    )
    .map_err(|e| Error::Internal(format!("argon2 parameters: {e}")))?;
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, argon2_params.clone());
    let mut memory = vec![Block::default(); argon2_params.block_count()];
    let mut output = [0u8; 32];
    let salt = [0x5a_u8; 16];
    // One untimed hash first: it touches the memory, whose first use pays page faults a
    // server's long-lived hashing threads pay once.
    argon2
        .hash_password_into_with_memory(b"warm-up", &salt, &mut output, &mut memory)
        .map_err(|e| Error::Internal(format!("argon2: {e}")))?;
    let mut times = Vec::with_capacity(runs.max(1));
    for run in 0..runs.max(1) {
        let password = format!("calibration password {run}");
        let started = Instant::now();
        argon2
            .hash_password_into_with_memory(password.as_bytes(), &salt, &mut output, &mut memory)
            .map_err(|e| Error::Internal(format!("argon2: {e}")))?;
        times.push(started.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

fn row(params: PasswordParams, source: &'static str, runs: usize) -> Result<Measured> {
    let time = measure(params, runs)?;
    let seconds = time.as_secs_f64().max(1e-9);
    Ok(Measured {
        memory_kib: params.memory_kib,
        iterations: params.iterations,
        parallelism: params.parallelism,
        source,
        millis: seconds * 1000.0,
        logins_per_second_per_core: 1.0 / seconds,
    })
}

/// Measures the candidates, the caller's own parameters if given and, with a target,
/// memory scaled from the OWASP default towards it (time grows with memory × passes).
/// Returns the rows and, with a target, the one closest to it from below (or the cheapest
/// when none is below).
pub fn calibrate(
    current: PasswordParams,
    given: Option<PasswordParams>,
    target: Option<Duration>,
    runs: usize,
) -> Result<(Vec<Measured>, Option<Measured>)> {
    let mut rows = Vec::new();
    for (params, source) in candidates() {
        rows.push(row(params, source, runs)?);
    }
    // The parameters the `--argon2-*` flags (or their variables) select now.
    if !rows.iter().any(|row| row.params() == current) {
        rows.push(row(current, "current", runs)?);
    }
    if let Some(given) = given.filter(|given| !rows.iter().any(|row| row.params() == *given)) {
        rows.push(row(given, "given", runs)?);
    }
    let Some(target) = target else {
        return Ok((rows, None));
    };
    let owasp = rows[0].millis;
    let scale = target.as_secs_f64() * 1000.0 / owasp;
    // 1 MiB steps, 8 MiB to 4 GiB: the serve flags' range.
    let fitted_kib = ((f64::from(PasswordParams::OWASP.memory_kib) * scale) as u64 / 1024 * 1024)
        .clamp(8 * 1024, 4 * 1024 * 1024) as u32;
    for memory_kib in [fitted_kib, (fitted_kib / 2048 * 1024).max(8 * 1024)] {
        let params = PasswordParams {
            memory_kib,
            iterations: 2,
            parallelism: 1,
        };
        if !rows.iter().any(|row| row.params() == params) {
            rows.push(row(params, "fitted", runs)?);
        }
    }
    let target_ms = target.as_secs_f64() * 1000.0;
    let recommended = rows
        .iter()
        .filter(|row| row.millis <= target_ms)
        .max_by(|a, b| a.millis.total_cmp(&b.millis))
        .or_else(|| rows.iter().min_by(|a, b| a.millis.total_cmp(&b.millis)))
        .cloned();
    Ok((rows, recommended))
}

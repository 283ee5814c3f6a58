//! The token parser takes any string without panicking, and accepts only the one shape.
#![no_main]
use libfuzzer_sys::fuzz_target;
use st_peter_server::token::{CHALLENGE_PREFIX, SESSION_PREFIX, hash, is_well_formed};

fuzz_target!(|data: &[u8]| {
    let Ok(candidate) = std::str::from_utf8(data) else {
        return;
    };
    for prefix in [SESSION_PREFIX, CHALLENGE_PREFIX] {
        if is_well_formed(prefix, candidate) {
            assert!(candidate.starts_with(prefix));
            assert_eq!(candidate.len(), prefix.len() + 43);
            assert!(candidate.is_ascii());
        }
    }
    let _ = hash(candidate);
    let _ = st_peter_server::sessions::check_token_size("token", candidate);
});

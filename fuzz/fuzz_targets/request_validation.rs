//! Any bytes decoded as any request, then every field validated as the server does: no
//! panic, and every refusal names the field it refuses.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| st_peter_server::fuzzing::request_validation(data));

//! The token parser takes any string without panicking, and accepts only the one shape.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| st_peter_server::fuzzing::token_parser(data));

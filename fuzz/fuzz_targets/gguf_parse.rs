//! cargo-fuzz target; the body lives in fuzz/src/lib.rs, shared with the deterministic fuzz
//! loop that CI runs on stable Rust (tests/fuzz_loop.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| npuhybrid_fuzz::gguf_parse(data));

//! libFuzzer entry for fuzz/targets/modelpack.rs.
#![no_main]

#[path = "../targets/modelpack.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::run(data));

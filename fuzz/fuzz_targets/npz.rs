//! libFuzzer entry for fuzz/targets/npz.rs.
#![no_main]

#[path = "../targets/npz.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::run(data));

//! libFuzzer entry for fuzz/targets/oip_request.rs.
#![no_main]

#[path = "../targets/oip_request.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::run(data));

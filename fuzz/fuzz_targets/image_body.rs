//! libFuzzer entry for fuzz/targets/image_body.rs.
#![no_main]

#[path = "../targets/image_body.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::run(data));

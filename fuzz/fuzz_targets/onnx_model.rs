//! libFuzzer entry for fuzz/targets/onnx_model.rs.
#![no_main]

#[path = "../targets/onnx_model.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::run(data));

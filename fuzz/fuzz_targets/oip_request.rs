//! OIP v2 inference requests, JSON and binary (`Inference-Header-Content-Length`): the first two
//! bytes choose the header length (0xffff: none), the rest is the body.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let n = u16::from_le_bytes([data[0], data[1]]);
    let header = (n != u16::MAX).then_some(n as usize);
    let body = &data[2..];
    if let Ok(r) =
        edgefleet_sidecar::request::parse_request(body, header, "input", &[1, 28, 28], 64)
    {
        // What passes is exactly what the model takes.
        assert!(r.batch >= 1 && r.batch <= 64);
        assert_eq!(r.data.len(), r.batch * 784);
    }
});

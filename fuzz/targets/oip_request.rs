//! OIP v2 inference requests, JSON and binary (`Inference-Header-Content-Length`): the first two
//! bytes choose the header length (0xffff: none), the rest is the body.
//!
//! One function, run by the libFuzzer binary of the same name (fuzz/fuzz_targets, `make fuzz`)
//! and by the corpus replay in `make test` (sidecar/tests/fuzz_corpus.rs).

pub fn run(data: &[u8]) {
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
}

//! `.npz` datasets (zip of `.npy`): archive, headers, shapes and the array size limit (1 MiB
//! here, so the limit itself is exercised).
//!
//! One function, run by the libFuzzer binary of the same name (fuzz/fuzz_targets, `make fuzz`)
//! and by the corpus replay in `make test` (sidecar/tests/fuzz_corpus.rs).

pub fn run(data: &[u8]) {
    let path = std::path::Path::new("fuzz.npz");
    if let Ok(d) =
        edgefleet_optimizer::dataset::Dataset::from_npz(std::io::Cursor::new(data), path, 1 << 20)
    {
        assert!(!d.is_empty());
        let _ = d.sample(d.len() - 1);
    }
    let _ = edgefleet_optimizer::npy::parse(data);
}

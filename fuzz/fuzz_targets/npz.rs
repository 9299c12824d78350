//! `.npz` datasets (zip of `.npy`): archive, headers, shapes and the array size limit (1 MiB
//! here, so the limit itself is exercised).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("fuzz.npz");
    if let Ok(d) =
        edgefleet_optimizer::dataset::Dataset::from_npz(std::io::Cursor::new(data), path, 1 << 20)
    {
        assert!(!d.is_empty());
        let _ = d.sample(d.len() - 1);
    }
    let _ = edgefleet_optimizer::npy::parse(data);
});

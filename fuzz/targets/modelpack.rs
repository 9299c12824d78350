//! What a registry hands a reader: a ModelPack manifest, its config, the self-test layer and a
//! zstd layer. The first byte splits the input into a manifest and a config.
//!
//! One function, run by the libFuzzer binary of the same name (fuzz/fuzz_targets, `make fuzz`)
//! and by the corpus replay in `make test` (sidecar/tests/fuzz_corpus.rs).

use edgefleet_artifact::limits::{Expected, decompress};
use edgefleet_artifact::{Digest, SelfTest, manifest};

pub fn run(data: &[u8]) {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let cut = (split as usize * rest.len()) / 255;
    let (m, c) = rest.split_at(cut.min(rest.len()));
    if let Ok(mut artifact) = manifest::unpack("fuzz", Digest::of(m), m) {
        let _ = manifest::apply_config(&mut artifact, "fuzz", c);
        let _ = edgefleet_artifact::limits::model_bytes(&artifact.manifest, 1 << 20);
    }
    let _ = SelfTest::from_json(data);
    if let Ok(raw) = decompress("fuzz", data, Expected::AtMost(1 << 20)) {
        assert!(raw.len() <= 1 << 20);
    }
    if let Ok(raw) = decompress("fuzz", data, Expected::Exactly(64)) {
        assert_eq!(raw.len(), 64);
    }
}

//! Helpers shared by the optimizer's integration tests: the repository root, the project's own
//! scripts for datasets and ONNX Runtime, and the committed fixture.
#![allow(dead_code)]

use edgefleet_optimizer::dataset::Dataset;
use edgefleet_optimizer::model::Model;
use std::path::{Path, PathBuf};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// Runs `hack/<script>` and returns what it printed on stdout, trimmed.
pub fn hack(script: &str) -> String {
    edgefleet_testenv::hack(script, &[])
}

/// The real Fashion-MNIST test set (10k), built from Debian's package on first use.
pub fn test_set_path() -> PathBuf {
    PathBuf::from(hack("datasets.sh")).join("fashion-mnist-test.npz")
}

pub fn test_set() -> Dataset {
    Dataset::load(&test_set_path()).unwrap()
}

pub fn ort_lib() -> PathBuf {
    PathBuf::from(hack("ort-lib.sh"))
}

pub fn python() -> String {
    hack("python-env.sh")
}

pub fn fixture_path() -> PathBuf {
    root().join("optimizer/fixtures/fashion-cnn/model.onnx")
}

/// The committed fixture and its meta.json.
pub fn fixture() -> (Model, serde_json::Value) {
    let dir = root().join("optimizer/fixtures/fashion-cnn");
    let meta =
        serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    (Model::load(&fixture_path()).unwrap(), meta)
}

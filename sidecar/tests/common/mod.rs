//! What the sidecar's test binaries share: the fixture, its inputs, and publishing it as an
//! artifact with a self-test.

#![allow(dead_code)] // each test binary uses its own part

use edgefleet_artifact::manifest::{Compression, Contents};
use edgefleet_artifact::{Facts, Registry, RegistryOptions, SelfTest, pack};
use edgefleet_testenv::repo_root;
use std::path::PathBuf;

pub fn fixture() -> PathBuf {
    repo_root().join("optimizer/fixtures/fashion-cnn/model.onnx")
}

/// Deterministic inputs for the 1x28x28 fixture.
pub fn inputs(batch: usize, seed: u32) -> Vec<f32> {
    edgefleet_testenv::net::floats(batch * 784, seed)
}

/// Pushes `model` to `registry`/models/fashion[:tag] with a self-test whose expected top-1s are
/// `tops` (right or wrong); returns the reference pinned by digest.
pub async fn publish(
    registry: &str,
    model: &[u8],
    xs: &[Vec<f32>],
    tops: &[usize],
    tag: Option<&str>,
) -> String {
    let samples: Vec<(Vec<f32>, usize)> = xs.iter().cloned().zip(tops.iter().copied()).collect();
    let test = SelfTest::new(vec![1, 1, 28, 28], &samples).to_json();
    let facts = Facts {
        device_class: "cpu-int8".into(),
        runtime: "tract".into(),
        technique: "fp32".into(),
        accuracy: 0.89,
        ..Default::default()
    };
    let packed = pack(
        &Contents {
            model,
            report: Some(b"{}"),
            selftest: Some(&test),
            ..Default::default()
        },
        &facts,
        Compression::Auto,
    )
    .unwrap();
    let client = Registry::new(RegistryOptions {
        plain_http: vec![registry.to_string()],
        ..Default::default()
    })
    .unwrap();
    let target = match tag {
        Some(t) => format!("{registry}/models/fashion:{t}"),
        None => format!("{registry}/models/fashion"),
    };
    client.push(&target, &packed).await.unwrap().reference
}

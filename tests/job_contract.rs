//! One contract between the operator and its optimization Jobs: the request the operator
//! writes for an EdgeModel's device class and the one `edgefleet-optimizer optimize` builds from
//! the same inputs given as flags have the same inputs digest, so an artifact optimized by hand
//! is the one the operator's reuse tag finds. No cluster needed.

mod support;

use edgefleet_api::{DeviceClass, EdgeModel};
use edgefleet_artifact::Digest;
use edgefleet_operator::pipeline;
use std::process::Command;

fn example<T: serde::de::DeserializeOwned>(file: &str, name: &str) -> T {
    let text = std::fs::read_to_string(edgefleet_testenv::repo_root().join(file)).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde_yaml_ng::Value::deserialize(d).unwrap())
        .find(|v| v["metadata"]["name"] == name)
        .map(|v| serde_yaml_ng::from_value(v).unwrap())
        .unwrap_or_else(|| panic!("{name} in {file}"))
}

use serde::Deserialize as _;

/// `edgefleet-optimizer optimize --print-request` with these flags: the request's inputs digest.
fn digest_of_flags(flags: &[&str]) -> String {
    let out = Command::new(support::binary("edgefleet-optimizer"))
        .arg("optimize")
        .args(flags)
        .arg("--print-request")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["inputsDigest"].as_str().unwrap().to_string()
}

#[test]
fn a_request_from_flags_and_the_operators_for_the_same_inputs_have_one_inputs_digest() {
    let model: EdgeModel = example("examples/fashion-mnist.yaml", "fashion-mnist");
    let class: DeviceClass = example("examples/deviceclasses.yaml", "cpu-int8");
    let (base_digest, data_digest) = (Digest::of(b"base model"), Digest::of(b"dataset"));
    let base = pipeline::pin_resolved(model.spec.source.oci.as_deref().unwrap(), base_digest);
    let data = pipeline::pin_resolved(
        model.spec.accuracy.dataset.source.oci.as_deref().unwrap(),
        data_digest,
    );
    let request = pipeline::request(&model, "cpu-int8", &class.spec, &base, &data);
    let operator = request.inputs_digest();

    let dir = tempfile::tempdir().unwrap();
    let class_file = dir.path().join("cpu-int8.yaml");
    std::fs::write(&class_file, serde_yaml_ng::to_string(&class).unwrap()).unwrap();
    let model_flag = base.location.clone();
    let data_flag = data.location.clone();
    let flags = |floor: &'static str| {
        vec![
            "--model".to_string(),
            model_flag.clone(),
            "--dataset".into(),
            data_flag.clone(),
            "--device-class".into(),
            class_file.display().to_string(),
            "--floor".into(),
            floor.into(),
            "--max-drop".into(),
            "0.01".into(),
            "--objective".into(),
            "smallest".into(),
            "--calibration-samples".into(),
            "200".into(),
            "--time-budget".into(),
            "20m".into(),
            "--color".into(),
            "grayscale".into(),
            "--mean".into(),
            "0.286".into(),
            "--std".into(),
            "0.353".into(),
            "--layout".into(),
            "nchw".into(),
        ]
    };
    let by_hand = digest_of_flags(&flags("0.85").iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(
        by_hand, operator,
        "the operator and a hand run disagree on the inputs"
    );
    // And it is a digest of the inputs: another floor is another result.
    let other = digest_of_flags(&flags("0.86").iter().map(String::as_str).collect::<Vec<_>>());
    assert_ne!(other, operator);
    // The operator's reuse tag is made from it.
    assert_eq!(
        pipeline::artifact_tag("cpu-int8", &pipeline::inputs_digest(&request)),
        format!(
            "cpu-int8-{}",
            &operator["sha256:".len().."sha256:".len() + 16]
        )
    );
}

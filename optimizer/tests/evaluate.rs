//! The evaluator on real data: the committed Fashion-MNIST CNN on the real 10k test set (built
//! from Debian's dataset-fashion-mnist by hack/datasets.sh), with tract, must reproduce the
//! accuracy ONNX Runtime measured when the fixture was exported; bad inputs fail clearly.

use edgefleet_optimizer::dataset::{Dataset, split};
use edgefleet_optimizer::eval::{self, Plan, tract::Tract};
use edgefleet_optimizer::model::Model;
use std::process::Command;

mod support;
use support::{fixture, fixture_path, ort_lib, python, test_set, test_set_path};

#[test]
fn tract_reproduces_onnxruntime_accuracy_on_the_real_test_set() {
    let data = test_set();
    assert_eq!(data.len(), 10_000);
    assert_eq!(data.sample_shape, [1, 28, 28]);
    assert_eq!(data.num_classes(), Some(10));
    let (model, meta) = fixture();
    let indices = split(data.len(), 0, 0).evaluation;
    let plan = Plan {
        indices: &indices,
        batch: 100,
        latency_runs: 20,
        reference: None,
    };
    let result = eval::evaluate(&Tract, &model, &data, &plan).unwrap();
    let expected = meta["test_accuracy_onnxruntime"].as_f64().unwrap();
    assert_eq!(result.samples, 10_000);
    // Two runtimes, same float32 model: at most a handful of near-tie samples may flip.
    assert!(
        (result.accuracy - expected).abs() <= 0.0005,
        "tract {} vs onnxruntime {expected}",
        result.accuracy
    );
    assert!(
        result.accuracy > 0.85,
        "the fixture should be a real classifier, got {}",
        result.accuracy
    );
    assert!(result.latency_ms_p50 > 0.0 && result.latency_ms_p99 >= result.latency_ms_p50);
}

#[test]
fn a_dataset_that_does_not_fit_the_model_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rgb.npz");
    // 3-channel samples for a 1-channel model.
    let status = Command::new(python())
        .args(["-c", "import numpy as np, sys; np.savez(sys.argv[1], x=np.zeros((4,3,28,28), np.float32), y=np.zeros(4, np.int64))"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    let data = Dataset::load(&path).unwrap();
    let (model, _) = fixture();
    let plan = Plan {
        indices: &[0, 1, 2, 3],
        batch: 2,
        latency_runs: 1,
        reference: None,
    };
    let err = eval::evaluate(&Tract, &model, &data, &plan)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("does not fit dataset") && err.contains("expects 1 on axis 1"),
        "{err}"
    );
}

#[test]
fn the_cli_names_the_file_that_is_not_onnx() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("model.onnx");
    std::fs::write(&bogus, "this is not a model").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_edgefleet-optimizer"))
        .args(["evaluate", "--model"])
        .arg(&bogus)
        .args(["--dataset", "unused.npz"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}: not an ONNX model", bogus.display())),
        "{stderr}"
    );
}

#[test]
fn onnxruntime_through_ort_reproduces_the_python_measurement() {
    let data = test_set_path();
    let model = fixture_path();
    let (_, meta) = fixture();
    let out = Command::new(env!("CARGO_BIN_EXE_edgefleet-optimizer"))
        .args([
            "evaluate",
            "--runtime",
            "onnxruntime",
            "--json",
            "--latency-runs",
            "20",
            "--model",
        ])
        .arg(&model)
        .arg("--dataset")
        .arg(&data)
        .env("ORT_DYLIB_PATH", ort_lib())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["runtime"], "onnxruntime");
    assert_eq!(result["samples"], 10_000);
    let expected = meta["test_accuracy_onnxruntime"].as_f64().unwrap();
    let got = result["accuracy"].as_f64().unwrap();
    assert!(
        (got - expected).abs() <= 0.0002,
        "ort from Rust {got} vs ort from Python {expected}"
    );
}

#[test]
fn a_missing_onnxruntime_library_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_edgefleet-optimizer"))
        .args(["evaluate", "--runtime", "onnxruntime", "--model"])
        .arg(fixture_path())
        .arg("--dataset")
        .arg(test_set_path())
        .env_remove("ORT_DYLIB_PATH")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("set ORT_DYLIB_PATH"), "{stderr}");
}

/// Other tools (ONNX Runtime's quantizer among them) annotate intermediate values with a symbolic
/// batch; evaluating at a fixed batch size must not trip over those hints.
#[test]
fn symbolic_value_info_does_not_block_a_fixed_batch() {
    use edgefleet_optimizer::model::pb;
    use pb::tensor_shape_proto::{Dimension, dimension::Value};
    let (mut model, _) = fixture();
    let dim = |v: Value| Dimension {
        value: Some(v),
        ..Default::default()
    };
    let hint = pb::ValueInfoProto {
        name: "l0.conv".into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: 1,
                shape: Some(pb::TensorShapeProto {
                    dim: vec![
                        dim(Value::DimParam("N".into())),
                        dim(Value::DimValue(32)),
                        dim(Value::DimValue(28)),
                        dim(Value::DimValue(28)),
                    ],
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    model.proto.graph.as_mut().unwrap().value_info.push(hint);
    let model = Model::from_bytes(
        &model.path,
        edgefleet_optimizer::model::encode(&model.proto),
    )
    .unwrap();
    let data = test_set();
    let indices: Vec<usize> = (0..100).collect();
    let plan = Plan {
        indices: &indices,
        batch: 50,
        latency_runs: 1,
        reference: None,
    };
    let result = eval::evaluate(&Tract, &model, &data, &plan).unwrap();
    assert_eq!(result.samples, 100);
}

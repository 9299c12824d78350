//! The CRD schema's CEL rules, evaluated client-side with kube's CEL engine (the same rules the
//! API server runs; `tests/admission.rs` at the workspace root checks them against a real one).

use edgefleet_api::{DeviceClass, EdgeModel};
use kube::CustomResourceExt;
use kube::core::cel::Validator;
use serde_json::{Value, json};

fn schema<K: CustomResourceExt>() -> Value {
    let crd = K::crd();
    serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap()
}

fn model(spec_patch: Value) -> Value {
    let mut obj = json!({
        "apiVersion": "edgefleet.dev/v1alpha1", "kind": "EdgeModel",
        "metadata": {"name": "m", "namespace": "default"},
        "spec": {
            "source": {"oci": "localhost:5000/base/cnn:v1"},
            "deviceClasses": ["cpu-int8"],
            "accuracy": {"floor": 0.85, "dataset": {"source": {"oci": "localhost:5000/data/fmnist:v1"}}},
            "publish": {"repository": "localhost:5000/models/cnn"},
        }
    });
    merge(&mut obj["spec"], spec_patch);
    obj
}

fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(&k);
                } else {
                    merge(t.entry(k).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p,
    }
}

/// Messages of the rules the object breaks.
fn violations<K: CustomResourceExt>(obj: &Value, old: Option<&Value>) -> Vec<String> {
    match Validator::new().validate(&schema::<K>(), obj, old) {
        Ok(()) => vec![],
        Err(errors) => errors
            .into_iter()
            .map(|e| format!("{}: {}", e.field_path, e.message))
            .collect(),
    }
}

#[test]
fn a_complete_valid_model_passes() {
    let obj = model(json!({
        "accuracy": {"maxDrop": 0.01, "preprocessing": {"colorMode": "grayscale", "mean": [0.28], "std": [0.35]}},
        "optimization": {"timeBudget": "1h30m"},
        "rollout": {
            "steps": [{"percent": 10, "manualGate": true}, {"percent": 50, "pause": "30s"}, {"percent": 100}],
            "maxUnavailable": "25%", "failureThreshold": 0.2,
            "health": {"maxErrorRate": 0.01, "maxLatencyP99Ms": 20, "heartbeatTimeout": "45s"},
        },
    }));
    assert_eq!(violations::<EdgeModel>(&obj, None), Vec::<String>::new());
}

#[test]
fn each_rule_refuses_what_it_should() {
    let cases = [
        (
            json!({"source": {"url": "https://h.example.com/m.onnx", "sha256": "a".repeat(64)}}),
            "exactly one of oci or url must be set",
        ),
        (
            json!({"source": {"oci": null, "url": "https://h.example.com/m.onnx"}}),
            "url needs sha256",
        ),
        (
            json!({"source": {"oci": null, "url": "http://h.example.com/m.onnx", "sha256": "a".repeat(64)}}),
            "must be an https:// URL",
        ),
        (
            json!({"source": {"oci": null, "url": "https://h.example.com/m.onnx", "sha256": "ABC"}}),
            "must be 64 lowercase hex characters",
        ),
        (
            json!({"accuracy": {"floor": 0.0}}),
            "floor must be in (0, 1]",
        ),
        (
            json!({"accuracy": {"floor": 1.01}}),
            "floor must be in (0, 1]",
        ),
        (
            json!({"accuracy": {"maxDrop": 1.0}}),
            "maxDrop must be in [0, 1)",
        ),
        (
            json!({"accuracy": {"floor": null}}),
            "set floor, maxDrop or both",
        ),
        (
            json!({"deviceClasses": []}),
            "at least one device class is required",
        ),
        (
            json!({"rollout": {"steps": [{"percent": 60}, {"percent": 30}, {"percent": 100}]}}),
            "step percents must be strictly increasing",
        ),
        (
            json!({"rollout": {"steps": [{"percent": 30}, {"percent": 30}, {"percent": 100}]}}),
            "step percents must be strictly increasing",
        ),
        (
            json!({"rollout": {"steps": [{"percent": 30}, {"percent": 90}]}}),
            "the last step must reach 100 percent",
        ),
        (
            json!({"rollout": {"steps": [{"percent": 100, "pause": "10 min"}]}}),
            "must be a duration",
        ),
        (
            json!({"rollout": {"steps": [{"percent": 100, "pause": "1m", "manualGate": true}]}}),
            "not both",
        ),
        (
            json!({"rollout": {"maxUnavailable": "101%"}}),
            "maxUnavailable must be",
        ),
        (
            json!({"optimization": {"timeBudget": "3d"}}),
            "must be a duration",
        ),
        (
            json!({"publish": {"repository": "localhost:5000/models/cnn:latest"}}),
            "must be an OCI repository",
        ),
        (
            json!({"publish": {"repository": "cnn"}}),
            "must be an OCI repository",
        ),
    ];
    for (patch, expected) in cases {
        let obj = model(patch.clone());
        let found = violations::<EdgeModel>(&obj, None);
        assert!(
            found.iter().any(|v| v.contains(expected)),
            "patch {patch} should break {expected:?}, got {found:?}"
        );
    }
}

#[test]
fn publish_repository_is_immutable_but_the_source_is_not() {
    let old = model(json!({}));
    let moved = model(json!({"publish": {"repository": "localhost:5000/elsewhere/cnn"}}));
    let found = violations::<EdgeModel>(&moved, Some(&old));
    assert!(
        found
            .iter()
            .any(|v| v.contains("spec.publish.repository") && v.contains("is immutable")),
        "{found:?}"
    );
    let new_source = model(json!({"source": {"oci": "localhost:5000/base/cnn:v2"}}));
    assert_eq!(
        violations::<EdgeModel>(&new_source, Some(&old)),
        Vec::<String>::new()
    );
}

#[test]
fn device_class_rules() {
    let class = |spec: Value| json!({"apiVersion": "edgefleet.dev/v1alpha1", "kind": "DeviceClass", "metadata": {"name": "c"}, "spec": spec});
    let ok = class(
        json!({"arch": ["arm64"], "runtime": "onnxruntime", "executionProvider": "cuda", "precisions": ["fp16", "fp32"], "integerOnly": false}),
    );
    assert_eq!(violations::<DeviceClass>(&ok, None), Vec::<String>::new());
    let npu_fp16 = class(
        json!({"arch": ["arm64"], "runtime": "tract", "executionProvider": "npu", "precisions": ["int8", "fp16"], "integerOnly": true}),
    );
    assert!(
        violations::<DeviceClass>(&npu_fp16, None)
            .iter()
            .any(|v| v.contains("integerOnly"))
    );
    let cuda_tract = class(
        json!({"arch": ["arm64"], "runtime": "tract", "executionProvider": "cuda", "precisions": ["fp16"], "integerOnly": false}),
    );
    assert!(
        violations::<DeviceClass>(&cuda_tract, None)
            .iter()
            .any(|v| v.contains("need runtime onnxruntime"))
    );
}

//! `DeviceClass` (cluster-scoped): a kind of edge hardware, how to find its nodes, and what the
//! optimizer may produce for it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "edgefleet.dev",
    version = "v1alpha1",
    kind = "DeviceClass",
    plural = "deviceclasses",
    singular = "deviceclass",
    shortname = "dc",
    category = "edgefleet",
    status = "DeviceClassStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Runtime","type":"string","jsonPath":".spec.runtime"}"#,
    printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".spec.executionProvider"}"#,
    printcolumn = r#"{"name":"Precisions","type":"string","jsonPath":".spec.precisions"}"#,
    printcolumn = r#"{"name":"Integer Only","type":"boolean","jsonPath":".spec.integerOnly"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!self.integerOnly || self.precisions.all(p, p == 'int8')").message("an integerOnly device class can only list the int8 precision").field_path(".precisions"))]
#[x_kube(validation = Rule::new("!(self.executionProvider in ['cuda', 'tensorrt']) || self.runtime == 'onnxruntime'").message("the cuda and tensorrt execution providers need runtime onnxruntime").field_path(".runtime"))]
#[x_kube(validation = Rule::new("!(self.executionProvider in ['cuda', 'tensorrt']) || 'fp16' in self.precisions || 'fp32' in self.precisions").message("a GPU execution provider needs fp16 or fp32 among the precisions").field_path(".precisions"))]
pub struct DeviceClassSpec {
    /// Labels that select the nodes of this class.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    /// CPU architectures of the nodes.
    #[schemars(length(min = 1, max = 4))]
    pub arch: Vec<Arch>,
    /// Inference runtime the sidecar uses; the optimizer gates accuracy with the same one.
    #[serde(default)]
    pub runtime: Runtime,
    #[serde(default)]
    pub execution_provider: ExecutionProvider,
    /// Numeric precisions the hardware executes well.
    #[schemars(length(min = 1, max = 4))]
    #[x_kube(validation = Rule::new("self.all(p, self.exists_one(q, q == p))").message("precisions must not repeat"))]
    pub precisions: Vec<Precision>,
    /// The hardware runs integer arithmetic only (typical NPUs): inputs, outputs and every
    /// operator must be int8.
    #[serde(default)]
    pub integer_only: bool,
    /// Memory the model may use on the device, in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub memory_budget_mib: Option<u32>,
    /// Target p50 latency of one inference, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0.0").message("latencyBudgetMs must be positive"))]
    pub latency_budget_ms: Option<f64>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Copy)]
#[serde(rename_all = "camelCase")]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    /// As Kubernetes spells it in the `kubernetes.io/arch` node label and OCI platforms.
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// The architecture of Rust's `std::env::consts::ARCH` spelling, if a device class can
    /// name it.
    pub fn of_rust(arch: &str) -> Option<Arch> {
        match arch {
            "x86_64" => Some(Arch::Amd64),
            "aarch64" => Some(Arch::Arm64),
            _ => None,
        }
    }
}

#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Copy)]
#[serde(rename_all = "camelCase")]
pub enum Runtime {
    #[default]
    Tract,
    Onnxruntime,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Tract => "tract",
            Runtime::Onnxruntime => "onnxruntime",
        }
    }
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Copy)]
#[serde(rename_all = "camelCase")]
pub enum ExecutionProvider {
    #[default]
    Cpu,
    Cuda,
    Tensorrt,
    Npu,
}

impl ExecutionProvider {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionProvider::Cpu => "cpu",
            ExecutionProvider::Cuda => "cuda",
            ExecutionProvider::Tensorrt => "tensorrt",
            ExecutionProvider::Npu => "npu",
        }
    }

    /// The providers this build's sidecar runs a model on: tract is a CPU runtime and the
    /// ONNX Runtime it loads is the CPU build (the `onnxruntime` wheel), so the CPU only.
    pub const HONOURED: [ExecutionProvider; 1] = [ExecutionProvider::Cpu];
}

impl DeviceClassSpec {
    /// Why this class cannot be served as it asks, naming the field: a class whose provider
    /// the sidecar cannot use is refused rather than run on the CPU in its place.
    pub fn provider_refusal(&self) -> Option<String> {
        let provider = self.execution_provider;
        (!ExecutionProvider::HONOURED.contains(&provider)).then(|| {
            format!(
                "spec.executionProvider: {} is not available: the sidecar runs {} on {} only, and a class is never run on the CPU in place of its provider",
                provider.as_str(),
                self.runtime.as_str(),
                ExecutionProvider::HONOURED
                    .iter()
                    .map(|p| p.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    }
}

#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Copy, PartialOrd, Ord, Hash,
)]
#[serde(rename_all = "camelCase")]
pub enum Precision {
    Fp32,
    Fp16,
    Int8,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceClassStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    #[schemars(schema_with = "crate::edgemodel::conditions_schema")]
    pub conditions: Vec<Condition>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(runtime: Runtime, provider: ExecutionProvider) -> DeviceClassSpec {
        DeviceClassSpec {
            node_selector: BTreeMap::new(),
            arch: vec![Arch::Arm64],
            runtime,
            execution_provider: provider,
            precisions: vec![Precision::Fp16],
            integer_only: false,
            memory_budget_mib: None,
            latency_budget_ms: None,
        }
    }

    #[test]
    fn only_the_cpu_provider_is_served_and_a_refusal_names_the_field() {
        assert_eq!(
            class(Runtime::Tract, ExecutionProvider::Cpu).provider_refusal(),
            None
        );
        assert_eq!(
            class(Runtime::Onnxruntime, ExecutionProvider::Cpu).provider_refusal(),
            None
        );
        for provider in [
            ExecutionProvider::Cuda,
            ExecutionProvider::Tensorrt,
            ExecutionProvider::Npu,
        ] {
            let why = class(Runtime::Onnxruntime, provider)
                .provider_refusal()
                .unwrap();
            assert!(
                why.starts_with(&format!("spec.executionProvider: {}", provider.as_str())),
                "{why}"
            );
            assert!(why.contains("onnxruntime on cpu only"), "{why}");
        }
    }
}

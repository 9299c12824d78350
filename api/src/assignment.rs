//! `ModelAssignment`: the per-pod twin. The operator writes `spec.desired` (which artifact this
//! pod should serve); the pod's sidecar writes `status` (what it serves, how healthy it is, and a
//! heartbeat). One small object per serving pod, watched by exactly one sidecar, so that 10,000
//! pods cost 10,000 tiny watches instead of one huge object.

use crate::reference::cel_quoted;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `sha256:` followed by 64 lowercase hex characters.
pub const DIGEST_PATTERN: &str = "^sha256:[a-f0-9]{64}$";

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "edgefleet.dev",
    version = "v1alpha1",
    kind = "ModelAssignment",
    plural = "modelassignments",
    singular = "modelassignment",
    shortname = "ma",
    category = "edgefleet",
    namespaced,
    status = "ModelAssignmentStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Pod","type":"string","jsonPath":".spec.pod.name"}"#,
    printcolumn = r#"{"name":"Model","type":"string","jsonPath":".spec.model"}"#,
    printcolumn = r#"{"name":"Revision","type":"integer","jsonPath":".spec.desired.revision"}"#,
    printcolumn = r#"{"name":"Serving","type":"integer","jsonPath":".status.current.revision"}"#,
    printcolumn = r#"{"name":"Health","type":"string","jsonPath":".status.health"}"#,
    printcolumn = r#"{"name":"Heartbeat","type":"date","jsonPath":".status.lastHeartbeat"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ModelAssignmentSpec {
    /// The EdgeModel this pod serves.
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("is immutable"))]
    pub model: String,
    /// The DeviceClass of the pod's node.
    #[schemars(length(max = 253))]
    pub device_class: String,
    /// The pod this twin belongs to; fixed for the object's lifetime.
    #[x_kube(validation = Rule::new("self == oldSelf").message("is immutable: a ModelAssignment belongs to one pod"))]
    pub pod: PodRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// What the pod should serve; absent until the operator assigns an artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<DesiredArtifact>,
    /// How often the sidecar reports its status (a heartbeat even when nothing changed): set by
    /// the operator to a third of the EdgeModel's `heartbeatTimeout`, so a pod counts offline
    /// only after several missed reports. A sidecar follows a change without a restart; without
    /// it, it uses its `--heartbeat` flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(crate::duration::CEL_RULE).message(crate::duration::CEL_MESSAGE))]
    pub heartbeat_interval: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PodRef {
    #[schemars(length(max = 253))]
    pub name: String,
    #[schemars(length(max = 64))]
    pub uid: String,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DesiredArtifact {
    /// Manifest digest of the artifact.
    #[schemars(length(max = 71))]
    #[x_kube(validation = Rule::new(format!("self.matches({})", cel_quoted(DIGEST_PATTERN))).message("must be sha256:<64 lowercase hex>"))]
    pub digest: String,
    /// Repository to pull it from (the digest pins the content).
    #[schemars(length(max = 512))]
    pub repository: String,
    /// EdgeModel rollout revision this artifact belongs to.
    pub revision: i64,
    /// When set, the artifact must carry a cosign signature over its digest that verifies with
    /// this public key (PEM); the sidecar refuses it otherwise and keeps serving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub public_key: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelAssignmentStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<LoadedArtifact>,
    /// Digest served before the last swap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_test: Option<SelfTest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms_p50: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms_p99: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat: Option<Time>,
    /// Why the desired artifact is not served, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The architecture the sidecar binary runs as: the image its node pulled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<crate::deviceclass::Arch>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoadedArtifact {
    pub digest: String,
    pub revision: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_time_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loaded_at: Option<Time>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Copy)]
pub enum Health {
    Loading,
    Healthy,
    Degraded,
    Failed,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SelfTest {
    pub passed: bool,
    pub digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

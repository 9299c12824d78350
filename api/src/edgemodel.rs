//! `EdgeModel`: one base model, the device classes it must run on, the accuracy it must keep,
//! and how its optimized artifacts are published and rolled out.

use crate::duration;
use crate::reference::{REFERENCE_PATTERN, REPOSITORY_PATTERN, SHA256_PATTERN, cel_quoted};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "edgefleet.dev",
    version = "v1alpha1",
    kind = "EdgeModel",
    plural = "edgemodels",
    singular = "edgemodel",
    shortname = "em",
    category = "edgefleet",
    namespaced,
    status = "EdgeModelStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Device Classes","type":"string","priority":1,"jsonPath":".spec.deviceClasses"}"#,
    printcolumn = r#"{"name":"Revision","type":"integer","jsonPath":".status.revision"}"#,
    printcolumn = r#"{"name":"Rollout","type":"string","jsonPath":".status.rollout.state"}"#,
    printcolumn = r#"{"name":"Step","type":"string","jsonPath":".status.rollout.step"}"#,
    printcolumn = r#"{"name":"Pods","type":"integer","description":"serving pods","jsonPath":".status.rollout.total"}"#,
    printcolumn = r#"{"name":"Updated","type":"integer","jsonPath":".status.rollout.updated"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.rollout.ready"}"#,
    printcolumn = r#"{"name":"Failed","type":"integer","jsonPath":".status.rollout.failed"}"#,
    printcolumn = r#"{"name":"Offline","type":"integer","jsonPath":".status.rollout.offline"}"#,
    printcolumn = r#"{"name":"Waiting For","type":"string","priority":1,"jsonPath":".status.rollout.waitingFor"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct EdgeModelSpec {
    /// Where the base (fp32) ONNX model comes from.
    pub source: BlobSource,
    /// Names of the cluster-scoped DeviceClasses this model must run on.
    #[schemars(schema_with = "device_class_list")]
    #[x_kube(validation = Rule::new("size(self) > 0").message("at least one device class is required"))]
    pub device_classes: Vec<String>,
    /// The accuracy gate every optimized candidate must pass.
    pub accuracy: AccuracySpec,
    /// Which techniques the optimizer may use and what it optimizes for.
    #[serde(default)]
    pub optimization: OptimizationSpec,
    /// Where optimized artifacts are published.
    pub publish: PublishSpec,
    /// How a new artifact reaches the serving pods.
    #[serde(default)]
    pub rollout: RolloutSpec,
}

/// A file fetched by digest: an OCI artifact reference, or an HTTPS URL with its sha256.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.oci) != has(self.url)").message("exactly one of oci or url must be set"))]
#[x_kube(validation = Rule::new("!has(self.url) || has(self.sha256)").message("url needs sha256, the hex digest of the file it serves").field_path(".sha256"))]
pub struct BlobSource {
    /// OCI reference, e.g. `registry.example.com/models/resnet:v1` or `...@sha256:<digest>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    #[x_kube(validation = Rule::new(format!("self.matches({})", cel_quoted(REFERENCE_PATTERN))).message("must be an OCI reference such as registry.example.com/models/net:v1 or registry.example.com/models/net@sha256:<64 hex>"))]
    pub oci: Option<String>,
    /// HTTPS URL of the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.startsWith('https://') && size(self) > 8").message("must be an https:// URL"))]
    pub url: Option<String>,
    /// Lowercase hex sha256 of the file behind `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new(format!("self.matches({})", cel_quoted(SHA256_PATTERN))).message("must be 64 lowercase hex characters"))]
    pub sha256: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.floor) || has(self.maxDrop)").message("set floor, maxDrop or both"))]
pub struct AccuracySpec {
    /// What "accuracy" means: top-1 against labels, or top-1 agreement with the base model when
    /// the dataset has no labels.
    #[serde(default)]
    pub metric: AccuracyMetric,
    /// Lowest acceptable accuracy, absolute, in (0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0.0 && self <= 1.0").message("floor must be in (0, 1], e.g. 0.85 for 85% top-1"))]
    pub floor: Option<f64>,
    /// Largest acceptable drop below the base model's accuracy, in [0, 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0.0 && self < 1.0").message("maxDrop must be in [0, 1), e.g. 0.01 for one point"))]
    pub max_drop: Option<f64>,
    /// Validation (and calibration) data.
    pub dataset: DatasetSpec,
    /// How raw images become model input; also shipped in the artifact for the sidecar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocessing: Option<Preprocessing>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Copy)]
#[serde(rename_all = "camelCase")]
pub enum AccuracyMetric {
    #[default]
    Top1,
    Top1Agreement,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DatasetSpec {
    pub source: BlobSource,
    /// `npz` (arrays `x` float32 in model layout, optional `y` int64) or `imageFolder` (a tar of
    /// one directory per class).
    #[serde(default)]
    pub format: DatasetFormat,
}

#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Copy)]
#[serde(rename_all = "camelCase")]
pub enum DatasetFormat {
    #[default]
    Npz,
    ImageFolder,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("size(self.mean) == size(self.std)").message("mean and std need the same number of channels").field_path(".std"))]
#[x_kube(validation = Rule::new("size(self.mean) == 0 || size(self.mean) == (self.colorMode == 'rgb' ? 3 : 1)").message("mean and std need one value per channel: 1 for grayscale, 3 for rgb").field_path(".mean"))]
pub struct Preprocessing {
    #[serde(default)]
    pub color_mode: ColorMode,
    /// Resize the shorter side to this many pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 8192))]
    pub resize: Option<u32>,
    /// Center crop to a square of this many pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 8192))]
    pub center_crop: Option<u32>,
    /// Per-channel mean, applied after scaling pixels to [0, 1].
    #[serde(default)]
    #[schemars(length(max = 3))]
    pub mean: Vec<f64>,
    /// Per-channel standard deviation.
    #[serde(default)]
    #[schemars(length(max = 3))]
    pub std: Vec<f64>,
    #[serde(default)]
    pub layout: TensorLayout,
}

#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Copy)]
#[serde(rename_all = "camelCase")]
pub enum ColorMode {
    #[default]
    Rgb,
    Grayscale,
}

#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Copy)]
pub enum TensorLayout {
    #[default]
    #[serde(rename = "NCHW")]
    Nchw,
    #[serde(rename = "NHWC")]
    Nhwc,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OptimizationSpec {
    /// Techniques the optimizer may try; empty means every technique the device class supports.
    #[serde(default)]
    #[schemars(length(max = 8))]
    pub techniques: Vec<Technique>,
    #[serde(default)]
    pub objective: Objective,
    /// Samples taken from the dataset for int8 calibration (never evaluated on).
    #[serde(default = "default_calibration_samples")]
    #[schemars(range(min = 1, max = 10000))]
    pub calibration_samples: u32,
    /// Wall-clock budget of one optimization Job.
    #[serde(default = "default_time_budget")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(duration::CEL_RULE).message(duration::CEL_MESSAGE))]
    pub time_budget: String,
}

impl Default for OptimizationSpec {
    fn default() -> Self {
        Self {
            techniques: Vec::new(),
            objective: Objective::default(),
            calibration_samples: default_calibration_samples(),
            time_budget: default_time_budget(),
        }
    }
}

fn default_calibration_samples() -> u32 {
    200
}

fn default_time_budget() -> String {
    "30m".into()
}

#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Copy, PartialOrd, Ord, Hash,
)]
#[serde(rename_all = "camelCase")]
pub enum Technique {
    Float16,
    Int8Dynamic,
    Int8Static,
    FullInteger,
    Pruning,
    Clustering,
}

#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Copy)]
#[serde(rename_all = "camelCase")]
pub enum Objective {
    Smallest,
    Fastest,
    #[default]
    Balanced,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PublishSpec {
    /// OCI repository including its registry host, e.g. `registry.example.com/vision/models`.
    /// Immutable: revision history and rollbacks refer to artifacts in it.
    #[schemars(length(max = 255))]
    #[x_kube(
        validation = Rule::new(format!("self.matches({})", cel_quoted(REPOSITORY_PATTERN))).message("must be an OCI repository with its registry host and no tag, e.g. registry.example.com/vision/models"),
        validation = Rule::new("self == oldSelf").message("is immutable: create a new EdgeModel to publish to another repository")
    )]
    pub repository: String,
    /// Name of a `kubernetes.io/dockerconfigjson` Secret in the EdgeModel's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub credentials_secret: Option<String>,
    /// Talk plain HTTP to this registry. Only for registries on a trusted network.
    #[serde(default)]
    pub plain_http: bool,
    /// Name of a Secret in the EdgeModel's namespace holding the signing key pair:
    /// `cosign.key` (ECDSA P-256, unencrypted PKCS#8 PEM; mounted into the optimization Job
    /// only) and `cosign.pub` (its public key, PEM). With it, the Job signs what it publishes
    /// (cosign's key-based layout), the operator publishes or reuses only artifacts that verify
    /// with `cosign.pub`, and every sidecar verifies before it loads. Without it, the operator's
    /// `--signing-secret` (the chart's `signing.secretName`), when set, names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub signing_secret: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.maxUnavailable) || string(self.maxUnavailable).matches('^([0-9]+|(100|[1-9]?[0-9])%)$')").message("maxUnavailable must be a pod count >= 0 or a percentage from 0% to 100%").field_path(".maxUnavailable"))]
pub struct RolloutSpec {
    /// Pods that serve this model; default: pods labelled `edgefleet.dev/model=<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// Pods updated before any other (canaries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_selector: Option<LabelSelector>,
    /// Waves, as cumulative percentages of the pods; empty means one wave to 100%.
    #[serde(default)]
    #[schemars(length(max = 20))]
    #[x_kube(
        validation = Rule::new("size(self) == 0 || self[size(self) - 1].percent == 100").message("the last step must reach 100 percent"),
        validation = Rule::new("self.map(s, s.percent).isSorted() && self.all(s, self.exists_one(t, t.percent == s.percent))").message("step percents must be strictly increasing")
    )]
    pub steps: Vec<RolloutStep>,
    /// Pods that may be unavailable at once: a count or a percentage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    /// Fraction of updated pods whose health fails that aborts and rolls back the rollout.
    #[serde(default = "default_failure_threshold")]
    #[x_kube(validation = Rule::new("self > 0.0 && self <= 1.0").message("failureThreshold must be in (0, 1]"))]
    pub failure_threshold: f64,
    #[serde(default)]
    pub health: HealthLimits,
    /// A step that makes no progress for this long fails the rollout.
    #[serde(default = "default_progress_deadline")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(duration::CEL_RULE).message(duration::CEL_MESSAGE))]
    pub progress_deadline: String,
    /// Stop moving pods; what is running keeps running.
    #[serde(default)]
    pub paused: bool,
    /// Roll every device class back to its artifact of this revision (see `status.history`).
    /// The model stays there while this is set; remove it to roll forward to the latest
    /// published artifact again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("rollbackTo must be a revision from status.history (1 or more)"))]
    pub rollback_to: Option<i64>,
}

impl Default for RolloutSpec {
    fn default() -> Self {
        Self {
            selector: None,
            canary_selector: None,
            steps: Vec::new(),
            max_unavailable: None,
            failure_threshold: default_failure_threshold(),
            health: HealthLimits::default(),
            progress_deadline: default_progress_deadline(),
            paused: false,
            rollback_to: None,
        }
    }
}

fn default_failure_threshold() -> f64 {
    0.2
}

fn default_progress_deadline() -> String {
    "10m".into()
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.pause) && self.manualGate)").message("a step either pauses for a duration or waits at a manual gate, not both"))]
pub struct RolloutStep {
    /// Cumulative share of pods on the new artifact when this step completes.
    #[schemars(range(min = 1, max = 100))]
    pub percent: u32,
    /// Wait this long after the step is healthy before the next one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(duration::CEL_RULE).message(duration::CEL_MESSAGE))]
    pub pause: Option<String>,
    /// Wait here until a person resumes the rollout.
    #[serde(default)]
    pub manual_gate: bool,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HealthLimits {
    /// Highest acceptable share of failed inference requests on an updated pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0.0 && self <= 1.0").message("maxErrorRate must be in [0, 1]"))]
    pub max_error_rate: Option<f64>,
    /// Highest acceptable p99 inference latency on an updated pod, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0.0").message("maxLatencyP99Ms must be positive"))]
    pub max_latency_p99_ms: Option<f64>,
    /// A pod whose sidecar has not reported for this long counts as offline. Sidecars report
    /// every third of it (the operator tells each pod through its `ModelAssignment`), so a pod
    /// is offline only after three reports in a row went missing. At least 5s.
    #[serde(default = "default_heartbeat_timeout")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(duration::CEL_RULE).message(duration::CEL_MESSAGE))]
    #[x_kube(validation = Rule::new(format!("!self.matches({}) || duration(self) >= duration('{}s')", cel_quoted(duration::PATTERN), MIN_HEARTBEAT_TIMEOUT_SECONDS)).message("heartbeatTimeout must be at least 5s: sidecars report every third of it, and a shorter one counts a pod offline for one late report"))]
    pub heartbeat_timeout: String,
}

impl Default for HealthLimits {
    fn default() -> Self {
        Self {
            max_error_rate: None,
            max_latency_p99_ms: None,
            heartbeat_timeout: default_heartbeat_timeout(),
        }
    }
}

/// The shortest `heartbeatTimeout` admission accepts (the CEL rule's message says 5s too).
pub const MIN_HEARTBEAT_TIMEOUT_SECONDS: u32 = 5;

fn default_heartbeat_timeout() -> String {
    "60s".into()
}

fn device_class_list(_: &mut schemars::generate::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "maxItems": 16,
        "x-kubernetes-list-type": "set",
        "items": {
            "type": "string",
            "maxLength": 253,
            "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
        }
    })
}

/// Status. Two writers share it through server-side apply, each owning its own fields: the
/// pipeline (`observedGeneration`, `phase`, `deviceClasses`, its conditions) and the rollout
/// (`revision`, `rollout`, `rollouts`, `history`, the `RolledOut` condition).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EdgeModelStatus {
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// One word for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Per device class: what was optimized and published.
    #[serde(default)]
    pub device_classes: Vec<DeviceClassProgress>,
    /// Newest rollout revision (any device class).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// The fleet at a glance, over every device class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutSummary>,
    /// Per device class: where its rollout stands.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "rollouts_schema")]
    pub rollouts: Vec<ClassRollout>,
    /// Rolled-out revisions, oldest first, at most ten per device class; `rollbackTo` picks
    /// from here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<RevisionRecord>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceClassProgress {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<DeviceClassPhase>,
    /// What is happening or went wrong, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The optimization Job of the current inputs, when one ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Digest of everything that decides the result (model, dataset, device class, settings,
    /// optimizer version); identical inputs reuse the published artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<PublishedArtifact>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublishedArtifact {
    /// `sha256:<hex>` of the artifact manifest.
    pub digest: String,
    /// Full reference, pinned by digest.
    pub reference: String,
    pub technique: String,
    pub runtime: String,
    pub bytes: u64,
    pub bytes_compressed: u64,
    pub accuracy: f64,
    pub base_accuracy: f64,
    pub accuracy_drop: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms_p50: Option<f64>,
    /// Where the accuracy gate ran: `amd64`, `arm64`, or `arm64 (emulated)` (the artifact's
    /// `dev.edgefleet.gated-on`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub gated_on: Option<String>,
    /// The public key (PEM) its signature was verified with; sidecars verify with it before
    /// they load the artifact. Absent when the EdgeModel has no signing key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub public_key: Option<String>,
}

/// Pod counts summed over device classes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSummary {
    /// The least advanced state over the classes (Idle: nothing published yet).
    pub state: RolloutState,
    /// Step of the least advanced class, e.g. `2/3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    pub total: u32,
    pub updated: u32,
    pub ready: u32,
    pub failed: u32,
    pub offline: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClassRollout {
    pub device_class: String,
    /// Revision being rolled out (or rolled back from, when `state` is Aborted).
    pub revision: i64,
    /// The artifact of that revision.
    pub digest: String,
    /// The last artifact that rolled out completely; automatic rollbacks return here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_revision: Option<i64>,
    pub state: RolloutState,
    /// Step in progress, from 1.
    pub step: u32,
    pub steps: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<Time>,
    /// When the step's pods were all ready (its pause counts from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_done_at: Option<Time>,
    pub total: u32,
    pub updated: u32,
    pub ready: u32,
    pub failed: u32,
    pub offline: u32,
    /// What the rollout waits for, or why it stopped, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Pods of this class whose sidecar runs as an architecture the class does not name: they
    /// are on no node of the class, and the rollout leaves them alone (the first 10, by name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub misplaced: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionRecord {
    pub revision: i64,
    pub device_class: String,
    pub digest: String,
    /// When its rollout started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// Once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<RevisionOutcome>,
}

/// Defines a status vocabulary: an enum serialized as its variant names (the CRD schema lists
/// them), with `as_str` and `Display`.
macro_rules! vocabulary {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vdoc])* $variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => stringify!($variant)),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

vocabulary! {
    /// An EdgeModel's phase, one word for humans (`kubectl get edgemodels`).
    Phase { Pending, Optimizing, Publishing, Ready, Degraded, Stalled }
}

vocabulary! {
    /// Where one device class stands in the optimize → publish pipeline.
    DeviceClassPhase { Pending, Optimizing, Published, AccuracyFloorNotMet, BudgetNotMet, Failed }
}

vocabulary! {
    /// Where a device class's rollout stands (and, summed over classes, the model's).
    RolloutState {
        /// Pods are moving to the revision.
        Progressing,
        /// A step is done; its pause or manual gate holds the next.
        Waiting,
        /// Every pod serves the revision.
        Complete,
        /// A health gate failed: the updated pods go back to the stable revision.
        Aborted,
        /// `spec.rollout.paused`.
        Paused,
        /// No progress within `progressDeadline`.
        Stalled,
        /// Nothing published yet (the summary only).
        Idle,
    }
}

// (Not derived: `vocabulary!` declares the enum.)
#[allow(clippy::derivable_impls)]
impl Default for RolloutState {
    fn default() -> Self {
        RolloutState::Progressing
    }
}

vocabulary! {
    /// How a revision's rollout ended.
    RevisionOutcome { Complete, Aborted, Superseded }
}

fn rollouts_schema(generator: &mut schemars::generate::SchemaGenerator) -> schemars::Schema {
    let mut items = generator.subschema_for::<ClassRollout>();
    if let Some(o) = items.as_object_mut() {
        o.remove("nullable");
    }
    schemars::json_schema!({
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["deviceClass"],
        "items": items
    })
}

pub(crate) fn conditions_schema(_: &mut schemars::generate::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "type": "object",
            "required": ["type", "status", "lastTransitionTime", "reason", "message"],
            "properties": {
                "type": {"type": "string"},
                "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                "reason": {"type": "string"},
                "message": {"type": "string"},
                "observedGeneration": {"type": "integer", "format": "int64"},
                "lastTransitionTime": {"type": "string", "format": "date-time"}
            }
        }
    })
}

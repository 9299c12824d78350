//! The one contract between the operator and its optimization Jobs, both ways: the
//! [`OptimizationRequest`] the operator writes (the Job's `--request`, one JSON document) and
//! the [`OptimizationResult`] the optimizer writes back (its pod's termination message). A hand
//! run of `edgefleet-optimizer optimize` builds the same request from its flags, so the inputs
//! digest that identifies a result, computed here and nowhere else, is the same for the same
//! inputs whoever asked.

use crate::deviceclass::DeviceClassSpec;
use crate::edgemodel::{AccuracyMetric, DatasetFormat, OptimizationSpec, Preprocessing};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The optimizer's exit status when no candidate reaches the accuracy requirement: its Job
/// fails at once (the pod failure policy names this code), with no retries.
pub const EXIT_FLOOR_NOT_MET: u8 = 3;

/// The optimizer's exit status when candidates reached the accuracy requirement but each
/// exceeded a device-class budget (`memoryBudgetMib`, `latencyBudgetMs`): also final.
pub const EXIT_BUDGET_NOT_MET: u8 = 4;

/// The optimizer version, part of every inputs digest (the Jobs run the operator's own).
pub const OPTIMIZER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Everything one optimization needs: what it reads (pinned by content), what it must reach,
/// how it searches, and where the winner goes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OptimizationRequest {
    /// The base ONNX model.
    pub model: Source,
    /// The validation dataset.
    pub dataset: Source,
    #[serde(default)]
    pub dataset_format: DatasetFormat,
    pub device_class: NamedDeviceClass,
    pub accuracy: Requirement,
    /// How images become inputs (ImageFolder datasets; carried into the artifact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocessing: Option<Preprocessing>,
    pub optimization: OptimizationSpec,
    #[serde(default)]
    pub tuning: Tuning,
    /// Push the winner here; without it the result stays in the output directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<PublishTarget>,
}

/// An input and the digest that pins its content.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    /// `oci://registry/repository@sha256:…`, an `https://` URL, or (a hand run) a file path.
    pub location: String,
    /// `sha256:<hex>`: the manifest's digest for OCI, the file's for a URL or a file. A URL's
    /// download is checked against it.
    pub digest: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NamedDeviceClass {
    pub name: String,
    pub spec: DeviceClassSpec,
}

/// The accuracy a candidate must reach: `floor`, `maxDrop` below the base model, or both (the
/// higher bar wins).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Requirement {
    #[serde(default)]
    pub metric: AccuracyMetric,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_drop: Option<f64>,
}

/// How the search measures. The operator leaves the defaults; a hand run may change them, and
/// they count in the inputs digest (they can change the winner).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct Tuning {
    /// Evaluation samples used to rank layers in the accuracy-aware search.
    pub search_samples: u32,
    /// Single-sample runs timed per candidate.
    pub latency_runs: u32,
    /// Evaluation samples shipped in the artifact for the device's self-test.
    pub selftest_samples: u32,
    /// Intra-op threads (ONNX Runtime).
    pub threads: u32,
    /// Evaluation samples the gate uses when it runs under an emulator of the class's
    /// architecture (qemu-user: an arm64 class gated on an amd64 machine), where every sample
    /// costs many times its native time. An evenly spread subset; the report says how many of
    /// how many it used, and why. Natively the gate uses every evaluation sample.
    pub emulated_evaluation_samples: u32,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            search_samples: 1000,
            latency_runs: 200,
            selftest_samples: 8,
            threads: 1,
            emulated_evaluation_samples: 500,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PublishTarget {
    /// `registry/repository[:tag]`.
    pub target: String,
    /// The model's name in the artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A file holding the signing key (PKCS#8 PEM, ECDSA P-256): the winner is signed after
    /// the gate and the push. Without it the artifact goes unsigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<String>,
}

impl OptimizationRequest {
    /// The digest of everything that decides the result: model and dataset by content, the
    /// device class, the requirement, preprocessing, the optimization settings and tuning, and
    /// the optimizer's version. Where the inputs come from and where the winner goes do not
    /// count. `sha256:<hex>`.
    pub fn inputs_digest(&self) -> String {
        let doc = serde_json::json!({
            "model": self.model.digest,
            "dataset": self.dataset.digest,
            "datasetFormat": self.dataset_format,
            "deviceClass": self.device_class,
            "accuracy": self.accuracy,
            "preprocessing": self.preprocessing,
            "optimization": self.optimization,
            "tuning": self.tuning,
            "optimizer": OPTIMIZER_VERSION,
        });
        let hash = Sha256::digest(doc.to_string().as_bytes());
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}")
    }
}

/// How an optimization ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A candidate passed the gate (and was published, when asked).
    #[serde(rename = "passed")]
    Passed,
    /// No candidate reached the requirement.
    AccuracyFloorNotMet,
    /// Candidates reached the requirement, and each exceeded a budget of the device class.
    BudgetNotMet,
    /// The run failed before a verdict (bad input, a registry, a crash).
    Error,
}

impl Verdict {
    /// As `report.json` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::AccuracyFloorNotMet => "AccuracyFloorNotMet",
            Verdict::BudgetNotMet => "BudgetNotMet",
            Verdict::Error => "Error",
        }
    }
}

/// What a run tells the operator, compact enough for a termination message (4 KiB).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OptimizationResult {
    pub verdict: Verdict,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_accuracy: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_accuracy: Option<f64>,
    /// The most accurate candidate measured, passed or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_accuracy: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_technique: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub winner: Option<WinnerSummary>,
    /// The published artifact, when the request asked for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<ArtifactRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Which budget refused which candidate, when the verdict is `BudgetNotMet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub over_budget: Option<String>,
}

impl OptimizationResult {
    /// A run that failed before a verdict; the message is cut to fit a termination message.
    pub fn error(message: &str) -> Self {
        let text = cut(message, 3000);
        Self {
            verdict: Verdict::Error,
            device_class: None,
            runtime: None,
            required_accuracy: None,
            base_accuracy: None,
            best_accuracy: None,
            best_technique: None,
            inputs_digest: None,
            winner: None,
            artifact: None,
            error: Some(text),
            over_budget: None,
        }
    }
}

/// `text` cut to at most `max` bytes at a character boundary: what goes into a termination
/// message (4 KiB in all) must fit.
pub fn cut(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WinnerSummary {
    pub technique: String,
    pub accuracy: f64,
    pub bytes: u64,
    pub bytes_zstd: u64,
    pub latency_ms_p50: f64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactRef {
    /// `registry/repository@sha256:…`.
    pub reference: String,
    pub digest: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> OptimizationRequest {
        serde_json::from_value(serde_json::json!({
            "model": {"location": "oci://reg/base@sha256:aa", "digest": "sha256:aa"},
            "dataset": {"location": "oci://reg/data@sha256:bb", "digest": "sha256:bb"},
            "deviceClass": {"name": "cpu-int8", "spec": {"arch": ["amd64"], "runtime": "tract", "precisions": ["int8"]}},
            "accuracy": {"floor": 0.85},
            "optimization": {},
        }))
        .unwrap()
    }

    #[test]
    fn the_inputs_digest_follows_what_decides_the_result_only() {
        let a = request();
        let d = a.inputs_digest();
        assert!(d.starts_with("sha256:") && d.len() == 71, "{d}");
        // Where the winner goes, or where an input is read from, does not count.
        let mut elsewhere = a.clone();
        elsewhere.publish = Some(PublishTarget {
            target: "reg/models:x".into(),
            name: Some("m".into()),
            signing_key: Some("/etc/key".into()),
        });
        elsewhere.model.location = "/tmp/model.onnx".into();
        assert_eq!(elsewhere.inputs_digest(), d);
        // Anything that can change the winner does.
        let mut other = a.clone();
        other.accuracy.floor = Some(0.86);
        assert_ne!(other.inputs_digest(), d);
        let mut other = a.clone();
        other.model.digest = "sha256:ab".into();
        assert_ne!(other.inputs_digest(), d);
        let mut other = a.clone();
        other.tuning.search_samples = 500;
        assert_ne!(other.inputs_digest(), d);
        let mut other = a;
        other.optimization.calibration_samples = 100;
        assert_ne!(other.inputs_digest(), d);
    }

    #[test]
    fn results_round_trip_and_errors_fit_a_termination_message() {
        let e = OptimizationResult::error(&"é".repeat(4000));
        assert!(e.error.as_ref().unwrap().len() <= 3000);
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains("\"verdict\":\"Error\""), "{json}");
        let back: OptimizationResult = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
        let passed: OptimizationResult =
            serde_json::from_value(serde_json::json!({"verdict": "passed"})).unwrap();
        assert_eq!(passed.verdict, Verdict::Passed);
        assert_eq!(Verdict::AccuracyFloorNotMet.as_str(), "AccuracyFloorNotMet");
    }
}

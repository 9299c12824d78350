//! `report.json`: the optimizer's stable, documented output (see docs/optimizer-report.md).
//! Field names are snake_case and only ever added to; `format` names the version.

use edgefleet_api::job::Verdict;
use serde::Serialize;
use std::collections::BTreeMap;

pub const FORMAT: &str = "edgefleet.dev/optimization-report/v1";

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub format: &'static str,
    pub model: String,
    pub dataset: String,
    pub device_class: String,
    pub runtime: String,
    pub objective: String,
    /// The accuracy a candidate must reach: the floor, or base minus max drop, whichever is
    /// higher.
    pub required_accuracy: f64,
    pub floor: Option<f64>,
    pub max_drop: Option<f64>,
    /// `labels` (top-1) or `agreement` (top-1 agreement with the base model).
    pub metric: &'static str,
    pub samples: Samples,
    pub base: Measured,
    pub winner: Option<Winner>,
    /// `passed`, `AccuracyFloorNotMet` or `BudgetNotMet`.
    pub verdict: Verdict,
    /// Where the gate ran: `amd64`, `arm64`, or `arm64 (emulated)` under qemu-user.
    pub machine: String,
    /// The device class's budgets: checked or not (and why), and which candidates each refused.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub budgets: Vec<crate::budget::Applied>,
    /// Why the run stopped before building any candidate (a requirement above what the base
    /// model measures).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    pub candidates: Vec<Candidate>,
    pub wall_seconds: f64,
    /// sha256 of the base model file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_digest: Option<String>,
    /// sha256 of the dataset (the file, or the sorted list of files and their digests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset_digest: Option<String>,
    /// sha256 of everything that decided this result (model, dataset, device class, settings,
    /// optimizer version): identical inputs may reuse the published artifact.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inputs_digest: Option<String>,
    pub optimizer_version: &'static str,
    /// How images become inputs (the EdgeModel's `preprocessing`), when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preprocessing: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Samples {
    pub calibration: usize,
    /// Evaluation samples the gate used.
    pub evaluation: usize,
    /// Evaluation samples the dataset held (after calibration).
    pub evaluation_available: usize,
    /// Why the gate used a subset of them, when it did (e.g. under emulation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evaluation_subset: Option<String>,
    /// Evaluation samples used to rank layers during the accuracy-aware search (the gate always
    /// uses all evaluation samples).
    pub search: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Measured {
    pub accuracy: f64,
    pub bytes: usize,
    pub bytes_zstd: usize,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    /// Heap a loaded session of the model holds after one inference, in MiB (base and
    /// candidates that reached the requirement).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<f64>,
}

impl Measured {
    /// The figures of a model file and its evaluation.
    pub fn of(bytes: &[u8], eval: &crate::eval::Evaluation) -> Self {
        Self {
            accuracy: eval.accuracy,
            bytes: bytes.len(),
            bytes_zstd: crate::size::zstd_bytes(bytes),
            latency_ms_p50: eval.latency_ms_p50,
            latency_ms_p99: eval.latency_ms_p99,
            memory_mib: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Winner {
    pub technique: String,
    pub precision: String,
    #[serde(flatten)]
    pub measured: Measured,
    pub parameters: BTreeMap<&'static str, serde_json::Value>,
    pub layers_kept_float: Vec<String>,
    /// Why this candidate won, in words.
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub technique: String,
    pub precision: String,
    pub status: CandidateStatus,
    pub reason: Option<String>,
    #[serde(flatten)]
    pub measured: Option<Measured>,
    pub parameters: BTreeMap<&'static str, serde_json::Value>,
    pub layers_kept_float: Vec<String>,
    /// The device-class budgets this candidate exceeded (status `over-budget`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub over_budget: Vec<crate::budget::Budget>,
    /// The accuracy-aware search, when it ran: per-layer sensitivity and each step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search: Option<Search>,
    /// fp32's p50 over this candidate's (above 1: faster than fp32). Passing candidates and the
    /// base are timed together, interleaved, after the gate; the others by their gate run.
    pub speed_vs_fp32: Option<f64>,
    /// Each layer's weight width, for candidates whose layers have their own (low-bit weights).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub layer_bits: BTreeMap<String, u32>,
    pub seconds: f64,
    /// Where the candidate's model was written (`--keep-candidates`, passing candidates only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// How a candidate fared in the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CandidateStatus {
    /// Reached the requirement.
    Passed,
    /// Measured, under the requirement.
    Failed,
    /// Could not be built or run, or produced non-finite outputs.
    Rejected,
    /// Not measured: the time budget ran out.
    Skipped,
    /// Reached the requirement, and exceeded a budget of the device class.
    #[serde(rename = "over-budget")]
    OverBudget,
}

impl CandidateStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CandidateStatus::Passed => "passed",
            CandidateStatus::Failed => "failed",
            CandidateStatus::Rejected => "rejected",
            CandidateStatus::Skipped => "skipped",
            CandidateStatus::OverBudget => "over-budget",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Search {
    /// Search-subset accuracy with only this layer kept at higher precision, best first.
    pub sensitivity: Vec<(String, f64)>,
    /// (layers kept, search-subset accuracy) for each step tried.
    pub steps: Vec<(usize, f64)>,
}

/// A readable table of the candidates, for the terminal.
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    let kb = |b: usize| format!("{:.1} KB", b as f64 / 1000.0);
    out.push_str(&format!(
        "{:<24} {:<10} {:>8} {:>10} {:>10} {:>9} {:>7} {:>6}  {}\n",
        "technique", "status", "top-1", "size", "zstd", "p50 ms", "vs fp32", "float", "note"
    ));
    out.push_str(&format!(
        "{:<24} {:<10} {:>7.2}% {:>10} {:>10} {:>9.3} {:>7} {:>6}  {}\n",
        "base (fp32)",
        "-",
        report.base.accuracy * 100.0,
        kb(report.base.bytes),
        kb(report.base.bytes_zstd),
        report.base.latency_ms_p50,
        "1.00x",
        "",
        ""
    ));
    for c in &report.candidates {
        let label = match c.parameters.get("calibration") {
            Some(m) => format!("{} ({})", c.technique, m.as_str().unwrap_or("")),
            None => c.technique.clone(),
        };
        let note = c.reason.clone().unwrap_or_default();
        match &c.measured {
            Some(m) => out.push_str(&format!(
                "{:<24} {:<10} {:>7.2}% {:>10} {:>10} {:>9.3} {:>7} {:>6}  {}\n",
                label,
                c.status.as_str(),
                m.accuracy * 100.0,
                kb(m.bytes),
                kb(m.bytes_zstd),
                m.latency_ms_p50,
                c.speed_vs_fp32.map_or("-".into(), |x| format!("{x:.2}x")),
                c.layers_kept_float.len(),
                note
            )),
            None => out.push_str(&format!(
                "{:<24} {:<10} {:>8} {:>10} {:>10} {:>9} {:>7} {:>6}  {}\n",
                label,
                c.status.as_str(),
                "-",
                "-",
                "-",
                "-",
                "-",
                "",
                note
            )),
        }
    }
    match (&report.winner, &report.stopped) {
        (Some(w), _) => out.push_str(&format!("winner: {} — {}\n", w.technique, w.reason)),
        (None, Some(why)) => {
            out.push_str(&format!("verdict: {} — {why}\n", report.verdict.as_str()))
        }
        (None, None) if report.verdict == Verdict::BudgetNotMet => out.push_str(&format!(
            "verdict: {} — every candidate that reached {:.2}% top-1 exceeded a budget of the device class\n",
            report.verdict.as_str(),
            report.required_accuracy * 100.0
        )),
        (None, None) => out.push_str(&format!(
            "verdict: {} — no candidate reached {:.2}% top-1\n",
            report.verdict.as_str(),
            report.required_accuracy * 100.0
        )),
    }
    out
}

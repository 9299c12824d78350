//! From an `optimize` output directory to a published artifact: the facts a report gives, the
//! digests that identify the inputs, and the files that go in.

use anyhow::{Context as _, Result, bail};
use edgefleet_artifact::manifest::{Compression, Contents, Packed};
use edgefleet_artifact::{Digest, Facts, pack};
use serde::Deserialize;
use std::path::Path;

/// The parts of `report.json` an artifact needs.
#[derive(Debug, Deserialize)]
struct ReportView {
    format: String,
    device_class: String,
    runtime: String,
    verdict: String,
    base: MeasuredView,
    winner: Option<WinnerView>,
    #[serde(default)]
    model_digest: Option<String>,
    #[serde(default)]
    inputs_digest: Option<String>,
    #[serde(default)]
    optimizer_version: Option<String>,
    #[serde(default)]
    preprocessing: Option<serde_json::Value>,
    #[serde(default)]
    machine: Option<String>,
}

#[derive(Debug, Deserialize)]
struct MeasuredView {
    accuracy: f64,
}

#[derive(Debug, Deserialize)]
struct WinnerView {
    technique: String,
    precision: String,
    accuracy: f64,
    latency_ms_p50: f64,
}

/// What an artifact is made of: the files of a run and the facts of its report.
pub struct Payload {
    pub model: Vec<u8>,
    pub report: Vec<u8>,
    pub selftest: Option<Vec<u8>>,
    pub facts: Facts,
}

/// A signing key from its file, the file named in any error.
pub fn signing_key(path: &Path) -> Result<edgefleet_artifact::SigningKeyPem> {
    let pem =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    edgefleet_artifact::SigningKeyPem::from_pem(&pem)
        .map_err(|e| anyhow::anyhow!("signing key {}: {e}", path.display()))
}

/// The ModelPack `quantization` value for a technique (None when nothing was quantized).
pub fn quantization(technique: &str) -> Option<String> {
    ["int8", "full-integer", "clustering", "float16"]
        .iter()
        .any(|t| technique.contains(t))
        .then(|| technique.to_string())
}

/// Facts from a report. Refuses a report without a winner: there is nothing to publish.
pub fn facts(report: &[u8], source: &str, name: Option<String>) -> Result<Facts> {
    let r: ReportView = serde_json::from_slice(report)
        .with_context(|| format!("{source}: not an optimizer report.json"))?;
    if !r.format.starts_with("edgefleet.dev/optimization-report/") {
        bail!(
            "{source}: format {:?} is not an optimization report",
            r.format
        );
    }
    let Some(w) = r.winner else {
        bail!(
            "{source}: verdict {} for device class {}: no winner to publish",
            r.verdict,
            r.device_class
        );
    };
    let digest = |field: &str, v: Option<String>| -> Result<Option<Digest>> {
        v.map(|d| {
            d.parse()
                .map_err(|e| anyhow::anyhow!("{source}: {field}: {e}"))
        })
        .transpose()
    };
    Ok(Facts {
        name,
        quantization: quantization(&w.technique),
        device_class: r.device_class,
        runtime: r.runtime,
        technique: w.technique,
        accuracy: w.accuracy,
        base_accuracy: Some(r.base.accuracy),
        base_digest: digest("model_digest", r.model_digest)?,
        latency_ms_p50: Some(w.latency_ms_p50),
        preprocessing: r.preprocessing.map(|p| p.to_string()),
        inputs_digest: digest("inputs_digest", r.inputs_digest)?,
        optimizer_version: r.optimizer_version,
        precision: Some(w.precision),
        created: None,
        gated_on: r.machine,
    })
}

/// Facts from a report in memory (a run about to publish its own winner).
pub fn facts_of(report: &crate::report::Report, name: Option<String>) -> Result<Facts> {
    let Some(w) = &report.winner else {
        bail!(
            "verdict {} for device class {}: no winner to publish",
            report.verdict.as_str(),
            report.device_class
        );
    };
    let digest = |field: &str, v: &Option<String>| -> Result<Option<Digest>> {
        v.as_ref()
            .map(|d| d.parse().map_err(|e| anyhow::anyhow!("{field}: {e}")))
            .transpose()
    };
    Ok(Facts {
        name,
        quantization: quantization(&w.technique),
        device_class: report.device_class.clone(),
        runtime: report.runtime.clone(),
        technique: w.technique.clone(),
        accuracy: w.measured.accuracy,
        base_accuracy: Some(report.base.accuracy),
        base_digest: digest("model_digest", &report.model_digest)?,
        latency_ms_p50: Some(w.measured.latency_ms_p50),
        preprocessing: report.preprocessing.as_ref().map(|p| p.to_string()),
        inputs_digest: digest("inputs_digest", &report.inputs_digest)?,
        optimizer_version: Some(report.optimizer_version.to_string()),
        precision: Some(w.precision.clone()),
        created: None,
        gated_on: Some(report.machine.clone()),
    })
}

/// Reads `model.onnx`, `report.json` and (when present) `selftest.json` from `dir` (the
/// `push` subcommand: a run of another process).
pub fn read_output(dir: &Path, name: Option<String>) -> Result<Payload> {
    let read = |f: &str| {
        let p = dir.join(f);
        std::fs::read(&p).with_context(|| format!("reading {}", p.display()))
    };
    let report = read("report.json")?;
    let facts = facts(
        &report,
        &dir.join("report.json").display().to_string(),
        name,
    )?;
    let model = read("model.onnx")?;
    let selftest = match std::fs::read(dir.join("selftest.json")) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(e).with_context(|| format!("reading {}/selftest.json", dir.display()));
        }
    };
    Ok(Payload {
        model,
        report,
        selftest,
        facts,
    })
}

impl Payload {
    pub fn pack(&self, compression: Compression) -> Result<Packed> {
        Ok(pack(
            &Contents {
                form: model_form(&self.model),
                model: &self.model,
                report: Some(&self.report),
                selftest: self.selftest.as_deref(),
            },
            &self.facts,
            compression,
        )?)
    }
}

/// How the model travels: packed when its bytes use the packed codes of
/// [`edgefleet_runtime::packed`].
fn model_form(model: &[u8]) -> edgefleet_artifact::manifest::ModelForm {
    use edgefleet_artifact::manifest::ModelForm;
    use prost::Message as _;
    match crate::model::pb::ModelProto::decode(model) {
        Ok(proto) if edgefleet_runtime::packed::is_packed(&proto) => ModelForm::Packed,
        _ => ModelForm::Standard,
    }
}

/// sha256 of a dataset: the file's bytes, or for a directory every file's relative path and
/// digest, sorted (so the digest does not depend on directory listing order).
pub fn dataset_digest(path: &Path) -> Result<Digest> {
    if path.is_file() {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        return Ok(Digest::of(&bytes));
    }
    let mut lines = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?
        {
            let p = entry?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes =
                    std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
                let rel = p
                    .strip_prefix(path)
                    .unwrap_or(&p)
                    .to_string_lossy()
                    .into_owned();
                lines.push(format!("{rel}\t{}", Digest::of(&bytes)));
            }
        }
    }
    lines.sort();
    Ok(Digest::of(lines.join("\n").as_bytes()))
}

/// What `upload` publishes: a base model (checked to be ONNX) or a dataset, as a single-file
/// ModelPack artifact.
pub fn single_file(path: &Path, is_model: bool) -> Result<(Vec<u8>, Vec<u8>, String)> {
    use edgefleet_artifact::manifest::{ModelConfig, ModelDescriptor, ModelFs, ModelSettings};
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if is_model {
        crate::model::Model::from_bytes(path, data.clone())?;
    }
    let name = path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let config = ModelConfig {
        descriptor: ModelDescriptor {
            name: Some(name.clone()),
            created_at: None,
        },
        config: ModelSettings {
            format: Some(if is_model { "onnx" } else { "dataset" }.into()),
            ..Default::default()
        },
        modelfs: ModelFs {
            kind: "layers".into(),
            diff_ids: vec![Digest::of(&data).to_string()],
        },
    };
    Ok((data, serde_json::to_vec(&config)?, name))
}

/// A readable summary of an artifact (`inspect`).
pub fn describe(
    reference: &str,
    artifact: &edgefleet_artifact::Artifact,
    config: &edgefleet_artifact::manifest::ModelConfig,
) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "reference:    {reference}");
    let _ = writeln!(s, "digest:       {}", artifact.digest);
    let _ = writeln!(
        s,
        "artifactType: {}",
        artifact.manifest.artifact_type.as_deref().unwrap_or("-")
    );
    let _ = writeln!(
        s,
        "config:       format {} precision {} quantization {}",
        config.config.format.as_deref().unwrap_or("-"),
        config.config.precision.as_deref().unwrap_or("-"),
        config.config.quantization.as_deref().unwrap_or("-")
    );
    let _ = writeln!(s, "layers:");
    for l in &artifact.manifest.layers {
        let title = l
            .annotations
            .get(edgefleet_artifact::media::TITLE)
            .map(String::as_str)
            .unwrap_or("-");
        let _ = writeln!(
            s,
            "  {:>10} B  {}  {}  {}",
            l.size, l.media_type, title, l.digest
        );
    }
    let _ = writeln!(s, "annotations:");
    for (k, v) in &artifact.manifest.annotations {
        let _ = writeln!(s, "  {k}: {v}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_come_from_the_winner_and_a_loser_is_refused() {
        let report = br#"{"format":"edgefleet.dev/optimization-report/v1","device_class":"cpu-int8",
            "runtime":"tract","verdict":"passed","base":{"accuracy":0.8946},
            "winner":{"technique":"int8-static","precision":"int8","accuracy":0.8947,"latency_ms_p50":0.62},
            "model_digest":"sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "optimizer_version":"0.1.0"}"#;
        let f = facts(report, "r.json", Some("fashion".into())).unwrap();
        assert_eq!(f.technique, "int8-static");
        assert_eq!(f.accuracy, 0.8947);
        assert_eq!(f.base_accuracy, Some(0.8946));
        assert_eq!(f.precision.as_deref(), Some("int8"));
        assert_eq!(f.quantization.as_deref(), Some("int8-static"));
        assert!(f.base_digest.is_some());

        let lost = br#"{"format":"edgefleet.dev/optimization-report/v1","device_class":"integer-npu",
            "runtime":"tract","verdict":"AccuracyFloorNotMet","base":{"accuracy":0.85},"winner":null}"#;
        let e = facts(lost, "r.json", None).unwrap_err().to_string();
        assert!(
            e.contains("AccuracyFloorNotMet") && e.contains("integer-npu"),
            "{e}"
        );
        assert_eq!(quantization("pruning"), None);
    }
}

//! The artifact's shape: [`pack`] turns a model, its report and self-test samples plus
//! edgefleet's [`Facts`] into an OCI manifest, a ModelPack config and blobs (pure, deterministic:
//! the same inputs give the same digest); [`unpack`] reads a manifest back and refuses anything
//! that is not a model artifact, naming what is wrong.

use crate::{Digest, Error, Result, media};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    pub fn digest(&self) -> Result<Digest> {
        self.digest.parse()
    }
}

/// OCI image manifest (image-spec 1.1), the fields an artifact uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// ModelPack config (`application/vnd.cncf.model.config.v1+json`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ModelConfig {
    #[serde(default)]
    pub descriptor: ModelDescriptor,
    #[serde(default)]
    pub config: ModelSettings,
    pub modelfs: ModelFs,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelDescriptor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ModelSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ModelFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<String>,
}

/// edgefleet's facts about an optimized model, carried as `dev.edgefleet.*` manifest
/// annotations so that a registry listing, `oras manifest fetch` or the operator can read them
/// without downloading anything else.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Facts {
    pub name: Option<String>,
    pub device_class: String,
    pub runtime: String,
    pub technique: String,
    /// Top-1 accuracy (0..1) of this model as gated.
    pub accuracy: f64,
    pub base_accuracy: Option<f64>,
    pub base_digest: Option<Digest>,
    pub latency_ms_p50: Option<f64>,
    /// Preprocessing as JSON (the EdgeModel's `spec.preprocessing`).
    pub preprocessing: Option<String>,
    /// Digest of everything that determined this artifact (model, dataset, device class,
    /// settings, optimizer version): identical inputs reuse the artifact.
    pub inputs_digest: Option<Digest>,
    pub optimizer_version: Option<String>,
    /// ModelPack `config.precision`: fp32, fp16, int8 or mixed.
    pub precision: Option<String>,
    /// ModelPack `config.quantization`.
    pub quantization: Option<String>,
    /// RFC 3339; left out by default so identical inputs give identical digests.
    pub created: Option<String>,
    /// Where the accuracy gate ran (the architecture of the binary that measured it, and
    /// whether under emulation), as the report's `machine` says.
    pub gated_on: Option<String>,
}

impl Facts {
    fn annotations(&self, report_digest: Option<&Digest>) -> BTreeMap<String, String> {
        let mut a = BTreeMap::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                a.insert(k.to_string(), v);
            }
        };
        put(media::DEVICE_CLASS, Some(self.device_class.clone()));
        put(media::RUNTIME, Some(self.runtime.clone()));
        put(media::TECHNIQUE, Some(self.technique.clone()));
        put(media::ACCURACY, Some(format!("{:.6}", self.accuracy)));
        put(
            media::BASE_ACCURACY,
            self.base_accuracy.map(|v| format!("{v:.6}")),
        );
        put(
            media::BASE_DIGEST,
            self.base_digest.as_ref().map(|d| d.to_string()),
        );
        put(
            media::LATENCY_P50,
            self.latency_ms_p50.map(|v| format!("{v:.4}")),
        );
        put(media::PREPROCESSING, self.preprocessing.clone());
        put(
            media::INPUTS_DIGEST,
            self.inputs_digest.as_ref().map(|d| d.to_string()),
        );
        put(media::OPTIMIZER_VERSION, self.optimizer_version.clone());
        put(media::REPORT_DIGEST, report_digest.map(|d| d.to_string()));
        put(media::CREATED, self.created.clone());
        put(media::GATED_ON, self.gated_on.clone());
        a
    }

    /// Reads the facts back. `None` when the manifest carries no `dev.edgefleet.*` annotation
    /// (a ModelPack model published by another tool); an error names a malformed one.
    pub fn from_annotations(a: &BTreeMap<String, String>) -> Result<Option<Facts>> {
        if !a.keys().any(|k| k.starts_with(media::PREFIX)) {
            return Ok(None);
        }
        let bad = |key: &str, reason: &str| Error::NotAModel {
            reference: String::new(),
            reason: format!("annotation {key}: {reason}"),
        };
        let text = |key: &str| -> Result<String> {
            a.get(key).cloned().ok_or_else(|| bad(key, "missing"))
        };
        let number = |key: &str| -> Result<Option<f64>> {
            a.get(key)
                .map(|v| {
                    v.parse::<f64>()
                        .ok()
                        .filter(|x| x.is_finite())
                        .ok_or_else(|| bad(key, &format!("{v:?} is not a number")))
                })
                .transpose()
        };
        let digest = |key: &str| -> Result<Option<Digest>> {
            a.get(key)
                .map(|v| {
                    v.parse()
                        .map_err(|_| bad(key, &format!("{v:?} is not a sha256 digest")))
                })
                .transpose()
        };
        Ok(Some(Facts {
            name: None,
            device_class: text(media::DEVICE_CLASS)?,
            runtime: text(media::RUNTIME)?,
            technique: text(media::TECHNIQUE)?,
            accuracy: number(media::ACCURACY)?.ok_or_else(|| bad(media::ACCURACY, "missing"))?,
            base_accuracy: number(media::BASE_ACCURACY)?,
            base_digest: digest(media::BASE_DIGEST)?,
            latency_ms_p50: number(media::LATENCY_P50)?,
            preprocessing: a.get(media::PREPROCESSING).cloned(),
            inputs_digest: digest(media::INPUTS_DIGEST)?,
            optimizer_version: a.get(media::OPTIMIZER_VERSION).cloned(),
            precision: None,
            quantization: None,
            created: a.get(media::CREATED).cloned(),
            gated_on: a.get(media::GATED_ON).cloned(),
        }))
    }
}

/// A blob ready to upload: its descriptor and bytes.
#[derive(Debug, Clone)]
pub struct Blob {
    pub descriptor: Descriptor,
    pub data: Bytes,
}

impl Blob {
    pub(crate) fn new(
        media_type: &str,
        data: Vec<u8>,
        annotations: BTreeMap<String, String>,
    ) -> Self {
        Blob {
            descriptor: Descriptor {
                media_type: media_type.into(),
                digest: Digest::of(&data).to_string(),
                size: data.len() as u64,
                annotations,
            },
            data: data.into(),
        }
    }
}

/// What [`pack`] produces.
#[derive(Debug, Clone)]
pub struct Packed {
    pub manifest: Manifest,
    /// The manifest's exact bytes: what is pushed and what the digest is of.
    pub manifest_bytes: Bytes,
    pub digest: Digest,
    pub config: Blob,
    pub layers: Vec<Blob>,
}

impl Packed {
    /// Every blob: layers first, config last (a manifest may only be pushed after both).
    pub fn blobs(&self) -> impl Iterator<Item = &Blob> {
        self.layers.iter().chain(std::iter::once(&self.config))
    }
}

/// How the model layer is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// zstd when it saves at least 2% (tiny or already-dense models stay raw).
    #[default]
    Auto,
    Zstd,
    None,
}

/// The files that make up an artifact.
#[derive(Debug, Clone, Default)]
pub struct Contents<'a> {
    pub form: ModelForm,
    pub model: &'a [u8],
    pub report: Option<&'a [u8]>,
    pub selftest: Option<&'a [u8]>,
}

/// Whether the model is a standard ONNX file or needs edgefleet's decoder first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ModelForm {
    /// Any ONNX runtime can load it.
    #[default]
    Standard,
    /// Low-bit codes packed ([`media::WEIGHT_PACKED_ZSTD`]); always zstd-compressed.
    Packed,
}

fn file_annotations(path: &str, title: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (media::FILEPATH.to_string(), path.to_string()),
        (media::TITLE.to_string(), title.to_string()),
    ])
}

/// Builds the artifact. Deterministic: identical inputs give an identical manifest digest.
pub fn pack(contents: &Contents<'_>, facts: &Facts, compression: Compression) -> Result<Packed> {
    let mut diff_ids = vec![Digest::of(contents.model).to_string()];
    let compressed = match compression {
        Compression::None if contents.form == ModelForm::Standard => None,
        Compression::None | Compression::Zstd | Compression::Auto => {
            let z = crate::codec::compress(contents.model)
                .map_err(|e| Error::io("model.onnx (zstd)", e))?;
            let worth = compression != Compression::Auto
                || contents.form == ModelForm::Packed
                || (z.len() as f64) < 0.98 * contents.model.len() as f64;
            worth.then_some(z)
        }
    };
    let model_layer = match compressed {
        Some(z) if contents.form == ModelForm::Packed => Blob::new(
            media::WEIGHT_PACKED_ZSTD,
            z,
            file_annotations("model.onnx", "model.packed.onnx.zst"),
        ),
        Some(z) => Blob::new(
            media::WEIGHT_RAW_ZSTD,
            z,
            file_annotations("model.onnx", "model.onnx.zst"),
        ),
        None => Blob::new(
            media::WEIGHT_RAW,
            contents.model.to_vec(),
            file_annotations("model.onnx", "model.onnx"),
        ),
    };
    let mut layers = vec![model_layer];
    let mut report_digest = None;
    if let Some(report) = contents.report {
        let blob = Blob::new(
            media::REPORT,
            report.to_vec(),
            file_annotations("report.json", "report.json"),
        );
        report_digest = Some(blob.descriptor.digest()?);
        diff_ids.push(blob.descriptor.digest.clone());
        layers.push(blob);
    }
    if let Some(selftest) = contents.selftest {
        let z =
            crate::codec::compress(selftest).map_err(|e| Error::io("selftest.json (zstd)", e))?;
        diff_ids.push(Digest::of(selftest).to_string());
        layers.push(Blob::new(
            media::SELFTEST,
            z,
            file_annotations("selftest.json", "selftest.json.zst"),
        ));
    }
    let config = ModelConfig {
        descriptor: ModelDescriptor {
            name: facts.name.clone(),
            created_at: facts.created.clone(),
        },
        config: ModelSettings {
            format: Some("onnx".into()),
            precision: facts.precision.clone(),
            quantization: facts.quantization.clone(),
        },
        modelfs: ModelFs {
            kind: "layers".into(),
            diff_ids,
        },
    };
    let config = Blob::new(
        media::MODEL_CONFIG,
        serde_json::to_vec(&config).expect("config serializes"),
        BTreeMap::new(),
    );
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media::OCI_MANIFEST.into()),
        artifact_type: Some(media::ARTIFACT_TYPE.into()),
        config: config.descriptor.clone(),
        layers: layers.iter().map(|b| b.descriptor.clone()).collect(),
        annotations: {
            let mut a = facts.annotations(report_digest.as_ref());
            a.insert(media::MODEL_BYTES.into(), contents.model.len().to_string());
            a
        },
    };
    let manifest_bytes = Bytes::from(serde_json::to_vec(&manifest).expect("manifest serializes"));
    Ok(Packed {
        digest: Digest::of(&manifest_bytes),
        manifest,
        manifest_bytes,
        config,
        layers,
    })
}

/// A single-file artifact (a base model or a dataset) for [`pack_file`].
#[derive(Debug, Clone)]
pub struct FileArtifact<'a> {
    pub artifact_type: &'a str,
    pub config_type: &'a str,
    pub config: &'a [u8],
    pub layer_type: &'a str,
    /// The file's name (its title and ModelPack file path).
    pub file_name: &'a str,
    pub data: Vec<u8>,
}

/// One file as a single-layer artifact (pure, like [`pack`]).
pub fn pack_file(file: FileArtifact<'_>) -> Packed {
    let layer = Blob::new(
        file.layer_type,
        file.data,
        file_annotations(file.file_name, file.file_name),
    );
    let config = Blob::new(file.config_type, file.config.to_vec(), BTreeMap::new());
    Packed::single(Some(file.artifact_type), config, layer)
}

impl Packed {
    /// An OCI image manifest of one config and one layer (no manifest annotations).
    pub(crate) fn single(artifact_type: Option<&str>, config: Blob, layer: Blob) -> Packed {
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(media::OCI_MANIFEST.into()),
            artifact_type: artifact_type.map(Into::into),
            config: config.descriptor.clone(),
            layers: vec![layer.descriptor.clone()],
            annotations: BTreeMap::new(),
        };
        let manifest_bytes =
            Bytes::from(serde_json::to_vec(&manifest).expect("manifest serializes"));
        Packed {
            digest: Digest::of(&manifest_bytes),
            manifest,
            manifest_bytes,
            config,
            layers: vec![layer],
        }
    }
}

/// The model layer of an artifact.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelLayer {
    pub descriptor: Descriptor,
    pub digest: Digest,
    pub compressed: bool,
    pub form: ModelForm,
    /// sha256 of the uncompressed ONNX file when the config says (ModelPack `diff_ids[0]`).
    pub diff_id: Option<Digest>,
}

/// A model artifact read from a registry.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub digest: Digest,
    pub manifest: Manifest,
    pub model: ModelLayer,
    pub report: Option<Descriptor>,
    pub selftest: Option<Descriptor>,
    /// `None` for a ModelPack model published by another tool.
    pub facts: Option<Facts>,
}

/// Reads a manifest (already verified against `digest`) as a model artifact.
pub fn unpack(reference: &str, digest: Digest, manifest_bytes: &[u8]) -> Result<Artifact> {
    let not = |reason: String| Error::NotAModel {
        reference: reference.to_string(),
        reason,
    };
    let manifest: Manifest = serde_json::from_slice(manifest_bytes)
        .map_err(|e| not(format!("manifest is not an OCI image manifest: {e}")))?;
    if manifest.schema_version != 2 {
        return Err(not(format!(
            "schemaVersion {} (want 2)",
            manifest.schema_version
        )));
    }
    let artifact_type = manifest
        .artifact_type
        .as_deref()
        .unwrap_or(&manifest.config.media_type);
    if artifact_type != media::ARTIFACT_TYPE && manifest.config.media_type != media::MODEL_CONFIG {
        return Err(not(format!(
            "artifactType {artifact_type:?} and config mediaType {:?}; want {} / {}",
            manifest.config.media_type,
            media::ARTIFACT_TYPE,
            media::MODEL_CONFIG
        )));
    }
    let weights: Vec<&Descriptor> = manifest
        .layers
        .iter()
        .filter(|l| {
            l.media_type
                .starts_with("application/vnd.cncf.model.weight.v1.")
                || l.media_type == media::WEIGHT_PACKED_ZSTD
        })
        .collect();
    let [weight] = weights.as_slice() else {
        return Err(not(format!(
            "want exactly one weight layer (the ONNX model), found {}",
            weights.len()
        )));
    };
    let (compressed, form) = match weight.media_type.as_str() {
        media::WEIGHT_RAW => (false, ModelForm::Standard),
        media::WEIGHT_RAW_ZSTD => (true, ModelForm::Standard),
        media::WEIGHT_PACKED_ZSTD => (true, ModelForm::Packed),
        other => {
            return Err(not(format!(
                "weight layer media type {other} is not supported (want {}, {} or {})",
                media::WEIGHT_RAW,
                media::WEIGHT_RAW_ZSTD,
                media::WEIGHT_PACKED_ZSTD
            )));
        }
    };
    let layer_digest = weight
        .digest()
        .map_err(|e| not(format!("weight layer: {e}")))?;
    let find = |media_type: &str| {
        manifest
            .layers
            .iter()
            .find(|l| l.media_type == media_type)
            .cloned()
    };
    let facts = Facts::from_annotations(&manifest.annotations).map_err(|e| match e {
        Error::NotAModel { reason, .. } => not(reason),
        other => other,
    })?;
    Ok(Artifact {
        model: ModelLayer {
            form,
            descriptor: (*weight).clone(),
            digest: layer_digest,
            compressed,
            diff_id: None,
        },
        report: find(media::REPORT),
        selftest: find(media::SELFTEST),
        facts,
        digest,
        manifest,
    })
}

/// Reads the ModelPack config and records the model's uncompressed digest on the artifact.
pub fn apply_config(
    artifact: &mut Artifact,
    reference: &str,
    config: &[u8],
) -> Result<ModelConfig> {
    let parsed: ModelConfig = serde_json::from_slice(config).map_err(|e| Error::NotAModel {
        reference: reference.into(),
        reason: format!("config is not a ModelPack config: {e}"),
    })?;
    let index = artifact
        .manifest
        .layers
        .iter()
        .position(|l| l.digest == artifact.model.descriptor.digest)
        .expect("the model layer is one of the manifest's layers");
    artifact.model.diff_id = parsed
        .modelfs
        .diff_ids
        .get(index)
        .and_then(|d| d.parse().ok());
    if let Some(p) = &mut artifact.facts {
        p.precision = parsed.config.precision.clone();
        p.quantization = parsed.config.quantization.clone();
        p.name = parsed.descriptor.name.clone();
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            name: Some("fashion".into()),
            device_class: "cpu-int8".into(),
            runtime: "tract".into(),
            technique: "int8-static".into(),
            accuracy: 0.8947,
            base_accuracy: Some(0.8946),
            base_digest: Some(Digest::of(b"base")),
            latency_ms_p50: Some(0.62),
            preprocessing: Some(r#"{"color":"grayscale"}"#.into()),
            inputs_digest: Some(Digest::of(b"inputs")),
            optimizer_version: Some("0.1.0".into()),
            precision: Some("int8".into()),
            quantization: Some("int8-static".into()),
            created: None,
            gated_on: Some("arm64 (emulated)".into()),
        }
    }

    fn model() -> Vec<u8> {
        // Compressible, like a real int8 model.
        (0..50_000u32).map(|i| (i % 7) as u8).collect()
    }

    #[test]
    fn pack_is_modelpack_shaped_and_deterministic() {
        let model = model();
        let contents = Contents {
            model: &model,
            report: Some(b"{\"format\":\"report\"}"),
            selftest: Some(b"{}"),
            ..Default::default()
        };
        let a = pack(&contents, &facts(), Compression::Auto).unwrap();
        let b = pack(&contents, &facts(), Compression::Auto).unwrap();
        assert_eq!(a.digest, b.digest);
        assert_eq!(a.digest, Digest::of(&a.manifest_bytes));
        let m = &a.manifest;
        assert_eq!(m.artifact_type.as_deref(), Some(media::ARTIFACT_TYPE));
        assert_eq!(m.config.media_type, media::MODEL_CONFIG);
        assert_eq!(m.layers[0].media_type, media::WEIGHT_RAW_ZSTD);
        assert!(m.layers[0].size < model.len() as u64 / 10);
        assert_eq!(m.layers[1].media_type, media::REPORT);
        assert_eq!(m.layers[2].media_type, media::SELFTEST);
        assert_eq!(
            m.annotations[media::REPORT_DIGEST],
            m.layers[1].digest,
            "the report digest annotation points at the report layer"
        );
        let config: ModelConfig = serde_json::from_slice(&a.config.data).unwrap();
        assert_eq!(config.config.format.as_deref(), Some("onnx"));
        assert_eq!(config.config.precision.as_deref(), Some("int8"));
        assert_eq!(config.modelfs.kind, "layers");
        assert_eq!(config.modelfs.diff_ids[0], Digest::of(&model).to_string());

        let mut back = unpack("r", a.digest.clone(), &a.manifest_bytes).unwrap();
        apply_config(&mut back, "r", &a.config.data).unwrap();
        assert!(back.model.compressed);
        assert_eq!(back.model.diff_id, Some(Digest::of(&model)));
        assert_eq!(back.facts.unwrap(), facts());
        assert!(back.report.is_some() && back.selftest.is_some());
    }

    #[test]
    fn incompressible_model_stays_raw_unless_asked() {
        let noise = edgefleet_testenv::net::noise(20_000);
        let c = Contents {
            model: &noise,
            ..Default::default()
        };
        let raw = pack(&c, &facts(), Compression::Auto).unwrap();
        assert_eq!(raw.manifest.layers[0].media_type, media::WEIGHT_RAW);
        assert_eq!(raw.manifest.layers[0].size, noise.len() as u64);
        let z = pack(&c, &facts(), Compression::Zstd).unwrap();
        assert_eq!(z.manifest.layers[0].media_type, media::WEIGHT_RAW_ZSTD);
        assert!(!raw.manifest.annotations.contains_key(media::REPORT_DIGEST));
    }

    #[test]
    fn a_packed_model_says_so_in_its_media_type_and_is_always_compressed() {
        let noise = edgefleet_testenv::net::noise(20_000);
        for compression in [Compression::None, Compression::Auto, Compression::Zstd] {
            let c = Contents {
                form: ModelForm::Packed,
                model: &noise,
                ..Default::default()
            };
            let packed = pack(&c, &facts(), compression).unwrap();
            let layer = &packed.manifest.layers[0];
            assert_eq!(
                layer.media_type,
                media::WEIGHT_PACKED_ZSTD,
                "{compression:?}"
            );
            let back = unpack("r", packed.digest.clone(), &packed.manifest_bytes).unwrap();
            assert_eq!(back.model.form, ModelForm::Packed);
            assert!(back.model.compressed);
        }
        let standard = pack(
            &Contents {
                model: &noise,
                ..Default::default()
            },
            &facts(),
            Compression::Zstd,
        )
        .unwrap();
        let back = unpack("r", standard.digest.clone(), &standard.manifest_bytes).unwrap();
        assert_eq!(back.model.form, ModelForm::Standard);
    }
    #[test]
    fn unpack_refuses_what_is_not_a_model() {
        let model = model();
        let good = pack(
            &Contents {
                model: &model,
                ..Default::default()
            },
            &facts(),
            Compression::None,
        )
        .unwrap();
        let edit = |f: &dyn Fn(&mut Manifest)| {
            let mut m = good.manifest.clone();
            f(&mut m);
            let bytes = serde_json::to_vec(&m).unwrap();
            unpack("reg/repo@x", Digest::of(&bytes), &bytes)
                .unwrap_err()
                .to_string()
        };
        let e = edit(&|m| {
            m.artifact_type = Some("application/vnd.example+json".into());
            m.config.media_type = "application/vnd.oci.image.config.v1+json".into();
        });
        assert!(
            e.contains("reg/repo@x") && e.contains("artifactType"),
            "{e}"
        );
        let e = edit(&|m| m.layers.clear());
        assert!(
            e.contains("exactly one weight layer") && e.contains("found 0"),
            "{e}"
        );
        let e =
            edit(&|m| m.layers[0].media_type = "application/vnd.cncf.model.weight.v1.tar".into());
        assert!(e.contains("not supported"), "{e}");
        let e = edit(&|m| {
            m.annotations.insert(media::ACCURACY.into(), "high".into());
        });
        assert!(
            e.contains(media::ACCURACY) && e.contains("not a number"),
            "{e}"
        );
        let e = unpack("r", Digest::of(b"x"), b"not json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not an OCI image manifest"), "{e}");
    }

    #[test]
    fn foreign_modelpack_without_our_annotations_has_no_facts() {
        let model = model();
        let mut p = pack(
            &Contents {
                model: &model,
                ..Default::default()
            },
            &facts(),
            Compression::None,
        )
        .unwrap();
        p.manifest.annotations.clear();
        let bytes = serde_json::to_vec(&p.manifest).unwrap();
        let a = unpack("r", Digest::of(&bytes), &bytes).unwrap();
        assert!(a.facts.is_none());
        assert!(!a.model.compressed);
    }
}

//! Media types and annotation keys: the contract between the optimizer, the registry, other OCI
//! tools and the sidecar.

/// ModelPack manifest `artifactType`.
pub const ARTIFACT_TYPE: &str = "application/vnd.cncf.model.manifest.v1+json";
/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// ModelPack config.
pub const MODEL_CONFIG: &str = "application/vnd.cncf.model.config.v1+json";
/// The ONNX model, as is.
pub const WEIGHT_RAW: &str = "application/vnd.cncf.model.weight.v1.raw";
/// The ONNX model, zstd-compressed.
pub const WEIGHT_RAW_ZSTD: &str = "application/vnd.cncf.model.weight.v1.raw+zstd";
/// The ONNX model in edgefleet's packed transport form, zstd-compressed: its low-bit weight
/// codes need `dev.edgefleet.UnpackCodes` decoding before a runtime can load it (format:
/// `docs/artifact.md`). Not a ModelPack weight type on purpose: a ModelPack reader without the
/// decoder finds no model it could run, rather than one it cannot.
pub const WEIGHT_PACKED_ZSTD: &str = "application/vnd.edgefleet.model.weight.v1.packed+zstd";
/// A dataset file (ModelPack dataset layer), e.g. an `.npz` or a tar of an ImageFolder.
pub const DATASET_RAW: &str = "application/vnd.cncf.model.dataset.v1.raw";
/// The optimizer's `report.json` (`docs/optimizer-report.md`).
pub const REPORT: &str = "application/vnd.edgefleet.optimization-report.v1+json";
/// Self-test samples with their expected top-1 ([`crate::SelfTest`]), zstd-compressed JSON
/// (float samples in base64 shrink ~4x).
pub const SELFTEST: &str = "application/vnd.edgefleet.selftest.v1.json+zstd";

/// ModelPack layer annotation: the file's path inside the model.
pub const FILEPATH: &str = "org.cncf.model.filepath";
/// OCI title annotation (what `oras pull` names the file).
pub const TITLE: &str = "org.opencontainers.image.title";
/// OCI creation time annotation.
pub const CREATED: &str = "org.opencontainers.image.created";

/// Prefix of every annotation edgefleet writes.
pub const PREFIX: &str = "dev.edgefleet.";
pub const DEVICE_CLASS: &str = "dev.edgefleet.device-class";
pub const RUNTIME: &str = "dev.edgefleet.runtime";
pub const TECHNIQUE: &str = "dev.edgefleet.technique";
pub const ACCURACY: &str = "dev.edgefleet.accuracy";
pub const BASE_ACCURACY: &str = "dev.edgefleet.base-accuracy";
pub const BASE_DIGEST: &str = "dev.edgefleet.base-digest";
pub const REPORT_DIGEST: &str = "dev.edgefleet.report-digest";
pub const PREPROCESSING: &str = "dev.edgefleet.preprocessing";
pub const LATENCY_P50: &str = "dev.edgefleet.latency-ms-p50";
pub const INPUTS_DIGEST: &str = "dev.edgefleet.inputs-digest";
pub const OPTIMIZER_VERSION: &str = "dev.edgefleet.optimizer-version";
/// Where the accuracy gate ran: `amd64`, `arm64`, or `arm64 (emulated)` under qemu-user.
pub const GATED_ON: &str = "dev.edgefleet.gated-on";
/// Size of the uncompressed ONNX model (the weight layer may be zstd).
pub const MODEL_BYTES: &str = "dev.edgefleet.model-bytes";

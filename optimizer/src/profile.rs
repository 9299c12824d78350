//! Device-class profiles: what the optimizer may produce for a kind of device and which runtime
//! gates it. `--device-class` takes a built-in name or a DeviceClass manifest (YAML), the same
//! object the operator reads from the cluster.

use edgefleet_api::deviceclass::{
    Arch, DeviceClass, DeviceClassSpec, ExecutionProvider, Precision, Runtime,
};
use edgefleet_api::edgemodel::Technique;
use std::collections::BTreeMap;
use std::path::Path;

pub const BUILT_IN: [&str; 3] = ["cpu-int8", "integer-npu", "nvidia-fp16"];

#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub name: String,
    pub spec: DeviceClassSpec,
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error(
        "device class {0:?} is neither a built-in profile ({built_in}) nor a readable DeviceClass YAML file",
        built_in = BUILT_IN.join(", ")
    )]
    Unknown(String),
    #[error("device class file {path}: {message}")]
    Invalid { path: String, message: String },
}

/// The defaults the Helm chart installs (and `examples/deviceclasses.yaml` lists).
pub fn built_in(name: &str) -> Option<Profile> {
    let spec = |arch: Vec<Arch>, runtime, provider, precisions: Vec<Precision>, integer_only| {
        DeviceClassSpec {
            node_selector: BTreeMap::from([(
                "edgefleet.dev/device-class".to_string(),
                name.to_string(),
            )]),
            arch,
            runtime,
            execution_provider: provider,
            precisions,
            integer_only,
            memory_budget_mib: None,
            latency_budget_ms: None,
        }
    };
    let spec = match name {
        "cpu-int8" => spec(
            vec![Arch::Arm64, Arch::Amd64],
            Runtime::Tract,
            ExecutionProvider::Cpu,
            vec![Precision::Int8, Precision::Fp32],
            false,
        ),
        "integer-npu" => spec(
            vec![Arch::Arm64],
            Runtime::Onnxruntime,
            ExecutionProvider::Npu,
            vec![Precision::Int8],
            true,
        ),
        "nvidia-fp16" => spec(
            vec![Arch::Arm64, Arch::Amd64],
            Runtime::Onnxruntime,
            ExecutionProvider::Cuda,
            vec![Precision::Fp16, Precision::Fp32],
            false,
        ),
        _ => return None,
    };
    Some(Profile {
        name: name.to_string(),
        spec,
    })
}

/// A built-in name, or a path to a DeviceClass manifest.
pub fn resolve(arg: &str) -> Result<Profile, ProfileError> {
    if let Some(profile) = built_in(arg) {
        return Ok(profile);
    }
    // A DeviceClass inline as JSON (how the operator hands it to a Job).
    if arg.trim_start().starts_with('{') {
        return parse(arg).map_err(|message| ProfileError::Invalid {
            path: "--device-class (inline JSON)".into(),
            message,
        });
    }
    let path = Path::new(arg);
    let text = std::fs::read_to_string(path).map_err(|_| ProfileError::Unknown(arg.into()))?;
    parse(&text).map_err(|message| ProfileError::Invalid {
        path: arg.into(),
        message,
    })
}

pub fn parse(text: &str) -> Result<Profile, String> {
    let class: DeviceClass = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    if class.spec.integer_only && class.spec.precisions.iter().any(|p| *p != Precision::Int8) {
        return Err("spec.precisions: an integerOnly device class can only list int8".into());
    }
    Ok(Profile {
        name: class.metadata.name.unwrap_or_else(|| "unnamed".into()),
        spec: class.spec,
    })
}

impl Profile {
    pub fn runtime(&self) -> Runtime {
        self.spec.runtime
    }

    pub fn allows(&self, precision: Precision) -> bool {
        self.spec.precisions.contains(&precision)
    }

    /// The techniques this device class can use, in the order they are tried, restricted to
    /// `requested` when that is not empty. Integer-only devices get full-integer graphs only;
    /// fp16 needs the fp16 precision; everything int8 needs int8.
    pub fn techniques(&self, requested: &[Technique]) -> Vec<Technique> {
        let int8 = self.allows(Precision::Int8);
        [
            Technique::Float16,
            Technique::Int8Dynamic,
            Technique::Int8Static,
            Technique::FullInteger,
            Technique::Pruning,
            Technique::Clustering,
        ]
        .into_iter()
        .filter(|t| requested.is_empty() || requested.contains(t))
        .filter(|t| match t {
            Technique::Float16 => self.allows(Precision::Fp16) && !self.spec.integer_only,
            Technique::FullInteger => self.spec.integer_only,
            Technique::Int8Dynamic | Technique::Int8Static => int8 && !self.spec.integer_only,
            // Pruning and clustering store int8 weights where int8 is allowed, else float.
            Technique::Pruning | Technique::Clustering => !self.spec.integer_only,
        })
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_profiles_match_the_example_manifests() {
        let text = include_str!("../../examples/deviceclasses.yaml");
        for doc in text.split("\n---\n") {
            let parsed = parse(doc).unwrap();
            let built = built_in(&parsed.name).unwrap();
            assert_eq!(parsed.spec.runtime, built.spec.runtime, "{}", parsed.name);
            assert_eq!(parsed.spec.precisions, built.spec.precisions);
            assert_eq!(parsed.spec.integer_only, built.spec.integer_only);
            assert_eq!(
                parsed.spec.execution_provider,
                built.spec.execution_provider
            );
        }
    }

    #[test]
    fn techniques_follow_precisions() {
        use Technique::*;
        let cpu = built_in("cpu-int8").unwrap();
        assert_eq!(
            cpu.techniques(&[]),
            [Int8Dynamic, Int8Static, Pruning, Clustering]
        );
        assert_eq!(cpu.techniques(&[Float16, Clustering]), [Clustering]);
        assert_eq!(
            built_in("integer-npu").unwrap().techniques(&[]),
            [FullInteger]
        );
        assert_eq!(
            built_in("nvidia-fp16").unwrap().techniques(&[]),
            [Float16, Pruning, Clustering]
        );
    }

    #[test]
    fn unknown_names_and_bad_files_are_explained() {
        let err = resolve("no-such-class").unwrap_err().to_string();
        assert!(
            err.contains("no-such-class") && err.contains("cpu-int8"),
            "{err}"
        );
        let err = parse("apiVersion: edgefleet.dev/v1alpha1\nkind: DeviceClass\nmetadata: {name: x}\nspec: {arch: [amd64], precisions: [int9]}\n")
            .unwrap_err();
        assert!(err.contains("int9"), "{err}");
    }
}

//! ONNX models as protobuf (`tract_onnx::pb`): loading with clear errors, saving, and the facts
//! the optimizer needs (inputs, outputs, operator histogram).

use prost::Message;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
pub use tract_onnx::pb;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not an ONNX model ({reason})")]
    NotOnnx { path: PathBuf, reason: String },
}

/// A loaded model and where it came from.
#[derive(Debug, Clone)]
pub struct Model {
    pub path: PathBuf,
    pub proto: pb::ModelProto,
    pub bytes: Vec<u8>,
}

impl Model {
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(path, bytes)
    }

    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self, ModelError> {
        let not_onnx = |reason: String| ModelError::NotOnnx {
            path: path.to_path_buf(),
            reason,
        };
        let mut proto =
            pb::ModelProto::decode(bytes.as_slice()).map_err(|e| not_onnx(e.to_string()))?;
        // The passes read the standard form: packed codes (a published artifact) are unpacked.
        edgefleet_runtime::packed::unpack(&mut proto).map_err(not_onnx)?;
        let graph = proto
            .graph
            .as_ref()
            .ok_or_else(|| not_onnx("it has no graph".into()))?;
        if graph.input.is_empty() || graph.output.is_empty() || graph.node.is_empty() {
            return Err(not_onnx("its graph has no inputs, outputs or nodes".into()));
        }
        if proto.opset_import.is_empty() {
            return Err(not_onnx("it imports no operator set".into()));
        }
        Ok(Self {
            path: path.to_path_buf(),
            proto,
            bytes,
        })
    }

    pub fn graph(&self) -> &pb::GraphProto {
        self.proto.graph.as_ref().expect("checked at load")
    }

    /// The graph inputs that are not initializers (the real model inputs).
    pub fn inputs(&self) -> Vec<&pb::ValueInfoProto> {
        let graph = self.graph();
        graph
            .input
            .iter()
            .filter(|i| !graph.initializer.iter().any(|t| t.name == i.name))
            .collect()
    }

    /// Dimensions of a value: `Some(n)` for fixed ones, `None` for symbolic ones.
    pub fn dims(value: &pb::ValueInfoProto) -> Vec<Option<usize>> {
        edgefleet_runtime::dims(value)
    }

    /// The element type of a tensor value (ONNX `TensorProto.DataType`), when declared.
    pub fn elem_type(value: &pb::ValueInfoProto) -> Option<i32> {
        let pb::type_proto::Value::TensorType(t) = value.r#type.as_ref()?.value.as_ref()?;
        Some(t.elem_type)
    }

    /// A number stored in the model's metadata (e.g. the int8 input scale of a full-integer
    /// model).
    pub fn metadata_f32(&self, key: &str) -> Option<f32> {
        self.proto
            .metadata_props
            .iter()
            .find(|p| p.key == key)
            .and_then(|p| p.value.parse().ok())
    }

    /// Scale and zero point of an int8 input (full-integer models), from the metadata.
    pub fn input_quantization(&self) -> Option<(f32, f32)> {
        use edgefleet_runtime::{INPUT_SCALE, INPUT_ZERO_POINT};
        Some((
            self.metadata_f32(INPUT_SCALE)?,
            self.metadata_f32(INPUT_ZERO_POINT)?,
        ))
    }

    /// Scale and zero point of an int8 output (full-integer models), from the metadata.
    pub fn output_quantization(&self) -> Option<(f32, f32)> {
        use edgefleet_runtime::{OUTPUT_SCALE, OUTPUT_ZERO_POINT};
        Some((
            self.metadata_f32(OUTPUT_SCALE)?,
            self.metadata_f32(OUTPUT_ZERO_POINT)?,
        ))
    }

    /// What a runtime needs to load this model.
    pub fn info(&self) -> edgefleet_runtime::ModelInfo<'_> {
        let input = self.inputs().first().copied();
        edgefleet_runtime::ModelInfo {
            bytes: &self.bytes,
            input: input.map(|i| i.name.clone()).unwrap_or_default(),
            input_dims: input.map(Self::dims).unwrap_or_default(),
            input_q: self.input_quantization(),
            output_q: self.output_quantization(),
        }
    }

    /// How many nodes of each operator type the graph holds.
    pub fn op_histogram(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for node in &self.graph().node {
            *out.entry(node.op_type.clone()).or_insert(0) += 1;
        }
        out
    }

    /// Number of weight values (all initializer elements).
    pub fn parameters(&self) -> usize {
        self.graph()
            .initializer
            .iter()
            .map(|t| t.dims.iter().product::<i64>().max(0) as usize)
            .sum()
    }
}

/// Serializes a model in its transport form: low-bit codes packed
/// ([`edgefleet_runtime::packed`]). Every candidate's bytes come from here, so its size over the
/// air and the model the gate loads are those of the file that is published.
pub fn encode(proto: &pb::ModelProto) -> Vec<u8> {
    edgefleet_runtime::packed::packed_bytes(proto)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_files_that_are_not_onnx() {
        let path = Path::new("notes.txt");
        let err = Model::from_bytes(path, b"hello, I am a text file".to_vec())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("notes.txt: not an ONNX model"), "{err}");
        let empty = Model::from_bytes(path, encode(&pb::ModelProto::default()))
            .unwrap_err()
            .to_string();
        assert!(empty.contains("it has no graph"), "{empty}");
    }
}

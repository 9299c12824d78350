//! The inference runtimes edgefleet uses, behind one small trait: the optimizer gates candidates
//! with them and the sidecar serves with them, so a model is run the same way in both.
//!
//! - [`tract::Tract`]: pure Rust, the sidecar's default.
//! - [`ort::OnnxRuntime`]: ONNX Runtime through `ort` with `load-dynamic` (`ORT_DYLIB_PATH`).
//!
//! Full-integer models (int8 input and output) carry their input and output grids in the model's
//! metadata ([`INPUT_SCALE`] …); sessions quantize float inputs and dequantize outputs, so callers
//! always pass and receive float32.

pub mod decode;
pub mod image;
pub mod ort;
pub mod packed;
pub mod tract;

use tract_onnx::pb;

/// Model metadata keys of a full-integer model's int8 input and output grids.
pub const INPUT_SCALE: &str = "edgefleet.dev/input-scale";
pub const INPUT_ZERO_POINT: &str = "edgefleet.dev/input-zero-point";
pub const OUTPUT_SCALE: &str = "edgefleet.dev/output-scale";
pub const OUTPUT_ZERO_POINT: &str = "edgefleet.dev/output-zero-point";

/// What a runtime needs to load a model.
#[derive(Debug, Clone)]
pub struct ModelInfo<'a> {
    /// The ONNX file.
    pub bytes: &'a [u8],
    /// Name of the (first) graph input.
    pub input: String,
    /// Dimensions of that input: `Some(n)` fixed, `None` symbolic (usually the batch).
    pub input_dims: Vec<Option<usize>>,
    /// Int8 input grid `(scale, zero point)` of a full-integer model.
    pub input_q: Option<(f32, f32)>,
    /// Int8 output grid of a full-integer model.
    pub output_q: Option<(f32, f32)>,
}

impl<'a> ModelInfo<'a> {
    /// Reads what is needed from an ONNX file; the error says why it is not a usable model.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, String> {
        use prost::Message as _;
        let proto = pb::ModelProto::decode(bytes).map_err(|e| format!("not an ONNX model: {e}"))?;
        let graph = proto.graph.as_ref().ok_or("not an ONNX model: no graph")?;
        let input = graph
            .input
            .iter()
            .find(|i| !graph.initializer.iter().any(|t| t.name == i.name))
            .ok_or("the model has no input")?;
        Ok(ModelInfo {
            bytes,
            input: input.name.clone(),
            input_dims: dims(input),
            input_q: grid(&proto, INPUT_SCALE, INPUT_ZERO_POINT),
            output_q: grid(&proto, OUTPUT_SCALE, OUTPUT_ZERO_POINT),
        })
    }
}

/// Dimensions of a value: `Some(n)` for fixed ones, `None` for symbolic ones.
pub fn dims(value: &pb::ValueInfoProto) -> Vec<Option<usize>> {
    use pb::tensor_shape_proto::dimension::Value;
    use pb::type_proto::Value as Type;
    let Some(Type::TensorType(t)) = value.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return Vec::new();
    };
    t.shape
        .as_ref()
        .map(|s| {
            s.dim
                .iter()
                .map(|d| match d.value {
                    Some(Value::DimValue(v)) if v > 0 => Some(v as usize),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A `(scale, zero point)` pair stored in the model's metadata.
pub fn grid(proto: &pb::ModelProto, scale: &str, zero_point: &str) -> Option<(f32, f32)> {
    let get = |key: &str| {
        proto
            .metadata_props
            .iter()
            .find(|p| p.key == key)
            .and_then(|p| p.value.parse().ok())
    };
    Some((get(scale)?, get(zero_point)?))
}

/// A model loaded in a runtime, ready to run batches.
pub trait Session: Send {
    /// Runs one batch `[n, ..sample_shape]` and returns `[n, classes]` outputs, row-major.
    fn run(&mut self, batch: usize, data: &[f32]) -> Result<Vec<f32>, String>;
}

/// An inference runtime able to load a model for a fixed batch size. Implementations load the
/// model's [`decode::runtime_form`], never the transport form as it came.
pub trait Runtime: Send + Sync {
    fn name(&self) -> &'static str;
    fn load(
        &self,
        model: &ModelInfo<'_>,
        sample_shape: &[usize],
        batch: usize,
    ) -> Result<Box<dyn Session>, String>;
}

/// Float inputs onto a full-integer model's int8 input grid.
pub fn quantize_input(data: &[f32], (scale, zero_point): (f32, f32)) -> Vec<i8> {
    data.iter()
        .map(|v| (v / scale + zero_point).round().clamp(-128.0, 127.0) as i8)
        .collect()
}

/// Int8 outputs back to float.
pub fn dequantize_output(data: &[i8], (scale, zero_point): (f32, f32)) -> Vec<f32> {
    data.iter()
        .map(|&v| (v as f32 - zero_point) * scale)
        .collect()
}

/// Index of the largest value (the first one on ties).
pub fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 { (i, v) } else { best }
        })
        .0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_grids_round_trip_and_clamp() {
        let q = (0.5, -3.0);
        assert_eq!(
            quantize_input(&[0.0, 1.0, -100.0, 100.0], q),
            vec![-3, -1, -128, 127]
        );
        assert_eq!(dequantize_output(&[-3, -1], q), vec![0.0, 1.0]);
        assert_eq!(argmax(&[0.1, 2.0, -1.0, 2.0]), 1);
        assert!(
            ModelInfo::parse(b"not onnx")
                .unwrap_err()
                .contains("not an ONNX model")
        );
    }
}

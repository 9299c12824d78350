//! The runtime form of a model: what travels over the air is not always what runs fastest.
//!
//! A weight-only candidate carries its weights as int8 codes (any grid from 2 to 8 bits) and a
//! float scale per output channel behind a standard `DequantizeLinear`, so that any ONNX reader
//! can load the file. Its activations are float, so no runtime has an integer kernel to run it
//! with: tract folds the constant `DequantizeLinear` itself, but ONNX Runtime dequantizes every
//! weight on every inference (3.3x slower than fp32 on the CNN). [`runtime_form`] folds those
//! nodes into float32 initializers before any runtime sees the model, so weight-only candidates
//! run at fp32 speed everywhere. The optimizer's gate and the sidecar both load through
//! [`crate::Runtime::load`], which calls it, so the gate measures exactly what serves.
//!
//! A model with a `QuantizeLinear` (static int8 or full integer: activations are quantized too)
//! is left as it is: there the weight `DequantizeLinear`s are what lets a runtime fuse integer
//! kernels, and whether those are faster is for the gate to measure.

use prost::Message as _;
use std::borrow::Cow;
use tract_onnx::pb;

const FLOAT: i32 = 1;
const UINT8: i32 = 2;
const INT8: i32 = 3;

/// How many `DequantizeLinear` nodes [`runtime_form`] folded, and the model to run.
pub struct RuntimeForm<'a> {
    pub bytes: Cow<'a, [u8]>,
    pub folded: usize,
}

/// The model as runtimes should load it; borrowed unchanged when there is nothing to unpack or
/// fold. Packed codes ([`crate::packed`]) are unpacked first; a packed node this build cannot
/// read exactly is an error, never skipped.
pub fn runtime_form(bytes: &[u8]) -> Result<RuntimeForm<'_>, String> {
    let unchanged = RuntimeForm {
        bytes: Cow::Borrowed(bytes),
        folded: 0,
    };
    let mut proto = pb::ModelProto::decode(bytes).map_err(|e| format!("not an ONNX model: {e}"))?;
    let unpacked = crate::packed::unpack(&mut proto)?;
    let Some(graph) = proto.graph.as_mut() else {
        return Ok(unchanged);
    };
    let folded = if graph.node.iter().any(|n| n.op_type == "QuantizeLinear") {
        0
    } else {
        fold_constant_dequantize(graph)
    };
    if folded == 0 && unpacked == 0 {
        return Ok(unchanged);
    }
    Ok(RuntimeForm {
        bytes: Cow::Owned(proto.encode_to_vec()),
        folded,
    })
}

/// Replaces every `DequantizeLinear` whose inputs are all initializers by a float32
/// initializer holding its output. Returns how many were replaced.
pub fn fold_constant_dequantize(graph: &mut pb::GraphProto) -> usize {
    let mut folded = 0;
    let mut i = 0;
    while i < graph.node.len() {
        let node = &graph.node[i];
        let output_is_graph_output = node
            .output
            .first()
            .is_some_and(|o| graph.output.iter().any(|g| &g.name == o));
        let value = (node.op_type == "DequantizeLinear"
            && (node.domain.is_empty() || node.domain == "ai.onnx")
            && !output_is_graph_output)
            .then(|| dequantize(graph, node))
            .flatten();
        match value {
            Some(tensor) => {
                graph.node.remove(i);
                graph.initializer.push(tensor);
                folded += 1;
            }
            None => i += 1,
        }
    }
    if folded > 0 {
        let used: std::collections::HashSet<&str> = graph
            .node
            .iter()
            .flat_map(|n| n.input.iter().map(String::as_str))
            .chain(graph.output.iter().map(|o| o.name.as_str()))
            .collect();
        let keep: Vec<bool> = graph
            .initializer
            .iter()
            .map(|t| used.contains(t.name.as_str()))
            .collect();
        let mut k = keep.iter();
        graph
            .initializer
            .retain(|_| *k.next().expect("one flag per initializer"));
    }
    folded
}

/// `(x - zero_point) * scale` of a constant `DequantizeLinear`, or None when it is not one this
/// fold understands (blocked quantization, other types, shapes that do not match).
fn dequantize(graph: &pb::GraphProto, node: &pb::NodeProto) -> Option<pb::TensorProto> {
    let find = |name: &String| graph.initializer.iter().find(|t| &t.name == name);
    let x = find(node.input.first()?)?;
    let scale = floats(find(node.input.get(1)?)?)?;
    let codes = integers(x)?;
    let zero_point = match node.input.get(2).filter(|s| !s.is_empty()) {
        Some(name) => {
            let zp = find(name)?;
            (zp.data_type == x.data_type).then_some(())?;
            integers(zp)?
        }
        None => vec![0; scale.len()],
    };
    let attr = |name: &str| node.attribute.iter().find(|a| a.name == name);
    if attr("block_size").is_some_and(|a| a.i != 0) || zero_point.len() != scale.len() {
        return None;
    }
    let dims: Vec<usize> = x
        .dims
        .iter()
        .map(|&d| usize::try_from(d).ok())
        .collect::<Option<_>>()?;
    let count = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d))?;
    if codes.len() != count || scale.is_empty() {
        return None;
    }
    let channel_of: Box<dyn Fn(usize) -> usize> = if scale.len() == 1 {
        Box::new(|_| 0)
    } else {
        let axis = attr("axis").map_or(1, |a| a.i);
        let axis = usize::try_from(if axis < 0 {
            axis + dims.len() as i64
        } else {
            axis
        })
        .ok()
        .filter(|&a| a < dims.len())?;
        if dims[axis] != scale.len() {
            return None;
        }
        let inner: usize = dims[axis + 1..].iter().product();
        let channels = dims[axis];
        Box::new(move |i| (i / inner) % channels)
    };
    let values: Vec<u8> = codes
        .iter()
        .enumerate()
        .flat_map(|(i, &q)| {
            let c = channel_of(i);
            ((q - zero_point[c]) as f32 * scale[c]).to_le_bytes()
        })
        .collect();
    Some(pb::TensorProto {
        name: node.output.first()?.clone(),
        dims: x.dims.clone(),
        data_type: FLOAT,
        raw_data: values,
        ..Default::default()
    })
}

fn floats(t: &pb::TensorProto) -> Option<Vec<f32>> {
    if t.data_type != FLOAT {
        return None;
    }
    if !t.raw_data.is_empty() {
        return t.raw_data.len().is_multiple_of(4).then(|| {
            t.raw_data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        });
    }
    Some(t.float_data.clone())
}

fn integers(t: &pb::TensorProto) -> Option<Vec<i32>> {
    let from_byte = |b: u8| match t.data_type {
        INT8 => b as i8 as i32,
        _ => b as i32,
    };
    match t.data_type {
        INT8 | UINT8 if !t.raw_data.is_empty() => {
            Some(t.raw_data.iter().map(|&b| from_byte(b)).collect())
        }
        INT8 | UINT8 => Some(t.int32_data.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(name: &str, dims: &[i64], data_type: i32, raw: Vec<u8>) -> pb::TensorProto {
        pb::TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type,
            raw_data: raw,
            ..Default::default()
        }
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn dq(inputs: &[&str], output: &str, axis: Option<i64>) -> pb::NodeProto {
        pb::NodeProto {
            op_type: "DequantizeLinear".into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            attribute: axis
                .map(|a| pb::AttributeProto {
                    name: "axis".into(),
                    i: a,
                    r#type: pb::attribute_proto::AttributeType::Int as i32,
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            ..Default::default()
        }
    }

    fn graph(nodes: Vec<pb::NodeProto>, init: Vec<pb::TensorProto>) -> pb::GraphProto {
        pb::GraphProto {
            node: nodes,
            initializer: init,
            output: vec![pb::ValueInfoProto {
                name: "y".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn value(g: &pb::GraphProto, name: &str) -> Vec<f32> {
        floats(g.initializer.iter().find(|t| t.name == name).unwrap()).unwrap()
    }

    #[test]
    fn per_channel_weights_become_float_and_their_codes_go() {
        let conv = pb::NodeProto {
            op_type: "Conv".into(),
            input: vec!["x".into(), "w".into()],
            output: vec!["y".into()],
            ..Default::default()
        };
        let codes = [1i8, -2, 3, 127, -127, 0];
        let mut g = graph(
            vec![dq(&["w.q", "w.s"], "w", Some(0)), conv],
            vec![
                tensor(
                    "w.q",
                    &[2, 3],
                    INT8,
                    codes.iter().map(|&c| c as u8).collect(),
                ),
                tensor("w.s", &[2], FLOAT, f32s(&[0.5, 0.25])),
            ],
        );
        assert_eq!(fold_constant_dequantize(&mut g), 1);
        assert_eq!(g.node.len(), 1);
        assert_eq!(value(&g, "w"), [0.5, -1.0, 1.5, 31.75, -31.75, 0.0]);
        assert_eq!(g.initializer.len(), 1, "codes and scales are dropped");
    }

    #[test]
    fn zero_points_per_tensor_scales_and_uint8_are_honoured() {
        let mut g = graph(
            vec![
                dq(&["a.q", "a.s", "a.z"], "a", None),
                pb::NodeProto {
                    op_type: "Add".into(),
                    input: vec!["a".into(), "a".into()],
                    output: vec!["y".into()],
                    ..Default::default()
                },
            ],
            vec![
                tensor("a.q", &[3], UINT8, vec![0, 128, 255]),
                tensor("a.s", &[], FLOAT, f32s(&[2.0])),
                tensor("a.z", &[], UINT8, vec![128]),
            ],
        );
        assert_eq!(fold_constant_dequantize(&mut g), 1);
        assert_eq!(value(&g, "a"), [-256.0, 0.0, 254.0]);
    }

    #[test]
    fn activations_blocked_grids_and_mismatched_scales_are_left_alone() {
        // Input is not a constant (an activation).
        let mut g = graph(
            vec![dq(&["x", "s"], "y", None)],
            vec![tensor("s", &[], FLOAT, f32s(&[1.0]))],
        );
        assert_eq!(fold_constant_dequantize(&mut g), 0);
        // Scale count does not match the axis.
        let mut g = graph(
            vec![dq(&["q", "s"], "w", Some(0))],
            vec![
                tensor("q", &[2, 2], INT8, vec![1, 2, 3, 4]),
                tensor("s", &[3], FLOAT, f32s(&[1.0, 1.0, 1.0])),
            ],
        );
        assert_eq!(fold_constant_dequantize(&mut g), 0);
        // Codes shorter than the dims say.
        let mut g = graph(
            vec![dq(&["q", "s"], "w", None)],
            vec![
                tensor("q", &[4, 4], INT8, vec![1, 2]),
                tensor("s", &[], FLOAT, f32s(&[1.0])),
            ],
        );
        assert_eq!(fold_constant_dequantize(&mut g), 0);
    }

    #[test]
    fn models_with_quantized_activations_keep_their_weight_grids() {
        let model = pb::ModelProto {
            graph: Some(graph(
                vec![
                    dq(&["q", "s"], "w", None),
                    pb::NodeProto {
                        op_type: "QuantizeLinear".into(),
                        input: vec!["x".into(), "s".into()],
                        output: vec!["y".into()],
                        ..Default::default()
                    },
                ],
                vec![
                    tensor("q", &[1], INT8, vec![1]),
                    tensor("s", &[], FLOAT, f32s(&[1.0])),
                ],
            )),
            ..Default::default()
        };
        let bytes = model.encode_to_vec();
        let form = runtime_form(&bytes).unwrap();
        assert_eq!(form.folded, 0);
        assert!(matches!(form.bytes, Cow::Borrowed(_)));
        assert!(runtime_form(b"not onnx").is_err());
    }

    /// A weight-only model and the same model with its activations quantized, 3-bit codes.
    fn low_bit_model(quantized_activations: bool) -> pb::ModelProto {
        let codes: Vec<u8> = (0..1024).map(|i| ((i * 5) % 7) as i8 as u8).collect();
        let mut nodes = vec![
            dq(&["w.q", "w.s"], "w", Some(0)),
            pb::NodeProto {
                op_type: "Conv".into(),
                input: vec!["x".into(), "w".into()],
                output: vec!["y".into()],
                ..Default::default()
            },
        ];
        if quantized_activations {
            nodes.push(pb::NodeProto {
                op_type: "QuantizeLinear".into(),
                input: vec!["y".into(), "w.s".into()],
                output: vec!["z".into()],
                ..Default::default()
            });
        }
        pb::ModelProto {
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: 17,
            }],
            graph: Some(graph(
                nodes,
                vec![
                    tensor("w.q", &[16, 64], INT8, codes),
                    tensor("w.s", &[16], FLOAT, f32s(&[0.5; 16])),
                ],
            )),
            ..Default::default()
        }
    }

    #[test]
    fn packed_codes_decode_to_what_the_unpacked_model_runs() {
        for quantized_activations in [false, true] {
            let standard = low_bit_model(quantized_activations);
            let transport = crate::packed::packed_bytes(&standard);
            assert!(transport.len() + 200 < standard.encode_to_vec().len());
            let from_transport = pb::ModelProto::decode(&*runtime_form(&transport).unwrap().bytes);
            let plain = standard.encode_to_vec();
            let from_standard = pb::ModelProto::decode(&*runtime_form(&plain).unwrap().bytes);
            let (mut a, mut b) = (from_transport.unwrap(), from_standard.unwrap());
            for m in [&mut a, &mut b] {
                let g = m.graph.as_mut().unwrap();
                g.initializer.sort_by(|x, y| x.name.cmp(&y.name));
            }
            assert_eq!(a, b, "quantized activations: {quantized_activations}");
            assert!(!crate::packed::is_packed(&a));
        }
        let mut broken = low_bit_model(false);
        crate::packed::pack(&mut broken);
        broken.graph.as_mut().unwrap().initializer[0].raw_data.pop();
        let e = runtime_form(&broken.encode_to_vec()).err().unwrap();
        assert!(
            e.contains("w.q.unpack") && e.contains("packed bytes"),
            "{e}"
        );
    }
}

//! Small graphs built in code for the passes' unit tests, and a way to run them with tract.

use super::graph::{f32_tensor, int_attr, node};
use crate::model::pb::{self, ModelProto};
use tract_onnx::prelude::*;

fn value(name: &str, dims: &[i64]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension::Value};
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: 1,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(Value::DimValue(d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn model(
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
    input: (&str, &[i64]),
    output: (&str, &[i64]),
) -> ModelProto {
    ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(pb::GraphProto {
            name: "test".into(),
            node: nodes,
            initializer: initializers,
            input: vec![value(input.0, input.1)],
            output: vec![value(output.0, output.1)],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pseudo(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 1000) as f32 / 500.0
                - 1.0
        })
        .collect()
}

/// input [1,2,5,5] → Conv(3 filters, 3×3, pad 1, bias) → BatchNormalization → Relu → output.
pub fn conv_bn_relu_model() -> ModelProto {
    let mut pads = int_attr("pads", 0);
    pads.ints = vec![1, 1, 1, 1];
    pads.r#type = pb::attribute_proto::AttributeType::Ints as i32;
    let mut bn_eps = int_attr("epsilon", 0);
    bn_eps.r#type = pb::attribute_proto::AttributeType::Float as i32;
    bn_eps.f = 1e-3;
    model(
        vec![
            node(
                "Conv",
                "conv",
                &["input", "conv.w", "conv.b"],
                &["c"],
                vec![pads],
            ),
            node(
                "BatchNormalization",
                "bn",
                &["c", "bn.gamma", "bn.beta", "bn.mean", "bn.var"],
                &["b"],
                vec![bn_eps],
            ),
            node("Relu", "relu", &["b"], &["output"], vec![]),
        ],
        vec![
            f32_tensor("conv.w", &[3, 2, 3, 3], &pseudo(54, 1)),
            f32_tensor("conv.b", &[3], &[0.1, -0.2, 0.3]),
            f32_tensor("bn.gamma", &[3], &[1.5, 0.5, -1.0]),
            f32_tensor("bn.beta", &[3], &[0.1, 0.0, 0.2]),
            f32_tensor("bn.mean", &[3], &[0.05, -0.1, 0.2]),
            f32_tensor("bn.var", &[3], &[0.9, 1.2, 0.4]),
        ],
        ("input", &[1, 2, 5, 5]),
        ("output", &[1, 3, 5, 5]),
    )
}

/// Runs a model once with tract and returns its first output.
pub fn run(model: &ModelProto, shape: &[usize], data: &[f32]) -> Vec<f32> {
    run_typed(model, shape, data)
}

/// Runs a model with an int8 input once with tract and returns its int8 output.
pub fn run_i8(model: &ModelProto, shape: &[usize], data: &[i8]) -> Vec<i8> {
    run_typed(model, shape, data)
}

fn run_typed<In: Datum + Copy, Out: Datum + Copy>(
    model: &ModelProto,
    shape: &[usize],
    data: &[In],
) -> Vec<Out> {
    let bytes = crate::model::encode(model);
    let plan = tract_onnx::onnx()
        .model_for_read(&mut bytes.as_slice())
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .expect("tract loads the test model");
    let input = Tensor::from_shape(shape, data).unwrap();
    let out = plan.run(tvec!(input.into())).unwrap();
    out[0]
        .to_plain_array_view::<Out>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}

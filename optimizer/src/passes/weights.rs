//! Which initializers are layer weights: the second input of `Conv`, `ConvTranspose`, `Gemm` and
//! `MatMul` when it is a float32 constant. Biases and normalization parameters are never touched
//! by pruning or clustering.

use super::graph::{f32_values, initializer};
use crate::model::pb::GraphProto;

/// A weight tensor and the node that uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct Weight {
    pub name: String,
    pub node: String,
    pub op: String,
    pub dims: Vec<i64>,
    pub values: Vec<f32>,
}

/// Operators whose second input is a layer weight.
pub fn is_layer(op: &str) -> bool {
    matches!(op, "Conv" | "ConvTranspose" | "Gemm" | "MatMul")
}

pub fn layer_weights(graph: &GraphProto) -> Vec<Weight> {
    let mut out: Vec<Weight> = Vec::new();
    for node in &graph.node {
        if !is_layer(&node.op_type) {
            continue;
        }
        let Some(name) = node.input.get(1) else {
            continue;
        };
        if out.iter().any(|w| &w.name == name) {
            continue;
        }
        if let Some(values) = initializer(graph, name).and_then(f32_values) {
            let dims = initializer(graph, name)
                .map(|t| t.dims.clone())
                .unwrap_or_default();
            out.push(Weight {
                name: name.clone(),
                node: node.name.clone(),
                op: node.op_type.clone(),
                dims,
                values,
            });
        }
    }
    out
}

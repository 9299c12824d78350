//! Small, checked helpers over ONNX protobuf graphs shared by the passes: typed access to
//! initializers and attributes, building tensors, and dropping what no node uses.

use crate::model::pb::{self, AttributeProto, GraphProto, NodeProto, TensorProto};

pub const FLOAT: i32 = 1;
pub const UINT8: i32 = 2;
pub const INT8: i32 = 3;
pub const INT64: i32 = 7;
pub const FLOAT16: i32 = 10;

/// A pass could not transform a node; names the node and its operator.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("node {node:?} ({op}): {message}")]
pub struct PassError {
    pub node: String,
    pub op: String,
    pub message: String,
}

impl PassError {
    pub fn new(node: &NodeProto, message: impl Into<String>) -> Self {
        Self {
            node: node.name.clone(),
            op: node.op_type.clone(),
            message: message.into(),
        }
    }
}

pub fn initializer<'a>(graph: &'a GraphProto, name: &str) -> Option<&'a TensorProto> {
    graph.initializer.iter().find(|t| t.name == name)
}

/// Float32 values of a tensor, whichever field holds them.
pub fn f32_values(tensor: &TensorProto) -> Option<Vec<f32>> {
    if tensor.data_type != FLOAT {
        return None;
    }
    if !tensor.raw_data.is_empty() {
        Some(
            tensor
                .raw_data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        )
    } else {
        Some(tensor.float_data.clone())
    }
}

pub fn f32_tensor(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: FLOAT,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

pub fn u8_tensor(name: &str, dims: &[i64], values: &[u8]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: UINT8,
        raw_data: values.to_vec(),
        ..Default::default()
    }
}

pub fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

pub fn attr_i(node: &NodeProto, name: &str) -> Option<i64> {
    attr(node, name).map(|a| a.i)
}

pub fn attr_f(node: &NodeProto, name: &str) -> Option<f32> {
    attr(node, name).map(|a| a.f)
}

pub fn int_attr(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i: value,
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        ..Default::default()
    }
}

pub fn node(
    op: &str,
    name: &str,
    inputs: &[&str],
    outputs: &[&str],
    attributes: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: name.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attributes,
        ..Default::default()
    }
}

/// Indices of the nodes that read `value`.
pub fn consumers(graph: &GraphProto, value: &str) -> Vec<usize> {
    graph
        .node
        .iter()
        .enumerate()
        .filter(|(_, n)| n.input.iter().any(|i| i == value))
        .map(|(i, _)| i)
        .collect()
}

/// How many times `value` is read by nodes or exposed as a graph output.
pub fn uses(graph: &GraphProto, value: &str) -> usize {
    graph
        .node
        .iter()
        .flat_map(|n| &n.input)
        .filter(|i| *i == value)
        .count()
        + graph.output.iter().filter(|o| o.name == value).count()
}

/// Drops initializers (and their graph-input entries) that nothing reads any more. Real model
/// inputs are never touched.
pub fn remove_unused_initializers(graph: &mut GraphProto) {
    let used: std::collections::HashSet<String> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().cloned())
        .chain(graph.output.iter().map(|o| o.name.clone()))
        .collect();
    let removed: std::collections::HashSet<String> = graph
        .initializer
        .iter()
        .filter(|t| !used.contains(&t.name))
        .map(|t| t.name.clone())
        .collect();
    graph.initializer.retain(|t| !removed.contains(&t.name));
    graph.input.retain(|i| !removed.contains(&i.name));
}

/// A name not used by any value in the graph, derived from `base`.
pub fn fresh_name(graph: &GraphProto, base: &str) -> String {
    let taken = |n: &str| {
        graph.initializer.iter().any(|t| t.name == n)
            || graph
                .node
                .iter()
                .any(|x| x.output.iter().any(|o| o == n) || x.name == n)
            || graph.input.iter().any(|i| i.name == n)
    };
    if !taken(base) {
        return base.to_string();
    }
    (1..)
        .map(|i| format!("{base}.{i}"))
        .find(|n| !taken(n))
        .expect("some suffix is free")
}

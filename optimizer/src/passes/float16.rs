//! Float16: weights and compute in half precision. Float32 graph inputs are cast to fp16 right
//! after they enter and float32 outputs are cast back right before they leave, so callers keep
//! feeding and reading float32. A weight with a value outside fp16's range stays float32 and is
//! cast where it is used; inputs that operators require in float32 (Resize's scales) stay too.

use super::graph::{FLOAT, FLOAT16, f32_values, fresh_name, int_attr, node};
use crate::model::Model;
use crate::model::pb::{self, GraphProto, TensorProto};
use half::f16;

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Float16Report {
    /// Initializers converted to fp16.
    pub converted: usize,
    /// Initializers kept in float32 because a value does not fit fp16.
    pub kept_out_of_range: Vec<String>,
    /// Nodes kept in float32 on request (inputs cast up, outputs cast down).
    pub kept_nodes: Vec<String>,
}

/// Converts the graph. `keep` names nodes that stay float32: their float inputs are cast to
/// float32 and their outputs back to fp16.
pub fn to_float16(graph: &mut GraphProto, keep: &[String]) -> Float16Report {
    let mut report = Float16Report::default();
    // Inputs that must stay float32 whatever the graph's precision.
    let pinned: Vec<String> = graph
        .node
        .iter()
        .filter(|n| matches!(n.op_type.as_str(), "Resize" | "Upsample"))
        .flat_map(|n| n.input.iter().skip(1).cloned())
        .collect();

    gemm_to_matmul(graph);
    for t in &mut graph.initializer {
        if t.data_type != FLOAT || pinned.contains(&t.name) {
            continue;
        }
        let values = f32_values(t).expect("float tensor");
        if values
            .iter()
            .any(|v| v.is_finite() && v.abs() > f16::MAX.to_f32())
        {
            report.kept_out_of_range.push(t.name.clone());
            continue;
        }
        *t = f16_tensor(&t.name, &t.dims, &values);
        report.converted += 1;
    }
    for n in &mut graph.node {
        if n.op_type == "Constant" {
            for a in &mut n.attribute {
                if let Some(t) = a.t.as_mut()
                    && t.data_type == FLOAT
                {
                    let values = f32_values(t).expect("float tensor");
                    *t = f16_tensor(&t.name, &t.dims, &values);
                }
            }
        }
        if n.op_type == "Cast" {
            for a in &mut n.attribute {
                if a.name == "to" && a.i == FLOAT as i64 {
                    a.i = FLOAT16 as i64;
                }
            }
        }
    }

    // Nodes kept in float32: cast their float inputs up and their outputs down.
    for name in keep {
        let Some(idx) = graph.node.iter().position(|n| &n.name == name) else {
            continue;
        };
        let original = graph.node[idx].clone();
        let mut before = Vec::new();
        let mut after = Vec::new();
        let mut kept = original.clone();
        for (slot, input) in original.input.iter().enumerate() {
            // Float32 initializers (out of fp16 range) are read as they are.
            if input.is_empty() || !is_half(graph, input) {
                continue;
            }
            let up = fresh_name(graph, &format!("{input}.fp32.{}", original.name));
            before.push(cast_node(graph, input, &up, FLOAT));
            kept.input[slot] = up;
        }
        for (slot, output) in original.output.iter().enumerate() {
            let wide = fresh_name(graph, &format!("{output}.fp32"));
            after.push(cast_node(graph, &wide, output, FLOAT16));
            kept.output[slot] = wide;
        }
        let tail: Vec<_> = graph.node.drain(idx..).skip(1).collect();
        graph.node.extend(before);
        graph.node.push(kept);
        graph.node.extend(after);
        graph.node.extend(tail);
        report.kept_nodes.push(name.clone());
    }
    // Float32 weights still read by fp16 compute get a cast.
    for name in report.kept_out_of_range.clone() {
        let cast = fresh_name(graph, &format!("{name}.fp16"));
        let except: Vec<&str> = keep.iter().map(String::as_str).collect();
        rename_reads(graph, &name, &cast, &except);
        graph
            .node
            .insert(0, cast_node(graph, &name, &cast, FLOAT16));
    }
    // Graph inputs: cast float32 → fp16 once, at the top.
    let inputs: Vec<String> = graph
        .input
        .iter()
        .filter(|i| Model::elem_type(i) == Some(FLOAT))
        .filter(|i| !graph.initializer.iter().any(|t| t.name == i.name))
        .map(|i| i.name.clone())
        .collect();
    for name in inputs {
        let half = fresh_name(graph, &format!("{name}.fp16"));
        rename_reads(graph, &name, &half, &[]);
        graph
            .node
            .insert(0, cast_node(graph, &name, &half, FLOAT16));
    }
    // Graph outputs: the producer writes fp16, a final cast restores float32.
    let outputs: Vec<String> = graph
        .output
        .iter()
        .filter(|o| Model::elem_type(o) == Some(FLOAT))
        .map(|o| o.name.clone())
        .collect();
    for name in outputs {
        let half = fresh_name(graph, &format!("{name}.fp16"));
        for n in &mut graph.node {
            for o in &mut n.output {
                if *o == name {
                    o.clone_from(&half);
                }
            }
        }
        rename_reads(graph, &name, &half, &[]);
        let cast = cast_node(graph, &half, &name, FLOAT);
        graph.node.push(cast);
    }

    // Intermediate type annotations are now wrong; runtimes infer them again.
    graph.value_info.clear();
    report
}

/// `Gemm(A, B, C)` with a constant B, alpha = beta = 1 and no transposed A becomes
/// `Add(MatMul(A, B'), C)` (B' pre-transposed when transB = 1): tract 0.23's fp16 Gemm declares a
/// float32 output and refuses the graph, while fp16 MatMul and Add run in every runtime.
fn gemm_to_matmul(graph: &mut GraphProto) {
    use super::graph::{attr_f, attr_i, f32_tensor, initializer};
    let mut i = 0;
    while i < graph.node.len() {
        let n = graph.node[i].clone();
        let plain = n.op_type == "Gemm"
            && attr_f(&n, "alpha").unwrap_or(1.0) == 1.0
            && attr_f(&n, "beta").unwrap_or(1.0) == 1.0
            && attr_i(&n, "transA").unwrap_or(0) == 0;
        let weight = n.input.get(1).and_then(|b| initializer(graph, b)).cloned();
        let (true, Some(b)) = (plain, weight) else {
            i += 1;
            continue;
        };
        let Some(values) = f32_values(&b).filter(|_| b.dims.len() == 2) else {
            i += 1;
            continue;
        };
        let mut b_name = b.name.clone();
        if attr_i(&n, "transB").unwrap_or(0) == 1 {
            let (rows, cols) = (b.dims[0] as usize, b.dims[1] as usize);
            let transposed: Vec<f32> = (0..cols)
                .flat_map(|c| (0..rows).map(move |r| (r, c)))
                .map(|(r, c)| values[r * cols + c])
                .collect();
            b_name = fresh_name(graph, &format!("{}.t", b.name));
            graph.initializer.push(f32_tensor(
                &b_name,
                &[cols as i64, rows as i64],
                &transposed,
            ));
        }
        let product = fresh_name(graph, &format!("{}.matmul", n.output[0]));
        let mut replacement = vec![node(
            "MatMul",
            &format!("{}.matmul", n.name),
            &[&n.input[0], &b_name],
            &[if n.input.len() > 2 {
                &product
            } else {
                &n.output[0]
            }],
            vec![],
        )];
        if let Some(c) = n.input.get(2).filter(|c| !c.is_empty()) {
            replacement.push(node(
                "Add",
                &n.name,
                &[&product, c],
                &[&n.output[0]],
                vec![],
            ));
        }
        let added = replacement.len();
        graph.node.splice(i..=i, replacement);
        i += added;
    }
    super::graph::remove_unused_initializers(graph);
}

fn f16_tensor(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: FLOAT16,
        raw_data: values
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_le_bytes())
            .collect(),
        ..Default::default()
    }
}

fn cast_node(graph: &GraphProto, from: &str, to: &str, ty: i32) -> pb::NodeProto {
    node(
        "Cast",
        &fresh_name(graph, &format!("{to}.cast")),
        &[from],
        &[to],
        vec![int_attr("to", ty as i64)],
    )
}

/// Nodes reading `from` read `to` instead (except those in `except`).
fn rename_reads(graph: &mut GraphProto, from: &str, to: &str, except: &[&str]) {
    for n in &mut graph.node {
        if except.contains(&n.name.as_str()) {
            continue;
        }
        for i in &mut n.input {
            if i == from {
                *i = to.to_string();
            }
        }
    }
}

/// Whether a value is fp16 after conversion: an fp16 initializer, or an activation (everything
/// computed here is float unless produced by a shape-like op).
fn is_half(graph: &GraphProto, value: &str) -> bool {
    if let Some(t) = graph.initializer.iter().find(|t| t.name == value) {
        return t.data_type == FLOAT16;
    }
    !graph.node.iter().any(|n| {
        n.output.iter().any(|o| o == value)
            && matches!(n.op_type.as_str(), "Shape" | "Size" | "ArgMax" | "ArgMin")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::graph::{f32_tensor, initializer};
    use crate::passes::testing::{conv_bn_relu_model, run};

    #[test]
    fn weights_become_half_and_the_interface_stays_float() {
        let model = conv_bn_relu_model();
        let input: Vec<f32> = (0..50).map(|i| (i as f32 * 0.3).sin()).collect();
        let want = run(&model, &[1, 2, 5, 5], &input);
        let mut half = model.clone();
        let report = to_float16(half.graph.as_mut().unwrap(), &[]);
        assert_eq!(report.converted, 6);
        let graph = half.graph.as_ref().unwrap();
        assert_eq!(initializer(graph, "conv.w").unwrap().data_type, FLOAT16);
        assert_eq!(initializer(graph, "conv.w").unwrap().raw_data.len(), 54 * 2);
        assert_eq!(graph.node.first().unwrap().op_type, "Cast");
        assert_eq!(graph.node.last().unwrap().op_type, "Cast");
        assert_eq!(graph.node.last().unwrap().output, ["output"]);
        let got = run(&half, &[1, 2, 5, 5], &input);
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() <= 0.01 * scale, "{a} vs {b}");
        }
    }

    #[test]
    fn gemm_runs_in_half_as_matmul_and_add() {
        use crate::passes::graph::{int_attr, node};
        use crate::passes::testing::model;
        let w: Vec<f32> = (0..12).map(|i| (i as f32 * 0.37).sin()).collect();
        let m = model(
            vec![node(
                "Gemm",
                "fc",
                &["input", "w", "b"],
                &["output"],
                vec![int_attr("transB", 1)],
            )],
            vec![
                f32_tensor("w", &[3, 4], &w),
                f32_tensor("b", &[3], &[0.5, -0.25, 1.0]),
            ],
            ("input", &[1, 4]),
            ("output", &[1, 3]),
        );
        let input = [0.3, -1.2, 0.8, 2.0];
        let want = run(&m, &[1, 4], &input);
        let mut half = m.clone();
        to_float16(half.graph.as_mut().unwrap(), &[]);
        let ops: Vec<&str> = half
            .graph
            .as_ref()
            .unwrap()
            .node
            .iter()
            .map(|n| n.op_type.as_str())
            .collect();
        assert_eq!(ops, ["Cast", "MatMul", "Add", "Cast"]);
        let got = run(&half, &[1, 4], &input);
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() <= 0.01, "{a} vs {b}");
        }
    }

    #[test]
    fn out_of_range_weights_and_kept_nodes_stay_float32() {
        let mut model = conv_bn_relu_model();
        let graph = model.graph.as_mut().unwrap();
        let big = graph
            .initializer
            .iter_mut()
            .find(|t| t.name == "bn.var")
            .unwrap();
        *big = f32_tensor("bn.var", &[3], &[1e6, 2e6, 70000.0]);
        let input: Vec<f32> = (0..50).map(|i| (i as f32 * 0.7).cos()).collect();
        let want = run(&model, &[1, 2, 5, 5], &input);
        let mut half = model.clone();
        let report = to_float16(half.graph.as_mut().unwrap(), &["bn".to_string()]);
        assert_eq!(report.kept_out_of_range, ["bn.var"]);
        assert_eq!(report.kept_nodes, ["bn"]);
        let graph = half.graph.as_ref().unwrap();
        assert_eq!(initializer(graph, "bn.var").unwrap().data_type, FLOAT);
        let got = run(&half, &[1, 2, 5, 5], &input);
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() <= 0.01 * scale, "{a} vs {b}");
        }
    }
}

//! Static int8 in QDQ form: per-channel int8 weights, and a `QuantizeLinear → DequantizeLinear`
//! pair on each activation that a Conv, Gemm or MatMul reads, with the scale and zero point
//! taken from calibrated ranges. Runtimes that have int8 kernels fuse the pattern; the file is
//! portable ONNX either way (standard operators only, no contrib ops).
//!
//! Full integer (for integer-only devices) goes further: every activation is quantized, the graph
//! input is int8 and the outputs are int8, with their scales and zero points recorded in the
//! model's metadata (`edgefleet.dev/input-scale`, ...) so callers can convert.

use super::graph::{
    FLOAT, INT8, PassError, f32_tensor, fresh_name, node, remove_unused_initializers,
};
use super::int8_weights::{Grid, quantize_weight};
use super::weights::layer_weights;
use crate::model::pb::{self, ModelProto, TensorProto};
use std::collections::BTreeMap;

pub use edgefleet_runtime::{INPUT_SCALE, INPUT_ZERO_POINT, OUTPUT_SCALE, OUTPUT_ZERO_POINT};

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct QdqReport {
    pub quantized_layers: Vec<String>,
    pub kept_float: Vec<String>,
    pub quantized_activations: usize,
}

/// Scale and zero point of an int8 (asymmetric) grid covering `[lo, hi]` (which holds zero).
pub fn int8_params(lo: f32, hi: f32) -> (f32, i8) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let span = (hi - lo).max(1e-8);
    let scale = span / 255.0;
    let zero_point = (-128.0 - lo / scale).round().clamp(-128.0, 127.0);
    (scale, zero_point as i8)
}

/// Quantizes the layers of `model` (names of Conv/Gemm/MatMul nodes in `keep` stay float).
/// `ranges` gives `[lo, hi]` per activation name; activations without a range stay float.
pub fn quantize_static(
    model: &mut ModelProto,
    ranges: &BTreeMap<String, (f32, f32)>,
    keep: &[String],
    full_integer: bool,
) -> Result<QdqReport, PassError> {
    let graph = model.graph.as_mut().expect("model has a graph");
    let mut report = QdqReport::default();
    let layers = layer_weights(graph);
    // Which activations get a Q/DQ pair.
    let mut targets: Vec<String> = Vec::new();
    let linear: Vec<_> = graph
        .node
        .iter()
        .filter(|n| crate::passes::weights::is_layer(&n.op_type))
        .cloned()
        .collect();
    for n in linear {
        if keep.contains(&n.name) {
            report.kept_float.push(n.name.clone());
            continue;
        }
        let weight = n.input.get(1).cloned().unwrap_or_default();
        if let Some(w) = layers.iter().find(|w| w.name == weight) {
            quantize_weight(graph, w, Grid::PerChannel)?;
        } else if !graph
            .node
            .iter()
            .any(|p| p.op_type == "DequantizeLinear" && p.output.contains(&weight))
        {
            continue; // weight computed at run time: not a layer we quantize
        }
        report.quantized_layers.push(n.name.clone());
        if let Some(x) = n.input.first()
            && !targets.contains(x)
        {
            targets.push(x.clone());
        }
    }
    if full_integer {
        // Every float activation, kept layers included: an integer-only device has no float.
        for n in &graph.node {
            if matches!(
                n.op_type.as_str(),
                "DequantizeLinear" | "Shape" | "Constant"
            ) {
                continue;
            }
            for o in &n.output {
                if ranges.contains_key(o)
                    && !targets.contains(o)
                    && !graph.output.iter().any(|g| &g.name == o)
                {
                    targets.push(o.clone());
                }
            }
        }
    }
    let input_name = graph
        .input
        .iter()
        .find(|i| !graph.initializer.iter().any(|t| t.name == i.name))
        .map(|i| i.name.clone());
    for x in &targets {
        let Some(&(lo, hi)) = ranges.get(x) else {
            continue;
        };
        if full_integer && Some(x) == input_name.as_ref() {
            continue; // the input itself becomes int8 below
        }
        let (scale, zp) = int8_params(lo, hi);
        let s = fresh_name(graph, &format!("{x}.act_scale"));
        let z = fresh_name(graph, &format!("{x}.act_zero_point"));
        let q = fresh_name(graph, &format!("{x}.q"));
        let dq = fresh_name(graph, &format!("{x}.dq"));
        graph.initializer.push(f32_tensor(&s, &[], &[scale]));
        graph.initializer.push(i8_scalar(&z, zp));
        for n in &mut graph.node {
            for i in &mut n.input {
                if i == x {
                    i.clone_from(&dq);
                }
            }
        }
        let at = graph
            .node
            .iter()
            .position(|n| n.output.contains(x))
            .map_or(0, |p| p + 1);
        let qn = node(
            "QuantizeLinear",
            &fresh_name(graph, &format!("{x}.quantize")),
            &[x, &s, &z],
            &[&q],
            vec![],
        );
        let dqn = node(
            "DequantizeLinear",
            &fresh_name(graph, &format!("{x}.dequantize")),
            &[&q, &s, &z],
            &[&dq],
            vec![],
        );
        graph.node.insert(at, dqn);
        graph.node.insert(at, qn);
        report.quantized_activations += 1;
    }

    if full_integer {
        let input = input_name.ok_or_else(|| PassError {
            node: String::new(),
            op: "graph".into(),
            message: "the model has no input".into(),
        })?;
        let &(lo, hi) = ranges.get(&input).ok_or_else(|| PassError {
            node: input.clone(),
            op: "graph input".into(),
            message: "no calibrated range for the input".into(),
        })?;
        let (scale, zp) = int8_params(lo, hi);
        let s = fresh_name(graph, "input.scale");
        let z = fresh_name(graph, "input.zero_point");
        let float = fresh_name(graph, &format!("{input}.float"));
        graph.initializer.push(f32_tensor(&s, &[], &[scale]));
        graph.initializer.push(i8_scalar(&z, zp));
        for n in &mut graph.node {
            for i in &mut n.input {
                if *i == input {
                    i.clone_from(&float);
                }
            }
        }
        graph.node.insert(
            0,
            node(
                "DequantizeLinear",
                &fresh_name(graph, "input.dequantize"),
                &[&input, &s, &z],
                &[&float],
                vec![],
            ),
        );
        set_elem_type(
            graph
                .input
                .iter_mut()
                .find(|i| i.name == input)
                .expect("input"),
            INT8,
        );
        let mut meta = vec![
            (INPUT_SCALE, scale.to_string()),
            (INPUT_ZERO_POINT, zp.to_string()),
        ];

        let outputs: Vec<String> = graph.output.iter().map(|o| o.name.clone()).collect();
        for out in outputs {
            let &(lo, hi) = ranges.get(&out).ok_or_else(|| PassError {
                node: out.clone(),
                op: "graph output".into(),
                message: "no calibrated range for the output".into(),
            })?;
            let (scale, zp) = int8_params(lo, hi);
            let s = fresh_name(graph, &format!("{out}.scale"));
            let z = fresh_name(graph, &format!("{out}.zero_point"));
            let float = fresh_name(graph, &format!("{out}.float"));
            graph.initializer.push(f32_tensor(&s, &[], &[scale]));
            graph.initializer.push(i8_scalar(&z, zp));
            for n in &mut graph.node {
                for o in &mut n.output {
                    if *o == out {
                        o.clone_from(&float);
                    }
                }
                for i in &mut n.input {
                    if *i == out {
                        i.clone_from(&float);
                    }
                }
            }
            graph.node.push(node(
                "QuantizeLinear",
                &fresh_name(graph, &format!("{out}.quantize")),
                &[&float, &s, &z],
                &[&out],
                vec![],
            ));
            set_elem_type(
                graph
                    .output
                    .iter_mut()
                    .find(|o| o.name == out)
                    .expect("output"),
                INT8,
            );
            meta.push((OUTPUT_SCALE, scale.to_string()));
            meta.push((OUTPUT_ZERO_POINT, zp.to_string()));
        }
        model
            .metadata_props
            .retain(|p| !p.key.starts_with("edgefleet.dev/"));
        for (key, value) in meta {
            model.metadata_props.push(pb::StringStringEntryProto {
                key: key.into(),
                value,
            });
        }
    }
    let graph = model.graph.as_mut().expect("model has a graph");
    graph.value_info.clear();
    remove_unused_initializers(graph);
    Ok(report)
}

fn i8_scalar(name: &str, v: i8) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: vec![],
        data_type: INT8,
        raw_data: vec![v as u8],
        ..Default::default()
    }
}

fn set_elem_type(value: &mut pb::ValueInfoProto, ty: i32) {
    if let Some(pb::type_proto::Value::TensorType(t)) =
        value.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        // (the only kind of value this pass touches)
        debug_assert!(t.elem_type == FLOAT || t.elem_type == ty);
        t.elem_type = ty;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::fold_bn::fold_batch_norm;
    use crate::passes::testing::{conv_bn_relu_model, run};

    #[test]
    fn int8_params_cover_the_range_and_keep_zero_exact() {
        let (s, z) = int8_params(0.0, 6.0);
        assert!((s - 6.0 / 255.0).abs() < 1e-7);
        assert_eq!(z, -128);
        let (s, z) = int8_params(-1.0, 1.0);
        assert!((s - 2.0 / 255.0).abs() < 1e-7);
        assert!(
            -1.0 / s + z as f32 >= -128.5 && 1.0 / s + z as f32 <= 127.5,
            "{z}"
        );
        // zero maps onto an integer code exactly
        let (s, z) = int8_params(-0.3, 2.0);
        assert_eq!(((0.0 / s).round() + z as f32) as i8, z);
    }

    fn calibrated() -> (ModelProto, BTreeMap<String, (f32, f32)>, Vec<f32>) {
        let mut model = conv_bn_relu_model();
        fold_batch_norm(model.graph.as_mut().unwrap()).unwrap();
        let input: Vec<f32> = (0..50).map(|i| (i as f32 * 0.41).sin()).collect();
        let out = run(&model, &[1, 2, 5, 5], &input);
        let hi = out.iter().fold(0f32, |m, v| m.max(*v));
        let ranges = BTreeMap::from([
            ("input".to_string(), (-1.0, 1.0)),
            ("output".to_string(), (0.0, hi)),
        ]);
        (model, ranges, input)
    }

    #[test]
    fn static_int8_inserts_qdq_and_stays_close() {
        let (model, ranges, input) = calibrated();
        let want = run(&model, &[1, 2, 5, 5], &input);
        let mut q = model.clone();
        let report = quantize_static(&mut q, &ranges, &[], false).unwrap();
        assert_eq!(report.quantized_layers, ["conv"]);
        assert_eq!(report.quantized_activations, 1);
        let ops: Vec<&str> = q
            .graph
            .as_ref()
            .unwrap()
            .node
            .iter()
            .map(|n| n.op_type.as_str())
            .collect();
        assert_eq!(ops.iter().filter(|o| **o == "QuantizeLinear").count(), 1);
        assert_eq!(ops.iter().filter(|o| **o == "DequantizeLinear").count(), 2);
        let got = run(&q, &[1, 2, 5, 5], &input);
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() <= 0.03 * scale, "{a} vs {b}");
        }
        let mut kept = model.clone();
        let report = quantize_static(&mut kept, &ranges, &["conv".into()], false).unwrap();
        assert!(report.quantized_layers.is_empty());
        assert_eq!(report.kept_float, ["conv"]);
    }

    #[test]
    fn full_integer_has_int8_input_and_output() {
        let (model, ranges, input) = calibrated();
        let want = run(&model, &[1, 2, 5, 5], &input);
        let mut q = model.clone();
        quantize_static(&mut q, &ranges, &[], true).unwrap();
        let graph = q.graph.as_ref().unwrap();
        let elem = |v| crate::model::Model::elem_type(v).unwrap();
        assert_eq!(elem(&graph.input[0]), INT8);
        assert_eq!(elem(&graph.output[0]), INT8);
        let meta: BTreeMap<_, _> = q
            .metadata_props
            .iter()
            .map(|p| (p.key.as_str(), p.value.parse::<f32>().unwrap()))
            .collect();
        let (s_in, z_in) = (meta[INPUT_SCALE], meta[INPUT_ZERO_POINT]);
        let (s_out, z_out) = (meta[OUTPUT_SCALE], meta[OUTPUT_ZERO_POINT]);
        let x: Vec<i8> = input
            .iter()
            .map(|v| (v / s_in + z_in).round().clamp(-128.0, 127.0) as i8)
            .collect();
        let got = crate::passes::testing::run_i8(&q, &[1, 2, 5, 5], &x);
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (a, b) in got.iter().zip(&want) {
            let a = (*a as f32 - z_out) * s_out;
            assert!((a - b).abs() <= 0.04 * scale, "{a} vs {b}");
        }
    }
}

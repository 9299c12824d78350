//! Weight-only int8: each layer weight becomes int8 with one float32 scale per output channel
//! (symmetric, zero point 0) behind a `DequantizeLinear`. Activations stay float32, so every
//! runtime loads it and folds the DequantizeLinear at load: the file shrinks about 4x and
//! inference runs at float32 speed. This is the "dynamic" int8 of the issue for Gemm/MatMul,
//! applied to Conv weights too because it costs no speed (unlike ConvInteger).

use super::graph::{
    INT8, PassError, attr_i, f32_tensor, fresh_name, int_attr, node, remove_unused_initializers,
};
use super::weights::layer_weights;
use crate::model::pb::{GraphProto, TensorProto};

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct QuantizedWeight {
    pub weight: String,
    pub params: usize,
    pub channels: usize,
    /// Largest absolute rounding error relative to the channel's largest magnitude.
    pub max_relative_error: f32,
}

/// Quantizes the weights of layers with at least `min_params` weights; `skip` names weights to
/// keep in float32 (sensitive layers the search returns to full precision).
pub fn quantize_weights(
    graph: &mut GraphProto,
    min_params: usize,
    skip: &[String],
) -> Result<Vec<QuantizedWeight>, PassError> {
    let mut report = Vec::new();
    for w in layer_weights(graph)
        .into_iter()
        .filter(|w| w.values.len() >= min_params && !skip.contains(&w.name))
    {
        let consumer = graph
            .node
            .iter()
            .find(|n| n.input.get(1) == Some(&w.name))
            .expect("layer weights have a consumer")
            .clone();
        // Output channels sit on axis 0 for Conv and for Gemm with transB; on the last axis for
        // MatMul and for Gemm without transB.
        let axis = match consumer.op_type.as_str() {
            "Conv" | "ConvTranspose" => 0,
            "Gemm" if attr_i(&consumer, "transB") == Some(1) => 0,
            "Gemm" | "MatMul" if w.dims.len() == 2 => 1,
            _ => {
                return Err(PassError::new(
                    &consumer,
                    format!(
                        "weight {} has rank {}; cannot pick a channel axis",
                        w.name,
                        w.dims.len()
                    ),
                ));
            }
        };
        let channels = w.dims[axis] as usize;
        let (scales, q, max_relative_error) = quantize(&w.values, &w.dims, axis);
        let q_name = fresh_name(graph, &format!("{}.int8", w.name));
        let s_name = fresh_name(graph, &format!("{}.scale", w.name));
        graph.initializer.retain(|t| t.name != w.name);
        graph.initializer.push(TensorProto {
            name: q_name.clone(),
            dims: w.dims.clone(),
            data_type: INT8,
            raw_data: q.iter().map(|&v| v as u8).collect(),
            ..Default::default()
        });
        graph
            .initializer
            .push(f32_tensor(&s_name, &[channels as i64], &scales));
        let dq = node(
            "DequantizeLinear",
            &fresh_name(graph, &format!("{}.dequantize", w.name)),
            &[&q_name, &s_name],
            &[&w.name],
            vec![int_attr("axis", axis as i64)],
        );
        graph.node.insert(0, dq);
        report.push(QuantizedWeight {
            weight: w.name,
            params: w.values.len(),
            channels,
            max_relative_error,
        });
    }
    remove_unused_initializers(graph);
    Ok(report)
}

/// Symmetric per-channel int8 over `axis` of a row-major tensor: (scales, values, worst relative error).
fn quantize(values: &[f32], dims: &[i64], axis: usize) -> (Vec<f32>, Vec<i8>, f32) {
    let dims: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
    let channels = dims[axis];
    let inner: usize = dims[axis + 1..].iter().product();
    let channel_of = |i: usize| (i / inner) % channels;
    let mut max_abs = vec![0f32; channels];
    for (i, v) in values.iter().enumerate() {
        let c = channel_of(i);
        max_abs[c] = max_abs[c].max(v.abs());
    }
    let scales: Vec<f32> = max_abs
        .iter()
        .map(|&m| if m > 0.0 { m / 127.0 } else { 1.0 })
        .collect();
    let mut worst = 0f32;
    let q = values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = channel_of(i);
            let q = (v / scales[c]).round().clamp(-127.0, 127.0);
            if max_abs[c] > 0.0 {
                worst = worst.max((q * scales[c] - v).abs() / max_abs[c]);
            }
            q as i8
        })
        .collect();
    (scales, q, worst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::encode;
    use crate::passes::testing::{conv_bn_relu_model, run};

    #[test]
    fn per_channel_scales_follow_the_output_axis() {
        // Two output channels of a [2,3] Gemm weight with transB (axis 0).
        let (scales, q, err) = quantize(&[1.0, -0.5, 0.25, 4.0, 2.0, -4.0], &[2, 3], 0);
        assert_eq!(scales, [1.0 / 127.0, 4.0 / 127.0]);
        assert_eq!(q, [127, -64, 32, 127, 64, -127]);
        assert!(err <= 0.5 / 127.0 + 1e-6);
        // The same values as a MatMul weight [2,3]: output channels are the 3 columns (axis 1).
        let (scales, _, _) = quantize(&[1.0, -0.5, 0.25, 4.0, 2.0, -4.0], &[2, 3], 1);
        assert_eq!(scales, [4.0 / 127.0, 2.0 / 127.0, 4.0 / 127.0]);
    }

    #[test]
    fn quantized_graph_is_smaller_and_close_to_float() {
        let model = conv_bn_relu_model();
        let input: Vec<f32> = (0..50).map(|i| (i as f32 * 0.21).cos()).collect();
        let want = run(&model, &[1, 2, 5, 5], &input);
        let mut q = model.clone();
        let report = quantize_weights(q.graph.as_mut().unwrap(), 1, &[]).unwrap();
        assert_eq!(report.len(), 1);
        assert_eq!(report[0].channels, 3);
        let graph = q.graph.as_ref().unwrap();
        let int8 = graph
            .initializer
            .iter()
            .find(|t| t.data_type == INT8)
            .unwrap();
        assert_eq!(int8.raw_data.len(), 54);
        assert!(encode(&q).len() < encode(&model).len());
        let got = run(&q, &[1, 2, 5, 5], &input);
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() <= 0.02 * scale, "{a} vs {b}");
        }
        // A weight named in `skip` stays float32.
        let mut kept = model.clone();
        assert!(
            quantize_weights(kept.graph.as_mut().unwrap(), 1, &["conv.w".to_string()])
                .unwrap()
                .is_empty()
        );
    }
}

//! Weight-only int8: each layer weight becomes int8 with one float32 scale per output channel
//! (symmetric, zero point 0) behind a `DequantizeLinear`. Activations stay float32, so every
//! runtime loads it and folds the DequantizeLinear at load: the file shrinks about 4x and
//! inference runs at float32 speed. This is the "dynamic" int8 of the issue for Gemm/MatMul,
//! applied to Conv weights too because it costs no speed (unlike ConvInteger).

use super::graph::{
    INT8, PassError, attr_i, f32_tensor, fresh_name, int_attr, node, remove_unused_initializers,
};
use super::weights::{Weight, layer_weights};
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
        report.push(quantize_weight(graph, &w, Grid::PerChannel)?);
    }
    remove_unused_initializers(graph);
    Ok(report)
}

/// Like `quantize_weights`, on a narrower grid: `bits` (2..=8) per weight, symmetric per
/// channel, still stored in int8. Fewer levels cost accuracy but compress: zstd codes each weight
/// in about the entropy of its level, well under `bits` for bell-shaped weights. Weights in
/// `eight_bit` keep the full 8-bit grid.
pub fn quantize_weights_bits(
    graph: &mut GraphProto,
    bits: u32,
    eight_bit: &[String],
) -> Result<Vec<QuantizedWeight>, PassError> {
    assert!((2..=8).contains(&bits), "bits must be 2..=8");
    let mut report = Vec::new();
    for w in layer_weights(graph) {
        let grid = if eight_bit.contains(&w.name) {
            Grid::PerChannel
        } else {
            Grid::PerChannelBits(bits)
        };
        report.push(quantize_weight(graph, &w, grid)?);
    }
    remove_unused_initializers(graph);
    Ok(report)
}

/// How a weight maps onto int8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grid {
    /// One scale per output channel (best accuracy).
    PerChannel,
    /// Per channel, with only `2^(bits-1) - 1` levels each side of zero.
    PerChannelBits(u32),
    /// One scale for the tensor: a weight with k distinct values keeps k distinct int8 codes,
    /// which is what makes clustered weights compress.
    PerTensor,
}

/// Replaces one float weight by int8 values and a `DequantizeLinear` that restores it. The
/// float initializer is left for `remove_unused_initializers`.
pub fn quantize_weight(
    graph: &mut GraphProto,
    w: &Weight,
    grid: Grid,
) -> Result<QuantizedWeight, PassError> {
    let consumer = graph
        .node
        .iter()
        .find(|n| n.input.get(1) == Some(&w.name))
        .expect("layer weights have a consumer")
        .clone();
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
    let (scales, q, max_relative_error) = match grid {
        Grid::PerChannel => quantize(&w.values, &w.dims, axis, 127.0),
        Grid::PerChannelBits(bits) => {
            quantize(&w.values, &w.dims, axis, ((1 << (bits - 1)) - 1) as f32)
        }
        Grid::PerTensor => quantize(&w.values, &[1, w.values.len() as i64], 0, 127.0),
    };
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
    let (scale_dims, attributes) = match grid {
        Grid::PerChannel | Grid::PerChannelBits(_) => (
            vec![scales.len() as i64],
            vec![int_attr("axis", axis as i64)],
        ),
        Grid::PerTensor => (vec![], vec![]),
    };
    graph
        .initializer
        .push(f32_tensor(&s_name, &scale_dims, &scales));
    let dq = node(
        "DequantizeLinear",
        &fresh_name(graph, &format!("{}.dequantize", w.name)),
        &[&q_name, &s_name],
        &[&w.name],
        attributes,
    );
    graph.node.insert(0, dq);
    Ok(QuantizedWeight {
        weight: w.name.clone(),
        params: w.values.len(),
        channels: scales.len(),
        max_relative_error,
    })
}

fn quantize(values: &[f32], dims: &[i64], axis: usize, qmax: f32) -> (Vec<f32>, Vec<i8>, f32) {
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
        .map(|&m| if m > 0.0 { m / qmax } else { 1.0 })
        .collect();
    let mut worst = 0f32;
    let q = values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = channel_of(i);
            let q = (v / scales[c]).round().clamp(-qmax, qmax);
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
        let (scales, q, err) = quantize(&[1.0, -0.5, 0.25, 4.0, 2.0, -4.0], &[2, 3], 0, 127.0);
        assert_eq!(scales, [1.0 / 127.0, 4.0 / 127.0]);
        assert_eq!(q, [127, -64, 32, 127, 64, -127]);
        assert!(err <= 0.5 / 127.0 + 1e-6);
        // The same values as a MatMul weight [2,3]: output channels are the 3 columns (axis 1).
        let (scales, _, _) = quantize(&[1.0, -0.5, 0.25, 4.0, 2.0, -4.0], &[2, 3], 1, 127.0);
        assert_eq!(scales, [4.0 / 127.0, 2.0 / 127.0, 4.0 / 127.0]);
        // 4 bits: 7 levels each side
        let (scales, q, _) = quantize(&[1.0, -0.6, 0.25, 4.0, 2.2, -4.0], &[2, 3], 0, 7.0);
        assert_eq!(scales, [1.0 / 7.0, 4.0 / 7.0]);
        assert_eq!(q, [7, -4, 2, 7, 4, -7]);
        let (scales, _, _) = quantize(&[1.0, -0.5, 0.25, 4.0, 2.0, -4.0], &[2, 3], 1, 127.0);
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

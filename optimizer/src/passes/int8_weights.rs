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

/// How one layer's weights were quantized by [`quantize_weights_gptq`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LayerWidth {
    pub layer: String,
    pub bits: u32,
    pub params: usize,
    /// `gptq` (error-compensating, with bias correction where the layer has or can take a
    /// bias) or `rounding` (no calibration statistics for this layer).
    pub method: &'static str,
}

/// One layer's weight at one width, as [`quantize_weights_gptq`] computes it: codes in the
/// weight's own layout, one scale per output channel, the bias shift to add.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerCodes {
    pub codes: Vec<i8>,
    pub scales: Vec<f32>,
    pub shift: Vec<f32>,
    pub method: &'static str,
}

/// Quantized layers already computed, by (layer node, bits): GPTQ depends only on the layer and
/// the float model's statistics, so the search's many builds reuse them.
pub type CodeCache = std::sync::Mutex<std::collections::BTreeMap<(String, u32), LayerCodes>>;

/// Weight-only quantization at a width per layer (`bits_of(layer node name)`, 2..=8), error-
/// compensating (GPTQ) where `stats` has the layer's input statistics, rounding elsewhere.
/// Codes are stored in int8 behind a per-channel `DequantizeLinear`, as `quantize_weights`;
/// scales and the layer's bias are kept to bfloat16 precision (stored as float32 whose low
/// half is zero, which zstd all but removes).
pub fn quantize_weights_gptq(
    graph: &mut GraphProto,
    bits_of: &dyn Fn(&str) -> u32,
    stats: &std::collections::BTreeMap<String, crate::calibrate::LayerInputs>,
    cache: Option<&CodeCache>,
) -> Result<Vec<LayerWidth>, PassError> {
    let mut report = Vec::new();
    for w in layer_weights(graph) {
        let bits = bits_of(&w.node).clamp(2, 8);
        let consumer = graph
            .node
            .iter()
            .find(|n| n.name == w.node && n.input.get(1) == Some(&w.name))
            .cloned()
            .expect("layer weights have a consumer");
        let axis = channel_axis(&consumer, &w)?;
        let key = (w.node.clone(), bits);
        let cached = cache.and_then(|c| c.lock().ok()?.get(&key).cloned());
        let layer = match cached {
            Some(layer) => layer,
            None => {
                let layer = layer_codes(&w, axis, bits, stats.get(&w.node));
                if let Some(mut c) = cache.and_then(|c| c.lock().ok()) {
                    c.insert(key, layer.clone());
                }
                layer
            }
        };
        correct_bias(graph, &consumer, &layer.shift);
        replace_with_codes(graph, &w, axis, &layer.scales, &layer.codes, false);
        report.push(LayerWidth {
            layer: w.node.clone(),
            bits,
            params: w.values.len(),
            method: layer.method,
        });
    }
    remove_unused_initializers(graph);
    Ok(report)
}

/// GPTQ (or rounding, without statistics) of one weight at `bits`.
fn layer_codes(
    w: &Weight,
    axis: usize,
    bits: u32,
    stats: Option<&crate::calibrate::LayerInputs>,
) -> LayerCodes {
    use super::gptq;
    let qmax = ((1 << (bits - 1)) - 1) as f32;
    // Rows are output channels: transpose a [K, N] weight (axis 1) to [N, K].
    let (rows, cols) = if axis == 0 {
        let rows = w.dims[0] as usize;
        (rows, w.values.len() / rows.max(1))
    } else {
        (w.dims[1] as usize, w.dims[0] as usize)
    };
    let matrix: Vec<f32> = if axis == 0 {
        w.values.clone()
    } else {
        (0..rows * cols)
            .map(|i| w.values[(i % cols) * rows + i / cols])
            .collect()
    };
    let groups = stats
        .map(|s| s.groups.as_slice())
        .filter(|g| !g.is_empty() && rows % g.len() == 0)
        .filter(|g| g.iter().all(|h| h.rows > 0 && h.cols == cols));
    let per_group = groups.map_or(rows, |g| rows / g.len());
    let mut codes = Vec::with_capacity(matrix.len());
    let mut scales = Vec::with_capacity(rows);
    let mut shift = Vec::with_capacity(rows);
    let mut method = "rounding";
    for (g, block) in matrix.chunks(per_group * cols).enumerate() {
        let hessian = groups.map(|gs| &gs[g]);
        let q = hessian
            .and_then(|h| gptq::quantize(block, cols, &h.matrix(), qmax))
            .inspect(|_| method = "gptq")
            .unwrap_or_else(|| gptq::round_to_nearest(block, cols, qmax));
        match hessian {
            Some(h) => shift.extend(gptq::bias_shift(
                block,
                &q.dequantized(cols),
                cols,
                &h.mean(),
            )),
            None => shift.extend(std::iter::repeat_n(0.0, block.len() / cols)),
        }
        codes.extend(q.codes);
        scales.extend(q.scales);
    }
    let codes: Vec<i8> = if axis == 0 {
        codes
    } else {
        (0..rows * cols)
            .map(|i| codes[(i % rows) * cols + i / rows])
            .collect()
    };
    LayerCodes {
        codes,
        scales,
        shift,
        method,
    }
}

/// Bytes the codes of `layer`'s weight would take over the air (their order-0 entropy), when
/// the weight is int8 codes behind a `DequantizeLinear`.
pub fn code_bytes(graph: &GraphProto, layer: &str) -> Option<f64> {
    let node = graph.node.iter().find(|n| n.name == layer)?;
    let weight = node.input.get(1)?;
    let dq = graph
        .node
        .iter()
        .find(|n| n.op_type == "DequantizeLinear" && n.output.first() == Some(weight))?;
    let codes = super::graph::initializer(graph, dq.input.first()?)?;
    (codes.data_type == INT8).then(|| {
        let v: Vec<i8> = codes.raw_data.iter().map(|&b| b as i8).collect();
        crate::widths::entropy_bytes(&v)
    })
}

/// Adds `shift` to a Conv's or Gemm's bias (creating one if it has none); other layers keep
/// their output shift.
fn correct_bias(graph: &mut GraphProto, layer: &crate::model::pb::NodeProto, shift: &[f32]) {
    use super::gptq::compact;
    if !matches!(layer.op_type.as_str(), "Conv" | "Gemm") {
        return;
    }
    let existing = layer.input.get(2).filter(|b| !b.is_empty()).cloned();
    if existing.is_none() && shift.iter().all(|&s| s == 0.0) {
        return;
    }
    let current = match &existing {
        Some(name) => {
            match super::graph::initializer(graph, name).and_then(super::graph::f32_values) {
                Some(v) if v.len() == shift.len() => v,
                _ => return,
            }
        }
        None => vec![0.0; shift.len()],
    };
    let corrected: Vec<f32> = current
        .iter()
        .zip(shift)
        .map(|(b, s)| compact(b + s))
        .collect();
    let name = fresh_name(graph, &format!("{}.bias", layer.name));
    graph
        .initializer
        .push(f32_tensor(&name, &[shift.len() as i64], &corrected));
    let node = graph
        .node
        .iter_mut()
        .find(|n| n.name == layer.name && n.op_type == layer.op_type)
        .expect("the layer is in the graph");
    node.input.resize(3.max(node.input.len()), String::new());
    node.input[2] = name;
}

/// The output-channel axis of a layer's weight.
fn channel_axis(consumer: &crate::model::pb::NodeProto, w: &Weight) -> Result<usize, PassError> {
    match consumer.op_type.as_str() {
        "Conv" | "ConvTranspose" => Ok(0),
        "Gemm" if attr_i(consumer, "transB") == Some(1) => Ok(0),
        "Gemm" | "MatMul" if w.dims.len() == 2 => Ok(1),
        _ => Err(PassError::new(
            consumer,
            format!(
                "weight {} has rank {}; cannot pick a channel axis",
                w.name,
                w.dims.len()
            ),
        )),
    }
}

/// How a weight maps onto int8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grid {
    /// One scale per output channel (best accuracy).
    PerChannel,
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
    let axis = channel_axis(&consumer, w)?;
    let (scales, q, max_relative_error) = match grid {
        Grid::PerChannel => quantize(&w.values, &w.dims, axis, 127.0),
        Grid::PerTensor => quantize(&w.values, &[1, w.values.len() as i64], 0, 127.0),
    };
    replace_with_codes(graph, w, axis, &scales, &q, grid == Grid::PerTensor);
    Ok(QuantizedWeight {
        weight: w.name.clone(),
        params: w.values.len(),
        channels: scales.len(),
        max_relative_error,
    })
}

/// Replaces a float weight by its int8 `codes` and a `DequantizeLinear` with `scales` (one per
/// channel along `axis`, or one for the tensor). The float initializer is left for
/// `remove_unused_initializers`.
fn replace_with_codes(
    graph: &mut GraphProto,
    w: &Weight,
    axis: usize,
    scales: &[f32],
    codes: &[i8],
    per_tensor: bool,
) {
    let q_name = fresh_name(graph, &format!("{}.int8", w.name));
    let s_name = fresh_name(graph, &format!("{}.scale", w.name));
    graph.initializer.retain(|t| t.name != w.name);
    graph.initializer.push(TensorProto {
        name: q_name.clone(),
        dims: w.dims.clone(),
        data_type: INT8,
        raw_data: codes.iter().map(|&v| v as u8).collect(),
        ..Default::default()
    });
    let (scale_dims, attributes) = if per_tensor {
        (vec![], vec![])
    } else {
        (
            vec![scales.len() as i64],
            vec![int_attr("axis", axis as i64)],
        )
    };
    graph
        .initializer
        .push(f32_tensor(&s_name, &scale_dims, scales));
    let dq = node(
        "DequantizeLinear",
        &fresh_name(graph, &format!("{}.dequantize", w.name)),
        &[&q_name, &s_name],
        &[&w.name],
        attributes,
    );
    graph.node.insert(0, dq);
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
    fn error_compensation_beats_rounding_on_the_same_layer() {
        use crate::calibrate::{Geometry, LayerInputs, layers_of};
        use crate::passes::gptq::Hessian;
        let mut model = conv_bn_relu_model();
        crate::passes::fold_bn::fold_batch_norm(model.graph.as_mut().unwrap()).unwrap();
        // Smooth, correlated inputs, as images are.
        let sample = |k: usize| -> Vec<f32> {
            (0..50)
                .map(|i| {
                    ((i % 25) as f32 * 0.37 + k as f32).sin()
                        + 0.5 * ((i / 25) as f32 + k as f32 * 0.1).cos()
                })
                .collect()
        };
        let layers = layers_of(model.graph.as_ref().unwrap());
        let (_, Geometry::Conv(conv)) = &layers["conv"] else {
            panic!("conv is a convolution: {layers:?}");
        };
        let mut groups = vec![Hessian::new(conv.cols())];
        for k in 0..40 {
            conv.add_patches(&sample(k), [5, 5], 1, &mut groups);
        }
        assert_eq!(groups[0].rows, 40 * 25);
        let stats =
            std::collections::BTreeMap::from([("conv".to_string(), LayerInputs { groups })]);
        let error = |stats: &std::collections::BTreeMap<String, LayerInputs>| {
            let mut q = model.clone();
            let report =
                quantize_weights_gptq(q.graph.as_mut().unwrap(), &|_| 3, stats, None).unwrap();
            let total: f32 = (40..60)
                .map(|k| {
                    let x = sample(k);
                    let want = run(&model, &[1, 2, 5, 5], &x);
                    let got = run(&q, &[1, 2, 5, 5], &x);
                    want.iter()
                        .zip(&got)
                        .map(|(a, b)| (a - b).powi(2))
                        .sum::<f32>()
                })
                .sum();
            (total, report[0].method)
        };
        let none = std::collections::BTreeMap::new();
        let (rounding, m0) = error(&none);
        let (gptq, m1) = error(&stats);
        assert_eq!((m0, m1), ("rounding", "gptq"));
        assert!(
            gptq < 0.7 * rounding,
            "GPTQ {gptq} vs rounding {rounding} (held-out inputs)"
        );
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

//! Activation ranges for static int8: the float model runs on the calibration samples (never the
//! evaluation ones) with every activation exposed as an output, and each tensor's range is taken
//! by MinMax or by a percentile of its values (robust to rare outliers, which otherwise waste
//! most of the 256 levels).

use crate::dataset::Dataset;
use crate::model::pb::{self, ModelProto};
use crate::passes::gptq::Hessian;
use std::collections::BTreeMap;
use tract_onnx::prelude::*;

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(tag = "method", content = "percentile", rename_all = "camelCase")]
pub enum Method {
    MinMax,
    /// Range covering this fraction of the values on each side of zero, e.g. 0.9999.
    Percentile(f64),
}

impl Method {
    pub fn label(&self) -> String {
        match self {
            Method::MinMax => "minmax".into(),
            Method::Percentile(p) => format!("p{}", p * 100.0),
        }
    }
}

/// What was seen of one activation on the calibration samples.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub min: f32,
    pub max: f32,
    /// An evenly strided sample of the values (at most `KEEP` per tensor), for percentiles.
    pub sample: Vec<f32>,
}

const KEEP: usize = 200_000;

impl Observed {
    /// The range to quantize with; always contains zero so that zero is exact.
    pub fn range(&self, method: Method) -> (f32, f32) {
        let (lo, hi) = match method {
            Method::MinMax => (self.min, self.max),
            Method::Percentile(p) => {
                let mut v = self.sample.clone();
                v.sort_by(f32::total_cmp);
                if v.is_empty() {
                    (self.min, self.max)
                } else {
                    let at =
                        |q: f64| v[((q * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)];
                    (at(1.0 - p), at(p))
                }
            }
        };
        (lo.min(0.0), hi.max(0.0))
    }
}

/// Runs `model` on the calibration samples and observes every float activation: the graph input
/// and each node output. Returns observations by value name.
pub fn observe(
    model: &ModelProto,
    data: &Dataset,
    indices: &[usize],
    batch: usize,
) -> Result<BTreeMap<String, Observed>, String> {
    let shape_like = |op: &str| matches!(op, "Shape" | "Size" | "ArgMax" | "ArgMin" | "Constant");
    let probe = Probe::new(model, data, indices, batch, "calibration", |graph, _| {
        graph
            .node
            .iter()
            .filter(|n| !shape_like(&n.op_type))
            .flat_map(|n| n.output.iter().cloned())
            .filter(|o| !o.is_empty())
            .collect()
    })?;
    let batch = probe.shape[0];

    let mut seen: BTreeMap<String, Observed> = BTreeMap::new();
    let total_chunks = indices.len().div_ceil(batch).max(1);
    for chunk in indices.chunks(batch) {
        let (x, out) = probe.run(data, chunk)?;
        observe_values(&mut seen, &probe.input, &x, total_chunks);
        for (name, value) in probe.outputs.iter().zip(out.iter()) {
            if let Ok(view) = value.to_plain_array_view::<f32>() {
                let values: Vec<f32> = view.iter().copied().collect();
                observe_values(&mut seen, name, &values, total_chunks);
            }
        }
    }
    Ok(seen)
}

/// The float model with more of its values exposed as outputs, loaded in tract for batches of
/// the calibration samples.
struct Probe {
    /// The graph input.
    input: String,
    /// Every output, in the order the plan returns them.
    outputs: Vec<String>,
    /// The batch's shape `[batch, ..sample]`.
    shape: Vec<usize>,
    plan: std::sync::Arc<TypedSimplePlan>,
    purpose: String,
}

impl Probe {
    /// `expose(graph, input name)` names the values to add as outputs (those already outputs
    /// are not added twice); `purpose` is for the error.
    fn new(
        model: &ModelProto,
        data: &Dataset,
        indices: &[usize],
        batch: usize,
        purpose: &str,
        expose: impl FnOnce(&pb::GraphProto, &str) -> Vec<String>,
    ) -> Result<Self, String> {
        let mut probe = model.clone();
        let graph = probe.graph.as_mut().ok_or("model has no graph")?;
        let input = graph
            .input
            .iter()
            .find(|i| !graph.initializer.iter().any(|t| t.name == i.name))
            .map(|i| i.name.clone())
            .ok_or("model has no input")?;
        for name in expose(graph, &input) {
            if !graph.output.iter().any(|o| o.name == name) {
                graph.output.push(pb::ValueInfoProto {
                    name,
                    ..Default::default()
                });
            }
        }
        let outputs: Vec<String> = graph.output.iter().map(|o| o.name.clone()).collect();
        let bytes = crate::model::encode(&probe);
        let batch = batch.max(1).min(indices.len().max(1));
        let mut shape = vec![batch];
        shape.extend(&data.sample_shape);
        let plan = tract_onnx::onnx()
            .with_ignore_value_info(true)
            .with_ignore_output_shapes(true)
            .model_for_read(&mut bytes.as_slice())
            .and_then(|m| m.with_input_fact(0, f32::fact(&shape).into()))
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| format!("cannot run the float model for {purpose}: {e:#}"))?;
        Ok(Self {
            input,
            outputs,
            shape,
            plan,
            purpose: purpose.to_string(),
        })
    }

    /// Runs one chunk of sample indices (the last batch padded by repeating its last sample):
    /// the batch's input values and every output.
    fn run(&self, data: &Dataset, chunk: &[usize]) -> Result<(Vec<f32>, TVec<TValue>), String> {
        let mut idx = chunk.to_vec();
        idx.resize(self.shape[0], *chunk.last().expect("chunks are non-empty"));
        let (_, x) = data.batch(&idx);
        let tensor = Tensor::from_shape(&self.shape, &x).map_err(|e| format!("{e:#}"))?;
        let out = self
            .plan
            .run(tvec!(tensor.into()))
            .map_err(|e| format!("{} run failed: {e:#}", self.purpose))?;
        Ok((x, out))
    }
}

/// What calibration gives the passes: activation ranges (static int8) and the second-order
/// statistics of every layer's inputs (error-compensating low-bit weights).
#[derive(Debug, Default)]
pub struct Calibration {
    pub ranges: BTreeMap<String, Observed>,
    /// By layer node name.
    pub layers: BTreeMap<String, LayerInputs>,
    /// Low-bit layers already quantized from `layers`.
    pub codes: crate::passes::int8_weights::CodeCache,
}

/// The statistics of one layer's inputs: one [`Hessian`] per group (one for Gemm/MatMul and
/// ungrouped convolutions, one per channel for depthwise ones).
#[derive(Debug, Clone, PartialEq)]
pub struct LayerInputs {
    pub groups: Vec<Hessian>,
}

/// At most this many input rows (patches) per layer: `H` settles long before, and the cost of
/// accumulating it is rows × cols².
pub const MAX_ROWS: usize = 8192;

/// How a layer reads its input: the patches a 2-D convolution multiplies with its weights, or
/// the rows of a Gemm/MatMul.
#[derive(Debug, Clone, PartialEq)]
pub enum Geometry {
    Conv(ConvGeometry),
    /// The last axis is the features (`cols` of them).
    Rows {
        cols: usize,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConvGeometry {
    pub channels: usize,
    pub groups: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    /// Top, left, bottom, right; None for `auto_pad` SAME_*, resolved per input size.
    pub pads: Option<[usize; 4]>,
    pub same_upper: bool,
}

impl ConvGeometry {
    /// From a Conv node and its weight's dims `[O, C/groups, kh, kw]`; None for what this does
    /// not unfold (not 2-D, inconsistent attributes).
    pub fn of(node: &pb::NodeProto, weight_dims: &[i64]) -> Option<Self> {
        use crate::passes::graph::attr;
        let ints = |name: &str| attr(node, name).map(|a| a.ints.clone());
        let [_, cg, kh, kw] = *weight_dims else {
            return None;
        };
        let groups = attr(node, "group").map_or(1, |a| a.i);
        let pair = |name: &str| -> Option<[usize; 2]> {
            match ints(name) {
                None => Some([1, 1]),
                Some(v) if v.len() == 2 && v.iter().all(|&x| x > 0) => {
                    Some([v[0] as usize, v[1] as usize])
                }
                Some(_) => None,
            }
        };
        let auto_pad = attr(node, "auto_pad")
            .map(|a| String::from_utf8_lossy(&a.s).into_owned())
            .unwrap_or_default();
        let pads = match auto_pad.as_str() {
            "" | "NOTSET" => match ints("pads") {
                None => Some([0; 4]),
                Some(p) if p.len() == 4 && p.iter().all(|&x| x >= 0) => {
                    Some([p[0] as usize, p[1] as usize, p[2] as usize, p[3] as usize])
                }
                Some(_) => return None,
            },
            "VALID" => Some([0; 4]),
            "SAME_UPPER" | "SAME_LOWER" => None,
            _ => return None,
        };
        if groups < 1 || cg < 1 || kh < 1 || kw < 1 {
            return None;
        }
        Some(Self {
            channels: (cg * groups) as usize,
            groups: groups as usize,
            kernel: [kh as usize, kw as usize],
            stride: pair("strides")?,
            dilation: pair("dilations")?,
            pads,
            same_upper: auto_pad == "SAME_UPPER",
        })
    }

    pub fn cols(&self) -> usize {
        self.channels / self.groups * self.kernel[0] * self.kernel[1]
    }

    /// Pads and output size for an input of `h × w`.
    fn layout(&self, h: usize, w: usize) -> ([usize; 4], [usize; 2]) {
        let span = |k: usize, d: usize| (k - 1) * d + 1;
        let pads = self.pads.unwrap_or_else(|| {
            let total = |n: usize, s: usize, k: usize, d: usize| {
                ((n.div_ceil(s) - 1) * s + span(k, d)).saturating_sub(n)
            };
            let th = total(h, self.stride[0], self.kernel[0], self.dilation[0]);
            let tw = total(w, self.stride[1], self.kernel[1], self.dilation[1]);
            let (small_h, small_w) = (th / 2, tw / 2);
            if self.same_upper {
                [small_h, small_w, th - small_h, tw - small_w]
            } else {
                [th - small_h, tw - small_w, small_h, small_w]
            }
        });
        let out = |n: usize, lo: usize, hi: usize, k: usize, d: usize, s: usize| {
            (n + lo + hi)
                .checked_sub(span(k, d))
                .map_or(0, |v| v / s + 1)
        };
        (
            pads,
            [
                out(
                    h,
                    pads[0],
                    pads[2],
                    self.kernel[0],
                    self.dilation[0],
                    self.stride[0],
                ),
                out(
                    w,
                    pads[1],
                    pads[3],
                    self.kernel[1],
                    self.dilation[1],
                    self.stride[1],
                ),
            ],
        )
    }

    /// Adds the patches of one sample `[C, H, W]` at every `step`-th output position to the
    /// per-group statistics.
    pub fn add_patches(&self, x: &[f32], size: [usize; 2], step: usize, groups: &mut [Hessian]) {
        self.for_each_patch(x, size, step, |g, _, patch| groups[g].add(patch));
    }

    /// Calls `f(group, output position, patch)` for every `step`-th output position of one
    /// sample `[C, H, W]`: the input values the convolution multiplies with one output
    /// channel's weights `[C/groups, kh, kw]`, zero where the kernel reaches into the padding.
    pub fn for_each_patch(
        &self,
        x: &[f32],
        [h, w]: [usize; 2],
        step: usize,
        mut f: impl FnMut(usize, usize, &[f32]),
    ) {
        let (pads, [oh, ow]) = self.layout(h, w);
        let cg = self.channels / self.groups;
        let [kh, kw] = self.kernel;
        let mut patch = vec![0f32; self.cols()];
        for pos in (0..oh * ow).step_by(step.max(1)) {
            let (oy, ox) = (pos / ow, pos % ow);
            for g in 0..self.groups {
                let mut k = 0;
                for c in g * cg..(g + 1) * cg {
                    for ky in 0..kh {
                        let iy = (oy * self.stride[0] + ky * self.dilation[0]) as isize
                            - pads[0] as isize;
                        for kx in 0..kw {
                            let ix = (ox * self.stride[1] + kx * self.dilation[1]) as isize
                                - pads[1] as isize;
                            patch[k] =
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                    x[(c * h + iy as usize) * w + ix as usize]
                                } else {
                                    0.0
                                };
                            k += 1;
                        }
                    }
                }
                f(g, pos, &patch);
            }
        }
    }

    /// Output positions of an `h × w` input.
    pub fn positions(&self, h: usize, w: usize) -> usize {
        let (_, [oh, ow]) = self.layout(h, w);
        oh * ow
    }
}

/// The layers whose input statistics error-compensating quantization can use: each Conv (2-D),
/// Gemm and MatMul with a constant float weight, by node name, with its input value and how it
/// reads it.
pub fn layers_of(graph: &pb::GraphProto) -> BTreeMap<String, (String, Geometry)> {
    use crate::passes::graph::attr_i;
    crate::passes::weights::layer_weights(graph)
        .into_iter()
        .filter_map(|w| {
            let node = graph.node.iter().find(|n| n.name == w.node)?;
            let input = node.input.first()?.clone();
            let geometry = match (node.op_type.as_str(), w.dims.as_slice()) {
                ("Conv", dims) => Geometry::Conv(ConvGeometry::of(node, dims)?),
                ("Gemm", [n, k]) => Geometry::Rows {
                    cols: if attr_i(node, "transB") == Some(1) {
                        *k
                    } else {
                        *n
                    } as usize,
                },
                ("MatMul", [k, _]) => Geometry::Rows { cols: *k as usize },
                _ => return None,
            };
            (!w.node.is_empty()).then_some((w.node, (input, geometry)))
        })
        .collect()
}

/// Runs the float model on the calibration samples with the inputs of the named layers exposed
/// and accumulates their statistics. `layers` maps a layer node's name to its input value and
/// geometry; layers whose input does not have the shape the geometry needs are left out.
pub fn layer_inputs(
    model: &ModelProto,
    data: &Dataset,
    indices: &[usize],
    batch: usize,
    layers: &BTreeMap<String, (String, Geometry)>,
) -> Result<BTreeMap<String, LayerInputs>, String> {
    let mut values: Vec<String> = layers.values().map(|(v, _)| v.clone()).collect();
    values.sort();
    values.dedup();
    let probe = Probe::new(
        model,
        data,
        indices,
        batch,
        "layer statistics",
        |_, input| values.iter().filter(|v| *v != input).cloned().collect(),
    )?;
    let batch = probe.shape[0];
    let mut stats: BTreeMap<String, LayerInputs> = BTreeMap::new();
    let samples = indices.len().max(1);
    for chunk in indices.chunks(batch) {
        let (x, out) = probe.run(data, chunk)?;
        let mut by_name: BTreeMap<&str, (Vec<usize>, Vec<f32>)> = BTreeMap::new();
        by_name.insert(probe.input.as_str(), (probe.shape.clone(), x));
        for (name, value) in probe.outputs.iter().zip(out.iter()) {
            if values.contains(name)
                && let Ok(view) = value.to_plain_array_view::<f32>()
            {
                by_name.insert(
                    name.as_str(),
                    (view.shape().to_vec(), view.iter().copied().collect()),
                );
            }
        }
        for (layer, (value, geometry)) in layers {
            let Some((dims, values)) = by_name.get(value.as_str()) else {
                continue;
            };
            // Padded samples of the last batch are not counted.
            let real = chunk.len();
            accumulate(&mut stats, layer, geometry, dims, values, real, samples);
        }
    }
    Ok(stats)
}

fn accumulate(
    stats: &mut BTreeMap<String, LayerInputs>,
    layer: &str,
    geometry: &Geometry,
    dims: &[usize],
    values: &[f32],
    real: usize,
    samples: usize,
) {
    let rows_per_sample = (MAX_ROWS / samples).max(1);
    match geometry {
        Geometry::Conv(g) => {
            let [_, c, h, w] = *dims else { return };
            if c != g.channels {
                return;
            }
            let entry = stats
                .entry(layer.to_string())
                .or_insert_with(|| LayerInputs {
                    groups: (0..g.groups).map(|_| Hessian::new(g.cols())).collect(),
                });
            let step = g.positions(h, w).div_ceil(rows_per_sample);
            for n in 0..real {
                let sample = &values[n * c * h * w..(n + 1) * c * h * w];
                g.add_patches(sample, [h, w], step, &mut entry.groups);
            }
        }
        Geometry::Rows { cols } => {
            if dims.last() != Some(cols) || dims.is_empty() {
                return;
            }
            let per_sample = values.len() / dims[0].max(1);
            let entry = stats
                .entry(layer.to_string())
                .or_insert_with(|| LayerInputs {
                    groups: vec![Hessian::new(*cols)],
                });
            let rows = per_sample / cols;
            let step = rows.div_ceil(rows_per_sample).max(1);
            for n in 0..real.min(dims[0]) {
                let sample = &values[n * per_sample..(n + 1) * per_sample];
                for row in sample.chunks_exact(*cols).step_by(step) {
                    entry.groups[0].add(row);
                }
            }
        }
    }
}

fn observe_values(
    seen: &mut BTreeMap<String, Observed>,
    name: &str,
    values: &[f32],
    chunks: usize,
) {
    let o = seen.entry(name.to_string()).or_insert_with(|| Observed {
        min: f32::INFINITY,
        max: f32::NEG_INFINITY,
        sample: Vec::new(),
    });
    for &v in values {
        if v.is_finite() {
            o.min = o.min.min(v);
            o.max = o.max.max(v);
        }
    }
    let per_chunk = (KEEP / chunks).max(1);
    let stride = values.len().div_ceil(per_chunk).max(1);
    o.sample
        .extend(values.iter().step_by(stride).filter(|v| v.is_finite()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_are_what_a_grouped_strided_same_padded_convolution_multiplies() {
        use crate::passes::graph::{f32_tensor, node};
        use crate::passes::testing::{model, run};
        let attr = |name: &str, ints: &[i64]| pb::AttributeProto {
            name: name.into(),
            ints: ints.to_vec(),
            r#type: pb::attribute_proto::AttributeType::Ints as i32,
            ..Default::default()
        };
        let auto_pad = pb::AttributeProto {
            name: "auto_pad".into(),
            s: b"SAME_UPPER".to_vec(),
            r#type: pb::attribute_proto::AttributeType::String as i32,
            ..Default::default()
        };
        let group = pb::AttributeProto {
            name: "group".into(),
            i: 2,
            r#type: pb::attribute_proto::AttributeType::Int as i32,
            ..Default::default()
        };
        let weights: Vec<f32> = (0..4 * 2 * 3 * 3)
            .map(|i| ((i * 7) % 11) as f32 - 5.0)
            .collect();
        let conv = node(
            "Conv",
            "conv",
            &["input", "w"],
            &["output"],
            vec![attr("strides", &[2, 2]), auto_pad, group],
        );
        let m = model(
            vec![conv.clone()],
            vec![f32_tensor("w", &[4, 2, 3, 3], &weights)],
            ("input", &[1, 4, 6, 7]),
            ("output", &[1, 4, 3, 4]),
        );
        let x: Vec<f32> = (0..4 * 6 * 7)
            .map(|i| ((i * 5) % 13) as f32 * 0.5 - 3.0)
            .collect();
        let want = run(&m, &[1, 4, 6, 7], &x);
        let geometry = ConvGeometry::of(&conv, &[4, 2, 3, 3]).unwrap();
        assert_eq!(geometry.cols(), 18);
        assert_eq!(geometry.positions(6, 7), 12);
        let mut seen = 0;
        geometry.for_each_patch(&x, [6, 7], 1, |g, pos, patch| {
            for o in g * 2..(g + 1) * 2 {
                let w = &weights[o * 18..(o + 1) * 18];
                let got: f32 = w.iter().zip(patch).map(|(a, b)| a * b).sum();
                assert_eq!(got, want[o * 12 + pos], "channel {o} position {pos}");
                seen += 1;
            }
        });
        assert_eq!(seen, 4 * 12);
    }

    #[test]
    fn percentile_ranges_ignore_rare_outliers_and_keep_zero() {
        let mut sample: Vec<f32> = (0..10_000).map(|i| i as f32 / 10_000.0).collect();
        sample.push(100.0);
        let o = Observed {
            min: 0.0,
            max: 100.0,
            sample,
        };
        assert_eq!(o.range(Method::MinMax), (0.0, 100.0));
        let (lo, hi) = o.range(Method::Percentile(0.999));
        assert_eq!(lo, 0.0);
        assert!((0.99..1.0).contains(&hi), "{hi}");
        let positive = Observed {
            min: 2.0,
            max: 3.0,
            sample: vec![2.0, 3.0],
        };
        assert_eq!(positive.range(Method::MinMax), (0.0, 3.0));
    }
}

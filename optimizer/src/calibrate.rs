//! Activation ranges for static int8: the float model runs on the calibration samples (never the
//! evaluation ones) with every activation exposed as an output, and each tensor's range is taken
//! by MinMax or by a percentile of its values (robust to rare outliers, which otherwise waste
//! most of the 256 levels).

use crate::dataset::Dataset;
use crate::model::pb::{self, ModelProto};
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
    let mut probe = model.clone();
    let graph = probe.graph.as_mut().ok_or("model has no graph")?;
    let input = graph
        .input
        .iter()
        .find(|i| !graph.initializer.iter().any(|t| t.name == i.name))
        .map(|i| i.name.clone())
        .ok_or("model has no input")?;
    let shape_like = |op: &str| matches!(op, "Shape" | "Size" | "ArgMax" | "ArgMin" | "Constant");
    let mut names: Vec<String> = graph
        .node
        .iter()
        .filter(|n| !shape_like(&n.op_type))
        .flat_map(|n| n.output.iter().cloned())
        .filter(|o| !o.is_empty())
        .collect();
    names.retain(|n| !graph.output.iter().any(|o| &o.name == n));
    for name in &names {
        graph.output.push(pb::ValueInfoProto {
            name: name.clone(),
            ..Default::default()
        });
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
        .map_err(|e| format!("cannot run the float model for calibration: {e:#}"))?;

    let mut seen: BTreeMap<String, Observed> = BTreeMap::new();
    let total_chunks = indices.len().div_ceil(batch).max(1);
    for chunk in indices.chunks(batch) {
        let mut idx = chunk.to_vec();
        idx.resize(batch, *chunk.last().expect("non-empty"));
        let (_, x) = data.batch(&idx);
        observe_values(&mut seen, &input, &x, total_chunks);
        let tensor = Tensor::from_shape(&shape, &x).map_err(|e| format!("{e:#}"))?;
        let out = plan
            .run(tvec!(tensor.into()))
            .map_err(|e| format!("calibration run failed: {e:#}"))?;
        for (name, value) in outputs.iter().zip(out.iter()) {
            if let Ok(view) = value.to_plain_array_view::<f32>() {
                let values: Vec<f32> = view.iter().copied().collect();
                observe_values(&mut seen, name, &values, total_chunks);
            }
        }
    }
    Ok(seen)
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

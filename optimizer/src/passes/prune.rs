//! Magnitude pruning: the smallest weights become exactly zero, per layer or by one global
//! threshold. Zeros cost nothing after zstd, and clustering keeps them exact.

use super::graph::f32_tensor;
use super::weights::layer_weights;
use crate::model::pb::GraphProto;

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(tag = "mode", content = "sparsity", rename_all = "camelCase")]
pub enum Sparsity {
    /// Every layer loses this fraction of its weights.
    PerLayer(f32),
    /// One magnitude threshold across all layers, chosen so this fraction of all weights goes.
    Global(f32),
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PrunedLayer {
    pub weight: String,
    pub params: usize,
    pub zeros: usize,
}

/// Prunes layers with at least `min_params` weights (small layers, like a first convolution, are
/// kept dense: they are cheap and sensitive). Exactly the smallest magnitudes go, ties broken by
/// position, so the achieved sparsity is the requested one.
pub fn prune(graph: &mut GraphProto, sparsity: Sparsity, min_params: usize) -> Vec<PrunedLayer> {
    let mut weights: Vec<_> = layer_weights(graph)
        .into_iter()
        .filter(|w| w.values.len() >= min_params)
        .collect();
    match sparsity {
        Sparsity::PerLayer(fraction) => {
            for w in &mut weights {
                let mut order: Vec<usize> = (0..w.values.len()).collect();
                order.sort_by(|&a, &b| w.values[a].abs().total_cmp(&w.values[b].abs()));
                for &i in &order[..count(fraction, order.len())] {
                    w.values[i] = 0.0;
                }
            }
        }
        Sparsity::Global(fraction) => {
            let mut all: Vec<(usize, usize)> = weights
                .iter()
                .enumerate()
                .flat_map(|(l, w)| (0..w.values.len()).map(move |i| (l, i)))
                .collect();
            all.sort_by(|&(la, ia), &(lb, ib)| {
                weights[la].values[ia]
                    .abs()
                    .total_cmp(&weights[lb].values[ib].abs())
            });
            let k = count(fraction, all.len());
            for &(l, i) in &all[..k] {
                weights[l].values[i] = 0.0;
            }
        }
    }
    let mut report = Vec::new();
    for w in weights {
        let tensor = graph
            .initializer
            .iter_mut()
            .find(|t| t.name == w.name)
            .expect("weight exists");
        *tensor = f32_tensor(&w.name, &w.dims, &w.values);
        let zeros = w.values.iter().filter(|v| **v == 0.0).count();
        report.push(PrunedLayer {
            weight: w.name,
            params: w.values.len(),
            zeros,
        });
    }
    report
}

fn count(fraction: f32, len: usize) -> usize {
    ((fraction.clamp(0.0, 1.0) * len as f32).round() as usize).min(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::graph::{f32_values, initializer};
    use crate::passes::testing::conv_bn_relu_model;

    #[test]
    fn per_layer_sparsity_hits_the_target_and_spares_small_layers() {
        let mut model = conv_bn_relu_model();
        let graph = model.graph.as_mut().unwrap();
        let report = prune(graph, Sparsity::PerLayer(0.5), 10);
        assert_eq!(report.len(), 1, "only the conv weight is a layer weight");
        assert_eq!(report[0].params, 54);
        assert_eq!(report[0].zeros, 27);
        let w = f32_values(initializer(graph, "conv.w").unwrap()).unwrap();
        let smallest_kept = w
            .iter()
            .filter(|v| **v != 0.0)
            .map(|v| v.abs())
            .fold(f32::INFINITY, f32::min);
        let original = f32_values(
            initializer(conv_bn_relu_model().graph.as_ref().unwrap(), "conv.w").unwrap(),
        )
        .unwrap();
        let largest_dropped = original
            .iter()
            .zip(&w)
            .filter(|(_, n)| **n == 0.0)
            .map(|(o, _)| o.abs())
            .fold(0.0, f32::max);
        assert!(
            largest_dropped <= smallest_kept,
            "pruning must drop the smallest magnitudes"
        );
        // Biases and BN parameters are untouched.
        assert_eq!(
            f32_values(initializer(graph, "conv.b").unwrap()).unwrap(),
            vec![0.1, -0.2, 0.3]
        );
        let untouched = prune(graph, Sparsity::PerLayer(0.9), 100);
        assert!(untouched.is_empty(), "layers under min_params stay dense");
    }

    #[test]
    fn global_sparsity_spans_layers() {
        assert_eq!(count(0.5, 7), 4);
        assert_eq!(count(1.5, 3), 3);
        let mut model = conv_bn_relu_model();
        let report = prune(model.graph.as_mut().unwrap(), Sparsity::Global(0.25), 1);
        let zeros: usize = report.iter().map(|r| r.zeros).sum();
        let params: usize = report.iter().map(|r| r.params).sum();
        assert_eq!(zeros, count(0.25, params), "{zeros}/{params}");
    }
}

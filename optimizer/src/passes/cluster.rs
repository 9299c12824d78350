//! Weight clustering: each layer's weights take one of `k` values (1-D k-means). Two storages:
//! a float32 codebook plus uint8 indices, `Gather(codebook, Cast(indices))` in the graph, for
//! float devices; or, where int8 is allowed, the clustered values on one int8 grid per tensor
//! behind a `DequantizeLinear` (k distinct codes, so zstd codes each weight in about log2(k)
//! bits). Either way runtimes fold the weight at load and inference runs at float32 speed. An
//! exact zero (from pruning) stays an exact zero.

use super::graph::{
    INT64, PassError, f32_tensor, fresh_name, int_attr, node, remove_unused_initializers, u8_tensor,
};
use super::int8_weights::{Grid, quantize_weight};
use super::weights::{Weight, layer_weights};
use crate::model::pb::GraphProto;

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClusteredLayer {
    pub weight: String,
    pub params: usize,
    pub clusters: usize,
    /// Mean absolute change of a weight.
    pub mean_abs_error: f32,
}

/// How clustered weights are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Storage {
    Codebook,
    Int8,
}

/// Clusters every layer weight with at least `min_params` values, except those in `skip`.
pub fn cluster(
    graph: &mut GraphProto,
    k: usize,
    min_params: usize,
    skip: &[String],
    storage: Storage,
) -> Result<Vec<ClusteredLayer>, PassError> {
    assert!((2..=256).contains(&k), "k must fit uint8 indices");
    let mut report = Vec::new();
    for w in layer_weights(graph)
        .into_iter()
        .filter(|w| w.values.len() >= min_params && !skip.contains(&w.name))
    {
        let (codebook, indices) = kmeans_1d(&w.values, k, 20);
        let error = w
            .values
            .iter()
            .zip(&indices)
            .map(|(v, &i)| (v - codebook[i as usize]).abs())
            .sum::<f32>()
            / w.values.len() as f32;
        let summary = ClusteredLayer {
            weight: w.name.clone(),
            params: w.values.len(),
            clusters: codebook.len(),
            mean_abs_error: error,
        };
        if storage == Storage::Int8 {
            let snapped = Weight {
                values: indices.iter().map(|&i| codebook[i as usize]).collect(),
                ..w
            };
            quantize_weight(graph, &snapped, Grid::PerTensor)?;
            report.push(summary);
            continue;
        }
        let codebook_name = fresh_name(graph, &format!("{}.codebook", w.name));
        let indices_name = fresh_name(graph, &format!("{}.indices", w.name));
        let wide_name = fresh_name(graph, &format!("{}.indices_i64", w.name));
        graph.initializer.retain(|t| t.name != w.name);
        graph.initializer.push(f32_tensor(
            &codebook_name,
            &[codebook.len() as i64],
            &codebook,
        ));
        graph
            .initializer
            .push(u8_tensor(&indices_name, &w.dims, &indices));
        let cast = node(
            "Cast",
            &fresh_name(graph, &format!("{}.cast", w.name)),
            &[&indices_name],
            &[&wide_name],
            vec![int_attr("to", INT64 as i64)],
        );
        let gather = node(
            "Gather",
            &fresh_name(graph, &format!("{}.gather", w.name)),
            &[&codebook_name, &wide_name],
            &[&w.name],
            vec![int_attr("axis", 0)],
        );
        // Constants first: nodes must appear in topological order.
        graph.node.insert(0, gather);
        graph.node.insert(0, cast);
        report.push(summary);
    }
    remove_unused_initializers(graph);
    Ok(report)
}

/// 1-D k-means (Lloyd's algorithm on sorted values, initialised at quantiles). Exact zeros get a
/// centroid of their own fixed at 0.0. Returns (codebook, index per value).
pub fn kmeans_1d(values: &[f32], k: usize, iterations: usize) -> (Vec<f32>, Vec<u8>) {
    let has_zero = values.contains(&0.0);
    let mut sorted: Vec<f32> = values.iter().copied().filter(|v| *v != 0.0).collect();
    sorted.sort_by(f32::total_cmp);
    let free = if has_zero { k - 1 } else { k }.min(sorted.len().max(1));
    let mut centroids: Vec<f32> = if sorted.is_empty() {
        vec![]
    } else {
        (0..free)
            .map(|i| {
                sorted
                    [((i as f32 + 0.5) / free as f32 * sorted.len() as f32) as usize % sorted.len()]
            })
            .collect()
    };
    centroids.dedup();
    for _ in 0..iterations {
        let mut sums = vec![0f64; centroids.len()];
        let mut counts = vec![0usize; centroids.len()];
        for &v in &sorted {
            let c = nearest(&centroids, v);
            sums[c] += v as f64;
            counts[c] += 1;
        }
        let mut moved = false;
        for c in 0..centroids.len() {
            if counts[c] > 0 {
                let next = (sums[c] / counts[c] as f64) as f32;
                moved |= next != centroids[c];
                centroids[c] = next;
            }
        }
        centroids.sort_by(f32::total_cmp);
        if !moved {
            break;
        }
    }
    if has_zero {
        centroids.insert(0, 0.0);
    }
    let indices = values
        .iter()
        .map(|&v| {
            if v == 0.0 && has_zero {
                0
            } else {
                nearest_from(&centroids, v, usize::from(has_zero)) as u8
            }
        })
        .collect();
    (centroids, indices)
}

fn nearest(centroids: &[f32], v: f32) -> usize {
    nearest_from(centroids, v, 0)
}

fn nearest_from(centroids: &[f32], v: f32, start: usize) -> usize {
    (start..centroids.len())
        .min_by(|&a, &b| {
            (centroids[a] - v)
                .abs()
                .total_cmp(&(centroids[b] - v).abs())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::graph::{f32_values, initializer};
    use crate::passes::prune::{Sparsity, prune};
    use crate::passes::testing::{conv_bn_relu_model, run};

    #[test]
    fn kmeans_finds_obvious_clusters_and_keeps_zeros_exact() {
        let values = [1.0, 1.1, 0.9, 5.0, 5.2, 4.8, 0.0, 0.0];
        let (codebook, indices) = kmeans_1d(&values, 3, 20);
        assert_eq!(codebook[0], 0.0);
        assert_eq!(codebook.len(), 3);
        assert!(
            (codebook[1] - 1.0).abs() < 1e-6 && (codebook[2] - 5.0).abs() < 1e-6,
            "{codebook:?}"
        );
        assert_eq!(indices, [1, 1, 1, 2, 2, 2, 0, 0]);
    }

    #[test]
    fn clustered_graph_runs_and_matches_its_codebook_weights() {
        let mut model = conv_bn_relu_model();
        let original =
            f32_values(initializer(model.graph.as_ref().unwrap(), "conv.w").unwrap()).unwrap();
        let report = cluster(model.graph.as_mut().unwrap(), 8, 10, &[], Storage::Codebook).unwrap();
        assert_eq!(report.len(), 1);
        assert_eq!(report[0].clusters, 8);
        let graph = model.graph.as_ref().unwrap();
        assert!(
            initializer(graph, "conv.w").is_none(),
            "the float weight is replaced"
        );
        let indices = graph
            .initializer
            .iter()
            .find(|t| t.name.ends_with(".indices"))
            .unwrap();
        assert_eq!(indices.raw_data.len(), 54, "one byte per weight");

        // Reference: the same model with the clustered values written back as float weights.
        let (codebook, idx) = kmeans_1d(&original, 8, 20);
        let mut reference = conv_bn_relu_model();
        let t = reference
            .graph
            .as_mut()
            .unwrap()
            .initializer
            .iter_mut()
            .find(|t| t.name == "conv.w")
            .unwrap();
        *t = f32_tensor(
            "conv.w",
            &[3, 2, 3, 3],
            &idx.iter()
                .map(|&i| codebook[i as usize])
                .collect::<Vec<_>>(),
        );
        let input: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let got = run(&model, &[1, 2, 5, 5], &input);
        let want = run(&reference, &[1, 2, 5, 5], &input);
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn prune_then_cluster_keeps_the_zeros() {
        let mut model = conv_bn_relu_model();
        let graph = model.graph.as_mut().unwrap();
        prune(graph, Sparsity::PerLayer(0.5), 10);
        cluster(graph, 4, 10, &[], Storage::Codebook).unwrap();
        let codebook = graph
            .initializer
            .iter()
            .find(|t| t.name.ends_with(".codebook"))
            .unwrap();
        let indices = graph
            .initializer
            .iter()
            .find(|t| t.name.ends_with(".indices"))
            .unwrap();
        assert_eq!(f32_values(codebook).unwrap()[0], 0.0);
        assert_eq!(indices.raw_data.iter().filter(|&&i| i == 0).count(), 27);
    }
}

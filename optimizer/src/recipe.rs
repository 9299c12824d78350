//! Candidates: a technique (or a combination) with its parameters, and how to build it from the
//! base model. `keep` names layers (Conv/Gemm/MatMul nodes) that the accuracy-aware search
//! returns to higher precision: float32 for float16 and static int8, per-channel int8 (or float
//! where int8 is not allowed) for pruning and clustering.

use crate::calibrate::{Calibration, Method};
use crate::model::pb::ModelProto;
use crate::passes::cluster::{Storage, cluster};
use crate::passes::float16::to_float16;
use crate::passes::fold_bn::fold_batch_norm;
use crate::passes::graph::PassError;
use crate::passes::int8_weights::{quantize_weights, quantize_weights_gptq};
use crate::passes::prune::{Sparsity, prune};
use crate::passes::qdq::quantize_static;
use crate::passes::weights::layer_weights;
use edgefleet_api::edgemodel::Technique;
use std::collections::BTreeMap;

/// Layers smaller than this are never pruned or clustered: they are cheap and sensitive.
pub const MIN_PARAMS: usize = 1000;
/// Default clusters per layer: 4-bit codes.
pub const CLUSTERS: usize = 16;
/// Bits of the narrow weight grid (the search takes sensitive layers up from there).
pub const LOW_BITS: u32 = 3;
/// The widths a low-bit layer moves through when the search takes it back one step at a time.
pub const WIDTHS: [u32; 6] = [2, 3, 4, 5, 6, 8];

/// A layer's width when the search has taken it back `steps` times from `bits`.
pub fn width(bits: u32, steps: usize) -> u32 {
    WIDTHS[(position(bits) + steps).min(WIDTHS.len() - 1)]
}

/// Where `bits` starts in [`WIDTHS`].
fn position(bits: u32) -> usize {
    WIDTHS
        .iter()
        .position(|&w| w >= bits)
        .unwrap_or(WIDTHS.len() - 1)
}

/// A layer's width in a keep-list that names it once per step back from `bits`.
fn width_in(bits: u32, keep: &[String], layer: &str) -> u32 {
    width(bits, keep.iter().filter(|k| *k == layer).count())
}
/// Default global sparsity.
pub const SPARSITY: f32 = 0.5;
/// The percentile used by percentile calibration.
pub const PERCENTILE: f64 = 0.9999;

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Recipe {
    Fp32,
    Float16,
    Int8Dynamic,
    /// Weight-only on a narrower grid (`bits` per weight, int8 storage), error-compensating
    /// (GPTQ) from the calibration samples; the search raises single layers one width at a time.
    LowBitWeights {
        bits: u32,
    },
    Int8Static {
        calibration: Method,
    },
    FullInteger {
        calibration: Method,
    },
    Pruning {
        sparsity: Sparsity,
        int8: bool,
    },
    Clustering {
        clusters: usize,
        int8: bool,
    },
    PruningClustering {
        sparsity: Sparsity,
        clusters: usize,
        int8: bool,
    },
    ClusteringInt8Static {
        clusters: usize,
        calibration: Method,
    },
}

impl Recipe {
    /// The name in reports: techniques joined by `+`.
    pub fn technique(&self) -> &'static str {
        match self {
            Recipe::Fp32 => "fp32",
            Recipe::Float16 => "float16",
            Recipe::Int8Dynamic | Recipe::LowBitWeights { .. } => "int8-dynamic",
            Recipe::Int8Static { .. } => "int8-static",
            Recipe::FullInteger { .. } => "full-integer",
            Recipe::Pruning { .. } => "pruning",
            Recipe::Clustering { .. } => "clustering",
            Recipe::PruningClustering { .. } => "pruning+clustering",
            Recipe::ClusteringInt8Static { .. } => "clustering+int8-static",
        }
    }

    /// Parameters for the report, e.g. `{"calibration": "minmax"}`.
    pub fn parameters(&self) -> BTreeMap<&'static str, serde_json::Value> {
        use serde_json::json;
        let mut p = BTreeMap::new();
        match self {
            Recipe::Fp32 | Recipe::Float16 => {}
            Recipe::Int8Dynamic => {
                p.insert("bits", json!(8));
            }
            Recipe::LowBitWeights { bits } => {
                p.insert("bits", json!(bits));
                p.insert("method", json!("gptq"));
            }
            Recipe::Int8Static { calibration } | Recipe::FullInteger { calibration } => {
                p.insert("calibration", json!(calibration.label()));
            }
            Recipe::Pruning { sparsity, int8 } => {
                p.insert("sparsity", json!(sparsity));
                p.insert("int8Weights", json!(int8));
            }
            Recipe::Clustering { clusters, int8 } => {
                p.insert("clusters", json!(clusters));
                p.insert("int8Weights", json!(int8));
            }
            Recipe::PruningClustering {
                sparsity,
                clusters,
                int8,
            } => {
                p.insert("sparsity", json!(sparsity));
                p.insert("clusters", json!(clusters));
                p.insert("int8Weights", json!(int8));
            }
            Recipe::ClusteringInt8Static {
                clusters,
                calibration,
            } => {
                p.insert("clusters", json!(clusters));
                p.insert("calibration", json!(calibration.label()));
            }
        }
        p
    }

    /// Precision the artifact runs in (for the artifact's config).
    pub fn precision(&self) -> &'static str {
        match self {
            Recipe::Fp32 => "fp32",
            Recipe::Float16 => "fp16",
            Recipe::Int8Static { .. }
            | Recipe::FullInteger { .. }
            | Recipe::ClusteringInt8Static { .. } => "int8",
            Recipe::Int8Dynamic | Recipe::LowBitWeights { .. } => "int8-weights",
            Recipe::Pruning { int8, .. }
            | Recipe::Clustering { int8, .. }
            | Recipe::PruningClustering { int8, .. } => {
                if *int8 {
                    "int8-weights"
                } else {
                    "fp32"
                }
            }
        }
    }

    /// Whether returning layers to higher precision means anything for this recipe (an integer-
    /// only device has no higher precision to return to).
    pub fn searchable(&self) -> bool {
        !matches!(self, Recipe::Fp32 | Recipe::FullInteger { .. })
    }

    /// Needs activation ranges from calibration.
    pub fn calibrated(&self) -> bool {
        matches!(
            self,
            Recipe::Int8Static { .. }
                | Recipe::FullInteger { .. }
                | Recipe::ClusteringInt8Static { .. }
        )
    }

    /// Needs the statistics of every layer's inputs (error-compensating quantization).
    pub fn needs_layer_inputs(&self) -> bool {
        matches!(self, Recipe::LowBitWeights { .. })
    }

    /// How many times the search may take one layer back: once for most recipes (back to
    /// higher precision), one width step at a time for low-bit weights.
    pub fn steps_back(&self) -> usize {
        match self {
            Recipe::LowBitWeights { bits } => WIDTHS.len() - 1 - position(*bits),
            _ => 1,
        }
    }

    /// Each layer's weight width, for recipes that give layers their own (`keep` names a layer
    /// once per step back).
    pub fn layer_bits(&self, layers: &[String], keep: &[String]) -> BTreeMap<String, u32> {
        match self {
            Recipe::LowBitWeights { bits } => layers
                .iter()
                .map(|l| (l.clone(), width_in(*bits, keep, l)))
                .collect(),
            _ => BTreeMap::new(),
        }
    }

    /// Builds the candidate from the base model. `calibration` holds activation ranges for
    /// calibrated recipes and layer input statistics for low-bit weights.
    pub fn build(
        &self,
        base: &ModelProto,
        keep: &[String],
        calibration: &Calibration,
    ) -> Result<ModelProto, PassError> {
        let mut model = base.clone();
        let graph = model.graph.as_mut().expect("model has a graph");
        if *self == Recipe::Fp32 {
            return Ok(model);
        }
        // Every technique starts from folded BatchNorms (folding renames the weights).
        fold_batch_norm(graph)?;
        // Names of the weights of kept layers (the weight passes work on weights).
        let kept_weights: Vec<String> = layer_weights(graph)
            .into_iter()
            .filter(|w| keep.contains(&w.node))
            .map(|w| w.name)
            .collect();
        let ranges = |method: Method| -> BTreeMap<String, (f32, f32)> {
            calibration
                .ranges
                .iter()
                .map(|(k, o)| (k.clone(), o.range(method)))
                .collect()
        };
        match *self {
            Recipe::Fp32 => unreachable!("returned above"),
            Recipe::Float16 => {
                to_float16(graph, keep);
            }
            Recipe::Int8Dynamic => {
                quantize_weights(graph, 1, &kept_weights)?;
            }
            Recipe::LowBitWeights { bits } => {
                let bits_of = |layer: &str| width_in(bits, keep, layer);
                quantize_weights_gptq(
                    graph,
                    &bits_of,
                    &calibration.layers,
                    Some(&calibration.codes),
                )?;
            }
            Recipe::Int8Static { calibration } => {
                quantize_static(&mut model, &ranges(calibration), keep, false)?;
            }
            Recipe::FullInteger { calibration } => {
                quantize_static(&mut model, &ranges(calibration), &[], true)?;
            }
            Recipe::Pruning { sparsity, int8 } => {
                prune_except(graph, sparsity, &kept_weights);
                if int8 {
                    quantize_weights(graph, 1, &[])?;
                }
            }
            Recipe::Clustering { clusters, int8 } => {
                cluster_rest(graph, clusters, &kept_weights, int8)?;
            }
            Recipe::PruningClustering {
                sparsity,
                clusters,
                int8,
            } => {
                prune_except(graph, sparsity, &kept_weights);
                cluster_rest(graph, clusters, &kept_weights, int8)?;
            }
            Recipe::ClusteringInt8Static {
                clusters,
                calibration,
            } => {
                // Kept layers skip clustering; activations are quantized everywhere.
                cluster(graph, clusters, MIN_PARAMS, &kept_weights, Storage::Int8)?;
                quantize_static(&mut model, &ranges(calibration), &[], false)?;
            }
        }
        Ok(model)
    }
}

fn prune_except(graph: &mut crate::model::pb::GraphProto, sparsity: Sparsity, keep: &[String]) {
    // Pruning works on every large layer; kept ones get their weights back afterwards.
    let saved: Vec<_> = graph
        .initializer
        .iter()
        .filter(|t| keep.contains(&t.name))
        .cloned()
        .collect();
    prune(graph, sparsity, MIN_PARAMS);
    for t in saved {
        if let Some(slot) = graph.initializer.iter_mut().find(|x| x.name == t.name) {
            *slot = t;
        }
    }
}

fn cluster_rest(
    graph: &mut crate::model::pb::GraphProto,
    clusters: usize,
    keep: &[String],
    int8: bool,
) -> Result<(), PassError> {
    let storage = if int8 {
        Storage::Int8
    } else {
        Storage::Codebook
    };
    cluster(graph, clusters, MIN_PARAMS, keep, storage)?;
    if int8 {
        // Kept and small layers: per-channel int8.
        quantize_weights(graph, 1, &[])?;
    }
    Ok(())
}

/// The candidates to try for the techniques a device class allows, in order.
pub fn plan(techniques: &[Technique], int8: bool, fp32: bool) -> Vec<Recipe> {
    let has = |t| techniques.contains(&t);
    let p = Method::Percentile(PERCENTILE);
    let sparsity = Sparsity::Global(SPARSITY);
    let mut out = Vec::new();
    if fp32 {
        out.push(Recipe::Fp32);
    }
    if has(Technique::Float16) {
        out.push(Recipe::Float16);
    }
    if has(Technique::Int8Dynamic) {
        out.push(Recipe::Int8Dynamic);
        out.push(Recipe::LowBitWeights { bits: LOW_BITS });
    }
    if has(Technique::Int8Static) {
        out.push(Recipe::Int8Static {
            calibration: Method::MinMax,
        });
        out.push(Recipe::Int8Static { calibration: p });
    }
    if has(Technique::FullInteger) {
        out.push(Recipe::FullInteger {
            calibration: Method::MinMax,
        });
        out.push(Recipe::FullInteger { calibration: p });
    }
    if has(Technique::Pruning) {
        out.push(Recipe::Pruning { sparsity, int8 });
    }
    if has(Technique::Clustering) {
        out.push(Recipe::Clustering {
            clusters: CLUSTERS,
            int8,
        });
    }
    if has(Technique::Pruning) && has(Technique::Clustering) {
        out.push(Recipe::PruningClustering {
            sparsity,
            clusters: CLUSTERS,
            int8,
        });
    }
    if has(Technique::Clustering) && has(Technique::Int8Static) {
        out.push(Recipe::ClusteringInt8Static {
            clusters: CLUSTERS,
            calibration: p,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::built_in;

    #[test]
    fn a_step_back_moves_one_width() {
        assert_eq!(width(4, 0), 4);
        assert_eq!(width(4, 1), 5);
        assert_eq!(width(4, 2), 6);
        assert_eq!(width(4, 3), 8);
        assert_eq!(width(4, 9), 8);
        assert_eq!(width(3, 1), 4);
        let r = Recipe::LowBitWeights { bits: 4 };
        assert_eq!(r.steps_back(), 3);
        assert_eq!(Recipe::Int8Dynamic.steps_back(), 1);
        let layers = ["a".to_string(), "b".to_string()];
        let bits = r.layer_bits(&layers, &["b".into(), "b".into()]);
        assert_eq!(bits["a"], 4);
        assert_eq!(bits["b"], 6);
    }

    #[test]
    fn plans_follow_the_device_class() {
        let cpu = built_in("cpu-int8").unwrap();
        let names: Vec<_> = plan(&cpu.techniques(&[]), true, true)
            .iter()
            .map(Recipe::technique)
            .collect();
        assert_eq!(
            names,
            [
                "fp32",
                "int8-dynamic",
                "int8-dynamic",
                "int8-static",
                "int8-static",
                "pruning",
                "clustering",
                "pruning+clustering",
                "clustering+int8-static"
            ]
        );
        let npu = built_in("integer-npu").unwrap();
        let npu_plan = plan(&npu.techniques(&[]), true, false);
        assert!(npu_plan.iter().all(|r| r.technique() == "full-integer"));
        assert!(npu_plan.iter().all(|r| !r.searchable()));
        let gpu = built_in("nvidia-fp16").unwrap();
        let gpu_plan = plan(&gpu.techniques(&[]), false, true);
        assert_eq!(gpu_plan[1], Recipe::Float16);
        assert!(gpu_plan.contains(&Recipe::Clustering {
            clusters: CLUSTERS,
            int8: false
        }));
    }
}

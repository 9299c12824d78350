//! Folds `BatchNormalization` into the `Conv` that feeds it: `W' = W·γ/√(σ²+ε)`,
//! `b' = (b−μ)·γ/√(σ²+ε) + β`. Done before quantization so that int8 ranges describe the
//! weights that actually run, and it removes a node per layer.

use super::graph::{
    PassError, attr_f, consumers, f32_tensor, f32_values, fresh_name, initializer,
    remove_unused_initializers, uses,
};
use crate::model::pb::GraphProto;

/// Returns how many BatchNormalization nodes were folded. Nodes it cannot fold (BN not after a
/// Conv, parameters not constant, Conv output used elsewhere) are left as they are.
pub fn fold_batch_norm(graph: &mut GraphProto) -> Result<usize, PassError> {
    let mut folded = 0;
    while let Some((conv_idx, bn_idx)) = find_pair(graph) {
        let bn = graph.node[bn_idx].clone();
        let conv = graph.node[conv_idx].clone();
        let param = |i: usize| -> Result<Vec<f32>, PassError> {
            initializer(graph, &bn.input[i])
                .and_then(f32_values)
                .ok_or_else(|| {
                    PassError::new(
                        &bn,
                        format!("input {} is not a float32 constant", bn.input[i]),
                    )
                })
        };
        let (gamma, beta, mean, var) = (param(1)?, param(2)?, param(3)?, param(4)?);
        let eps = attr_f(&bn, "epsilon").unwrap_or(1e-5);
        let w_tensor = initializer(graph, &conv.input[1])
            .ok_or_else(|| PassError::new(&conv, "weight is not a constant"))?;
        let mut w =
            f32_values(w_tensor).ok_or_else(|| PassError::new(&conv, "weight is not float32"))?;
        let dims = w_tensor.dims.clone();
        let out_channels = dims[0] as usize;
        if [gamma.len(), beta.len(), mean.len(), var.len()]
            .iter()
            .any(|&n| n != out_channels)
        {
            return Err(PassError::new(
                &bn,
                format!(
                    "has parameters for a different channel count than the Conv's {out_channels}"
                ),
            ));
        }
        let mut b = match conv.input.get(2).filter(|s| !s.is_empty()) {
            Some(name) => initializer(graph, name)
                .and_then(f32_values)
                .ok_or_else(|| PassError::new(&conv, "bias is not a float32 constant"))?,
            None => vec![0.0; out_channels],
        };
        let per_channel = w.len() / out_channels;
        for c in 0..out_channels {
            let factor = gamma[c] / (var[c] + eps).sqrt();
            for v in &mut w[c * per_channel..(c + 1) * per_channel] {
                *v *= factor;
            }
            b[c] = (b[c] - mean[c]) * factor + beta[c];
        }
        let w_name = fresh_name(graph, &format!("{}.folded_weight", conv.name));
        let b_name = fresh_name(graph, &format!("{}.folded_bias", conv.name));
        graph.initializer.push(f32_tensor(&w_name, &dims, &w));
        graph
            .initializer
            .push(f32_tensor(&b_name, &[out_channels as i64], &b));
        let node = &mut graph.node[conv_idx];
        node.input.truncate(1);
        node.input.push(w_name);
        node.input.push(b_name);
        node.output[0] = bn.output[0].clone();
        graph.node.remove(bn_idx);
        remove_unused_initializers(graph);
        folded += 1;
    }
    Ok(folded)
}

fn find_pair(graph: &GraphProto) -> Option<(usize, usize)> {
    graph.node.iter().enumerate().find_map(|(bn_idx, bn)| {
        if bn.op_type != "BatchNormalization" || bn.output.len() != 1 || bn.input.len() != 5 {
            return None;
        }
        let conv_idx = graph
            .node
            .iter()
            .position(|n| n.op_type == "Conv" && n.output.first() == Some(&bn.input[0]))?;
        let conv = &graph.node[conv_idx];
        let constant = |name: &String| initializer(graph, name).is_some();
        let single_use =
            consumers(graph, &bn.input[0]).len() == 1 && uses(graph, &bn.input[0]) == 1;
        let weights_private = uses(graph, &conv.input[1]) == 1;
        (single_use
            && weights_private
            && constant(&conv.input[1])
            && bn.input[1..].iter().all(constant))
        .then_some((conv_idx, bn_idx))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::testing::{conv_bn_relu_model, run};

    #[test]
    fn folding_keeps_outputs_and_removes_the_nodes() {
        let model = conv_bn_relu_model();
        let input: Vec<f32> = (0..2 * 5 * 5)
            .map(|i| ((i * 7) % 11) as f32 / 5.0 - 1.0)
            .collect();
        let before = run(&model, &[1, 2, 5, 5], &input);
        let mut folded = model.clone();
        let n = fold_batch_norm(folded.graph.as_mut().unwrap()).unwrap();
        assert_eq!(n, 1);
        let graph = folded.graph.as_ref().unwrap();
        assert!(graph.node.iter().all(|n| n.op_type != "BatchNormalization"));
        assert!(
            graph.initializer.iter().all(|t| !t.name.starts_with("bn.")),
            "BN parameters are dropped"
        );
        let after = run(&folded, &[1, 2, 5, 5], &input);
        assert_eq!(before.len(), after.len());
        for (a, b) in before.iter().zip(&after) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }
}

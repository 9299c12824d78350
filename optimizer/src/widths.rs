//! Per-layer weight widths: given, for each layer and width, what it costs over the air and how
//! much accuracy it loses when only that layer is at that width, choose one width per layer that
//! minimises bytes while the predicted loss (the sum of the layers' losses) stays within a
//! budget. Pure; the optimizer measures the inputs on the search subset and checks the result.

/// One width a layer can take.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    pub bits: u32,
    /// Bytes its weight codes take over the air (estimated from their entropy).
    pub bytes: f64,
    /// Accuracy lost with only this layer at this width (others at 8 bits), on the search
    /// subset; noise can make it negative.
    pub drop: f64,
}

/// Chooses an index into each layer's `choices` (ascending by bits; the last is the widest).
/// Greedy exchange: every layer starts at its widest width, then the step down that saves the
/// most bytes per point of accuracy it costs is taken, as long as the predicted total loss stays
/// within `budget`. Losses are made monotone first (a narrower width never loses less than a
/// wider one: what a measurement says otherwise is noise) and never negative.
pub fn allocate(layers: &[Vec<Choice>], budget: f64) -> Vec<usize> {
    let drops: Vec<Vec<f64>> = layers.iter().map(|c| monotone_drops(c)).collect();
    let mut at: Vec<usize> = layers.iter().map(|c| c.len().saturating_sub(1)).collect();
    let mut spent = 0.0;
    loop {
        let best = (0..layers.len())
            .filter(|&l| at[l] > 0)
            .filter_map(|l| {
                let (i, j) = (at[l], at[l] - 1);
                let saved = layers[l][i].bytes - layers[l][j].bytes;
                let cost = drops[l][j] - drops[l][i];
                (saved > 0.0 && spent + cost <= budget + 1e-12).then_some((l, saved, cost))
            })
            .max_by(|a, b| {
                // Free steps first (largest saving), then the best saving per point lost.
                let key = |&(_, saved, cost): &(usize, f64, f64)| {
                    if cost <= 0.0 {
                        (1, saved)
                    } else {
                        (0, saved / cost)
                    }
                };
                let (ka, kb) = (key(a), key(b));
                ka.0.cmp(&kb.0).then(ka.1.total_cmp(&kb.1))
            });
        let Some((l, _, cost)) = best else {
            return at;
        };
        at[l] -= 1;
        spent += cost;
    }
}

/// The loss of each choice, at least zero and at least the loss of every wider choice.
fn monotone_drops(choices: &[Choice]) -> Vec<f64> {
    let mut out = vec![0.0; choices.len()];
    let mut floor: f64 = 0.0;
    for i in (0..choices.len()).rev() {
        floor = floor.max(choices[i].drop);
        out[i] = floor;
    }
    out
}

/// The predicted loss and bytes of an allocation.
pub fn predicted(layers: &[Vec<Choice>], at: &[usize]) -> (f64, f64) {
    layers
        .iter()
        .zip(at)
        .map(|(c, &i)| (monotone_drops(c)[i], c[i].bytes))
        .fold((0.0, 0.0), |(d, b), (x, y)| (d + x, b + y))
}

/// Order-0 entropy of integer codes, in bytes: what an ideal entropy coder needs, and a good
/// estimate of what zstd reaches on them.
pub fn entropy_bytes(codes: &[i8]) -> f64 {
    let mut counts = [0usize; 256];
    for &c in codes {
        counts[c as u8 as usize] += 1;
    }
    let n = codes.len() as f64;
    counts
        .iter()
        .filter(|&&k| k > 0)
        .map(|&k| {
            let p = k as f64 / n;
            -p * p.log2() * n
        })
        .sum::<f64>()
        / 8.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(bytes: &[f64], drops: &[f64]) -> Vec<Choice> {
        [3, 4, 5, 8]
            .iter()
            .zip(bytes.iter().zip(drops))
            .map(|(&bits, (&bytes, &drop))| Choice { bits, bytes, drop })
            .collect()
    }

    #[test]
    fn the_big_insensitive_layer_goes_narrow_and_the_sensitive_one_stays_wide() {
        let big = layer(&[300.0, 400.0, 500.0, 800.0], &[0.002, 0.001, 0.0, 0.0]);
        let sensitive = layer(&[30.0, 40.0, 50.0, 80.0], &[0.05, 0.02, 0.004, 0.0]);
        let at = allocate(&[big.clone(), sensitive.clone()], 0.006);
        assert_eq!(at, vec![0, 2], "big at 3 bits, the sensitive one at 5");
        let (drop, bytes) = predicted(&[big.clone(), sensitive.clone()], &at);
        assert!(
            (drop - 0.006).abs() < 1e-9 && bytes == 350.0,
            "{drop} {bytes}"
        );
        // No budget: only what costs nothing.
        assert_eq!(allocate(&[big.clone(), sensitive.clone()], 0.0), vec![2, 3]);
        // A large budget: everything at its narrowest.
        assert_eq!(allocate(&[big, sensitive], 1.0), vec![0, 0]);
    }

    #[test]
    fn noise_never_makes_a_narrower_width_look_better() {
        // 3 bits measured better than 4 (noise): treated as losing at least what 4 loses.
        let noisy = layer(&[10.0, 20.0, 30.0, 40.0], &[-0.01, 0.03, 0.0, 0.0]);
        assert_eq!(monotone_drops(&noisy), vec![0.03, 0.03, 0.0, 0.0]);
        assert_eq!(allocate(std::slice::from_ref(&noisy), 0.02), vec![2]);
        assert_eq!(allocate(&[noisy], 0.03), vec![0]);
    }

    #[test]
    fn entropy_counts_levels() {
        assert_eq!(entropy_bytes(&[1, 1, 1, 1]), 0.0);
        assert_eq!(entropy_bytes(&[0, 1, 2, 3, 0, 1, 2, 3]), 2.0); // 2 bits x 8
    }
}

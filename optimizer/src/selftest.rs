//! The self-test samples an artifact carries: evaluation samples the winner classifies with the
//! widest margin between its top two classes, so that a device (possibly running another
//! runtime or another build of it) reproduces every expected top-1 unless its model is broken.

use crate::dataset::Dataset;
use crate::eval::{Runtime, argmax};
use crate::model::Model;
use edgefleet_artifact::SelfTest;

/// Rows (index into `logits` rows, top-1) with the widest top-1/top-2 margin, widest first; at
/// most one row per class first, so that the samples cover several classes.
pub fn select_by_margin(logits: &[f32], classes: usize, count: usize) -> Vec<(usize, usize)> {
    let mut rows: Vec<(usize, usize, f32)> = logits
        .chunks_exact(classes)
        .enumerate()
        .filter(|(_, row)| row.iter().all(|v| v.is_finite()))
        .map(|(i, row)| {
            let top = argmax(row);
            let second = row
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != top)
                .map(|(_, &v)| v)
                .fold(f32::NEG_INFINITY, f32::max);
            (i, top, row[top] - second)
        })
        .collect();
    rows.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
    let mut chosen: Vec<(usize, usize)> = Vec::new();
    for pass in 0..2 {
        for &(i, top, _) in &rows {
            if chosen.len() == count {
                return chosen;
            }
            let new_class = !chosen.iter().any(|&(_, c)| c == top);
            let taken = chosen.iter().any(|&(r, _)| r == i);
            if !taken && (pass == 1 || new_class) {
                chosen.push((i, top));
            }
        }
    }
    chosen
}

/// Runs `model` on `pool` and keeps `count` samples (see [`select_by_margin`]).
pub fn build(
    runtime: &dyn Runtime,
    model: &Model,
    data: &Dataset,
    pool: &[usize],
    count: usize,
) -> Result<SelfTest, String> {
    let mut session = runtime.load(&model.info(), &data.sample_shape, pool.len())?;
    let (_, x) = data.batch(pool);
    let logits = session.run(pool.len(), &x)?;
    let classes = logits.len() / pool.len().max(1);
    let chosen = select_by_margin(&logits, classes, count);
    let samples: Vec<(Vec<f32>, usize)> = chosen
        .iter()
        .map(|&(row, top1)| (data.sample(pool[row]).to_vec(), top1))
        .collect();
    let mut shape = vec![1];
    shape.extend(&data.sample_shape);
    Ok(SelfTest::new(shape, &samples))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widest_margins_first_one_per_class_then_the_rest() {
        let logits = [
            5.0,
            0.0,
            0.0, // row 0: class 0, margin 5
            0.0,
            1.0,
            0.9, // row 1: class 1, margin 0.1
            9.0,
            0.0,
            1.0, // row 2: class 0, margin 8
            0.0,
            0.0,
            3.0, // row 3: class 2, margin 3
            f32::NAN,
            0.0,
            0.0, // row 4: never chosen
        ];
        assert_eq!(
            select_by_margin(&logits, 3, 3),
            vec![(2, 0), (3, 2), (1, 1)]
        );
        assert_eq!(
            select_by_margin(&logits, 3, 10),
            vec![(2, 0), (3, 2), (1, 1), (0, 0)]
        );
    }
}

//! Error-compensating weight quantization (GPTQ, after Optimal Brain Quantization).
//!
//! Rounding each weight to its nearest level ignores what the layer computes. For a layer
//! `y = W x`, the output error of a quantized `Ŵ` over the calibration inputs is
//! `tr((W−Ŵ) H (W−Ŵ)ᵀ)` with `H = 2/N Σ x xᵀ`. GPTQ quantizes the columns of `W` one at a time
//! and moves each column's rounding error onto the columns not yet quantized, in the proportions
//! that cancel it best given `H`: row `i` of the upper Cholesky factor `U` of `H⁻¹` says how.
//! Each output channel (row) keeps one symmetric scale, so the result is still the standard
//! per-channel int8 grid behind a `DequantizeLinear`.
//!
//! Convolutions are layers too: their `x` are the unfolded (im2col) input patches, one `H` per
//! group, so a depthwise convolution has one small `H` per channel. [`Hessian`] accumulates the
//! statistics, [`quantize`] is the algorithm; both are pure.

/// `Σ x xᵀ` and `Σ x` over the rows seen (f64: sums over many rows).
#[derive(Debug, Clone, PartialEq)]
pub struct Hessian {
    pub cols: usize,
    pub rows: usize,
    /// Upper triangle of `Σ x xᵀ`, row-major `cols × cols` (the lower half is left at zero).
    sum: Vec<f64>,
    total: Vec<f64>,
}

impl Hessian {
    pub fn new(cols: usize) -> Self {
        Self {
            cols,
            rows: 0,
            sum: vec![0.0; cols * cols],
            total: vec![0.0; cols],
        }
    }

    /// Adds one input row.
    pub fn add(&mut self, x: &[f32]) {
        debug_assert_eq!(x.len(), self.cols);
        let n = self.cols;
        for i in 0..n {
            let xi = x[i] as f64;
            self.total[i] += xi;
            if xi == 0.0 {
                continue;
            }
            let row = &mut self.sum[i * n + i..(i + 1) * n];
            for (h, &xj) in row.iter_mut().zip(&x[i..]) {
                *h += xi * xj as f64;
            }
        }
        self.rows += 1;
    }

    /// `H = 2/N Σ x xᵀ`, full and symmetric.
    pub fn matrix(&self) -> Vec<f64> {
        let n = self.cols;
        let f = 2.0 / self.rows.max(1) as f64;
        let mut h = vec![0.0; n * n];
        for i in 0..n {
            for j in i..n {
                let v = self.sum[i * n + j] * f;
                h[i * n + j] = v;
                h[j * n + i] = v;
            }
        }
        h
    }

    /// The mean input row.
    pub fn mean(&self) -> Vec<f64> {
        let n = self.rows.max(1) as f64;
        self.total.iter().map(|t| t / n).collect()
    }
}

/// Damping added to `H`'s diagonal, as a fraction of its mean: keeps the factorization stable
/// when the calibration inputs do not span every direction.
pub const DAMPING: f64 = 0.01;

/// Clipping ratios tried for each channel's scale (the one with the least squared rounding
/// error wins): at few bits, giving up the largest weights' exactness buys finer levels.
const CLIPS: [f32; 8] = [1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65];

/// The result for one weight matrix: integer codes (row-major, as the input) and one scale per
/// row; `code × scale` is the quantized weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantized {
    pub codes: Vec<i8>,
    pub scales: Vec<f32>,
}

impl Quantized {
    pub fn dequantized(&self, cols: usize) -> Vec<f32> {
        self.codes
            .iter()
            .enumerate()
            .map(|(i, &q)| q as f32 * self.scales[i / cols])
            .collect()
    }
}

/// Plain rounding to `qmax` levels each side of zero, per row, with the best clipping ratio.
pub fn round_to_nearest(w: &[f32], cols: usize, qmax: f32) -> Quantized {
    let scales: Vec<f32> = w.chunks(cols).map(|row| best_scale(row, qmax)).collect();
    let codes = w
        .iter()
        .enumerate()
        .map(|(i, &v)| code(v, scales[i / cols], qmax))
        .collect();
    Quantized { codes, scales }
}

/// GPTQ: `w` is `rows × cols` row-major (one output channel per row), `h` the `cols × cols`
/// Hessian of the layer's inputs. Returns None when `h` cannot be factorized even damped (the
/// caller falls back to rounding).
pub fn quantize(w: &[f32], cols: usize, h: &[f64], qmax: f32) -> Option<Quantized> {
    assert_eq!(h.len(), cols * cols, "H is cols x cols");
    assert_eq!(w.len() % cols, 0, "w is rows x cols");
    let rows = w.len() / cols;
    let mut h = h.to_vec();
    let mut work: Vec<f32> = w.to_vec();
    // Inputs that are always zero carry no information: their weights do not matter.
    for i in 0..cols {
        if h[i * cols + i] <= 0.0 {
            h[i * cols + i] = 1.0;
            for r in 0..rows {
                work[r * cols + i] = 0.0;
            }
        }
    }
    let mean_diag = (0..cols).map(|i| h[i * cols + i]).sum::<f64>() / cols as f64;
    for i in 0..cols {
        h[i * cols + i] += DAMPING * mean_diag;
    }
    let u = inverse_upper_cholesky(&h, cols)?;
    // No clipping here: an error clipped away would be pushed onto the columns not yet
    // quantized, where it pushes more weights past the grid.
    let scales: Vec<f32> = work
        .chunks(cols)
        .map(|row| {
            let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            if max > 0.0 { compact(max / qmax) } else { 1.0 }
        })
        .collect();
    let mut codes = vec![0i8; w.len()];
    for i in 0..cols {
        let d = u[i * cols + i] as f32;
        let tail = &u[i * cols + i + 1..(i + 1) * cols];
        for r in 0..rows {
            let row = &mut work[r * cols..(r + 1) * cols];
            let q = code(row[i], scales[r], qmax);
            codes[r * cols + i] = q;
            let err = (row[i] - q as f32 * scales[r]) / d;
            for (x, &uij) in row[i + 1..].iter_mut().zip(tail) {
                *x -= err * uij as f32;
            }
        }
    }
    Some(Quantized { codes, scales })
}

/// `Σ_j (W − Ŵ)_rj μ_j` per row: what the quantized layer's output is off by on average; adding
/// it to the bias corrects the shift.
pub fn bias_shift(w: &[f32], q: &[f32], cols: usize, mean: &[f64]) -> Vec<f32> {
    w.chunks(cols)
        .zip(q.chunks(cols))
        .map(|(a, b)| {
            a.iter()
                .zip(b)
                .zip(mean)
                .map(|((x, y), m)| (x - y) as f64 * m)
                .sum::<f64>() as f32
        })
        .collect()
}

/// `tr((W−Ŵ) H (W−Ŵ)ᵀ)`: the layer's output error over the calibration inputs (up to a factor).
pub fn output_error(w: &[f32], q: &[f32], cols: usize, h: &[f64]) -> f64 {
    w.chunks(cols)
        .zip(q.chunks(cols))
        .map(|(a, b)| {
            let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| (x - y) as f64).collect();
            (0..cols)
                .map(|i| d[i] * (0..cols).map(|j| h[i * cols + j] * d[j]).sum::<f64>())
                .sum::<f64>()
        })
        .sum()
}

/// `x` rounded to bfloat16 precision (8 significant bits), still a float32: the low 16 bits
/// are zero, so scales and biases cost about half their bytes once compressed.
pub fn compact(x: f32) -> f32 {
    if !x.is_finite() {
        return x;
    }
    let bits = x.to_bits();
    let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) & 0xffff_0000;
    let y = f32::from_bits(rounded);
    if y.is_finite() { y } else { x }
}

fn code(v: f32, scale: f32, qmax: f32) -> i8 {
    (v / scale).round().clamp(-qmax, qmax) as i8
}

fn best_scale(row: &[f32], qmax: f32) -> f32 {
    let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
    if max == 0.0 {
        return 1.0;
    }
    CLIPS
        .iter()
        .map(|c| compact(max * c / qmax))
        .filter(|&s| s > 0.0)
        .map(|s| {
            let err: f32 = row
                .iter()
                .map(|&v| (v - code(v, s, qmax) as f32 * s).powi(2))
                .sum();
            (s, err)
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(max / qmax, |(s, _)| s)
}

/// Lower Cholesky factor `L` of a symmetric positive definite `a` (`a = L Lᵀ`), or None.
fn cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let dot: f64 = (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum();
            let v = a[i * n + j] - dot;
            if i == j {
                if v <= 0.0 || !v.is_finite() {
                    return None;
                }
                l[i * n + i] = v.sqrt();
            } else {
                l[i * n + j] = v / l[j * n + j];
            }
        }
    }
    Some(l)
}

/// The upper Cholesky factor `U` of `H⁻¹` (`H⁻¹ = Uᵀ U`).
fn inverse_upper_cholesky(h: &[f64], n: usize) -> Option<Vec<f64>> {
    let l = cholesky(h, n)?;
    // L⁻¹ by forward substitution, column by column.
    let mut inv_l = vec![0.0; n * n];
    for c in 0..n {
        for i in c..n {
            let mut v = if i == c { 1.0 } else { 0.0 };
            for k in c..i {
                v -= l[i * n + k] * inv_l[k * n + c];
            }
            inv_l[i * n + c] = v / l[i * n + i];
        }
    }
    // H⁻¹ = L⁻ᵀ L⁻¹.
    let mut inv = vec![0.0; n * n];
    for i in 0..n {
        for j in i..n {
            let v: f64 = (j..n).map(|k| inv_l[k * n + i] * inv_l[k * n + j]).sum();
            inv[i * n + j] = v;
            inv[j * n + i] = v;
        }
    }
    let lower = cholesky(&inv, n)?;
    let mut u = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            u[j * n + i] = lower[i * n + j];
        }
    }
    Some(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random stream in [-1, 1).
    fn noise(seed: u64) -> impl FnMut() -> f32 {
        let mut s = seed;
        move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
    }

    /// Correlated inputs (as neighbouring pixels are) and bell-shaped weights.
    fn layer(rows: usize, cols: usize) -> (Vec<f32>, Hessian) {
        let mut r = noise(7);
        let w: Vec<f32> = (0..rows * cols).map(|_| r() * r() * 0.5).collect();
        let mut h = Hessian::new(cols);
        for _ in 0..400 {
            let base = r();
            let x: Vec<f32> = (0..cols)
                .map(|j| base + 0.3 * r() + 0.05 * j as f32)
                .collect();
            h.add(&x);
        }
        (w, h)
    }

    #[test]
    fn its_output_error_is_below_plain_rounding_at_every_width() {
        let (rows, cols) = (16, 27);
        let (w, stats) = layer(rows, cols);
        let h = stats.matrix();
        for bits in [2u32, 3, 4, 6, 8] {
            let qmax = ((1 << (bits - 1)) - 1) as f32;
            let rtn = round_to_nearest(&w, cols, qmax).dequantized(cols);
            let gptq = quantize(&w, cols, &h, qmax).unwrap();
            assert!(gptq.codes.iter().all(|&c| (c as f32).abs() <= qmax));
            let g = gptq.dequantized(cols);
            let (e_rtn, e_gptq) = (
                output_error(&w, &rtn, cols, &h),
                output_error(&w, &g, cols, &h),
            );
            assert!(
                e_gptq < 0.8 * e_rtn,
                "{bits} bits: GPTQ {e_gptq} vs rounding {e_rtn}"
            );
        }
    }

    #[test]
    fn compact_floats_keep_eight_significant_bits() {
        assert_eq!(compact(1.0), 1.0);
        assert_eq!(compact(1.0 + 1.0 / 512.0).to_bits() & 0xffff, 0);
        let x = 0.123_456_78f32;
        assert!((compact(x) - x).abs() <= x * (1.0 / 256.0));
        assert_eq!(compact(-2.5), -2.5);
        assert!(compact(f32::NAN).is_nan());
        assert_eq!(compact(f32::MAX), f32::MAX, "no rounding to infinity");
    }

    #[test]
    fn the_inverse_factor_is_right() {
        // H = [[4, 2], [2, 3]]: H⁻¹ = [[3, -2], [-2, 4]] / 8.
        let u = inverse_upper_cholesky(&[4.0, 2.0, 2.0, 3.0], 2).unwrap();
        assert_eq!(u[2], 0.0, "upper triangular");
        let inv = [
            u[0] * u[0],
            u[0] * u[1],
            u[1] * u[0],
            u[1] * u[1] + u[3] * u[3],
        ];
        for (a, b) in inv
            .iter()
            .zip([3.0 / 8.0, -2.0 / 8.0, -2.0 / 8.0, 4.0 / 8.0])
        {
            assert!((a - b).abs() < 1e-12, "{inv:?}");
        }
        assert!(
            cholesky(&[1.0, 2.0, 2.0, 1.0], 2).is_none(),
            "not positive definite"
        );
    }

    #[test]
    fn statistics_sum_rows_and_bias_shift_restores_the_mean_output() {
        let mut h = Hessian::new(2);
        h.add(&[1.0, 2.0]);
        h.add(&[3.0, 0.0]);
        // 2/N Σ x xᵀ = [[1+9, 2], [2, 4]]
        assert_eq!(h.matrix(), vec![10.0, 2.0, 2.0, 4.0]);
        assert_eq!(h.mean(), vec![2.0, 1.0]);
        let shift = bias_shift(&[1.0, 1.0], &[0.5, 1.5], 2, &h.mean());
        assert_eq!(shift, vec![0.5]);
        // A dead input (always zero) does not stop the factorization.
        let mut dead = Hessian::new(3);
        for i in 0..10 {
            dead.add(&[i as f32, 0.0, 1.0 - i as f32 * 0.1]);
        }
        let q = quantize(&[0.3, 0.9, -0.2, 0.1, -0.7, 0.4], 3, &dead.matrix(), 7.0).unwrap();
        assert_eq!(q.codes[1], 0, "the dead input's weight is dropped");
    }
}

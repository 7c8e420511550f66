//! Coordinate-wise trimmed mean (Yin et al., ICML 2018; byzfl `TrMean(f)`).
//!
//! For each coordinate, rank the `n` values by `(value, row)`, drop the `f` lowest and `f`
//! highest, and average the `n - 2f` kept values. Needs `n >= 2f + 1`. The kept values are
//! summed in ascending order in float64 (float32 input) or compensated float64 (float64
//! input), so the result is bitwise permutation-invariant and never computes
//! `total - smallest - largest` (Byzantine 1e38 values would overflow or cancel).
//!
//! NaN policy: `Robust` ranks NaN above `+inf`, so at most `f` bad values per side are trimmed;
//! more than that reach the sum and give ±inf or NaN. `Propagate`: a coordinate with a NaN is
//! NaN. The kernel reports the rows of the lowest and highest kept value per coordinate (the
//! kept set is every row whose key lies between those two keys), which the backward needs.

use crate::error::AggError;
use crate::input::{NonFinite, Rows};
use crate::network::{self, LANES};
use crate::order::{select, Accumulator, Float};
use crate::rules::{
    for_each_tile, load_block, load_keys, ColumnsOut, Keying, ValuesOnly, WithRows,
};
use crate::simd;

pub const NAME: &str = "trimmed_mean";

/// `n` needed for `f`: `2f + 1`.
pub fn min_inputs(f: usize) -> usize {
    2 * f + 1
}

/// The coordinate-wise `f`-trimmed mean of `x` into `out`.
pub fn trimmed_mean<T: Float>(
    x: &Rows<'_, T>,
    f: usize,
    policy: NonFinite,
    out: ColumnsOut<'_, T>,
) -> Result<(), AggError> {
    let n = x.n();
    if n < min_inputs(f) {
        return Err(AggError::TooFewInputs {
            rule: "trimmed mean",
            requirement: "n >= 2f + 1",
            n,
            f,
        });
    }
    x.check_policy(NAME, policy)?;
    let propagate = policy == NonFinite::Propagate;
    if out.rows.is_some() {
        run::<T, WithRows>(x, f, propagate, out);
    } else {
        run::<T, ValuesOnly>(x, f, propagate, out);
    }
    Ok(())
}

fn run<T: Float, Kg: Keying<T>>(
    x: &Rows<'_, T>,
    f: usize,
    propagate: bool,
    out: ColumnsOut<'_, T>,
) {
    let n = x.n();
    let kept = n - 2 * f;
    if n <= network::MAX_N {
        let net = network::network(n, &(f..n - f).collect::<Vec<_>>());
        let level = simd::level();
        for_each_tile(x, out, Vec::new, |keys: &mut Vec<Kg::K>, t| {
            let w = t.values.len();
            for b0 in (0..w).step_by(LANES) {
                let bw = (w - b0).min(LANES);
                let first_nan = load_block::<T, Kg>(x, t.j0 + b0, bw, keys, propagate);
                network::apply_dispatch(level, keys, &net);
                for l in 0..bw {
                    let c = b0 + l;
                    if first_nan[l] != u32::MAX {
                        t.values[c] = T::NAN;
                        t.lo[c] = first_nan[l];
                        t.hi[c] = first_nan[l];
                        continue;
                    }
                    // Ranks f .. n-f in ascending order: the same summation order as below.
                    let mut acc = T::Acc::default();
                    for r in f..n - f {
                        acc.add(Kg::value(keys[r * LANES + l]).to_f64());
                    }
                    t.values[c] = T::from_f64(acc.value() / kept as f64);
                    if t.want_rows {
                        t.lo[c] = Kg::row(keys[f * LANES + l]);
                        t.hi[c] = Kg::row(keys[(n - f - 1) * LANES + l]);
                    }
                }
            }
        });
        return;
    }
    for_each_tile(
        x,
        out,
        || (Vec::new(), Vec::new()),
        |(keys, first_nan): &mut (Vec<Kg::K>, Vec<u32>), t| {
            let w = t.values.len();
            load_keys::<T, Kg>(x, t.j0, w, keys, first_nan, propagate);
            for c in 0..w {
                if first_nan[c] != u32::MAX {
                    t.values[c] = T::NAN;
                    t.lo[c] = first_nan[c];
                    t.hi[c] = first_nan[c];
                    continue;
                }
                let col = &mut keys[c * n..(c + 1) * n];
                // Isolate ranks f .. n-f, then order just those for a fixed summation order.
                if f > 0 {
                    select(col, f);
                }
                let rest = &mut col[f..];
                if kept < rest.len() {
                    select(rest, kept);
                }
                let mid = &mut rest[..kept];
                mid.sort_unstable();
                let mut acc = T::Acc::default();
                for &k in mid.iter() {
                    acc.add(Kg::value(k).to_f64());
                }
                t.values[c] = T::from_f64(acc.value() / kept as f64);
                if t.want_rows {
                    t.lo[c] = Kg::row(mid[0]);
                    t.hi[c] = Kg::row(mid[kept - 1]);
                }
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::{rows, Rng};

    fn tm<T: Float>(data: &[Vec<T>], f: usize, policy: NonFinite) -> Vec<T> {
        let x = rows(data);
        let mut out = vec![T::ZERO; x.d()];
        trimmed_mean(&x, f, policy, ColumnsOut::new(&mut out)).unwrap();
        out
    }

    #[test]
    fn spec_oracles() {
        let x = vec![
            vec![1.0f64, 10.0],
            vec![2.0, -3.0],
            vec![4.0, 7.0],
            vec![100.0, 0.5],
        ];
        assert_eq!(tm(&x, 1, NonFinite::Robust), vec![3.0, 3.75]);
        let y: Vec<Vec<f64>> = [
            [6., -8.],
            [-6., -5.],
            [-6., 6.],
            [7., 2.],
            [-9., -8.],
            [-3., -1.],
            [40., -30.],
        ]
        .iter()
        .map(|r| r.to_vec())
        .collect();
        let b1 = tm(&y, 1, NonFinite::Robust);
        assert!((b1[0] + 0.4).abs() < 1e-12 && (b1[1] + 4.0).abs() < 1e-12);
        let b2 = tm(&y, 2, NonFinite::Robust);
        assert!((b2[0] + 1.0).abs() < 1e-12 && (b2[1] + 14.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn too_few_inputs() {
        let x = vec![vec![1.0f32], vec![2.0]];
        let x = rows(&x);
        let mut out = vec![0.0f32];
        let e = trimmed_mean(&x, 1, NonFinite::Robust, ColumnsOut::new(&mut out)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "trimmed mean needs n >= 2f + 1, got n=2, f=1"
        );
    }

    #[test]
    fn huge_values_are_trimmed_without_overflow() {
        let x = vec![vec![3e38f32], vec![1.0], vec![2.0], vec![3.0], vec![-3e38]];
        assert_eq!(tm(&x, 1, NonFinite::Robust), vec![2.0]);
        let x = vec![
            vec![f32::NAN],
            vec![1.0],
            vec![2.0],
            vec![f32::INFINITY],
            vec![0.0],
        ];
        assert_eq!(tm(&x, 2, NonFinite::Robust), vec![2.0]);
        assert!(tm(&x, 2, NonFinite::Propagate)[0].is_nan());
    }

    #[test]
    fn matches_sorting_and_reports_bounds() {
        let mut rng = Rng(3);
        for &(n, f) in &[(1usize, 0usize), (5, 0), (5, 2), (12, 3), (40, 4)] {
            let data = rng.matrix(n, 300);
            let x = rows(&data);
            let mut out = vec![0.0f32; 300];
            let (mut lo, mut hi) = (vec![0u32; 300], vec![0u32; 300]);
            trimmed_mean(
                &x,
                f,
                NonFinite::Robust,
                ColumnsOut::with_rows(&mut out, &mut lo, &mut hi),
            )
            .unwrap();
            for j in 0..300 {
                let mut col: Vec<(f32, usize)> = (0..n).map(|i| (data[i][j], i)).collect();
                col.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                let s: f64 = col[f..n - f].iter().map(|v| v.0 as f64).sum();
                assert_eq!(out[j], (s / (n - 2 * f) as f64) as f32);
                assert_eq!(
                    (lo[j] as usize, hi[j] as usize),
                    (col[f].1, col[n - f - 1].1)
                );
            }
        }
    }
}

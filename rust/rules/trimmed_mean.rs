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
//!
//! `n <= 64`: compiled full-sort networks on SIMD lanes (`columns.rs`); larger `n`: the
//! interpreted network (`network.rs`) up to `network::MAX_N`, introselect beyond. The kept
//! values are summed from the sorted ranks, not by the spec's tie-corrected masked sum over
//! rows: a masked sum adds in row order, which a permutation of the inputs changes, and the
//! result would then differ in the last bit (DESIGN.md: permutation invariance is exact).

use crate::error::AggError;
use crate::input::{NonFinite, Rows};
use crate::network::LANES;
use crate::order::{Accumulator, Float};
use crate::rules::columns::{self, Select};
use crate::rules::{ranked_columns, ColumnsOut, Keying, Ranked, ValuesOnly, WithRows};

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
    let (lo, hi) = (f, n - f - 1);
    let Some(out) = columns::select_columns(x, out, propagate, Select::Trimmed { lo, hi }) else {
        return Ok(());
    };
    // n beyond the compiled networks: the interpreted network, or selection.
    if out.rows.is_some() {
        ranked_columns::<T, WithRows>(
            x,
            out,
            propagate,
            lo,
            hi,
            |k| (kept_mean::<T, WithRows>(k, lo, hi), lo, hi),
            |_, _| false,
        );
    } else {
        ranked_columns::<T, ValuesOnly>(
            x,
            out,
            propagate,
            lo,
            hi,
            |k| (kept_mean::<T, ValuesOnly>(k, lo, hi), lo, hi),
            |kb, out| kept_mean_block::<T>(kb, lo, hi, out),
        );
    }
    Ok(())
}

/// The mean of ranks `lo..=hi`, summed in ascending order (bitwise permutation-invariant).
#[inline(always)]
fn kept_mean<T: Float, Kg: Keying<T>>(k: &Ranked<'_, Kg::K>, lo: usize, hi: usize) -> T {
    let mut acc = T::Acc::default();
    for r in lo..=hi {
        acc.add(Kg::value(k.get(r)).to_f64());
    }
    T::from_f64(acc.value() / (hi - lo + 1) as f64)
}

/// [`kept_mean`] for a whole network block of value-only keys (`kb[rank * LANES + lane]`):
/// every lane sums its ranks in the same ascending order, so the bits are `kept_mean`'s, but
/// the lanes' sums are independent chains the CPU runs side by side (one chain of `n - 2f`
/// dependent additions per coordinate was the interpreted trimmed mean's bottleneck).
#[inline(always)]
fn kept_mean_block<T: Float>(kb: &[T::VKey], lo: usize, hi: usize, out: &mut [T; LANES]) -> bool {
    let mut acc = [T::Acc::default(); LANES];
    for row in kb[lo * LANES..(hi + 1) * LANES].chunks_exact(LANES) {
        for (a, &k) in acc.iter_mut().zip(row) {
            a.add(T::vkey_value(k).to_f64());
        }
    }
    let count = (hi - lo + 1) as f64;
    for (o, a) in out.iter_mut().zip(&acc) {
        *o = T::from_f64(a.value() / count);
    }
    true
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
        // 1100 > network::MAX_N: the selection path.
        for &(n, f) in &[
            (1usize, 0usize),
            (5, 0),
            (5, 2),
            (12, 3),
            (40, 4),
            (1100, 100),
            (1101, 550),
        ] {
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

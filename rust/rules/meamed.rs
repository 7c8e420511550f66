//! Meamed, the mean around the median (Xie, Koyejo, Gupta 2018; byzfl `Meamed(f)`), and the
//! same kernel as Bulyan's second stage (El Mhamdi et al. 2018): per coordinate, the mean of the
//! `keep` values closest to the coordinate-wise median (even `n`: the mean of the two middle
//! values, as byzfl's `quantile(0.5)` and the paper).
//!
//! Tie rule (aggkit's; byzfl's `argpartition` leaves ties unspecified): the kept values are
//! grown outward from the median over the column ranked by `(value, row)`; when the next value
//! below and the next value above are equally far from the median, the one from the lower row
//! is taken. The kept values are therefore a contiguous range of ranks, reported by the rows of
//! its two ends (the backward rebuilds the kept set from them, exactly as for the trimmed mean).
//! Distances are taken in float64; a NaN distance (a NaN value, or ±inf against an infinite
//! median) counts as +inf. NaN ranks above +inf under `Robust`, so up to `n - keep` bad values
//! per coordinate are left out; `Propagate` makes a coordinate holding a NaN NaN.

use crate::columns::{ranked_columns, ColumnsOut, Keying, Ranked, WithRows};
use crate::error::{AggError, MAJORITY};
use crate::input::{NonFinite, Rows};
use crate::order::{average, Accumulator, Float};

pub const NAME: &str = "meamed";

/// Meamed with `f`: keeps `n - f` values per coordinate; needs `n >= 2f + 1` (byzfl: `2f < n`).
pub fn meamed<T: Float>(
    x: &Rows<'_, T>,
    f: usize,
    policy: NonFinite,
    out: ColumnsOut<'_, T>,
) -> Result<(), AggError> {
    let n = x.n();
    MAJORITY.check(NAME, n, f)?;
    closest_to_median(x, n - f, policy, out, NAME)
}

/// Per coordinate, the mean of the `keep` values closest to the median (`1 <= keep <= n`).
pub fn closest_to_median<T: Float>(
    x: &Rows<'_, T>,
    keep: usize,
    policy: NonFinite,
    out: ColumnsOut<'_, T>,
    rule: &'static str,
) -> Result<(), AggError> {
    let n = x.n();
    if keep < 1 || keep > n {
        return Err(AggError::InvalidParameter {
            rule,
            message: format!("the number of values kept must be in 1..=n, got {keep} for n={n}"),
        });
    }
    x.check_policy(rule, policy)?;
    let propagate = policy == NonFinite::Propagate;
    ranked_columns::<T, WithRows>(
        x,
        out,
        propagate,
        0,
        n - 1,
        |k| window::<T>(k, n, keep),
        |_, _| false,
    );
    Ok(())
}

/// The kept ranks `lo..=hi` of one column in rank order and their mean.
#[inline(always)]
fn window<T: Float>(k: &Ranked<'_, T::Key>, n: usize, keep: usize) -> (T, usize, usize) {
    let v = |r: usize| <WithRows as Keying<T>>::value(k.get(r));
    let row = |r: usize| <WithRows as Keying<T>>::row(k.get(r));
    let p = n / 2;
    let med = if n % 2 == 1 {
        v(p).to_f64()
    } else {
        T::midpoint(v(p - 1), v(p)).to_f64()
    };
    let dist = |r: usize| {
        let d = (v(r).to_f64() - med).abs();
        if d.is_nan() {
            f64::INFINITY
        } else {
            d
        }
    };
    // Kept: ranks lo..hi (exclusive hi); candidates lo - 1 below and hi above.
    let (mut lo, mut hi) = (p, p);
    for _ in 0..keep {
        let take_low = if lo == 0 {
            false
        } else if hi == n {
            true
        } else {
            let (a, b) = (dist(lo - 1), dist(hi));
            a < b || (a == b && row(lo - 1) < row(hi))
        };
        if take_low {
            lo -= 1;
        } else {
            hi += 1;
        }
    }
    let mut acc = T::Acc::zero();
    for r in lo..hi {
        acc.add(v(r).to_f64());
    }
    (
        average(
            acc.value() / keep as f64,
            keep as f64,
            v(lo),
            v(hi - 1),
            || (lo..hi).map(|r| (1.0, v(r).to_f64())),
        ),
        lo,
        hi - 1,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::rows;

    fn run(data: &[Vec<f64>], f: usize) -> (Vec<f64>, Vec<u32>, Vec<u32>) {
        let x = rows(data);
        let d = x.d();
        let (mut out, mut lo, mut hi) = (vec![0.0; d], vec![0u32; d], vec![0u32; d]);
        meamed(
            &x,
            f,
            NonFinite::Robust,
            ColumnsOut::with_rows(&mut out, &mut lo, &mut hi),
        )
        .unwrap();
        (out, lo, hi)
    }

    #[test]
    fn spec_oracle() {
        // Column [1, 2, 3, 10], f = 1: median 2.5, keep 3 -> {1, 2, 3} -> 2.0.
        let (out, lo, hi) = run(&[vec![1.0], vec![2.0], vec![3.0], vec![10.0]], 1);
        assert_eq!(out, vec![2.0]);
        assert_eq!((lo[0], hi[0]), (0, 2));
    }

    #[test]
    fn equidistant_tie_goes_to_the_lower_row() {
        // median 2; 1 and 3 are both 1 away; keep 2 -> {2, value of lower row among 1 / 3}.
        let (out, _, _) = run(&[vec![3.0], vec![1.0], vec![2.0]], 1);
        assert_eq!(out, vec![2.5]);
        let (out, _, _) = run(&[vec![1.0], vec![3.0], vec![2.0]], 1);
        assert_eq!(out, vec![1.5]);
    }

    #[test]
    fn nan_is_left_out_under_robust() {
        let (out, _, _) = run(
            &[vec![f64::NAN], vec![1.0], vec![2.0], vec![3.0], vec![4.0]],
            2,
        );
        // ranked 1 2 3 4 NaN: median 3, keep 3 -> {2, 3, 4}.
        assert_eq!(out, vec![3.0]);
    }

    #[test]
    fn too_few_inputs() {
        let data = [vec![1.0f64], vec![2.0]];
        let x = rows(&data);
        let mut out = vec![0.0];
        let e = meamed(&x, 1, NonFinite::Robust, ColumnsOut::new(&mut out)).unwrap_err();
        assert_eq!(e.to_string(), "meamed needs n >= 2f + 1, got n=2, f=1");
    }
}

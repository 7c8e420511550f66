//! Weighted order statistics: the weighted coordinate-wise median and trimmed mean, for inputs
//! that carry weights (a client's example count).
//!
//! Each input `i` stands for a mass `w_i` of identical values. Per coordinate the values are
//! ranked by `(value, row)`; value of rank `r` occupies the interval `[C_{r-1}, C_r)` of the
//! cumulative mass (`W = Σ w`).
//!
//! * **Weighted median**: the value at mass `W/2`: the first rank with `C_r >= W/2`; when
//!   `C_r == W/2` exactly, the mass splits between rank `r` and the next rank of positive
//!   weight, and `even` chooses as for the median (`Mean` averages them). With unit weights this
//!   is exactly the median with the same `even`.
//! * **Weighted trimmed mean** with `f`: trims the mass `t = W·f/n` from each end (a fraction
//!   `f/n` per side, as the unweighted rule trims `f` of `n`) and averages what is left, a
//!   boundary value counting with the part of its mass that is kept. With unit weights this is
//!   exactly the trimmed mean.
//!
//! Masses are accumulated in float64 in rank order, so integer weights are exact. NaN ranks
//! above `+inf` under `Robust` (trimmed from the top); `Propagate` makes a coordinate holding a
//! NaN NaN.

use std::borrow::Cow;

use crate::columns::{ranked_columns, ColumnsOut, Keying, Ranked, WithRows};
use crate::error::{AggError, MAJORITY};
use crate::half::HalfRows;
use crate::input::{NonFinite, Rows};
use crate::order::{average, Accumulator, Float};
use crate::rules::median::Even;

pub const MEDIAN: &str = "median";
pub const TRIMMED_MEAN: &str = "trimmed mean";

fn check_weights<'w>(
    rule: &'static str,
    w: &'w [f64],
    n: usize,
) -> Result<Cow<'w, [f64]>, AggError> {
    crate::rules::mean::check_weights(rule, w, n)?;
    let w = crate::rules::mean::normalise_weights(w);
    if w.iter().sum::<f64>() <= 0.0 {
        return Err(AggError::InvalidParameter {
            rule,
            message: "the weights sum to 0".to_string(),
        });
    }
    Ok(w)
}

/// The weighted coordinate-wise median of `x` into `out` (rows: the one or two ranks used).
pub fn weighted_median<T: Float>(
    x: &Rows<'_, T>,
    w: &[f64],
    even: Even,
    policy: NonFinite,
    out: ColumnsOut<'_, T>,
) -> Result<(), AggError> {
    let n = x.n();
    let w = &check_weights(MEDIAN, w, n)?[..];
    x.check_policy(MEDIAN, policy)?;
    let propagate = policy == NonFinite::Propagate;
    ranked_columns::<T, WithRows>(
        x,
        out,
        propagate,
        0,
        n - 1,
        |k| median_column::<T>(k, n, w, even),
        |_, _| false,
    );
    Ok(())
}

/// [`weighted_median`] of half-precision rows into `out` (their format), by blocks.
pub fn weighted_median_half(
    x: &HalfRows<'_>,
    w: &[f64],
    even: Even,
    policy: NonFinite,
    out: &mut [u16],
) -> Result<(), AggError> {
    check_weights(MEDIAN, w, x.n())?;
    x.check_policy(MEDIAN, policy)?;
    let policy = crate::half::per_block(policy);
    crate::half::by_blocks(MEDIAN, x, out, crate::half::WIDTH_RANKS, |r, o| {
        weighted_median(r, w, even, policy, ColumnsOut::new(o))
    })
}

#[inline(always)]
fn median_column<T: Float>(
    k: &Ranked<'_, T::Key>,
    n: usize,
    w: &[f64],
    even: Even,
) -> (T, usize, usize) {
    let row = |r: usize| <WithRows as Keying<T>>::row(k.get(r)) as usize;
    let v = |r: usize| <WithRows as Keying<T>>::value(k.get(r));
    let total: f64 = (0..n).map(|r| w[row(r)]).sum();
    let mut c = 0.0;
    for r in 0..n {
        c += w[row(r)];
        if 2.0 * c >= total && w[row(r)] > 0.0 {
            if 2.0 * c > total || even == Even::Lower {
                return (v(r), r, r);
            }
            // Exactly half the mass at or below rank r: the next rank of positive weight.
            let s = (r + 1..n).find(|&s| w[row(s)] > 0.0).unwrap_or(r);
            return match even {
                Even::Upper => (v(s), s, s),
                _ => (T::midpoint(v(r), v(s)), r, s),
            };
        }
    }
    // Unreachable with a positive total; keep the last rank for safety.
    (v(n - 1), n - 1, n - 1)
}

/// The weighted coordinate-wise trimmed mean of `x` into `out`; needs `n >= 2f + 1`.
pub fn weighted_trimmed_mean<T: Float>(
    x: &Rows<'_, T>,
    w: &[f64],
    f: usize,
    policy: NonFinite,
    out: ColumnsOut<'_, T>,
) -> Result<(), AggError> {
    let n = x.n();
    MAJORITY.check(TRIMMED_MEAN, n, f)?;
    let w = &check_weights(TRIMMED_MEAN, w, n)?[..];
    x.check_policy(TRIMMED_MEAN, policy)?;
    let propagate = policy == NonFinite::Propagate;
    ranked_columns::<T, WithRows>(
        x,
        out,
        propagate,
        0,
        n - 1,
        |k| trimmed_column::<T>(k, n, w, f),
        |_, _| false,
    );
    Ok(())
}

/// [`weighted_trimmed_mean`] of half-precision rows into `out` (their format), by blocks.
pub fn weighted_trimmed_mean_half(
    x: &HalfRows<'_>,
    w: &[f64],
    f: usize,
    policy: NonFinite,
    out: &mut [u16],
) -> Result<(), AggError> {
    MAJORITY.check(TRIMMED_MEAN, x.n(), f)?;
    check_weights(TRIMMED_MEAN, w, x.n())?;
    x.check_policy(TRIMMED_MEAN, policy)?;
    let policy = crate::half::per_block(policy);
    crate::half::by_blocks(TRIMMED_MEAN, x, out, crate::half::WIDTH_RANKS, |r, o| {
        weighted_trimmed_mean(r, w, f, policy, ColumnsOut::new(o))
    })
}

#[inline(always)]
fn trimmed_column<T: Float>(
    k: &Ranked<'_, T::Key>,
    n: usize,
    w: &[f64],
    f: usize,
) -> (T, usize, usize) {
    let row = |r: usize| <WithRows as Keying<T>>::row(k.get(r)) as usize;
    let v = |r: usize| <WithRows as Keying<T>>::value(k.get(r));
    let total: f64 = (0..n).map(|r| w[row(r)]).sum();
    let t = total * f as f64 / n as f64;
    let (lo_mass, hi_mass) = (t, total - t);
    // Each rank's part of the kept mass `[t, total - t]`, in rank order.
    let parts = || {
        let mut c0 = 0.0;
        (0..n).map(move |r| {
            let c1 = c0 + w[row(r)];
            let part = c1.min(hi_mass) - c0.max(lo_mass);
            c0 = c1;
            (r, part)
        })
    };
    let (mut sum, mut kept) = (T::Acc::zero(), 0.0f64);
    let (mut first, mut last) = (usize::MAX, 0);
    for (r, part) in parts() {
        if part > 0.0 {
            sum.add(part * v(r).to_f64());
            kept += part;
            first = first.min(r);
            last = r;
        }
    }
    if first == usize::MAX {
        return (T::NAN, 0, 0);
    }
    (
        average(sum.value() / kept, kept, v(first), v(last), || {
            parts()
                .filter(|&(_, part)| part > 0.0)
                .map(|(r, part)| (part, v(r).to_f64()))
        }),
        first,
        last,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::rows;

    fn wmed(data: &[Vec<f64>], w: &[f64], even: Even) -> Vec<f64> {
        let x = rows(data);
        let mut out = vec![0.0; x.d()];
        weighted_median(&x, w, even, NonFinite::Robust, ColumnsOut::new(&mut out)).unwrap();
        out
    }

    fn wtm(data: &[Vec<f64>], w: &[f64], f: usize) -> Vec<f64> {
        let x = rows(data);
        let mut out = vec![0.0; x.d()];
        weighted_trimmed_mean(&x, w, f, NonFinite::Robust, ColumnsOut::new(&mut out)).unwrap();
        out
    }

    #[test]
    fn unit_weights_are_the_unweighted_rules() {
        let x = vec![
            vec![1.0, 10.0],
            vec![2.0, -3.0],
            vec![4.0, 7.0],
            vec![100.0, 0.5],
        ];
        assert_eq!(wmed(&x, &[1.0; 4], Even::Mean), vec![3.0, 3.75]);
        assert_eq!(wmed(&x, &[1.0; 4], Even::Lower), vec![2.0, 0.5]);
        assert_eq!(wtm(&x, &[1.0; 4], 1), vec![3.0, 3.75]);
    }

    #[test]
    fn integer_weights_are_repeated_inputs() {
        // weights (3, 1, 1): the same as the inputs 1, 1, 1, 5, 9.
        let x = vec![vec![1.0], vec![5.0], vec![9.0]];
        assert_eq!(wmed(&x, &[3.0, 1.0, 1.0], Even::Mean), vec![1.0]);
        // trimming f=1 of n=3 -> mass 5/3 per side of 5: kept 1 (1/3 of it)... mean over [5/3, 10/3]
        // masses: value 1 on [0,3) -> kept [5/3, 3) = 4/3; value 5 on [3, 4) -> 1; value 9 on
        // [4, 5) -> 0 (cut at 10/3 < 4).
        let got = wtm(&x, &[3.0, 1.0, 1.0], 1)[0];
        let want = (4.0 / 3.0 * 1.0 + 1.0 / 3.0 * 5.0) / (5.0 / 3.0);
        assert!((got - want).abs() < 1e-12, "{got} {want}");
    }

    #[test]
    fn zero_weight_inputs_do_not_count() {
        let x = vec![vec![1.0], vec![1e9], vec![2.0], vec![3.0]];
        assert_eq!(wmed(&x, &[1.0, 0.0, 1.0, 1.0], Even::Mean), vec![2.0]);
        assert_eq!(wmed(&x, &[1.0, 0.0, 1.0, 0.0], Even::Mean), vec![1.5]);
    }
}

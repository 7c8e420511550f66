//! The (weighted) mean: the non-robust baseline every robust rule is compared with (FedAvg).
//!
//! `y_j = Σ_i w_i x_ij / Σ_i w_i` (`w_i = 1` without weights), accumulated in float64
//! (compensated for float64 input), rows added in index order. NaN policy: `Robust` drops every
//! input that holds a NaN or ±inf (a client whose update is not finite is broken as a whole)
//! and averages the others; it fails only when no finite input is left. `Propagate` is plain
//! IEEE arithmetic (numpy). The first pass detects non-finite rows while it sums, so clean
//! input is read once; a second pass runs only when something had to be dropped.

use rayon::prelude::*;

use crate::error::AggError;
use crate::input::{NonFinite, Rows};
use crate::order::{Accumulator, Float};
use crate::simd::{self, Level};

pub const NAME: &str = "mean";

/// Coordinates per task: long contiguous runs per row (16-32 KB) stream at full bandwidth.
const TILE: usize = 4096;

/// The result of [`mean`] besides the values: which inputs were dropped (robust policy).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MeanInfo {
    pub dropped: Vec<usize>,
}

fn check_weights(w: &[f64], n: usize) -> Result<(), AggError> {
    let bad = |message: String| AggError::InvalidParameter {
        rule: NAME,
        message,
    };
    if w.len() != n {
        return Err(bad(format!(
            "weights must have one entry per input: got {} weights for n={n}",
            w.len()
        )));
    }
    if let Some((i, v)) = w
        .iter()
        .enumerate()
        .find(|(_, v)| !(v.is_finite() && **v >= 0.0))
    {
        return Err(bad(format!(
            "weights must be finite and >= 0, got weights[{i}]={v}"
        )));
    }
    Ok(())
}

/// Add `w * row` into `acc`; returns whether every value of `row` was finite.
#[inline(always)]
fn accumulate_body<T: Float>(acc: &mut [T::Acc], row: &[T], w: f64) -> bool {
    let mut finite = true;
    for (a, &v) in acc.iter_mut().zip(row) {
        a.add(w * v.to_f64());
        finite &= v.is_finite();
    }
    finite
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn accumulate_avx2<T: Float>(acc: &mut [T::Acc], row: &[T], w: f64) -> bool {
    accumulate_body::<T>(acc, row, w)
}

fn accumulate<T: Float>(level: Level, acc: &mut [T::Acc], row: &[T], w: f64) -> bool {
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Level::Avx2` is only in force when the CPU reports avx2 and fma (simd.rs).
        Level::Avx2 => unsafe { accumulate_avx2::<T>(acc, row, w) },
        _ => accumulate_body::<T>(acc, row, w),
    }
}

/// `out = Σ w·x_row / total` over `items` (`(row, w)`, summed in the order given); returns the
/// rows among `items` that were not finite. Shared by the mean and Multi-Krum.
pub(crate) fn weighted_sum<T: Float>(
    x: &Rows<'_, T>,
    items: &[(usize, f64)],
    total: f64,
    out: &mut [T],
) -> Vec<usize> {
    let level = simd::level();
    let tile = |(t, o): (usize, &mut [T]), acc: &mut Vec<T::Acc>| -> Vec<usize> {
        let j0 = t * TILE;
        acc.clear();
        acc.resize(o.len(), T::Acc::default());
        let mut bad = Vec::new();
        for &(i, w) in items {
            if !accumulate::<T>(level, acc, &x.row(i)[j0..j0 + o.len()], w) {
                bad.push(i);
            }
        }
        for (y, a) in o.iter_mut().zip(acc.iter()) {
            *y = T::from_f64(a.value() / total);
        }
        bad
    };
    let mut bad: Vec<usize> = if items.len() * x.d() < super::PARALLEL_MIN_VALUES {
        let mut acc = Vec::new();
        out.chunks_mut(TILE)
            .enumerate()
            .flat_map(|it| tile(it, &mut acc))
            .collect()
    } else {
        crate::pool::install(|| {
            out.par_chunks_mut(TILE)
                .enumerate()
                .map_init(Vec::new, |acc, it| tile(it, acc))
                .flatten_iter()
                .collect()
        })
    };
    bad.sort_unstable();
    bad.dedup();
    bad
}

/// The (weighted) mean of `x` into `out`.
pub fn mean<T: Float>(
    x: &Rows<'_, T>,
    weights: Option<&[f64]>,
    policy: NonFinite,
    out: &mut [T],
) -> Result<MeanInfo, AggError> {
    let n = x.n();
    assert_eq!(out.len(), x.d());
    let ones;
    let w = match weights {
        Some(w) => {
            check_weights(w, n)?;
            w
        }
        None => {
            ones = vec![1.0; n];
            &ones[..]
        }
    };
    x.check_policy(NAME, policy)?;
    let items_of = |keep: &dyn Fn(usize) -> bool| -> (Vec<(usize, f64)>, f64) {
        let items: Vec<(usize, f64)> = (0..n).filter(|&i| keep(i)).map(|i| (i, w[i])).collect();
        let mut acc = <f64 as Float>::Acc::default();
        items.iter().for_each(|&(_, v)| acc.add(v));
        (items, acc.value())
    };
    let zero_total = |dropped: usize| AggError::InvalidParameter {
        rule: NAME,
        message: format!(
            "the weights of the inputs averaged sum to 0 ({dropped} non-finite inputs dropped)"
        ),
    };
    let (items, total) = items_of(&|_| true);
    if total <= 0.0 {
        return Err(zero_total(0));
    }
    let bad = weighted_sum(x, &items, total, out);
    if policy != NonFinite::Robust || bad.is_empty() {
        return Ok(MeanInfo::default());
    }
    if bad.len() == n {
        return Err(AggError::NonFinite {
            rule: NAME,
            rows: bad,
            detail: "every input holds NaN or infinite values, nothing is left to average",
        });
    }
    let (items, total) = items_of(&|i| bad.binary_search(&i).is_err());
    if total <= 0.0 {
        return Err(zero_total(bad.len()));
    }
    weighted_sum(x, &items, total, out);
    Ok(MeanInfo { dropped: bad })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::{rows, Rng};

    #[test]
    fn plain_weighted_and_robust() {
        let data = vec![vec![1.0f32, 2.0], vec![3.0, f32::NAN], vec![5.0, 6.0]];
        let x = rows(&data);
        let mut out = vec![0.0f32; 2];
        let info = mean(&x, None, NonFinite::Robust, &mut out).unwrap();
        assert_eq!(out, vec![3.0, 4.0]);
        assert_eq!(info.dropped, vec![1]);
        mean(&x, None, NonFinite::Propagate, &mut out).unwrap();
        assert_eq!(out[0], 3.0);
        assert!(out[1].is_nan());
        mean(&x, Some(&[1.0, 0.0, 3.0]), NonFinite::Robust, &mut out).unwrap();
        assert_eq!(out, vec![4.0, 5.0]);
        let e = mean(&x, Some(&[1.0, -1.0, 3.0]), NonFinite::Robust, &mut out).unwrap_err();
        assert_eq!(
            e.to_string(),
            "mean: weights must be finite and >= 0, got weights[1]=-1"
        );
        let e = mean(&x, Some(&[0.0, 1.0, 0.0]), NonFinite::Robust, &mut out).unwrap_err();
        assert!(e.to_string().contains("sum to 0"));
    }

    #[test]
    fn simd_levels_and_threads_agree_bitwise() {
        let data = Rng(11).matrix(7, 50_003);
        let x = rows(&data);
        let mut a = vec![0.0f32; x.d()];
        let mut b = vec![0.0f32; x.d()];
        simd::set_level(Level::Scalar);
        crate::pool::set_num_threads(1).unwrap();
        mean(&x, None, NonFinite::Robust, &mut a).unwrap();
        simd::set_level(Level::Avx2);
        crate::pool::set_num_threads(2).unwrap();
        mean(&x, None, NonFinite::Robust, &mut b).unwrap();
        assert!(a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()));
        let exact: Vec<f32> = (0..x.d())
            .map(|j| ((0..7).map(|i| data[i][j] as f64).sum::<f64>() / 7.0) as f32)
            .collect();
        assert_eq!(a, exact);
    }
}

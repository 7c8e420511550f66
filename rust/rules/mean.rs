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
const TILE: usize = 32768;

/// The result of [`mean`] besides the values: which inputs were dropped (robust policy).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MeanInfo {
    pub dropped: Vec<usize>,
}

/// Per-input weights: one per input, finite and `>= 0` (shared by every rule taking weights).
pub(crate) fn check_weights(rule: &'static str, w: &[f64], n: usize) -> Result<(), AggError> {
    let bad = |message: String| AggError::InvalidParameter { rule, message };
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

/// Rows summed per pass over the accumulator: the running sums of a group stay in registers,
/// which cuts the float64 accumulator traffic by this factor.
const GROUP: usize = 8;

/// Add `Σ w·row` over a group of at most [`GROUP`] rows into `acc`, each element in row order
/// (`((acc + w0·x0) + w1·x1) + ...`, the same sequence for every group size); sets `bad[g]` if
/// row `g` holds a non-finite value.
#[inline(always)]
fn accumulate_body<T: Float>(acc: &mut [T::Acc], rows: &[(&[T], f64)], bad: &mut [bool; GROUP]) {
    for (j, a) in acc.iter_mut().enumerate() {
        let mut s = *a;
        for &(r, w) in rows {
            s.add(w * r[j].to_f64());
        }
        *a = s;
    }
    for (g, &(r, _)) in rows.iter().enumerate() {
        bad[g] = !crate::input::all_finite(r);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn accumulate_avx2<T: Float>(acc: &mut [T::Acc], rows: &[(&[T], f64)], bad: &mut [bool; GROUP]) {
    use std::any::TypeId;
    if TypeId::of::<T>() == TypeId::of::<f32>()
        && TypeId::of::<T::Acc>() == TypeId::of::<crate::order::PlainSum>()
    {
        // SAFETY: T is f32 and T::Acc is PlainSum, a repr(transparent) f64 (checked above).
        let (acc, rows) = unsafe {
            (
                &mut *(acc as *mut [T::Acc] as *mut [f64]),
                &*(rows as *const [(&[T], f64)] as *const [(&[f32], f64)]),
            )
        };
        return avx2::accumulate_f32(acc, rows, bad);
    }
    accumulate_body::<T>(acc, rows, bad)
}

/// float32 rows added into float64 sums with explicit AVX2: a group of rows is summed in
/// registers per 8 coordinates, then written once. Each element is `acc + w * (x as f64)` row
/// after row, as in the portable path (no FMA), so both give the same bits; non-finite values
/// are detected from the exponent bits.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::GROUP;

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn accumulate_f32(acc: &mut [f64], rows: &[(&[f32], f64)], bad: &mut [bool; GROUP]) {
        let len = acc.len();
        assert!(rows.len() <= GROUP && rows.iter().all(|(r, _)| r.len() == len));
        // 16 coordinates per step: four independent float64 sums. With 8 (two sums) the
        // chain of dependent additions, one per row, limited small n (n = 10: 35 % of the
        // read bandwidth against 68 % for the median's kernel on the same rows).
        let full = len / 16 * 16;
        let exp = _mm256_set1_epi32(0x7f80_0000);
        // One flag register for the group; the rows that held a non-finite value are found
        // afterwards by a scan (rare), which keeps the registers for the sums.
        let mut badv = _mm256_setzero_si256();
        let mut k = 0;
        while k < full {
            // SAFETY: k + 16 <= len for `acc` and every row (asserted equal lengths).
            unsafe {
                let p = acc.as_mut_ptr().add(k);
                let mut s = [
                    _mm256_loadu_pd(p),
                    _mm256_loadu_pd(p.add(4)),
                    _mm256_loadu_pd(p.add(8)),
                    _mm256_loadu_pd(p.add(12)),
                ];
                for &(r, w) in rows {
                    let wv = _mm256_set1_pd(w);
                    for h in 0..2 {
                        let v = _mm256_loadu_ps(r.as_ptr().add(k + 8 * h));
                        let e = _mm256_and_si256(_mm256_castps_si256(v), exp);
                        badv = _mm256_or_si256(badv, _mm256_cmpeq_epi32(e, exp));
                        let lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
                        let hi = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v));
                        s[2 * h] = _mm256_add_pd(s[2 * h], _mm256_mul_pd(wv, lo));
                        s[2 * h + 1] = _mm256_add_pd(s[2 * h + 1], _mm256_mul_pd(wv, hi));
                    }
                }
                for (q, v) in s.iter().enumerate() {
                    _mm256_storeu_pd(p.add(4 * q), *v);
                }
            }
            k += 16;
        }
        for (j, a) in acc.iter_mut().enumerate().skip(full) {
            for &(r, w) in rows {
                *a += w * r[j] as f64;
            }
        }
        let any = _mm256_testz_si256(badv, badv) == 0;
        for (g, &(r, _)) in rows.iter().enumerate() {
            let scan = if any { r } else { &r[full..] };
            bad[g] = scan.iter().any(|v| !v.is_finite());
        }
    }
}

fn accumulate<T: Float>(
    level: Level,
    acc: &mut [T::Acc],
    rows: &[(&[T], f64)],
    bad: &mut [bool; GROUP],
) {
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Level::Avx2` (and `Avx512`, a superset) is only in force when the CPU
        // reports avx2 and fma (simd.rs). The explicit AVX2 kernel serves both.
        Level::Avx2 | Level::Avx512 => unsafe { accumulate_avx2::<T>(acc, rows, bad) },
        _ => accumulate_body::<T>(acc, rows, bad),
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
        let mut flags = [false; GROUP];
        for group in items.chunks(GROUP) {
            let rows: Vec<(&[T], f64)> = group
                .iter()
                .map(|&(i, w)| (&x.row(i)[j0..j0 + o.len()], w))
                .collect();
            accumulate::<T>(level, acc, &rows, &mut flags);
            bad.extend(
                group
                    .iter()
                    .zip(flags)
                    .filter(|(_, b)| *b)
                    .map(|(&(i, _), _)| i),
            );
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
            check_weights(NAME, w, n)?;
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

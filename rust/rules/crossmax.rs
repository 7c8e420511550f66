//! CrossMax: robust ensembling of predictor logits (Fort & Lakshminarayanan 2024).
//!
//! Input logits `Z` of shape `(B, N, C)` (`B` examples, `N` predictors, `C` classes), output
//! `Y` of shape `(B, C)`:
//!
//! ```text
//! A  = Z - max_c Z           per (example, predictor): its top logit becomes 0
//! Bm = A - max_n A           per (example, class): its best predictor becomes 0
//! Y  = k-th largest over n of Bm
//! ```
//!
//! Step 2 subtracts a per-class constant, so the order over `n` is unchanged and
//! `Y[b,c] = A_(k)[b,c] - A_(1)[b,c]` (docs/algorithms.md, CrossMax): this kernel never builds the
//! `N x C` intermediate. Predictors are ranked per class by `(-A, n)`: on equal values the
//! lower predictor index ranks first; `-0.0` and `+0.0` are equal (they are canonicalised), so
//! the torch-native path (a stable descending sort) ranks identically. The median variant
//! takes the median over predictors instead of the k-th largest; with `Even` the lower,
//! upper or averaged middle (`Y = midpoint(A_lo, A_hi) - A_(1)`).
//!
//! Non-finite logits: a class that is `-inf` for every predictor is masked (`Y = -inf`).
//! `Robust` reads NaN as `-inf` (the predictor bids nothing for that class) and `+inf` as the
//! largest finite value. Under both, a predictor whose logits are all `-inf` abstains (its `A`
//! is `-inf`). `Raise` refuses NaN and `+inf` (naming the predictors). `Propagate` computes
//! naively, as the reference's torch code does (NaN spreads through the maxima).
//!
//! For the backward the kernel reports, per `(b, c)`, the top predictor and the k-th one (two
//! for the averaged median) and, per `(b, n)`, the predictor's argmax class: the gradient of
//! `Y[b,c]` has four entries (docs/algorithms.md).

use rayon::prelude::*;

use crate::error::AggError;
use crate::input::NonFinite;
use crate::order::Float;
use crate::pool;
use crate::pool::PARALLEL_MIN_VALUES;
use crate::rules::median::Even;

pub const NAME: &str = "crossmax";

/// How a class's score is read from its ranked predictors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reducer {
    /// The k-th largest, `2 <= k <= N` (the reference uses k = 3).
    Kth(usize),
    /// The median over predictors.
    Median(Even),
}

/// Where the kernel writes: `values` is `B x C`; the index arrays, when present, are
/// `top`, `kth`, `kth2` (`B x C`; `kth2 == kth` unless the median averages two) and
/// `argmax` (`B x N`).
pub struct CrossmaxOut<'a, T> {
    pub values: &'a mut [T],
    pub indices: Option<CrossmaxIndices<'a>>,
}

pub struct CrossmaxIndices<'a> {
    pub top: &'a mut [u32],
    pub kth: &'a mut [u32],
    pub kth2: &'a mut [u32],
    pub argmax: &'a mut [u32],
}

/// One example's slices of the index arrays: top, kth, kth2 (`C` each), argmax (`N`).
type ExampleIndices<'a> = (&'a mut [u32], &'a mut [u32], &'a mut [u32], &'a mut [u32]);

/// The descending ranks (1-based) read for the output: `(rank_a, rank_b)`, equal unless the
/// median of an even `N` averages two.
fn ranks(reducer: Reducer, n: usize) -> (usize, usize) {
    match reducer {
        Reducer::Kth(k) => (k, k),
        Reducer::Median(even) => {
            let upper = n.div_ceil(2); // the upper middle is the smaller descending rank
            let lower = n / 2 + 1;
            match even {
                Even::Lower => (lower, lower),
                Even::Upper => (upper, upper),
                Even::Mean => (upper, lower),
            }
        }
    }
}

/// Validate the shape and parameters (messages state the condition with the values).
pub fn check(n: usize, reducer: Reducer) -> Result<(), AggError> {
    if n < 2 {
        return Err(AggError::InvalidParameter {
            rule: NAME,
            message: format!(
                "needs N >= 2 predictors, got N={n} (with one predictor every class scores 0)"
            ),
        });
    }
    if let Reducer::Kth(k) = reducer {
        if k < 2 || k > n {
            let why = if k == 1 {
                " (k=1 is degenerate: every class scores 0, so the argmax is an all-way tie)"
            } else {
                ""
            };
            return Err(AggError::InvalidParameter {
                rule: NAME,
                message: format!("k must satisfy 2 <= k <= N, got k={k}, N={n}{why}"),
            });
        }
    }
    Ok(())
}

#[inline]
fn clean<T: Float>(v: T, policy: NonFinite, max_finite: T) -> T {
    if policy != NonFinite::Robust || v.is_finite() {
        v
    } else if v.is_nan() {
        T::ZERO - T::INFINITY
    } else if v > T::ZERO {
        max_finite
    } else {
        v
    }
}

/// CrossMax of `z` (`b x n x c`, row-major) into `out`.
pub fn crossmax<T: Float>(
    z: &[T],
    b: usize,
    n: usize,
    c: usize,
    reducer: Reducer,
    policy: NonFinite,
    out: CrossmaxOut<'_, T>,
) -> Result<(), AggError> {
    check(n, reducer)?;
    assert_eq!(z.len(), b * n * c, "crossmax: z has the wrong length");
    assert_eq!(out.values.len(), b * c);
    if policy == NonFinite::Raise {
        let mut bad: Vec<usize> = (0..n)
            .filter(|&p| {
                (0..b).any(|e| {
                    let row = &z[(e * n + p) * c..(e * n + p + 1) * c];
                    row.iter()
                        .any(|v| v.is_nan() || (!v.is_finite() && *v > T::ZERO))
                })
            })
            .collect();
        if !bad.is_empty() {
            bad.dedup();
            return Err(AggError::NonFinite {
                rule: NAME,
                rows: bad,
                detail: "NaN or +inf logits under nonfinite='raise' (-inf marks a masked class and is allowed)",
            });
        }
    }
    if b == 0 || c == 0 {
        return Ok(());
    }
    let (ra, rb) = ranks(reducer, n);
    let max_finite = T::from_f64(if std::mem::size_of::<T>() == 4 {
        f32::MAX as f64
    } else {
        f64::MAX
    });
    let work = |s: &mut Scratch<T>, e: usize, vals: &mut [T], idx: Option<ExampleIndices<'_>>| {
        let zb = &z[e * n * c..(e + 1) * n * c];
        example(zb, n, c, ra, rb, policy, max_finite, vals, idx, s);
    };
    let scratch = || Scratch::new(n, c, rb);
    let parallel = crate::pool::split(b * n * c) && b > 1;
    match out.indices {
        None => {
            let run = || {
                out.values
                    .par_chunks_mut(c)
                    .enumerate()
                    .with_min_len(if parallel { 1 } else { b })
                    .for_each_init(scratch, |s, (e, vals)| work(s, e, vals, None))
            };
            pool::install(run);
        }
        Some(ix) => {
            let run = || {
                out.values
                    .par_chunks_mut(c)
                    .zip(ix.top.par_chunks_mut(c))
                    .zip(ix.kth.par_chunks_mut(c))
                    .zip(ix.kth2.par_chunks_mut(c))
                    .zip(ix.argmax.par_chunks_mut(n))
                    .enumerate()
                    .with_min_len(if parallel { 1 } else { b })
                    .for_each_init(scratch, |s, (e, ((((vals, top), kth), kth2), am))| {
                        work(s, e, vals, Some((top, kth, kth2, am)))
                    })
            };
            pool::install(run);
        }
    }
    Ok(())
}

/// Per-thread buffers of [`example`]: the best `rb` values (and predictors) of every class, the
/// value being inserted, and per-class flags.
struct Scratch<T> {
    best: Vec<T>,
    best_at: Vec<u32>,
    carry: Vec<T>,
    carry_at: Vec<u32>,
    masked: Vec<bool>,
    nan: Vec<bool>,
    maxima: Vec<T>,
}

impl<T: Float> Scratch<T> {
    fn new(n: usize, c: usize, rb: usize) -> Self {
        Scratch {
            best: vec![T::ZERO; rb * c],
            best_at: vec![0; rb * c],
            carry: vec![T::ZERO; c],
            carry_at: vec![0; c],
            masked: vec![true; c],
            nan: vec![false; c],
            maxima: vec![T::ZERO; n],
        }
    }
}

/// One example: `zb` is `n x c`.
///
/// Lane-parallel over classes: predictors are inserted in index order into a per-class sorted
/// list of the best `rb` values by compare-exchange in `(value, index)` order (larger value
/// first, lower predictor index first among equal values; the values-only path needs no index
/// because equal values are interchangeable). The inner loops run over the
/// `c` classes with branch-free selects, which the compiler vectorises.
#[allow(clippy::too_many_arguments)]
fn example<T: Float>(
    zb: &[T],
    n: usize,
    c: usize,
    ra: usize,
    rb: usize,
    policy: NonFinite,
    max_finite: T,
    vals: &mut [T],
    mut idx: Option<ExampleIndices<'_>>,
    s: &mut Scratch<T>,
) {
    let neg_inf = T::ZERO - T::INFINITY;
    let want = idx.is_some();
    // Per predictor: its maximum (NaN if it holds one, under Propagate) and the lowest argmax.
    for p in 0..n {
        let row = &zb[p * c..(p + 1) * c];
        let (mut m, mut has_nan) = (neg_inf, false);
        for &v in row {
            let v = clean(v, policy, max_finite);
            has_nan |= v.is_nan();
            m = if v > m { v } else { m };
        }
        let m = if has_nan { T::NAN } else { m };
        s.maxima[p] = m;
        if let Some((_, _, _, am)) = idx.as_mut() {
            am[p] = row
                .iter()
                .position(|&v| {
                    let v = clean(v, policy, max_finite);
                    if has_nan {
                        v.is_nan()
                    } else {
                        v == m
                    }
                })
                .unwrap_or(0) as u32;
        }
    }
    s.masked.fill(true);
    s.nan.fill(false);
    for p in 0..n {
        let row = &zb[p * c..(p + 1) * c];
        let m = s.maxima[p];
        // No logit above -inf: the predictor abstains (every class masked for it), unless
        // Propagate asked for the naive -inf - -inf = NaN.
        let abstains = policy != NonFinite::Propagate && m == neg_inf;
        for (j, &v) in row.iter().enumerate() {
            let v = clean(v, policy, max_finite);
            s.masked[j] &= v == neg_inf;
            let a = if abstains { neg_inf } else { (v - m) + T::ZERO }; // + 0: -0.0 -> +0.0
            s.nan[j] |= a.is_nan();
            s.carry[j] = a;
        }
        if want {
            s.carry_at.fill(p as u32);
        }
        for slot in 0..p.min(rb) {
            let best = &mut s.best[slot * c..(slot + 1) * c];
            if want {
                let at = &mut s.best_at[slot * c..(slot + 1) * c];
                for j in 0..c {
                    let (v, t) = (s.carry[j], best[j]);
                    let (vi, ti) = (s.carry_at[j], at[j]);
                    // (value, index) order: a value displaced from a higher slot may carry a
                    // lower index than an equal value below it, so ties compare indices.
                    let swap = (v > t) | ((v == t) & (vi < ti)); // non-short-circuit: vectorises
                    best[j] = if swap { v } else { t };
                    s.carry[j] = if swap { t } else { v };
                    at[j] = if swap { vi } else { ti };
                    s.carry_at[j] = if swap { ti } else { vi };
                }
            } else {
                for (b, v) in best.iter_mut().zip(s.carry.iter_mut()) {
                    let (hi, lo) = if *v > *b { (*v, *b) } else { (*b, *v) };
                    *b = hi;
                    *v = lo;
                }
            }
        }
        if p < rb {
            s.best[p * c..(p + 1) * c].copy_from_slice(&s.carry);
            if want {
                s.best_at[p * c..(p + 1) * c].copy_from_slice(&s.carry_at);
            }
        }
    }
    let top = &s.best[..c];
    let ka = &s.best[(ra - 1) * c..ra * c];
    let kb = &s.best[(rb - 1) * c..rb * c];
    for j in 0..c {
        vals[j] = if s.masked[j] {
            neg_inf
        } else if s.nan[j] {
            T::NAN // only under Propagate: Robust has no NaN left, Raise refused them
        } else if ra == rb {
            ka[j] - top[j]
        } else {
            T::midpoint(ka[j], kb[j]) - top[j]
        };
    }
    if let Some((t, k1, k2, _)) = idx.as_mut() {
        t.copy_from_slice(&s.best_at[..c]);
        k1.copy_from_slice(&s.best_at[(ra - 1) * c..ra * c]);
        k2.copy_from_slice(&s.best_at[(rb - 1) * c..rb * c]);
    }
}

/// The backward on the CPU: `grad` (`b x n x c`, written whole) from the upstream `g`
/// (`b x c`) and the forward's indices; non-finite outputs (`finite[b*c] == false`) pass
/// nothing. Four entries per output (docs/algorithms.md), half of the k-th terms to each of `kth` and
/// `kth2` when `average`. One task per example, entries added in a fixed order: deterministic.
#[allow(clippy::too_many_arguments)]
pub fn backward<T: Float>(
    g: &[T],
    finite: &[bool],
    top: &[u32],
    kth: &[u32],
    kth2: &[u32],
    argmax: &[u32],
    n: usize,
    c: usize,
    average: bool,
    grad: &mut [T],
) {
    let b = g.len() / c.max(1);
    assert!(grad.len() == b * n * c && argmax.len() == b * n && top.len() == b * c);
    if c == 0 {
        return;
    }
    let half = T::from_f64(0.5);
    let run = || {
        grad.par_chunks_mut(n * c)
            .enumerate()
            .with_min_len((PARALLEL_MIN_VALUES / (n * c)).max(1))
            .for_each(|(e, out)| {
                out.fill(T::ZERO);
                let am = &argmax[e * n..(e + 1) * n];
                for j in 0..c {
                    let at = e * c + j;
                    if !finite[at] {
                        continue;
                    }
                    let gj = g[at];
                    let mut put = |p: u32, w: T| {
                        let p = p as usize;
                        out[p * c + j] = out[p * c + j] + w;
                        let a = am[p] as usize;
                        out[p * c + a] = out[p * c + a] - w;
                    };
                    put(top[at], T::ZERO - gj);
                    if average {
                        put(kth[at], gj * half);
                        put(kth2[at], gj * half);
                    } else {
                        put(kth[at], gj);
                    }
                }
            })
    };
    pool::install(run);
}

#[cfg(test)]
mod tests {
    use super::*;

    const Z: [f64; 16] = [
        1.0, 0.0, -1.0, 0.5, 0.0, 2.0, 0.0, -3.0, 0.5, -1.0, 3.0, 0.0, 2.0, 1.5, 0.0, 1.9,
    ];

    fn run(z: &[f64], n: usize, c: usize, r: Reducer, p: NonFinite) -> Vec<f64> {
        let mut v = vec![0.0; z.len() / n];
        crossmax(
            z,
            z.len() / (n * c),
            n,
            c,
            r,
            p,
            CrossmaxOut {
                values: &mut v,
                indices: None,
            },
        )
        .unwrap();
        v
    }

    #[test]
    fn spec_oracle() {
        // The oracle of docs/algorithms.md, CrossMax: B=1, N=4, C=4 (decimal oracle values: compare to rounding).
        let close = |got: Vec<f64>, want: [f64; 4]| {
            for (a, b) in got.iter().zip(want) {
                assert!((a - b).abs() < 1e-12, "{got:?} != {want:?}");
            }
        };
        close(
            run(&Z, 4, 4, Reducer::Kth(2), NonFinite::Robust),
            [0.0, -0.5, -2.0, -0.4],
        );
        close(
            run(&Z, 4, 4, Reducer::Kth(3), NonFinite::Robust),
            [-2.0, -1.0, -2.0, -2.9],
        );
        let med = run(&Z, 4, 4, Reducer::Median(Even::Mean), NonFinite::Robust);
        close(med, [-1.0, -0.75, -2.0, -1.65]);
        // N = 4: the lower median is the 3rd largest.
        assert_eq!(
            run(&Z, 4, 4, Reducer::Median(Even::Lower), NonFinite::Robust),
            run(&Z, 4, 4, Reducer::Kth(3), NonFinite::Robust)
        );
    }

    #[test]
    fn indices_and_masked_classes() {
        let mut z = Z.to_vec();
        for p in 0..4 {
            z[p * 4 + 3] = f64::NEG_INFINITY; // class 3 masked for every predictor
        }
        let (mut v, mut t, mut k1, mut k2, mut am) =
            (vec![0.0; 4], [0u32; 4], [0u32; 4], [0u32; 4], [0u32; 4]);
        let ix = CrossmaxIndices {
            top: &mut t,
            kth: &mut k1,
            kth2: &mut k2,
            argmax: &mut am,
        };
        crossmax(
            &z,
            1,
            4,
            4,
            Reducer::Kth(3),
            NonFinite::Robust,
            CrossmaxOut {
                values: &mut v,
                indices: Some(ix),
            },
        )
        .unwrap();
        assert_eq!(v[3], f64::NEG_INFINITY);
        assert_eq!(am, [0, 1, 2, 0]);
        // Class 0: A = [0, -2, -2.5, 0] -> top is predictor 0 (tie with 3, lower index), 3rd is 1.
        assert_eq!((t[0], k1[0]), (0, 1));
        assert_eq!(k1, k2);
    }

    #[test]
    fn validation() {
        let bad = |n, r| check(n, r).unwrap_err().to_string();
        assert!(bad(4, Reducer::Kth(1)).contains("k=1 is degenerate"));
        assert!(bad(4, Reducer::Kth(5)).contains("2 <= k <= N, got k=5, N=4"));
        assert!(bad(1, Reducer::Median(Even::Mean)).contains("N >= 2"));
        let mut z = Z.to_vec();
        z[5] = f64::NAN;
        let mut v = vec![0.0; 4];
        let e = crossmax(
            &z,
            1,
            4,
            4,
            Reducer::Kth(3),
            NonFinite::Raise,
            CrossmaxOut {
                values: &mut v,
                indices: None,
            },
        );
        assert!(matches!(e, Err(AggError::NonFinite { ref rows, .. }) if rows == &vec![1]));
        // A predictor whose logits are all -inf abstains under Raise as under Robust: it does
        // not turn every score into -inf - -inf = NaN (one client could otherwise).
        let mut masked = Z.to_vec();
        masked[8..12].fill(f64::NEG_INFINITY);
        let raise = run(&masked, 4, 4, Reducer::Kth(2), NonFinite::Raise);
        assert_eq!(
            raise,
            run(&masked, 4, 4, Reducer::Kth(2), NonFinite::Robust)
        );
        assert!(raise.iter().all(|v| !v.is_nan()));
        assert!(run(&masked, 4, 4, Reducer::Kth(2), NonFinite::Propagate)
            .iter()
            .all(|v| v.is_nan()));
        // Robust reads the NaN as -inf: predictor 1 no longer bids for class 1.
        let r = run(&z, 4, 4, Reducer::Kth(2), NonFinite::Robust);
        assert!(r.iter().all(|v| v.is_finite()));
        assert!(run(&z, 4, 4, Reducer::Kth(2), NonFinite::Propagate)
            .iter()
            .any(|v| v.is_nan()));
    }
}

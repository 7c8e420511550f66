//! Krum and Multi-Krum (Blanchard, El Mhamdi, Guerraoui, Stainer, NeurIPS 2017, arXiv 1703.02757).
//!
//! Score of input `i`: the sum of its `n - f - 2` smallest squared distances to the other inputs
//! (the paper's count; byzfl uses `n - f - 1`, Flower clamps to at least 1 — see
//! docs/algorithms.md). Inputs are ranked by `(score, index)`; Krum returns the first, Multi-Krum
//! the mean of the first `m`. Needs `n >= 2f + 3` (the paper's `2f + 2 < n`) and `1 <= m <= n`.
//! Krum is Multi-Krum with `m = 1`: the mean of one row is that row, bit for bit.
//!
//! Non-finite values: `Robust` makes every non-finite distance +inf, so an input with NaN or
//! ±inf gets an infinite score and is never selected; if fewer than `m` inputs have a finite
//! score the call fails rather than average garbage. `Propagate` keeps IEEE arithmetic: a NaN
//! distance ranks last among an input's distances (as `np.sort`) and a NaN score ranks first
//! (as `np.argmin`), so a row holding NaN is selected and its NaN reaches the output.

use crate::distance::pairwise_sq_dists;
use crate::error::{AggError, KRUM};
use crate::half::HalfRows;
use crate::input::{NonFinite, Rows};
use crate::order::{rank_scores, Accumulator, Float};
use crate::rules::mean::weighted_sum;

pub const NAME: &str = "krum";
pub const MULTI_NAME: &str = "multi_krum";

/// What Krum and Multi-Krum selected, for operators who flag suspicious clients.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// The selected inputs, best score first (`m` of them).
    pub indices: Vec<usize>,
    /// Every input's score (`n` of them), in input order.
    pub scores: Vec<f64>,
}

fn check(rule: &'static str, n: usize, f: usize) -> Result<(), AggError> {
    KRUM.check(rule, n, f)
}

/// Every input's Krum score (validated: `n >= 2f + 3`).
#[cfg(test)]
fn scores<T: Float>(x: &Rows<'_, T>, f: usize, policy: NonFinite) -> Result<Vec<f64>, AggError> {
    check("Krum", x.n(), f)?;
    x.check_policy("Krum", policy)?;
    Ok(scores_from_distances(&x.sq_dists()?, x.n(), f, policy))
}

/// Krum scores from a full `n × n` squared-distance matrix (row-major), e.g. one summed over
/// the tensors of a model. `n >= 2f + 3` is the caller's to check.
fn scores_from_distances(dist: &[f64], n: usize, f: usize, policy: NonFinite) -> Vec<f64> {
    let k = n - f - 2;
    let robust = policy != NonFinite::Propagate;
    let mut row = Vec::with_capacity(n - 1);
    (0..n)
        .map(|i| {
            row.clear();
            row.extend((0..n).filter(|&j| j != i).map(|j| {
                let v = dist[i * n + j];
                // NaN keys rank above +inf, which is where np.sort puts NaN too.
                (if robust && !v.is_finite() {
                    f64::INFINITY
                } else {
                    v
                })
                .key(0)
            }));
            row.select_nth_unstable(k - 1);
            let nearest = &mut row[..k];
            nearest.sort_unstable();
            let mut acc = <f64 as Float>::Acc::zero();
            nearest.iter().for_each(|&key| acc.add(f64::key_value(key)));
            acc.value()
        })
        .collect()
}

/// Multi-Krum's selection (the `m` best-scored inputs, best first, and every score) from a full
/// `n × n` squared-distance matrix: what a caller needs when the inputs are not one matrix, such
/// as models stored tensor by tensor, whose distances add up over the tensors. Under `Raise`
/// the caller must have checked the inputs; a non-finite distance is reported as an error.
pub fn select_from_distances(
    dist: &[f64],
    n: usize,
    f: usize,
    m: usize,
    policy: NonFinite,
) -> Result<Selection, AggError> {
    let display = if m == 1 { "Krum" } else { "Multi-Krum" };
    crate::distance::check_square(display, dist, n)?;
    check(display, n, f)?;
    check_m(display, n, m)?;
    if policy == NonFinite::Raise {
        let bad: Vec<usize> = (0..n)
            .filter(|&i| dist[i * n..(i + 1) * n].iter().any(|v| !v.is_finite()))
            .collect();
        if !bad.is_empty() {
            return Err(AggError::NonFinite {
                rule: display,
                rows: bad,
                detail: "their distances to other inputs are not finite",
            });
        }
    }
    let scores = scores_from_distances(dist, n, f, policy);
    let indices = best(display, &scores, m, policy, || {
        (0..n).filter(|&i| !scores[i].is_finite()).collect()
    })?;
    Ok(Selection { indices, scores })
}

fn check_m(display: &'static str, n: usize, m: usize) -> Result<(), AggError> {
    if m < 1 || m > n {
        return Err(AggError::InvalidParameter {
            rule: display,
            message: format!("m must satisfy 1 <= m <= n, got m={m}, n={n}"),
        });
    }
    Ok(())
}

/// The `m` best-scored inputs; an error if one of them has a non-finite score (except under
/// `Propagate`, where NaN scores rank first so that NaN reaches the output like in numpy).
fn best(
    display: &'static str,
    scores: &[f64],
    m: usize,
    policy: NonFinite,
    bad_rows: impl FnOnce() -> Vec<usize>,
) -> Result<Vec<usize>, AggError> {
    let order = rank_scores(scores, policy == NonFinite::Propagate);
    let indices: Vec<usize> = order[..m].to_vec();
    if policy != NonFinite::Propagate && indices.iter().any(|&i| !scores[i].is_finite()) {
        let finite = scores.iter().filter(|s| s.is_finite()).count();
        return Err(AggError::NonFinite {
            rule: display,
            rows: bad_rows(),
            detail: if finite == 0 {
                "every score is infinite (more than f inputs are non-finite or their distances overflow)"
            } else {
                "fewer than m inputs have a finite score"
            },
        });
    }
    Ok(indices)
}

/// Multi-Krum: the mean of the `m` best-scored inputs into `out`.
pub fn multi_krum<T: Float>(
    x: &Rows<'_, T>,
    f: usize,
    m: usize,
    policy: NonFinite,
    out: &mut [T],
) -> Result<Selection, AggError> {
    select("Multi-Krum", x, f, m, policy, out)
}

/// Krum: the best-scored input, copied into `out`.
pub fn krum<T: Float>(
    x: &Rows<'_, T>,
    f: usize,
    policy: NonFinite,
    out: &mut [T],
) -> Result<Selection, AggError> {
    select("Krum", x, f, 1, policy, out)
}

fn select<T: Float>(
    display: &'static str,
    x: &Rows<'_, T>,
    f: usize,
    m: usize,
    policy: NonFinite,
    out: &mut [T],
) -> Result<Selection, AggError> {
    let sel = choose(display, x, f, m, policy)?;
    let items: Vec<(usize, f64)> = sel.indices.iter().map(|&i| (i, 1.0)).collect();
    weighted_sum(x, &items, m as f64, out);
    Ok(sel)
}

/// What Krum's selection reads of its inputs: rows in place, or half-precision rows.
pub(crate) trait Inputs {
    fn n(&self) -> usize;
    fn check_policy(&self, rule: &'static str, policy: NonFinite) -> Result<(), AggError>;
    fn nonfinite_rows(&self) -> Vec<usize>;
    fn sq_dists(&self) -> Result<Vec<f64>, AggError>;
}

impl<T: Float> Inputs for Rows<'_, T> {
    fn n(&self) -> usize {
        Rows::n(self)
    }
    fn check_policy(&self, rule: &'static str, policy: NonFinite) -> Result<(), AggError> {
        Rows::check_policy(self, rule, policy)
    }
    fn nonfinite_rows(&self) -> Vec<usize> {
        Rows::nonfinite_rows(self)
    }
    fn sq_dists(&self) -> Result<Vec<f64>, AggError> {
        pairwise_sq_dists(self)
    }
}

impl Inputs for HalfRows<'_> {
    fn n(&self) -> usize {
        HalfRows::n(self)
    }
    fn check_policy(&self, rule: &'static str, policy: NonFinite) -> Result<(), AggError> {
        HalfRows::check_policy(self, rule, policy)
    }
    fn nonfinite_rows(&self) -> Vec<usize> {
        HalfRows::nonfinite_rows(self)
    }
    fn sq_dists(&self) -> Result<Vec<f64>, AggError> {
        crate::distance::pairwise_sq_dists_half(self)
    }
}

/// Krum's (`m = 1`) or Multi-Krum's selection from the inputs themselves.
pub(crate) fn choose(
    display: &'static str,
    x: &impl Inputs,
    f: usize,
    m: usize,
    policy: NonFinite,
) -> Result<Selection, AggError> {
    let n = x.n();
    check(display, n, f)?;
    check_m(display, n, m)?;
    x.check_policy(display, policy)?;
    let scores = scores_from_distances(&x.sq_dists()?, n, f, policy);
    let indices = best(display, &scores, m, policy, || {
        let rows = x.nonfinite_rows();
        if rows.is_empty() {
            (0..n).filter(|&i| !scores[i].is_finite()).collect()
        } else {
            rows
        }
    })?;
    Ok(Selection { indices, scores })
}

/// Krum (`m = 1`) or Multi-Krum on half-precision rows: the selection from their distances,
/// then the mean of the selected rows by blocks ([`crate::half::by_blocks`]), in `x`'s format.
pub fn select_half(
    x: &HalfRows<'_>,
    f: usize,
    m: usize,
    policy: NonFinite,
    out: &mut [u16],
) -> Result<Selection, AggError> {
    let display = if m == 1 { "Krum" } else { "Multi-Krum" };
    let sel = choose(display, x, f, m, policy)?;
    // The selected rows in selection order, as the float32 call sums them.
    let items: Vec<(usize, f64)> = sel.indices.iter().map(|&i| (i, 1.0)).collect();
    crate::rules::mean::weighted_sum_half_or_blocks(x, &items, m as f64, out)?;
    Ok(sel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::rows;

    fn spec_x() -> Vec<Vec<f64>> {
        [
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
        .collect()
    }

    #[test]
    fn spec_oracle() {
        // The oracle of docs/algorithms.md, Krum and Multi-Krum.
        let data = spec_x();
        let x = rows(&data);
        let s = scores(&x, 1, NonFinite::Robust).unwrap();
        assert_eq!(s, vec![609.0, 317.0, 569.0, 613.0, 533.0, 277.0, 9184.0]);
        let mut out = vec![0.0; 2];
        let sel = krum(&x, 1, NonFinite::Robust, &mut out).unwrap();
        assert_eq!(sel.indices, vec![5]);
        assert_eq!(out, vec![-3.0, -1.0]);
        let sel = multi_krum(&x, 1, 4, NonFinite::Robust, &mut out).unwrap();
        let mut idx = sel.indices.clone();
        idx.sort();
        assert_eq!(idx, vec![1, 2, 4, 5]);
        assert_eq!(out, vec![-6.0, -2.0]);
        multi_krum(&x, 1, 6, NonFinite::Robust, &mut out).unwrap();
        assert!((out[0] + 11.0 / 6.0).abs() < 1e-12 && (out[1] + 14.0 / 6.0).abs() < 1e-12);
    }

    #[test]
    fn selection_from_distances_matches_the_direct_path() {
        let data = spec_x();
        let x = rows(&data);
        let dist = pairwise_sq_dists(&x).unwrap();
        let mut out = vec![0.0; 2];
        for m in [1, 4, 7] {
            let direct = multi_krum(&x, 1, m, NonFinite::Robust, &mut out).unwrap();
            let via = select_from_distances(&dist, 7, 1, m, NonFinite::Robust).unwrap();
            assert_eq!(direct, via);
        }
        let e = select_from_distances(&dist, 7, 3, 1, NonFinite::Robust).unwrap_err();
        assert_eq!(e.to_string(), "Krum needs n >= 2f + 3, got n=7, f=3");
        let mut bad = dist.clone();
        bad[6] = f64::NAN; // (0, 6)
        bad[6 * 7] = f64::NAN;
        let sel = select_from_distances(&bad, 7, 1, 1, NonFinite::Robust).unwrap();
        assert_eq!(sel.indices, vec![5]);
        let e = select_from_distances(&bad, 7, 1, 1, NonFinite::Raise).unwrap_err();
        assert!(matches!(e, AggError::NonFinite { ref rows, .. } if rows == &vec![0, 6]));
        assert!(select_from_distances(&dist[1..], 7, 1, 1, NonFinite::Robust).is_err());
    }

    #[test]
    fn tie_rule_picks_lowest_index() {
        // docs/algorithms.md: equal scores go to the lowest index.
        let data: Vec<Vec<f32>> = vec![
            vec![0., 0.],
            vec![1., 0.],
            vec![0., 1.],
            vec![1., 1.],
            vec![10., 10.],
        ];
        let x = rows(&data);
        assert_eq!(
            scores(&x, 1, NonFinite::Robust).unwrap(),
            vec![2.0, 2.0, 2.0, 2.0, 343.0]
        );
        let mut out = vec![0.0f32; 2];
        assert_eq!(
            krum(&x, 1, NonFinite::Robust, &mut out).unwrap().indices,
            vec![0]
        );
    }

    #[test]
    fn validity_and_nonfinite() {
        let data = spec_x();
        let x = rows(&data[..6]);
        let mut out = vec![0.0; 2];
        let e = krum(&x, 2, NonFinite::Robust, &mut out).unwrap_err();
        assert_eq!(e.to_string(), "Krum needs n >= 2f + 3, got n=6, f=2");
        let e = multi_krum(&x, 1, 7, NonFinite::Robust, &mut out).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Multi-Krum: m must satisfy 1 <= m <= n, got m=7, n=6"
        );

        let mut bad = spec_x();
        bad[2][0] = f64::NAN;
        let x = rows(&bad);
        let sel = krum(&x, 1, NonFinite::Robust, &mut out).unwrap();
        assert_eq!(sel.scores[2], f64::INFINITY);
        assert_eq!(sel.indices, vec![5]);
        let sel = krum(&x, 1, NonFinite::Propagate, &mut out).unwrap();
        assert_eq!(sel.indices, vec![2]);
        assert!(out[0].is_nan());
        assert!(matches!(
            krum(&x, 1, NonFinite::Raise, &mut out),
            Err(AggError::NonFinite { .. })
        ));
        // Two NaN rows with f = 1 and m = n - f: too few finite scores.
        bad[3][1] = f64::NAN;
        let x = rows(&bad);
        let e = multi_krum(&x, 1, 6, NonFinite::Robust, &mut out).unwrap_err();
        assert!(
            e.to_string()
                .contains("fewer than m inputs have a finite score"),
            "{e}"
        );
    }
}

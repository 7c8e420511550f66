//! The subset rules' search over the pairwise distance matrix: minimum-diameter averaging
//! (El Mhamdi et al., PODC 2020; byzfl `MDA`). It takes the full `n × n` squared-distance matrix
//! (`distance.rs`, or the sum over tensors of a model); a non-finite distance counts as +inf, so
//! a broken input is the last one the search keeps. SMEA, CAF and MoNNA decide in the Python
//! layer on the same matrix (`aggkit._plans`).

use rayon::prelude::*;

use crate::distance::{check_square, clean};
use crate::error::{AggError, MAJORITY};
use crate::pool;

/// `C(n, k)`, saturating at `u64::MAX`.
pub fn binomial(n: usize, k: usize) -> u64 {
    let k = k.min(n - k.min(n));
    let mut c: u128 = 1;
    for i in 0..k {
        c = c * (n - i) as u128 / (i + 1) as u128;
        if c > u64::MAX as u128 {
            return u64::MAX;
        }
    }
    c as u64
}

/// MDA: the `n - f` inputs of smallest diameter (largest pairwise distance), ascending. Equal
/// diameters go to the lexicographically smallest kept-index tuple (byzfl enumerates the kept
/// tuples in that order and keeps strict improvements). Refuses when `C(n, f)` exceeds
/// `max_subsets`.
pub fn mda_select(
    dist: &[f64],
    n: usize,
    f: usize,
    max_subsets: u64,
) -> Result<Vec<usize>, AggError> {
    const RULE: &str = "mda";
    check_square(RULE, dist, n)?;
    MAJORITY.check(RULE, n, f)?;
    let count = binomial(n, f);
    if count > max_subsets {
        return Err(AggError::InvalidParameter {
            rule: RULE,
            message: format!(
                "C(n, f) = C({n}, {f}) = {count} subsets exceed max_subsets={max_subsets}; \
                 raise max_subsets to accept the cost (it grows exponentially with f)"
            ),
        });
    }
    // Pairs by distance, largest first: the diameter of a kept set is its first pair.
    let mut pairs: Vec<(f64, u32, u32)> = (0..n)
        .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
        .map(|(i, j)| (clean(dist[i * n + j]), i as u32, j as u32))
        .collect();
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2))));
    // The removed sets, enumerated by their first element (one task each, combined in order).
    // A removed set as a sorted tuple: the kept tuple is lexicographically smallest when the
    // removed tuple is lexicographically largest.
    let diameter = |removed: &[bool]| -> f64 {
        pairs
            .iter()
            .find(|p| !removed[p.1 as usize] && !removed[p.2 as usize])
            .map_or(0.0, |p| p.0)
    };
    let better =
        |a: &(f64, Vec<usize>), b: &(f64, Vec<usize>)| a.0 < b.0 || (a.0 == b.0 && a.1 > b.1);
    if f == 0 {
        return Ok((0..n).collect());
    }
    let best_from = |first: usize| -> Option<(f64, Vec<usize>)> {
        // All f-subsets of 0..n whose smallest element is `first`.
        let mut idx: Vec<usize> = (first..first + f).collect();
        if idx[f - 1] >= n {
            return None;
        }
        let mut removed = vec![false; n];
        let mut best: Option<(f64, Vec<usize>)> = None;
        loop {
            idx.iter().for_each(|&i| removed[i] = true);
            let cand = (diameter(&removed), idx.clone());
            idx.iter().for_each(|&i| removed[i] = false);
            if best.as_ref().is_none_or(|b| better(&cand, b)) {
                best = Some(cand);
            }
            // Next combination of idx[1..] over first+1..n.
            let mut k = f - 1;
            loop {
                if k == 0 {
                    return best;
                }
                if idx[k] < n - (f - k) {
                    idx[k] += 1;
                    for m in k + 1..f {
                        idx[m] = idx[m - 1] + 1;
                    }
                    break;
                }
                k -= 1;
            }
        }
    };
    let results: Vec<Option<(f64, Vec<usize>)>> = if count < 4096 {
        (0..n).map(best_from).collect()
    } else {
        pool::install(|| (0..n).into_par_iter().map(best_from).collect())
    };
    let mut best: Option<(f64, Vec<usize>)> = None;
    for r in results.into_iter().flatten() {
        if best.as_ref().is_none_or(|b| better(&r, b)) {
            best = Some(r);
        }
    }
    let (_, removed) = best.expect("n >= 2f + 1 leaves at least one subset");
    Ok((0..n).filter(|i| !removed.contains(i)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::sq_dists;

    #[test]
    fn mda_oracle() {
        // Column [1, 2, 3, 10], f = 1: keep {0, 1, 2}.
        let x = vec![vec![1.0], vec![2.0], vec![3.0], vec![10.0]];
        assert_eq!(
            mda_select(&sq_dists(&x), 4, 1, 1000).unwrap(),
            vec![0, 1, 2]
        );
        // Equal diameters: [0, 1, 2, 3] with f = 1 -> {0,1,2} and {1,2,3} tie; the first wins.
        let y = vec![vec![0.0], vec![1.0], vec![2.0], vec![3.0]];
        assert_eq!(
            mda_select(&sq_dists(&y), 4, 1, 1000).unwrap(),
            vec![0, 1, 2]
        );
        assert!(mda_select(&sq_dists(&y), 4, 1, 3).is_err());
        assert_eq!(binomial(50, 25), 126410606437752);
    }
}

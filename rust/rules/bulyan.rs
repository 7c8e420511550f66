//! Bulyan's first stage, iterated Krum (El Mhamdi, Guerraoui, Rouault, ICML 2018), over the
//! full `n × n` squared-distance matrix; a non-finite distance counts as +inf, so a broken input
//! is the last one chosen. The second stage is meamed's `closest_to_median` on the chosen rows.

use crate::distance::{check_square, clean};
use crate::error::{AggError, BULYAN};

/// Bulyan's first stage: `theta = n - 2f` inputs chosen one by one, each by Krum (with the same
/// `f`) among those not chosen yet. Round `t` scores each remaining input by the sum of its
/// `k_t = |R_t| - f - 2` smallest distances to the other remaining inputs (`clamp`: at least 1,
/// Flower's choice; at most `|R_t| - 1`); the lowest score wins, ties to the lower index.
/// Returns the chosen inputs in the order chosen, and each one's score when chosen.
pub fn bulyan_select(
    dist: &[f64],
    n: usize,
    f: usize,
    clamp: bool,
) -> Result<(Vec<usize>, Vec<f64>), AggError> {
    const RULE: &str = "bulyan";
    check_square(RULE, dist, n)?;
    BULYAN.check(RULE, n, f)?;
    let theta = n - 2 * f;
    let mut remaining: Vec<usize> = (0..n).collect();
    let (mut chosen, mut scores) = (Vec::with_capacity(theta), Vec::with_capacity(theta));
    let mut row: Vec<f64> = Vec::with_capacity(n);
    for _ in 0..theta {
        let r = remaining.len();
        let mut k = (r as isize - f as isize - 2).max(0) as usize;
        if clamp {
            k = k.max(1);
        }
        k = k.min(r - 1);
        let mut best: Option<(f64, usize)> = None;
        for (pos, &i) in remaining.iter().enumerate() {
            row.clear();
            row.extend(
                remaining
                    .iter()
                    .filter(|&&j| j != i)
                    .map(|&j| clean(dist[i * n + j])),
            );
            row.sort_by(f64::total_cmp);
            let s: f64 = row[..k].iter().sum();
            if best.is_none_or(|(b, _)| s < b) {
                best = Some((s, pos));
            }
        }
        let (s, pos) = best.expect("at least one input remains");
        chosen.push(remaining.remove(pos));
        scores.push(s);
    }
    Ok((chosen, scores))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::sq_dists;

    #[test]
    fn bulyan_spec_order() {
        let x: Vec<Vec<f64>> = [
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
        for clamp in [true, false] {
            let (sel, _) = bulyan_select(&sq_dists(&x), 7, 1, clamp).unwrap();
            assert_eq!(sel, vec![5, 1, 3, 2, 0]);
        }
    }
}

//! Bulyan's first stage, iterated Krum (El Mhamdi, Guerraoui, Rouault, ICML 2018), over the
//! full `n × n` squared-distance matrix; a non-finite distance counts as +inf, so a broken input
//! is the last one chosen. The second stage is meamed's `closest_to_median` on the chosen rows.

use crate::alloc;
use crate::distance::{check_square, clean};
use crate::error::{AggError, BULYAN};

/// Bulyan's first stage: `theta = n - 2f` inputs chosen one by one, each by Krum (with the same
/// `f`) among those not chosen yet. Round `t` scores each remaining input by the sum of its
/// `k_t = |R_t| - f - 2` smallest distances to the other remaining inputs (`clamp`: at least 1,
/// Flower's choice; at most `|R_t| - 1`); the lowest score wins, ties to the lower index.
/// Returns the chosen inputs in the order chosen, and each one's score when chosen.
///
/// Each input keeps its distances to the remaining inputs in ascending order, so a score is
/// the sum of a prefix (added smallest first, as a sort would give it) and choosing an input
/// removes one value from each list: `O(n^2 log n)` to sort once, then `O(n^2)` per round.
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
    let w = n - 1;
    // Row `i`: its first `len` entries are the distances from `i` to the other remaining inputs.
    let mut sorted = alloc::zeroed::<f64>(n * w)?;
    if w > 0 {
        for (i, row) in sorted.chunks_exact_mut(w).enumerate() {
            let others = (0..n).filter(|&j| j != i).map(|j| clean(dist[i * n + j]));
            for (slot, v) in row.iter_mut().zip(others) {
                *slot = v;
            }
            row.sort_by(f64::total_cmp);
        }
    }
    let mut len = w;
    let mut remaining: Vec<usize> = (0..n).collect();
    let (mut chosen, mut scores) = (Vec::with_capacity(theta), Vec::with_capacity(theta));
    for _ in 0..theta {
        crate::interrupt::check()?;
        let r = remaining.len();
        let mut k = (r as isize - f as isize - 2).max(0) as usize;
        if clamp {
            k = k.max(1);
        }
        k = k.min(r - 1);
        let mut best: Option<(f64, usize)> = None;
        for (pos, &i) in remaining.iter().enumerate() {
            let s: f64 = sorted[i * w..i * w + k].iter().sum();
            if best.is_none_or(|(b, _)| s < b) {
                best = Some((s, pos));
            }
        }
        let (s, pos) = best.expect("at least one input remains");
        let c = remaining.remove(pos);
        for &i in &remaining {
            let row = &mut sorted[i * w..i * w + len];
            let v = clean(dist[i * n + c]);
            let at = row.partition_point(|x| x.total_cmp(&v).is_lt());
            debug_assert!(row[at].total_cmp(&v).is_eq());
            row.copy_within(at + 1.., at);
        }
        len = len.saturating_sub(1);
        chosen.push(c);
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

    /// The rule as stated: every round re-sorts each remaining input's distances.
    fn by_definition(dist: &[f64], n: usize, f: usize, clamp: bool) -> (Vec<usize>, Vec<f64>) {
        let mut remaining: Vec<usize> = (0..n).collect();
        let (mut chosen, mut scores) = (vec![], vec![]);
        for _ in 0..n - 2 * f {
            let r = remaining.len();
            let mut k = (r as isize - f as isize - 2).max(0) as usize;
            if clamp {
                k = k.max(1);
            }
            k = k.min(r - 1);
            let mut best: Option<(f64, usize)> = None;
            for (pos, &i) in remaining.iter().enumerate() {
                let mut row: Vec<f64> = remaining
                    .iter()
                    .filter(|&&j| j != i)
                    .map(|&j| clean(dist[i * n + j]))
                    .collect();
                row.sort_by(f64::total_cmp);
                let s: f64 = row[..k].iter().sum();
                if best.is_none_or(|(b, _)| s < b) {
                    best = Some((s, pos));
                }
            }
            let (s, pos) = best.unwrap();
            chosen.push(remaining.remove(pos));
            scores.push(s);
        }
        (chosen, scores)
    }

    #[test]
    fn incremental_lists_match_the_definition_bit_for_bit() {
        let mut g = crate::testing::Rng(7);
        for n in [3, 4, 7, 12, 30] {
            for f in 0..=(n - 3) / 4 {
                for ties in [false, true] {
                    let mut dist = vec![0.0; n * n];
                    for i in 0..n {
                        for j in i + 1..n {
                            let u = g.next_f64().abs();
                            let v = match (ties, (u * 10.0) as u32) {
                                (true, t) => f64::from(t % 3),
                                (false, 0) => f64::NAN,
                                (false, 1) => f64::INFINITY,
                                _ => u * 1e3,
                            };
                            dist[i * n + j] = v;
                            dist[j * n + i] = v;
                        }
                    }
                    for clamp in [true, false] {
                        let (a, sa) = bulyan_select(&dist, n, f, clamp).unwrap();
                        let (b, sb) = by_definition(&dist, n, f, clamp);
                        assert_eq!(a, b, "n={n} f={f} ties={ties} clamp={clamp}");
                        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        assert_eq!(bits(&sa), bits(&sb));
                    }
                }
            }
        }
    }
}

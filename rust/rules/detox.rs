//! DETOX stage 1: the majority vote inside each group of `r` redundant workers
//! (Rajput, Wang, Charles, Papailiopoulos, NeurIPS 2019; docs/algorithms.md).
//!
//! Workers of a group computed on the same data, so honest members send identical vectors; a
//! group's winner is a vector held by a strict majority (`>= r/2 + 1`) of its members. Votes
//! are taken per segment (`segments` = offsets `0 = s_0 < s_1 < ... = d`; one segment is the
//! whole vector), so a winner may differ between segments, as in the reference code's
//! per-layer vote. Modes:
//!
//! * [`Vote::Exact`]: `np.array_equal` semantics (`-0.0 == +0.0`, NaN equals nothing, not
//!   even itself). Members are hashed (canonical bits, so `-0.0` and `+0.0` hash alike) and
//!   equal hashes confirmed by a full comparison: `O(r d)` per group.
//! * [`Vote::Approx`]: a member wins when at least `r/2` other members are within
//!   `|x_j - x_m| <= atol + rtol |x_m|` in every coordinate (for non-deterministic GPU
//!   kernels): `O(r^2 d)` per group.
//! * [`Vote::Reference`]: the reference code's Boyer-Moore pass *without* the verification
//!   step (exact equality): it always returns a member, the last one when no majority exists.
//!
//! In every mode the winner is the lowest-index member (in group order) that qualifies, and
//! each member is reported as agreeing with its group when it matches the winner in every
//! segment that has one. Groups are independent tasks: the result is thread-count invariant.

use rayon::prelude::*;

use crate::error::AggError;
use crate::input::Rows;
use crate::order::Float;
use crate::pool;

pub const NAME: &str = "detox";

/// No member won this (group, segment).
pub const NO_WINNER: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Vote {
    Exact,
    Approx { atol: f64, rtol: f64 },
    Reference,
}

/// Winners per `(group, segment)` (row indices, [`NO_WINNER`] if none) and, per member slot of
/// `groups`, whether the member agrees with its group's winners.
pub struct VoteResult {
    pub winners: Vec<u32>,
    pub agree: Vec<bool>,
}

fn equal<T: Float>(a: &[T], b: &[T]) -> bool {
    // `==` on floats: -0.0 == +0.0 and NaN != NaN, exactly np.array_equal. Branch-free within
    // blocks (vectorised), early exit between blocks (different vectors differ early).
    a.len() == b.len()
        && a.chunks(256)
            .zip(b.chunks(256))
            .all(|(x, y)| x.iter().zip(y).fold(true, |ok, (p, q)| ok & (*p == *q)))
}

fn close<T: Float>(x: &[T], m: &[T], atol: f64, rtol: f64) -> bool {
    x.iter().zip(m).fold(true, |ok, (a, b)| {
        let (a, b) = (a.to_f64(), b.to_f64());
        ok & ((a - b).abs() <= atol + rtol * b.abs())
    })
}

fn hash<T: Float>(v: &[T]) -> u64 {
    // Four independent lanes (the multiply chain is latency-bound), combined at the end.
    let mix = |h: u64, x: &T| {
        let bits = (x.to_f64() + 0.0).to_bits(); // + 0.0: -0.0 and +0.0 hash alike
        (h.rotate_left(5) ^ bits).wrapping_mul(0x517c_c1b7_2722_0a95)
    };
    let mut h = [0xcbf2_9ce4_8422_2325u64, 1, 2, 3];
    let mut quads = v.chunks_exact(4);
    for q in &mut quads {
        for (hl, x) in h.iter_mut().zip(q) {
            *hl = mix(*hl, x);
        }
    }
    let tail = quads.remainder().iter().fold(h[0], mix);
    [h[1], h[2], h[3]]
        .iter()
        .fold(tail, |acc, &x| mix(acc, &T::from_f64(x as f64)))
}

/// Up to this group size the exact vote compares members directly (at most r(r-1)/2 early-exit
/// comparisons: O(d) per group for a fixed small r, and cheaper than hashing, whose multiply
/// chain is latency-bound); larger groups hash first and confirm equal hashes: O(r d).
const DIRECT_MAX_R: usize = 5;

/// Validate `groups` (`g * r` row indices into `rows`, each row at most once) and `segments`.
fn check(n: usize, d: usize, groups: &[u32], r: usize, segments: &[usize]) -> Result<(), AggError> {
    let bad = |message: String| {
        Err(AggError::InvalidParameter {
            rule: NAME,
            message,
        })
    };
    if r == 0 || !groups.len().is_multiple_of(r) {
        return bad(format!(
            "{} group members do not form groups of r={r}",
            groups.len()
        ));
    }
    let mut seen = vec![false; n];
    for &m in groups {
        let m = m as usize;
        if m >= n {
            return bad(format!("group member {m} is out of range for n={n} inputs"));
        }
        if seen[m] {
            return bad(format!("input {m} appears in more than one group slot"));
        }
        seen[m] = true;
    }
    if segments.len() < 2
        || segments[0] != 0
        || *segments.last().unwrap() != d
        || segments.windows(2).any(|w| w[0] > w[1])
    {
        return bad(format!(
            "segments must be increasing offsets from 0 to d={d}, got {segments:?}"
        ));
    }
    Ok(())
}

/// The vote of every group (see the module docs).
pub fn vote<T: Float>(
    rows: &Rows<T>,
    groups: &[u32],
    r: usize,
    segments: &[usize],
    mode: Vote,
) -> Result<VoteResult, AggError> {
    check(rows.n(), rows.d(), groups, r, segments)?;
    let nseg = segments.len() - 1;
    let g = groups.len() / r;
    let mut winners = vec![NO_WINNER; g * nseg];
    let mut agree = vec![true; g * r];
    let need = r / 2 + 1;
    let run = || {
        winners
            .par_chunks_mut(nseg)
            .zip(agree.par_chunks_mut(r))
            .enumerate()
            .for_each(|(gi, (win, agr))| {
                let members = &groups[gi * r..(gi + 1) * r];
                for s in 0..nseg {
                    let (lo, hi) = (segments[s], segments[s + 1]);
                    let seg = |m: usize| &rows.row(members[m] as usize)[lo..hi];
                    let w = match mode {
                        // A member equal (==) to another holds no NaN, so only r = 1 needs an
                        // explicit NaN check (a member must equal itself to count).
                        Vote::Exact if need == 1 => (0..r).find(|&m| equal(seg(m), seg(m))),
                        Vote::Exact => {
                            let hashes: Option<Vec<u64>> =
                                (r > DIRECT_MAX_R).then(|| (0..r).map(|m| hash(seg(m))).collect());
                            (0..r).find(|&m| {
                                let mut count = 1;
                                for j in (0..r).filter(|&j| j != m) {
                                    let maybe = hashes.as_ref().is_none_or(|h| h[j] == h[m]);
                                    if maybe && equal(seg(j), seg(m)) {
                                        count += 1;
                                        if count >= need {
                                            return true;
                                        }
                                    }
                                }
                                false
                            })
                        }
                        Vote::Approx { atol, rtol } => (0..r).find(|&m| {
                            (0..r)
                                .filter(|&j| j != m && close(seg(j), seg(m), atol, rtol))
                                .count()
                                >= need - 1
                        }),
                        Vote::Reference => {
                            let (mut cand, mut count) = (0usize, 0usize);
                            for m in 0..r {
                                if count == 0 {
                                    (cand, count) = (m, 1);
                                } else if equal(seg(m), seg(cand)) {
                                    count += 1;
                                } else {
                                    count -= 1;
                                }
                            }
                            Some(cand)
                        }
                    };
                    if let Some(w) = w {
                        win[s] = members[w];
                        for (m, a) in agr.iter_mut().enumerate() {
                            let same = match mode {
                                Vote::Approx { atol, rtol } => close(seg(m), seg(w), atol, rtol),
                                _ => m == w || equal(seg(m), seg(w)),
                            };
                            *a &= same;
                        }
                    }
                }
            })
    };
    pool::install(run);
    Ok(VoteResult { winners, agree })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(data: &[f64], d: usize) -> Rows<'_, f64> {
        Rows::from_matrix(NAME, data, data.len() / d, d).unwrap()
    }

    #[test]
    fn exact_vote_and_agreement() {
        // Group 0: rows 0, 1, 2 (0 and 2 agree); group 1: rows 3, 4, 5 (all differ).
        let data = [
            1.0, 2.0, 9.0, 9.0, 1.0, 2.0, //
            5.0, 5.0, 6.0, 6.0, 7.0, 7.0,
        ];
        let x = rows(&data, 2);
        let v = vote(&x, &[0, 1, 2, 3, 4, 5], 3, &[0, 2], Vote::Exact).unwrap();
        assert_eq!(v.winners, vec![0, NO_WINNER]);
        assert_eq!(v.agree, vec![true, false, true, true, true, true]);
        // The reference's Boyer-Moore without verification: group 0's candidate trace is
        // row 0, cancelled by row 1, then row 2 (same value as row 0); group 1 ends on its last.
        let v = vote(&x, &[0, 1, 2, 3, 4, 5], 3, &[0, 2], Vote::Reference).unwrap();
        assert_eq!(v.winners, vec![2, 5]);
    }

    #[test]
    fn signed_zero_nan_and_segments() {
        let data = [
            0.0,
            f64::NAN,
            -0.0,
            f64::NAN,
            0.0,
            1.0, //
        ];
        let x = rows(&data, 2);
        // Segment 0 (column 0): all equal (+0 == -0). Segment 1: NaN equals nothing.
        let v = vote(&x, &[0, 1, 2], 3, &[0, 1, 2], Vote::Exact).unwrap();
        assert_eq!(v.winners, vec![0, NO_WINNER]);
        let v = vote(&x, &[0, 1, 2], 3, &[0, 2], Vote::Exact).unwrap();
        assert_eq!(v.winners, vec![NO_WINNER]);
    }

    #[test]
    fn hashed_path_for_large_groups_and_r1() {
        // r = 7: members 1, 3, 4, 6 share a value (a strict majority of 4); the others differ
        // only in the last coordinate, the case hashing exists for.
        let d = 9;
        let mut data = vec![0.0f64; 7 * d];
        for m in 0..7 {
            data[m * d + d - 1] = if [1, 3, 4, 6].contains(&m) {
                5.0
            } else {
                10.0 + m as f64
            };
        }
        let x = rows(&data, d);
        let v = vote(&x, &[0, 1, 2, 3, 4, 5, 6], 7, &[0, d], Vote::Exact).unwrap();
        assert_eq!(v.winners, vec![1]);
        assert_eq!(v.agree, vec![false, true, false, true, true, false, true]);
        // r = 1: the member wins unless it holds a NaN.
        let data = [1.0, f64::NAN];
        let x = rows(&data, 1);
        let v = vote(&x, &[0, 1], 1, &[0, 1], Vote::Exact).unwrap();
        assert_eq!(v.winners, vec![0, NO_WINNER]);
    }

    #[test]
    fn approx_vote() {
        let data = [1.0, 1.0 + 1e-9, 5.0];
        let x = rows(&data, 1);
        assert_eq!(
            vote(&x, &[0, 1, 2], 3, &[0, 1], Vote::Exact)
                .unwrap()
                .winners,
            vec![NO_WINNER]
        );
        let v = vote(
            &x,
            &[0, 1, 2],
            3,
            &[0, 1],
            Vote::Approx {
                atol: 1e-6,
                rtol: 0.0,
            },
        )
        .unwrap();
        assert_eq!(v.winners, vec![0]);
        assert_eq!(v.agree, vec![true, true, false]);
    }

    #[test]
    fn validation() {
        let data = [1.0, 2.0, 3.0];
        let x = rows(&data, 1);
        let err =
            |g: &[u32], r, s: &[usize]| vote(&x, g, r, s, Vote::Exact).err().unwrap().to_string();
        assert!(err(&[0, 1], 3, &[0, 1]).contains("groups of r=3"));
        assert!(err(&[0, 1, 7], 3, &[0, 1]).contains("out of range"));
        assert!(err(&[0, 1, 1], 3, &[0, 1]).contains("more than one"));
        assert!(err(&[0, 1, 2], 3, &[0, 2]).contains("segments"));
    }
}

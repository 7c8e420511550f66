//! FoolsGold's pass over the round: each client's history plus its update, in float64, with the
//! largest magnitude of each new history (the power of two its cosines are scaled by; see
//! [`crate::distance::ScaledRows`]).

use rayon::prelude::*;

use crate::input::Rows;
use crate::order::Float;
use crate::pool;
use crate::rules::preagg::TILE;

pub const NAME: &str = "foolsgold";

/// `out[i] = history[i] + scales[i] * x[i]` for the rows with `active[i]` and
/// `out[i] = history[i]` for the others, in float64 (the product rounded, then the sum, as
/// numpy's `h += s * x`); a missing history row is zeros. `out` is `n × d`, row-major, zeroed.
///
/// Returns per row the largest magnitude of `out[i]` for active rows (NaN where it holds NaN
/// or ±inf, an overflowed sum included) and 0 for the others. One task per tile of one row,
/// so the result does not depend on the thread count.
pub fn add_to_history<T: Float>(
    x: &Rows<'_, T>,
    scales: &[f64],
    active: &[bool],
    history: &[Option<&[f64]>],
    out: &mut [f64],
) -> Vec<f64> {
    let (n, d) = (x.n(), x.d());
    assert!(scales.len() == n && active.len() == n && history.len() == n);
    assert_eq!(out.len(), n * d);
    assert!(history.iter().flatten().all(|h| h.len() == d));
    if d == 0 {
        return vec![0.0; n];
    }
    let tiles = d.div_ceil(TILE);
    let mut parts: Vec<(usize, &mut [f64])> = out
        .chunks_mut(d)
        .flat_map(|r| r.chunks_mut(TILE))
        .enumerate()
        .collect();
    let task = |(k, o): &mut (usize, &mut [f64])| -> f64 {
        let (i, j0) = (*k / tiles, (*k % tiles) * TILE);
        let w = o.len();
        let h = history[i].map(|h| &h[j0..j0 + w]);
        if !active[i] {
            if let Some(h) = h {
                o.copy_from_slice(h);
            }
            return 0.0;
        }
        let (s, src) = (scales[i], &x.row(i)[j0..j0 + w]);
        match h {
            Some(h) => {
                for ((ov, &hv), &v) in o.iter_mut().zip(h).zip(src) {
                    *ov = hv + s * v.to_f64();
                }
            }
            None => {
                for (ov, &v) in o.iter_mut().zip(src) {
                    *ov = 0.0 + s * v.to_f64();
                }
            }
        }
        top(o)
    };
    let tops: Vec<f64> = if !pool::split(n * d) {
        parts.iter_mut().map(task).collect()
    } else {
        pool::install(|| parts.par_iter_mut().map(task).collect())
    };
    tops.chunks(tiles)
        .map(|t| {
            t.iter().fold(0.0f64, |a, &b| {
                if a.is_nan() || b.is_nan() {
                    f64::NAN
                } else {
                    a.max(b)
                }
            })
        })
        .collect()
}

/// The largest magnitude of `v`, NaN if it holds NaN or ±inf (8 lanes, vectorised: `v * 0` is
/// 0 for a finite value and NaN otherwise).
fn top(v: &[f64]) -> f64 {
    let (mut m, mut bad) = ([0.0f64; 8], [0.0f64; 8]);
    let vc = v.chunks_exact(8);
    let rest = vc.remainder();
    for p in vc {
        for l in 0..8 {
            m[l] = m[l].max(p[l].abs());
            bad[l] += p[l] * 0.0;
        }
    }
    for (l, &p) in rest.iter().enumerate() {
        m[l] = m[l].max(p.abs());
        bad[l] += p * 0.0;
    }
    if bad.iter().any(|b| *b != 0.0) {
        return f64::NAN;
    }
    m.iter().fold(0.0f64, |a, &b| a.max(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distance::{pairwise_sq_dists_scaled, ScaledRows};
    use crate::testing::rows;

    #[test]
    fn history_update_and_scaled_distances() {
        let data = [
            vec![1.0f32, -2.0, 3.0],
            vec![f32::NAN, 0.0, 0.0],
            vec![-0.0, 0.0, 4.0],
        ];
        let x = rows(&data);
        let h0 = [1e308, 1e308, 0.0];
        let h1 = [5.0, 6.0, 7.0];
        let history = [Some(&h0[..]), Some(&h1[..]), None];
        let mut out = vec![0.0; 9];
        let tops = add_to_history(
            &x,
            &[1.0, 1.0, 0.5],
            &[true, false, true],
            &history,
            &mut out,
        );
        assert_eq!(&out[3..6], &h1);
        assert_eq!(out[6..], [0.0, 0.0, 2.0]);
        assert!(
            out[6].is_sign_positive(),
            "0 + -0.0 is +0.0, as numpy's h += x"
        );
        assert_eq!(tops[1], 0.0);
        assert_eq!(tops[2], 2.0);
        assert_eq!(tops[0], 1e308 + 1.0);
        let mut over = vec![0.0; 9];
        let big_data = [vec![f64::MAX; 3], vec![0.0; 3], vec![0.0; 3]];
        let big = rows(&big_data);
        let h2 = [f64::MAX, 0.0, 0.0];
        let hist = [Some(&h2[..]), None, None];
        let t = add_to_history(&big, &[1.0; 3], &[true; 3], &hist, &mut over);
        assert!(t[0].is_nan(), "an overflowed history is flagged");
        assert_eq!(t[1], 0.0);

        // Scaled rows: every magnitude gives the same distances once scaled.
        for k in [-1030, -600, 0, 600, 1000] {
            let scale = crate::distance::exp2(k);
            let a: Vec<f64> = [3.0, 4.0, 0.0].iter().map(|v| v * scale).collect();
            let b: Vec<f64> = [0.0, 4.0, 3.0].iter().map(|v| v * scale).collect();
            let e = |r: &[f64]| {
                let m = r.iter().fold(0.0f64, |a, v| a.max(v.abs()));
                libm_frexp(m)
            };
            let src = ScaledRows::new(vec![Some(&a), Some(&b), None], &[e(&a), e(&b), 0], 3);
            let dm = pairwise_sq_dists_scaled(&src).unwrap();
            let norms = src.norms();
            // both rows scaled by 2^-3 (max 4 in [4, 8)): norm 5/8, distance^2 18/64
            let rel = |v: f64, w: f64| ((v - w) / w).abs();
            assert!(
                rel(norms[0], 0.625) < 1e-15 && rel(norms[1], 0.625) < 1e-15,
                "{k} {norms:?}"
            );
            assert!(rel(dm[1], 18.0 / 64.0) < 1e-15, "{k} {dm:?}");
            assert_eq!(norms[2], 0.0);
            assert!(rel(dm[2], 25.0 / 64.0) < 1e-15, "{k} {dm:?}");
        }
    }

    /// `frexp`'s exponent of a positive finite `v`.
    fn libm_frexp(v: f64) -> i32 {
        let mut e = 0;
        let mut m = v;
        while m >= 1.0 {
            m /= 2.0;
            e += 1;
        }
        while m < 0.5 {
            m *= 2.0;
            e -= 1;
        }
        e
    }
}

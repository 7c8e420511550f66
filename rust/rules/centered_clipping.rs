//! Centered clipping (Karimireddy, He, Jaggi, ICML 2021; byzfl `CenteredClipping(m, L, tau)`).
//!
//! From a centre `v_0` (the previous round's aggregate; zero by default), `iters` times:
//! `v <- v + (1/n) Σ_i (x_i - v) · min(1, tau / ||x_i - v||)`. A zero distance is taken as
//! the smallest normal positive float64, so `tau = 0` returns the centre instead of 0/0.
//!
//! The centre and every update are float64; distances are one task per row, each coordinate of
//! the update one task summing rows in index order: the result does not depend on the thread
//! count. `Robust` drops the inputs holding NaN or ±inf (they count against `f`), `Propagate`
//! lets NaN reach the output.

use rayon::prelude::*;

use crate::distance::{dists_to, exp2, wide_dist};
use crate::error::AggError;
use crate::input::{NonFinite, Rows};
use crate::order::Float;
use crate::pool;

pub const NAME: &str = "centered_clipping";

/// Coordinates per task of the update.
const TILE: usize = 4096;

/// What [`centered_clipping`] reports besides the output.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CcInfo {
    /// The inputs dropped under `Robust`.
    pub dropped: Vec<usize>,
    /// Each input's clipping factor `min(1, tau / ||x_i - v||)` in the last iteration (0 for
    /// dropped inputs; all 1 with `iters = 0`).
    pub scales: Vec<f64>,
}

fn bad(message: String) -> AggError {
    AggError::InvalidParameter {
        rule: NAME,
        message,
    }
}

/// Centered clipping of `x` from `center` (zeros if `None`) into `out`.
pub fn centered_clipping<T: Float>(
    x: &Rows<'_, T>,
    center: Option<&[f64]>,
    tau: f64,
    iters: usize,
    policy: NonFinite,
    out: &mut [T],
) -> Result<CcInfo, AggError> {
    let (n, d) = (x.n(), x.d());
    assert_eq!(out.len(), d);
    if !(tau.is_finite() && tau >= 0.0) {
        return Err(bad(format!("tau must be finite and >= 0, got tau={tau}")));
    }
    let mut v: Vec<f64> = match center {
        Some(c) if c.len() != d => {
            return Err(bad(format!(
                "the center must have the inputs' size: got {} values for d={d}",
                c.len()
            )))
        }
        Some(c) if !c.iter().all(|v| v.is_finite()) => {
            return Err(bad("the center must be finite".to_string()))
        }
        Some(c) => c.to_vec(),
        None => crate::alloc::zeroed(d)?,
    };
    x.check_policy(NAME, policy)?;
    let keep = x.kept_rows(NAME, policy)?;
    let sub = Rows::new(NAME, keep.iter().map(|&i| x.row(i)).collect())?;
    let mut s = vec![1.0; keep.len()];
    // Rows clipped at a distance whose float64 squares overflow: `(2^-e, m)` (`wide_dist`).
    let mut far: Vec<Option<(f64, f64)>> = vec![None; keep.len()];
    let count = keep.len() as f64;
    for _ in 0..iters {
        crate::interrupt::check()?;
        let dist = dists_to(&sub, &v);
        for (k, (si, di)) in s.iter_mut().zip(&dist).enumerate() {
            far[k] = None;
            *si = if di.is_nan() {
                f64::NAN
            } else if di.is_infinite() && crate::input::all_finite(sub.row(k)) {
                // ||x - v|| = 2^(e+1) m: when it is no more than tau the row is not clipped
                // (and x - v does not overflow: it is at most tau).
                let (e, m) = wide_dist(sub.row(k), &v);
                let dist = m * exp2(e + 1);
                if dist <= tau {
                    1.0
                } else {
                    far[k] = Some((exp2(-e), m));
                    tau * exp2(-e - 1) / m
                }
            } else {
                (tau / di.max(f64::MIN_POSITIVE)).min(1.0)
            };
        }
        let rows = sub.rows();
        let update = |(t, vt): (usize, &mut [f64])| {
            let j0 = t * TILE;
            let mut acc = vec![0.0f64; vt.len()];
            for ((r, &si), fk) in rows.iter().zip(&s).zip(&far) {
                let r = &r[j0..j0 + vt.len()];
                if let Some((p, m)) = *fk {
                    // (x - v) s = ((x/2 - v/2) 2^-e / m) tau: the first factor is a component
                    // of a unit vector, so neither it nor the product (at most tau) overflows.
                    for ((a, &xv), &c) in acc.iter_mut().zip(r).zip(vt.iter()) {
                        *a += ((xv.to_f64() * 0.5 - c * 0.5) * p / m) * tau;
                    }
                    continue;
                }
                for ((a, &xv), &c) in acc.iter_mut().zip(r).zip(vt.iter()) {
                    *a += (xv.to_f64() - c) * si;
                }
            }
            for (j, (c, a)) in vt.iter_mut().zip(&acc).enumerate() {
                if a.is_finite() {
                    *c += a / count;
                    continue;
                }
                // The moves (each at most tau, and finite) overflowed their sum: tau near
                // f64::MAX. Add each move divided by the count instead (rare).
                let mut w = 0.0f64;
                for ((r, &si), fk) in rows.iter().zip(&s).zip(&far) {
                    let xv = r[j0 + j].to_f64();
                    let step = match *fk {
                        Some((p, m)) => ((xv * 0.5 - *c * 0.5) * p / m) * tau,
                        None => (xv - *c) * si,
                    };
                    w += step / count;
                }
                *c += w;
            }
        };
        if !crate::pool::split(n * d) {
            v.chunks_mut(TILE).enumerate().for_each(update);
        } else {
            pool::install(|| v.par_chunks_mut(TILE).enumerate().for_each(update));
        }
    }
    for (o, &c) in out.iter_mut().zip(&v) {
        *o = T::from_f64(c);
    }
    let mut scales = vec![0.0; n];
    for (k, &i) in keep.iter().enumerate() {
        scales[i] = s[k];
    }
    let mut kept = vec![false; n];
    keep.iter().for_each(|&i| kept[i] = true);
    let dropped = (0..n).filter(|&i| !kept[i]).collect();
    Ok(CcInfo { dropped, scales })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(data: &[f64], d: usize, tau: f64, iters: usize) -> Vec<f64> {
        let x = Rows::from_matrix(NAME, data, data.len() / d, d).unwrap();
        let mut out = vec![0.0; d];
        centered_clipping(&x, None, tau, iters, NonFinite::Robust, &mut out).unwrap();
        out
    }

    #[test]
    fn large_tau_is_the_mean_and_zero_tau_the_center() {
        let data = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0];
        let y = cc(&data, 3, 1e9, 1);
        assert_eq!(y, vec![4.0, 5.0, 6.0]);
        assert_eq!(cc(&data, 3, 0.0, 3), vec![0.0, 0.0, 0.0]);
        assert_eq!(cc(&data, 3, 5.0, 0), vec![0.0, 0.0, 0.0]);
    }

    #[test]
    fn one_step_by_hand() {
        // rows (3, 4) and (0, 0) from 0, tau = 1: (3,4) -> (0.6, 0.8); mean (0.3, 0.4).
        let y = cc(&[3.0, 4.0, 0.0, 0.0], 2, 1.0, 1);
        assert!((y[0] - 0.3).abs() < 1e-15 && (y[1] - 0.4).abs() < 1e-15);
    }

    #[test]
    fn rows_beyond_float64s_norm_are_clipped_not_dropped() {
        // A row of 1e308s is ~1.7e308 * sqrt(3) from the centre, beyond float64: it must still
        // move the centre by tau / n in its direction, exactly as a finite-norm row would.
        let big = cc(&[1e308, 1e308, 1e308, 0.0, 0.0, 0.0], 3, 3.0f64.sqrt(), 1);
        let small = cc(&[1e3, 1e3, 1e3, 0.0, 0.0, 0.0], 3, 3.0f64.sqrt(), 1);
        for (a, b) in big.iter().zip(&small) {
            assert!(
                (a - 0.5).abs() < 1e-15 && (b - 0.5).abs() < 1e-15,
                "{a} {b}"
            );
        }
    }

    #[test]
    fn nonfinite_rows_are_dropped() {
        let y = cc(&[1.0, f64::NAN, 3.0, 3.0], 2, 1e9, 1);
        assert_eq!(y, vec![3.0, 3.0]);
    }
}

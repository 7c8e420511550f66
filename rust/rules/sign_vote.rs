//! signSGD's majority vote of signs (Bernstein, Zhao, Azizzadenesheli, Anandkumar, ICLR 2019).
//!
//! Every output value is computed by one task over the rows in order, so results do not depend
//! on the thread count.

use rayon::prelude::*;

use crate::input::Rows;
use crate::order::Float;
use crate::pool;
use crate::rules::preagg::TILE;

pub const NAME: &str = "sign_vote";

/// signSGD's majority vote: `out_j = sign(Σ_i sign(x_ij))` (`sign(0) = 0`, so a tied vote or
/// zeros give 0). NaN has no sign: under `propagate` a coordinate holding a NaN is NaN,
/// otherwise a NaN abstains (it is the caller's policy to refuse it first).
pub fn sign_vote<T: Float>(x: &Rows<'_, T>, propagate: bool, out: &mut [T]) {
    let d = x.d();
    assert_eq!(out.len(), d);
    let task = |(t, o): (usize, &mut [T])| {
        let (j0, w) = (t * TILE, o.len());
        // i32 votes (n < 2^31 inputs) compared in the input type: no conversions, so the row
        // loop vectorizes.
        let mut count = vec![0i32; w];
        for r in x.rows() {
            for (c, &v) in count.iter_mut().zip(&r[j0..j0 + w]) {
                *c += (v > T::ZERO) as i32 - (v < T::ZERO) as i32;
            }
        }
        for (ov, &c) in o.iter_mut().zip(&count) {
            *ov = T::from_f64(c.signum() as f64);
        }
        if propagate {
            for r in x.rows() {
                for (ov, v) in o.iter_mut().zip(&r[j0..j0 + w]) {
                    if v.is_nan() {
                        *ov = T::NAN;
                    }
                }
            }
        }
    };
    if !crate::pool::split(x.n() * d) {
        out.chunks_mut(TILE).enumerate().for_each(task);
    } else {
        pool::install(|| out.par_chunks_mut(TILE).enumerate().for_each(task));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::rows;

    #[test]
    fn votes() {
        let data = vec![vec![1.0f64, -2.0], vec![3.0, 0.0], vec![5.0, 2.0]];
        let mut v = vec![0.0; 2];
        sign_vote(&rows(&data), false, &mut v);
        assert_eq!(v, vec![1.0, 0.0]);
    }
}

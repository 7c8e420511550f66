//! Geometric median by smoothed Weiszfeld iterations (RFA: Pillutla, Kakade, Harchaoui 2022).
//!
//! `z* = argmin_z Σ_i α_i ||z - x_i||`. Each iteration reweights the inputs by
//! `w_i = α_i / max(nu, ||z - x_i||)` and sets `z` to their weighted mean ([`mean::mean`]:
//! float64 accumulation in row order), until the objective changes by at most `ftol` relative,
//! or `maxiter` iterations. Distances are direct differences accumulated in float64, one task
//! per row, so the result is bit-identical for any thread count. The final `z` is exactly the
//! weighted mean of the inputs with the returned weights, which is what the torch backward
//! uses (gradient `w_i / Σ w` to input `i`, the "frozen weights" mode of docs/algorithms.md).
//!
//! Non-finite inputs: `Robust` drops rows holding NaN or ±inf (the geometric median's
//! breakdown point is 1/2, so they count as outliers), `Raise` refuses them, `Propagate`
//! keeps them (IEEE arithmetic: NaN spreads).

use rayon::prelude::*;

use crate::columns::ColumnsOut;
use crate::distance::{exp2, wide_dist};
use crate::error::AggError;
use crate::input::{NonFinite, Rows};
use crate::order::Float;
use crate::pool;
use crate::rules::mean;
use crate::rules::median::{self, Even};

pub const NAME: &str = "geometric_median";

/// Where the iterations start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// The (weighted) mean, as the RFA author's `geom_median`.
    Mean,
    /// The coordinate-wise median: a robust start (fewer iterations when outliers are far).
    Median,
    /// The zero vector, as byzfl (for parity tests).
    Zero,
}

impl Init {
    pub const NAMES: [&'static str; 3] = ["mean", "median", "zero"];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "mean" => Some(Init::Mean),
            "median" => Some(Init::Median),
            "zero" => Some(Init::Zero),
            _ => None,
        }
    }
}

/// What the iterations did.
#[derive(Debug, Clone, PartialEq)]
pub struct GmInfo {
    /// Weiszfeld updates made.
    pub iterations: usize,
    /// Whether the objective's relative change fell to `ftol` or below.
    pub converged: bool,
    /// `Σ_i α_i ||z - x_i||` at the returned `z` (finite inputs only under `Robust`).
    pub objective: f64,
    /// Per input, the weight the returned `z` averages it with (0 for dropped inputs).
    pub weights: Vec<f64>,
}

fn bad(message: String) -> AggError {
    AggError::InvalidParameter {
        rule: NAME,
        message,
    }
}

/// A distance `||z - x_i||` as float64, and as `(e, m)` ([`wide_dist`]) where the float64 sum of
/// squares overflowed though both vectors are finite (the distance itself may still fit).
#[derive(Clone, Copy)]
struct Dist {
    value: f64,
    wide: Option<(i32, f64)>,
}

impl Dist {
    /// `2^-k alpha / max(nu, ||z - x_i||)`, the Weiszfeld weight (`k = 0`); it exists (tiny,
    /// not 0) for a distance beyond float64's range. `k > 0` when `alpha / nu` overflows.
    fn weight(self, alpha: f64, nu: f64, k: i32) -> f64 {
        match self.wide {
            Some((e, m)) if self.value.is_infinite() => (alpha / m) * exp2(-e - 1 - k),
            _ if k == 0 => alpha / self.value.max(nu),
            _ => alpha / (self.value.max(nu) * exp2(k)),
        }
    }
}

/// Distances `||z - x_i||` (float64, one task per row) and the objective `Σ α_i d_i`.
fn distances<T: Float>(x: &Rows<'_, T>, z: &[T], alpha: &[f64]) -> (Vec<Dist>, f64) {
    let z_finite = crate::input::all_finite(z);
    let d: Vec<Dist> = pool::install(|| {
        x.rows()
            .par_iter()
            .map(|r| {
                let value = r
                    .iter()
                    .zip(z)
                    .map(|(a, b)| {
                        let t = a.to_f64() - b.to_f64();
                        t * t
                    })
                    .sum::<f64>()
                    .sqrt();
                if value.is_infinite() && z_finite && crate::input::all_finite(r) {
                    let (e, m) = wide_dist(r, z);
                    return Dist {
                        value: m * exp2(e + 1),
                        wide: Some((e, m)),
                    };
                }
                Dist { value, wide: None }
            })
            .collect()
    });
    let f = d.iter().zip(alpha).map(|(d, a)| a * d.value).sum();
    (d, f)
}

/// The geometric median of `x` (weights `alpha`, default uniform) into `out`.
#[allow(clippy::too_many_arguments)]
pub fn geometric_median<T: Float>(
    x: &Rows<'_, T>,
    alpha: Option<&[f64]>,
    nu: f64,
    maxiter: usize,
    ftol: f64,
    init: Init,
    policy: NonFinite,
    out: &mut [T],
) -> Result<GmInfo, AggError> {
    let n = x.n();
    assert_eq!(out.len(), x.d());
    if !(nu.is_finite() && nu > 0.0) {
        return Err(bad(format!("nu must be finite and > 0, got nu={nu}")));
    }
    if maxiter == 0 {
        return Err(bad(
            "maxiter must be >= 1 (the output is a Weiszfeld update)".to_string(),
        ));
    }
    if !(ftol.is_finite() && ftol >= 0.0) {
        return Err(bad(format!(
            "ftol must be finite and >= 0, got ftol={ftol}"
        )));
    }
    let alpha: Vec<f64> = match alpha {
        Some(a) => {
            if a.len() != n {
                return Err(bad(format!(
                    "weights must have one entry per input: got {} weights for n={n}",
                    a.len()
                )));
            }
            if let Some((i, v)) = a
                .iter()
                .enumerate()
                .find(|(_, v)| !(v.is_finite() && **v >= 0.0))
            {
                return Err(bad(format!(
                    "weights must be finite and >= 0, got weights[{i}]={v}"
                )));
            }
            a.to_vec()
        }
        None => vec![1.0; n],
    };
    x.check_policy(NAME, policy)?;
    // Under Robust, work on the finite rows only (and their weights).
    let keep = x.kept_rows(NAME, policy)?;
    let sub = Rows::new(NAME, keep.iter().map(|&i| x.row(i)).collect())?;
    let a: Vec<f64> = keep.iter().map(|&i| alpha[i]).collect();
    if a.iter().sum::<f64>() <= 0.0 {
        return Err(bad("the weights of the inputs sum to 0".to_string()));
    }
    let mut w = a.clone();
    match init {
        Init::Mean => {
            mean::mean(&sub, Some(&a), NonFinite::Propagate, out)?;
        }
        Init::Median => {
            median::median(&sub, Even::Mean, NonFinite::Propagate, ColumnsOut::new(out))?
        }
        Init::Zero => out.iter_mut().for_each(|v| *v = T::ZERO),
    }
    let (mut dist, mut objective) = distances(&sub, out, &a);
    let (mut iterations, mut converged) = (0, false);
    while iterations < maxiter {
        crate::interrupt::check()?;
        for ((wi, ai), di) in w.iter_mut().zip(&a).zip(&dist) {
            *wi = di.weight(*ai, nu, 0);
        }
        if w.iter().any(|v| v.is_infinite()) {
            // alpha / nu beyond float64 (a tiny nu): only the weights' ratios matter, so take
            // them all 2^-1000 times smaller (a weight that then underflows was below 2^-53 of
            // the largest, nothing in the weighted sum).
            for ((wi, ai), di) in w.iter_mut().zip(&a).zip(&dist) {
                *wi = di.weight(*ai, nu, 1000);
            }
        }
        mean::mean(&sub, Some(&w), NonFinite::Propagate, out)?;
        iterations += 1;
        let (d2, f2) = distances(&sub, out, &a);
        let change = (objective - f2).abs();
        (dist, objective) = (d2, f2);
        if change <= ftol * f2 {
            converged = true;
            break;
        }
    }
    let mut weights = vec![0.0; n];
    for (k, &i) in keep.iter().enumerate() {
        weights[i] = w[k];
    }
    Ok(GmInfo {
        iterations,
        converged,
        objective,
        weights,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gm(data: &[f64], d: usize, init: Init) -> (Vec<f64>, GmInfo) {
        let x = Rows::from_matrix(NAME, data, data.len() / d, d).unwrap();
        let mut out = vec![0.0; d];
        let info = geometric_median(
            &x,
            None,
            1e-6,
            1000,
            1e-15,
            init,
            NonFinite::Robust,
            &mut out,
        )
        .unwrap();
        (out, info)
    }

    #[test]
    fn spec_oracle_and_byzfl_defaults() {
        // docs/algorithms.md, geometric median oracle: the true geometric median of these three points is [4, 5, 6].
        let data = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0];
        let (z, info) = gm(&data, 3, Init::Mean);
        assert!(info.converged);
        for (a, b) in z.iter().zip([4.0, 5.0, 6.0]) {
            assert!((a - b).abs() < 1e-6, "{z:?}");
        }
        // byzfl's defaults (zero start, nu = 0.1, 3 iterations) stop far from it.
        let x = Rows::from_matrix(NAME, &data, 3, 3).unwrap();
        let mut out = vec![0.0; 3];
        let info = geometric_median(
            &x,
            None,
            0.1,
            3,
            0.0,
            Init::Zero,
            NonFinite::Robust,
            &mut out,
        )
        .unwrap();
        assert_eq!(info.iterations, 3);
        for (a, b) in out.iter().zip([3.7879, 4.7879, 5.7879]) {
            assert!((a - b).abs() < 1e-4, "{out:?}");
        }
    }

    #[test]
    fn robust_to_a_far_outlier_and_drops_nonfinite() {
        let data = [
            0.0,
            0.0,
            1.0,
            0.0,
            0.0,
            1.0,
            1.0,
            1.0,
            1e9,
            1e9,
            f64::NAN,
            0.0,
        ];
        let (z, info) = gm(&data, 2, Init::Median);
        assert!(z.iter().all(|v| v.abs() < 2.0), "{z:?}");
        assert_eq!(info.weights[5], 0.0); // the NaN row is dropped
        assert!(info.weights[4] < 1e-6); // the far row barely counts
    }
}

//! `rules/geometric_median.rs` for Python.

use numpy::PyReadonlyArray1;
use pyo3::prelude::*;

use super::convert::{array, dispatch, weights, Matrix, Out};
use super::run;
use crate::input::NonFinite;
use crate::rules::geometric_median::{self as core, Init};

/// Geometric median (smoothed Weiszfeld): values, iterations, converged, objective, weights.
#[pyfunction]
#[pyo3(signature = (x, weights, nu, maxiter, ftol, init, nonfinite))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn geometric_median(
    py: Python<'_>,
    x: Matrix<'_>,
    weights: Option<PyReadonlyArray1<'_, f64>>,
    nu: f64,
    maxiter: usize,
    ftol: f64,
    init: Init,
    nonfinite: NonFinite,
) -> PyResult<(Out, usize, bool, f64, Out)> {
    let w = self::weights(&weights)?;
    dispatch!(x.rows(core::NAME)?, r => {
        let (vals, info) = run(py, || {
            let mut out = crate::alloc::zeroed(r.d())?;
            let info = core::geometric_median(&r, w, nu, maxiter, ftol, init, nonfinite, &mut out)?;
            Ok((out, info))
        })?;
        Ok((array(py, vals), info.iterations, info.converged, info.objective, array(py, info.weights)))
    })
}

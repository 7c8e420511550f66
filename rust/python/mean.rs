//! `rules/mean.rs` for Python.

use numpy::PyReadonlyArray1;
use pyo3::prelude::*;

use super::convert::{array, dispatch, weights, AnyRows, Matrix, Out};
use super::run;
use crate::input::NonFinite;
use crate::rules::mean as core;

/// The (weighted) mean, and the inputs dropped as non-finite.
#[pyfunction]
#[pyo3(signature = (x, weights, nonfinite))]
pub(crate) fn mean(
    py: Python<'_>,
    x: Matrix<'_>,
    weights: Option<PyReadonlyArray1<'_, f64>>,
    nonfinite: NonFinite,
) -> PyResult<(Out, Vec<usize>)> {
    let w = self::weights(&weights)?;
    match x.rows(core::NAME)? {
        AnyRows::Half(h) => {
            let (vals, info) = run(py, || {
                let mut out = crate::alloc::zeroed::<u16>(h.d())?;
                let info = core::mean_half(&h, w, nonfinite, &mut out)?;
                Ok((out, info))
            })?;
            Ok((array(py, vals), info.dropped))
        }
        rows => dispatch!(rows, r => {
            let (vals, info) = run(py, || {
                let mut out = crate::alloc::zeroed(r.d())?;
                let info = core::mean(&r, w, nonfinite, &mut out)?;
                Ok((out, info))
            })?;
            Ok((array(py, vals), info.dropped))
        }),
    }
}

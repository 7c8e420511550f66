//! `rules/centered_clipping.rs` for Python.

use numpy::PyReadonlyArray1;
use pyo3::prelude::*;

use super::convert::{array, contiguous, dispatch, Matrix, Out};
use super::run;
use crate::input::NonFinite;
use crate::rules::centered_clipping as core;

/// Centered clipping: values, dropped inputs, last clipping factors.
#[pyfunction]
#[pyo3(signature = (x, center, tau, iters, nonfinite))]
pub(crate) fn centered_clipping(
    py: Python<'_>,
    x: Matrix<'_>,
    center: Option<PyReadonlyArray1<'_, f64>>,
    tau: f64,
    iters: usize,
    nonfinite: NonFinite,
) -> PyResult<(Out, Vec<usize>, Out)> {
    let c = center
        .as_ref()
        .map(|c| contiguous("center", c))
        .transpose()?;
    dispatch!(x.rows(core::NAME)?, r => {
        let (vals, info) = run(py, || {
            let mut out = crate::alloc::zeroed(r.d())?;
            let info = core::centered_clipping(&r, c, tau, iters, nonfinite, &mut out)?;
            Ok((out, info))
        })?;
        Ok((array(py, vals), info.dropped, array(py, info.scales)))
    })
}

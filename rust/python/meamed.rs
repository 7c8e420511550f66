//! `rules/meamed.rs` for Python (also Bulyan's second stage).

use pyo3::prelude::*;

use super::convert::{columns, dispatch, Matrix, Out};
use crate::input::NonFinite;
use crate::rules::meamed as core;

/// Meamed with `f`, or (`keep` given) the mean of the `keep` values closest to the median.
#[pyfunction]
#[pyo3(signature = (x, f, keep, nonfinite, return_rows))]
pub(crate) fn meamed(
    py: Python<'_>,
    x: Matrix<'_>,
    f: usize,
    keep: Option<usize>,
    nonfinite: NonFinite,
    return_rows: bool,
) -> PyResult<(Out, Option<Out>, Option<Out>)> {
    dispatch!(x.rows(core::NAME)?, r => {
        let rr = &r;
        columns(py, r.d(), return_rows, move |out| match keep {
            None => core::meamed(rr, f, nonfinite, out),
            Some(k) => core::closest_to_median(rr, k, nonfinite, out, "bulyan"),
        })
    })
}

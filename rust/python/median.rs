//! `rules/median.rs` for Python: the median, its weighted form, and its backward.

use numpy::PyReadonlyArray1;
use pyo3::prelude::*;

use super::convert::{
    columns, contiguous, dispatch, fresh_matrix, half_out, no_rows_for_half, AnyRows, Matrix, Out,
};
use crate::columns::{grad, weighted};
use crate::input::NonFinite;
use crate::order::Float;
use crate::rules::median::{self as core, Even};

type ColumnsResult = PyResult<(Out, Option<Out>, Option<Out>)>;

/// The coordinate-wise median, and the rows of the middle values if asked for.
#[pyfunction]
#[pyo3(signature = (x, even, nonfinite, return_rows))]
pub(crate) fn median(
    py: Python<'_>,
    x: Matrix<'_>,
    even: Even,
    nonfinite: NonFinite,
    return_rows: bool,
) -> ColumnsResult {
    match x.rows(core::NAME)? {
        AnyRows::Half(h) => {
            no_rows_for_half(return_rows)?;
            let v = half_out(py, h.d(), |o| core::median_half(&h, even, nonfinite, o))?;
            Ok((v, None, None))
        }
        rows => dispatch!(rows, r => {
            let rr = &r;
            columns(py, r.d(), return_rows, move |out| core::median(rr, even, nonfinite, out))
        }),
    }
}

/// The weighted median, and the rows of the one or two values used if asked for.
#[pyfunction]
#[pyo3(signature = (x, weights, even, nonfinite, return_rows))]
pub(crate) fn weighted_median(
    py: Python<'_>,
    x: Matrix<'_>,
    weights: PyReadonlyArray1<'_, f64>,
    even: Even,
    nonfinite: NonFinite,
    return_rows: bool,
) -> ColumnsResult {
    let w = contiguous("weights", &weights)?;
    match x.rows(core::NAME)? {
        AnyRows::Half(h) => {
            no_rows_for_half(return_rows)?;
            let v = half_out(py, h.d(), |o| {
                weighted::weighted_median_half(&h, w, even, nonfinite, o)
            })?;
            Ok((v, None, None))
        }
        rows => dispatch!(rows, r => {
            let rr = &r;
            columns(py, r.d(), return_rows, move |out| weighted::weighted_median(rr, w, even, nonfinite, out))
        }),
    }
}

/// The `(n, d)` input gradient of the median from `g` and the middle rows.
#[pyfunction]
#[pyo3(signature = (n, lo, hi, g))]
pub(crate) fn median_backward(
    py: Python<'_>,
    n: usize,
    lo: PyReadonlyArray1<'_, u32>,
    hi: Option<PyReadonlyArray1<'_, u32>>,
    g: &Bound<'_, PyAny>,
) -> PyResult<Out> {
    fn go<T: Float + numpy::Element>(
        py: Python<'_>,
        n: usize,
        lo: &[u32],
        hi: Option<&[u32]>,
        g: &[T],
    ) -> PyResult<Out> {
        fresh_matrix(py, n, g.len(), |out| grad::route(n, lo, hi, g, out))
    }
    let lo = contiguous("lo", &lo)?;
    let hi = hi.as_ref().map(|h| contiguous("hi", h)).transpose()?;
    if let Ok(g) = g.extract::<PyReadonlyArray1<'_, f32>>() {
        go(py, n, lo, hi, contiguous("g", &g)?)
    } else {
        let g: PyReadonlyArray1<'_, f64> = g.extract()?;
        go(py, n, lo, hi, contiguous("g", &g)?)
    }
}

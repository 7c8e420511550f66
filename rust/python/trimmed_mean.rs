//! `rules/trimmed_mean.rs` for Python: the trimmed mean, its weighted form, and the backward
//! shared with meamed (gradient to a range of ranks).

use numpy::PyReadonlyArray1;
use pyo3::prelude::*;

use super::convert::{
    columns, contiguous, dispatch, fresh_matrix, half_out, no_rows_for_half, AnyRows, Matrix, Out,
};
use crate::columns::{grad, weighted};
use crate::input::{NonFinite, Rows};
use crate::order::Float;
use crate::rules::trimmed_mean as core;

type ColumnsResult = PyResult<(Out, Option<Out>, Option<Out>)>;

/// The coordinate-wise trimmed mean, and the rows of the lowest and highest kept values.
#[pyfunction]
#[pyo3(signature = (x, f, nonfinite, return_rows))]
pub(crate) fn trimmed_mean(
    py: Python<'_>,
    x: Matrix<'_>,
    f: usize,
    nonfinite: NonFinite,
    return_rows: bool,
) -> ColumnsResult {
    match x.rows(core::NAME)? {
        AnyRows::Half(h) => {
            no_rows_for_half(return_rows)?;
            let v = half_out(py, h.d(), |o| core::trimmed_mean_half(&h, f, nonfinite, o))?;
            Ok((v, None, None))
        }
        rows => dispatch!(rows, r => {
            let rr = &r;
            columns(py, r.d(), return_rows, move |out| core::trimmed_mean(rr, f, nonfinite, out))
        }),
    }
}

/// The weighted trimmed mean, and the rows of the lowest and highest value kept in part.
#[pyfunction]
#[pyo3(signature = (x, weights, f, nonfinite, return_rows))]
pub(crate) fn weighted_trimmed_mean(
    py: Python<'_>,
    x: Matrix<'_>,
    weights: PyReadonlyArray1<'_, f64>,
    f: usize,
    nonfinite: NonFinite,
    return_rows: bool,
) -> ColumnsResult {
    let w = contiguous("weights", &weights)?;
    match x.rows(core::NAME)? {
        AnyRows::Half(h) => {
            no_rows_for_half(return_rows)?;
            let v = half_out(py, h.d(), |o| {
                weighted::weighted_trimmed_mean_half(&h, w, f, nonfinite, o)
            })?;
            Ok((v, None, None))
        }
        rows => dispatch!(rows, r => {
            let rr = &r;
            columns(py, r.d(), return_rows, move |out| {
                weighted::weighted_trimmed_mean(rr, w, f, nonfinite, out)
            })
        }),
    }
}

/// `g / kept` at every kept `(row, coordinate)`: the trimmed mean's and meamed's backward.
#[pyfunction]
#[pyo3(signature = (x, lo, hi, g, kept))]
pub(crate) fn trimmed_mean_backward(
    py: Python<'_>,
    x: Matrix<'_>,
    lo: PyReadonlyArray1<'_, u32>,
    hi: PyReadonlyArray1<'_, u32>,
    g: &Bound<'_, PyAny>,
    kept: usize,
) -> PyResult<Out> {
    fn go<T: Float + numpy::Element>(
        py: Python<'_>,
        r: &Rows<'_, T>,
        lo: &[u32],
        hi: &[u32],
        g: &Bound<'_, PyAny>,
        kept: usize,
    ) -> PyResult<Out> {
        let g: PyReadonlyArray1<'_, T> = g.extract()?;
        let g = contiguous("g", &g)?;
        fresh_matrix(py, r.n(), r.d(), |out| grad::kept(r, lo, hi, g, kept, out))
    }
    let (lo, hi) = (contiguous("lo", &lo)?, contiguous("hi", &hi)?);
    dispatch!(x.rows("trimmed_mean_backward")?, r => go(py, &r, lo, hi, g, kept))
}

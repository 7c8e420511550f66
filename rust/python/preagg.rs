//! `rules/preagg.rs` for Python: the pre-aggregators' passes over the rows.

use pyo3::prelude::*;

use super::convert::{array, dispatch, fresh_matrix, Matrix, Out};
use super::{run, InvalidParameterError};
use crate::rules::preagg as core;

/// The Euclidean norm of each input (float64).
#[pyfunction]
pub(crate) fn row_norms(py: Python<'_>, x: Matrix<'_>) -> PyResult<Out> {
    dispatch!(x.rows("row_norms")?, r => {
        let v = run(py, || core::row_norms(&r))?;
        Ok(array(py, v))
    })
}

/// Means of groups of inputs (CSR `offsets` / `members`), as a `(groups, d)` array.
#[pyfunction]
pub(crate) fn group_means(
    py: Python<'_>,
    x: Matrix<'_>,
    offsets: Vec<usize>,
    members: Vec<usize>,
) -> PyResult<Out> {
    dispatch!(x.rows("group_means")?, r => {
        let g = offsets.len().saturating_sub(1);
        let (rr, o, m) = (&r, &offsets, &members);
        fresh_matrix(py, g, r.d(), move |out| core::group_means(rr, o, m, out))
    })
}

/// Each input scaled by its factor, as a `(n, d)` array.
#[pyfunction]
pub(crate) fn scale_rows(py: Python<'_>, x: Matrix<'_>, scales: Vec<f64>) -> PyResult<Out> {
    dispatch!(x.rows("scale_rows")?, r => {
        let (n, d) = (r.n(), r.d());
        if scales.len() != n {
            return Err(InvalidParameterError::new_err(format!(
                "scale_rows: {} scales for n={n}", scales.len()
            )));
        }
        let (rr, sc) = (&r, &scales);
        fresh_matrix(py, n, d, move |out| {
            core::scale_rows(rr, sc, out);
            Ok(())
        })
    })
}

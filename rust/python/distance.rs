//! `distance.rs` for Python: the exact distances the subset rules and pre-aggregators decide on.

use numpy::PyReadonlyArray1;
use pyo3::prelude::*;

use super::convert::{array, contiguous, dispatch, matrix, AnyRows, Matrix, Out};
use super::{run, ShapeError};
use crate::distance as core;

/// All pairwise squared distances as an `(n, n)` float64 array.
#[pyfunction]
pub(crate) fn pairwise_sq_distances(py: Python<'_>, x: Matrix<'_>) -> PyResult<Out> {
    match x.rows("pairwise_sq_distances")? {
        AnyRows::Half(h) => {
            let n = h.n();
            let dm = run(py, || core::pairwise_sq_dists_half(&h))?;
            matrix(py, dm, n, n)
        }
        rows => dispatch!(rows, r => {
            let n = r.n();
            let dm = run(py, || core::pairwise_sq_dists(&r))?;
            matrix(py, dm, n, n)
        }),
    }
}

/// Euclidean distances of each input to one float64 point.
#[pyfunction]
pub(crate) fn dists_to(
    py: Python<'_>,
    x: Matrix<'_>,
    z: PyReadonlyArray1<'_, f64>,
) -> PyResult<Out> {
    let z = contiguous("z", &z)?;
    dispatch!(x.rows("dists_to")?, r => {
        if z.len() != r.d() {
            return Err(ShapeError::new_err(format!(
                "the point has {} values, the inputs {}", z.len(), r.d()
            )));
        }
        let v = run(py, || Ok(core::dists_to(&r, z)))?;
        Ok(array(py, v))
    })
}

/// Per input: its dot product with the float64 point `z` and its norm, both of the input scaled
/// by `2^-e`, and `e` (the exponent of its largest magnitude); NaN for non-finite inputs.
#[pyfunction]
pub(crate) fn scaled_dots(
    py: Python<'_>,
    x: Matrix<'_>,
    z: PyReadonlyArray1<'_, f64>,
) -> PyResult<(Out, Out, Vec<i32>)> {
    let z = contiguous("z", &z)?;
    dispatch!(x.rows("scaled_dots")?, r => {
        if z.len() != r.d() {
            return Err(ShapeError::new_err(format!(
                "the point has {} values, the inputs {}", z.len(), r.d()
            )));
        }
        let (dots, norms, exps) = run(py, || Ok(core::scaled_dots(&r, z)))?;
        Ok((array(py, dots), array(py, norms), exps))
    })
}

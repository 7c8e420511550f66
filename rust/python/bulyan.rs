//! `rules/bulyan.rs` for Python: the iterated-Krum selection (the second stage is meamed's).

use numpy::PyReadonlyArray2;
use pyo3::prelude::*;

use super::convert::{array, square, Out};
use super::run;
use crate::rules::bulyan as core;

/// Bulyan's iterated-Krum selection (order chosen, scores) from a full distance matrix.
#[pyfunction]
pub(crate) fn bulyan_select(
    py: Python<'_>,
    dist: PyReadonlyArray2<'_, f64>,
    f: usize,
    clamp: bool,
) -> PyResult<(Vec<usize>, Out)> {
    let (n, dm) = square("bulyan", &dist)?;
    let (sel, scores) = run(py, || core::bulyan_select(dm, n, f, clamp))?;
    Ok((sel, array(py, scores)))
}

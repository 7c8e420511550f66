//! `rules/subsets.rs` for Python: MDA's subset search (SMEA, CAF and MoNNA decide in Python).

use numpy::PyReadonlyArray2;
use pyo3::prelude::*;

use super::convert::square;
use super::run;
use crate::rules::subsets as core;

/// MDA's kept inputs from a full squared-distance matrix.
#[pyfunction]
pub(crate) fn mda_select(
    py: Python<'_>,
    dist: PyReadonlyArray2<'_, f64>,
    f: usize,
    max_subsets: u64,
) -> PyResult<Vec<usize>> {
    let (n, dm) = square("mda", &dist)?;
    run(py, || core::mda_select(dm, n, f, max_subsets))
}

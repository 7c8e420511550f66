//! Threads and SIMD: the knobs that change speed, never results.

use pyo3::prelude::*;

use super::run;
use crate::pool;
use crate::simd::{self, Level};

/// Run the kernels on `n` threads (the Python layer checked `n >= 1`).
#[pyfunction]
pub(crate) fn set_num_threads(py: Python<'_>, n: usize) -> PyResult<()> {
    run(py, || pool::set_num_threads(n))
}

/// The number of threads the kernels run on.
#[pyfunction]
pub(crate) fn get_num_threads(py: Python<'_>) -> usize {
    py.detach(pool::num_threads)
}

/// The SIMD level in force.
#[pyfunction]
pub(crate) fn simd_level() -> &'static str {
    simd::level().name()
}

/// Force a SIMD level (tests use it to compare paths); returns the level now in force.
#[pyfunction]
pub(crate) fn _set_simd_level(level: Level) -> &'static str {
    simd::set_level(level).name()
}

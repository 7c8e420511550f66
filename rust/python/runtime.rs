//! Threads and SIMD: the knobs that change speed, never results.

use pyo3::prelude::*;

use super::run;
use crate::pool;
use crate::simd::{self, Level};

/// Run the kernels on `n` threads (`1 <= n <= max_threads()`).
#[pyfunction]
pub(crate) fn set_num_threads(py: Python<'_>, n: usize) -> PyResult<()> {
    run(py, || pool::set_num_threads(n))
}

/// The most threads `set_num_threads` accepts: `max(256, 4 × cores)`.
#[pyfunction]
pub(crate) fn max_threads() -> usize {
    pool::max_threads()
}

/// The number of threads the kernels run on.
#[pyfunction]
pub(crate) fn get_num_threads(py: Python<'_>) -> usize {
    py.detach(pool::num_threads)
}

/// Panic inside a kernel call, for the test that the boundary turns a panic into an
/// `AggkitError` (no input reaches a panic on purpose; this is how the test gets one).
#[pyfunction]
pub(crate) fn _panic_in_kernel(py: Python<'_>, message: String) -> PyResult<()> {
    run(py, move || -> Result<(), crate::error::AggError> {
        panic!("{message}")
    })
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

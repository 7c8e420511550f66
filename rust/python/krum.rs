//! `rules/krum.rs` for Python: Krum, Multi-Krum, and the selection from a distance matrix.

use numpy::PyReadonlyArray2;
use pyo3::prelude::*;

use super::convert::{array, dispatch, square, AnyRows, Matrix, Out};
use super::run;
use crate::half::HalfRows;
use crate::input::NonFinite;
use crate::rules::krum as core;

type Selected = PyResult<(Out, Vec<usize>, Out)>;

/// Krum: the selected row, its index, every score.
#[pyfunction]
#[pyo3(signature = (x, f, nonfinite))]
pub(crate) fn krum(py: Python<'_>, x: Matrix<'_>, f: usize, nonfinite: NonFinite) -> Selected {
    let rows = x.rows(core::NAME)?;
    if let AnyRows::Half(h) = rows {
        return half(py, &h, f, 1, nonfinite);
    }
    dispatch!(rows, r => {
        let (vals, sel) = run(py, || {
            let mut out = crate::alloc::zeroed(r.d())?;
            let sel = core::krum(&r, f, nonfinite, &mut out)?;
            Ok((out, sel))
        })?;
        Ok((array(py, vals), sel.indices, array(py, sel.scores)))
    })
}

/// Multi-Krum: the mean of the `m` best rows, their indices, every score.
#[pyfunction]
#[pyo3(signature = (x, f, m, nonfinite))]
pub(crate) fn multi_krum(
    py: Python<'_>,
    x: Matrix<'_>,
    f: usize,
    m: usize,
    nonfinite: NonFinite,
) -> Selected {
    let rows = x.rows(core::MULTI_NAME)?;
    if let AnyRows::Half(h) = rows {
        return half(py, &h, f, m, nonfinite);
    }
    dispatch!(rows, r => {
        let (vals, sel) = run(py, || {
            let mut out = crate::alloc::zeroed(r.d())?;
            let sel = if m == 1 {
                core::krum(&r, f, nonfinite, &mut out)?
            } else {
                core::multi_krum(&r, f, m, nonfinite, &mut out)?
            };
            Ok((out, sel))
        })?;
        Ok((array(py, vals), sel.indices, array(py, sel.scores)))
    })
}

/// Krum (`m = 1`) or Multi-Krum on half-precision rows: the output in their format.
fn half(py: Python<'_>, h: &HalfRows<'_>, f: usize, m: usize, nonfinite: NonFinite) -> Selected {
    let (vals, sel) = run(py, || {
        let mut out = crate::alloc::zeroed::<u16>(h.d())?;
        let sel = core::select_half(h, f, m, nonfinite, &mut out)?;
        Ok((out, sel))
    })?;
    Ok((array(py, vals), sel.indices, array(py, sel.scores)))
}

/// Krum / Multi-Krum selection from a full `(n, n)` float64 squared-distance matrix.
#[pyfunction]
#[pyo3(signature = (dist, f, m, nonfinite))]
pub(crate) fn krum_select(
    py: Python<'_>,
    dist: PyReadonlyArray2<'_, f64>,
    f: usize,
    m: usize,
    nonfinite: NonFinite,
) -> PyResult<(Vec<usize>, Out)> {
    let (n, dm) = square("krum_select", &dist)?;
    let sel = run(py, || core::select_from_distances(dm, n, f, m, nonfinite))?;
    Ok((sel.indices, array(py, sel.scores)))
}

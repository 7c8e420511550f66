//! `rules/foolsgold.rs` for Python: the round's pass over the histories, and their scaled
//! distances and norms.

use numpy::PyReadonlyArray1;
use pyo3::prelude::*;

use super::convert::{array, dispatch, fresh_matrix_with, matrix, Matrix, Out};
use super::{run, ShapeError};
use crate::distance::{pairwise_sq_dists_scaled, ScaledRows};
use crate::rules::foolsgold as core;

fn rows_of<'a>(
    what: &str,
    list: &'a [Option<PyReadonlyArray1<'_, f64>>],
    d: usize,
) -> PyResult<Vec<Option<&'a [f64]>>> {
    list.iter()
        .enumerate()
        .map(|(i, r)| {
            r.as_ref()
                .map(|a| {
                    let s = a.as_slice().map_err(|_| {
                        ShapeError::new_err(format!("{what} row {i} must be contiguous"))
                    })?;
                    if s.len() != d {
                        return Err(ShapeError::new_err(format!(
                            "{what} row {i} has {} values, the inputs {d}",
                            s.len()
                        )));
                    }
                    Ok(s)
                })
                .transpose()
        })
        .collect()
}

/// The clients' new histories as a fresh `(n, d)` float64 array: `history[i] + scales[i] x[i]`
/// for active rows, `history[i]` for the others (`None`: zeros); and each active row's largest
/// magnitude (NaN: not finite).
#[pyfunction]
pub(crate) fn foolsgold_history(
    py: Python<'_>,
    x: Matrix<'_>,
    scales: Vec<f64>,
    active: Vec<bool>,
    history: Vec<Option<PyReadonlyArray1<'_, f64>>>,
) -> PyResult<(Out, Out)> {
    dispatch!(x.rows(core::NAME)?, r => {
        let (n, d) = (r.n(), r.d());
        if scales.len() != n || active.len() != n || history.len() != n {
            return Err(ShapeError::new_err(format!(
                "foolsgold: scales, active and history need {n} entries, got {}, {} and {}",
                scales.len(), active.len(), history.len()
            )));
        }
        let hist = rows_of("history", &history, d)?;
        let (rr, s, a, h) = (&r, &scales, &active, &hist);
        let (out, tops) = fresh_matrix_with(py, n, d, move |o| {
            Ok(core::add_to_history(rr, s, a, h, o))
        })?;
        Ok((out, array(py, tops)))
    })
}

/// Squared distances `(n, n)` and norms `(n,)` of the float64 rows scaled by `2^-exps[i]`
/// (`None` rows: zeros).
#[pyfunction]
pub(crate) fn scaled_distances(
    py: Python<'_>,
    rows: Vec<Option<PyReadonlyArray1<'_, f64>>>,
    exps: Vec<i32>,
    d: usize,
) -> PyResult<(Out, Out)> {
    let n = rows.len();
    if exps.len() != n {
        return Err(ShapeError::new_err(format!(
            "scaled_distances: {n} rows but {} exponents",
            exps.len()
        )));
    }
    if n == 0 {
        return Err(ShapeError::new_err("scaled_distances: no rows"));
    }
    let r = rows_of("scaled_distances", &rows, d)?;
    let src = ScaledRows::new(r, &exps, d);
    let (dm, norms) = run(py, || Ok((pairwise_sq_dists_scaled(&src)?, src.norms())))?;
    Ok((matrix(py, dm, n, n)?, array(py, norms)))
}

//! `rules/detox.rs` for Python: DETOX's vote (stage 2 composes the other rules in Python).

use numpy::PyReadonlyArray1;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;

use super::convert::{array, contiguous, dispatch, Matrix, Out};
use super::{run, InvalidParameterError};
use crate::rules::detox::{self as core, Vote};

/// DETOX stage 1: winners per (group, segment) (`u32::MAX` = none) and per-member agreement.
#[pyfunction]
#[pyo3(signature = (x, groups, r, segments, mode, atol, rtol))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn detox_vote(
    py: Python<'_>,
    x: Matrix<'_>,
    groups: PyReadonlyArray1<'_, u32>,
    r: usize,
    segments: Vec<usize>,
    mode: PyBackedStr,
    atol: f64,
    rtol: f64,
) -> PyResult<(Out, Out)> {
    let mode = match &*mode {
        "exact" => Vote::Exact,
        "approx" => Vote::Approx { atol, rtol },
        "reference" => Vote::Reference,
        other => {
            return Err(InvalidParameterError::new_err(format!(
                "detox: vote must be one of 'exact', 'approx', 'reference', got {other:?}"
            )))
        }
    };
    let groups = contiguous("groups", &groups)?;
    dispatch!(x.rows(core::NAME)?, rr => {
        let res = run(py, || core::vote(&rr, groups, r, &segments, mode))?;
        Ok((array(py, res.winners), array(py, res.agree)))
    })
}

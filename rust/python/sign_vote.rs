//! `rules/sign_vote.rs` for Python.

use pyo3::prelude::*;

use super::convert::{array, dispatch, Matrix, Out};
use super::run;
use crate::input::NonFinite;
use crate::rules::sign_vote as core;

/// signSGD majority vote.
#[pyfunction]
pub(crate) fn sign_vote(py: Python<'_>, x: Matrix<'_>, nonfinite: NonFinite) -> PyResult<Out> {
    dispatch!(x.rows(core::NAME)?, r => {
        let v = run(py, || {
            r.check_policy(core::NAME, nonfinite)?;
            let mut out = crate::alloc::zeroed(r.d())?;
            core::sign_vote(&r, nonfinite == NonFinite::Propagate, &mut out);
            Ok(out)
        })?;
        Ok(array(py, v))
    })
}

//! numpy → core. Inputs arrive as one 2-D array or a list of 1-D arrays (the Python layer has
//! already checked dtypes and made every row contiguous); either way the kernels get `n` row
//! slices pointing into the caller's memory. No copy is made.
//!
//! Borrow policy across the GIL release (rust-numpy issue #497): we hold rust-numpy read-only
//! borrows for the whole call, which stops any Rust code from borrowing the arrays mutably,
//! and only ever read through them. We do not copy before releasing the GIL: a copy would
//! double the memory of the `(n, d)` input, which is the one thing DESIGN.md §4 rules out.
//! Another Python thread mutating an input *while* aggkit reads it is a caller error, exactly
//! as with numpy's own GIL-releasing functions; the result is then unspecified (but memory-safe
//! at the level of plain float loads).

use numpy::ndarray::Axis;
use numpy::{PyReadonlyArray1, PyReadonlyArray2};
use pyo3::prelude::*;

use super::ShapeError;
use crate::input::Rows;

/// What a rule accepts for `x`.
#[derive(FromPyObject)]
pub(crate) enum Matrix<'py> {
    F32(PyReadonlyArray2<'py, f32>),
    F64(PyReadonlyArray2<'py, f64>),
    F32Rows(Vec<PyReadonlyArray1<'py, f32>>),
    F64Rows(Vec<PyReadonlyArray1<'py, f64>>),
}

/// The rows of a [`Matrix`], typed.
pub(crate) enum AnyRows<'a> {
    F32(Rows<'a, f32>),
    F64(Rows<'a, f64>),
}

fn not_contiguous() -> PyErr {
    ShapeError::new_err(
        "every input row must be C-contiguous (the Python layer should have ensured this)",
    )
}

fn rows_2d<'a, T: numpy::Element + crate::order::Float>(
    rule: &'static str,
    a: &'a PyReadonlyArray2<'_, T>,
) -> PyResult<Rows<'a, T>> {
    let v = a.as_array();
    let rows = (0..v.len_of(Axis(0)))
        .map(|i| {
            v.index_axis_move(Axis(0), i)
                .to_slice()
                .ok_or_else(not_contiguous)
        })
        .collect::<PyResult<Vec<&'a [T]>>>()?;
    Rows::new(rule, rows).map_err(|e| Python::attach(|py| super::to_pyerr(py, e)))
}

fn rows_list<'a, T: numpy::Element + crate::order::Float>(
    rule: &'static str,
    list: &'a [PyReadonlyArray1<'_, T>],
) -> PyResult<Rows<'a, T>> {
    let rows = list
        .iter()
        .map(|a| a.as_slice().map_err(|_| not_contiguous()))
        .collect::<PyResult<Vec<&'a [T]>>>()?;
    Rows::new(rule, rows).map_err(|e| Python::attach(|py| super::to_pyerr(py, e)))
}

impl Matrix<'_> {
    pub(crate) fn rows(&self, rule: &'static str) -> PyResult<AnyRows<'_>> {
        Ok(match self {
            Matrix::F32(a) => AnyRows::F32(rows_2d(rule, a)?),
            Matrix::F64(a) => AnyRows::F64(rows_2d(rule, a)?),
            Matrix::F32Rows(l) => AnyRows::F32(rows_list(rule, l)?),
            Matrix::F64Rows(l) => AnyRows::F64(rows_list(rule, l)?),
        })
    }
}

/// Expand `$body` once per element type with `$r` bound to the typed [`Rows`].
macro_rules! dispatch {
    ($rows:expr, $r:ident => $body:expr) => {
        match $rows {
            $crate::python::convert::AnyRows::F32($r) => $body,
            $crate::python::convert::AnyRows::F64($r) => $body,
        }
    };
}
pub(crate) use dispatch;

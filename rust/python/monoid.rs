//! Bindings of the monoid tree reductions (`rust/monoid/`): CSR offsets, built-in reductions,
//! the product's backward and the level schedule of the carry trees.

use numpy::{PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::convert::{array, fresh_matrix, Out};
use super::{run, ShapeError};
use crate::monoid::tree::{self, Pad, Schedule};
use crate::monoid::{MFloat, Op};

/// A row-major `(rows, h)` float matrix (the Python layer made it C-contiguous).
#[derive(FromPyObject)]
pub(crate) enum Dense<'py> {
    F32(PyReadonlyArray2<'py, f32>),
    F64(PyReadonlyArray2<'py, f64>),
}

fn slice<'a, T: numpy::Element>(
    a: &'a PyReadonlyArray2<'_, T>,
) -> PyResult<(&'a [T], usize, usize)> {
    let (rows, h) = (a.shape()[0], a.shape()[1]);
    let s = a.as_slice().map_err(|_| {
        ShapeError::new_err("x must be C-contiguous (the Python layer should have ensured this)")
    })?;
    Ok((s, rows, h))
}

fn offsets(py: Python<'_>, ptr: &PyReadonlyArray1<'_, i64>, rows: usize) -> PyResult<Vec<usize>> {
    let p = ptr
        .as_slice()
        .map_err(|_| ShapeError::new_err("ptr must be contiguous"))?;
    run(py, || tree::check_ptr(p, rows, None))
}

/// CSR offsets (int64, `dim_size + 1`) from a sorted index.
#[pyfunction]
#[pyo3(signature = (index, dim_size=None))]
pub(crate) fn segment_ptr(
    py: Python<'_>,
    index: PyReadonlyArray1<'_, i64>,
    dim_size: Option<usize>,
) -> PyResult<Out> {
    let idx = index
        .as_slice()
        .map_err(|_| ShapeError::new_err("index must be contiguous"))?;
    let ptr = run(py, || tree::ptr_from_index(idx, dim_size))?;
    Ok(array(
        py,
        ptr.into_iter().map(|p| p as i64).collect::<Vec<i64>>(),
    ))
}

/// Validate CSR offsets for `rows` rows (and `dim_size` sets when given).
#[pyfunction]
#[pyo3(signature = (ptr, rows, dim_size=None))]
pub(crate) fn check_segment_ptr(
    py: Python<'_>,
    ptr: PyReadonlyArray1<'_, i64>,
    rows: usize,
    dim_size: Option<usize>,
) -> PyResult<()> {
    let p = ptr
        .as_slice()
        .map_err(|_| ShapeError::new_err("ptr must be contiguous"))?;
    run(py, || tree::check_ptr(p, rows, dim_size)).map(|_| ())
}

fn reduce_into<T: MFloat + numpy::Element>(
    py: Python<'_>,
    a: &PyReadonlyArray2<'_, T>,
    ptr: &PyReadonlyArray1<'_, i64>,
    op: Op,
    empty: Option<f64>,
) -> PyResult<Out> {
    let (x, rows, h) = slice(a)?;
    let p = offsets(py, ptr, rows)?;
    let fill = empty.map_or_else(|| op.identity::<T>(), T::from_f64);
    let sets = p.len() - 1;
    fresh_matrix(py, sets, h, move |out: &mut [T]| {
        tree::reduce(x, h, &p, op, fill, out);
        Ok(())
    })
}

/// Reduce each set of rows with a built-in monoid over its carry tree.
#[pyfunction]
#[pyo3(signature = (x, ptr, op, empty=None))]
pub(crate) fn segment_reduce(
    py: Python<'_>,
    x: Dense<'_>,
    ptr: PyReadonlyArray1<'_, i64>,
    op: Op,
    empty: Option<f64>,
) -> PyResult<Out> {
    match &x {
        Dense::F32(a) => reduce_into(py, a, &ptr, op, empty),
        Dense::F64(a) => reduce_into(py, a, &ptr, op, empty),
    }
}

fn back<T: MFloat + numpy::Element>(
    py: Python<'_>,
    a: &PyReadonlyArray2<'_, T>,
    ptr: &PyReadonlyArray1<'_, i64>,
    op: Op,
    out: &PyReadonlyArray2<'_, T>,
    g: &PyReadonlyArray2<'_, T>,
) -> PyResult<Out> {
    let (x, rows, h) = slice(a)?;
    let (os, osets, oh) = slice(out)?;
    let (gs, sets, gh) = slice(g)?;
    let p = offsets(py, ptr, rows)?;
    if sets != p.len() - 1 || gh != h || osets != sets || oh != h {
        return Err(ShapeError::new_err(format!(
            "the output and its gradient must have shape ({}, {h}), got ({osets}, {oh}) and ({sets}, {gh})",
            p.len() - 1
        )));
    }
    fresh_matrix(py, rows, h, move |gx: &mut [T]| {
        tree::backward(x, h, &p, op, os, gs, gx);
        Ok(())
    })
}

/// The gradient of `segment_reduce` with respect to every row of `x`.
#[pyfunction]
pub(crate) fn segment_reduce_backward(
    py: Python<'_>,
    x: Dense<'_>,
    ptr: PyReadonlyArray1<'_, i64>,
    op: Op,
    out: Dense<'_>,
    grad: Dense<'_>,
) -> PyResult<Out> {
    match (&x, &out, &grad) {
        (Dense::F32(a), Dense::F32(o), Dense::F32(g)) => back(py, a, &ptr, op, o, g),
        (Dense::F64(a), Dense::F64(o), Dense::F64(g)) => back(py, a, &ptr, op, o, g),
        _ => Err(ShapeError::new_err(
            "x, the output and the gradient must have the same dtype",
        )),
    }
}

/// The level schedule of the carry trees: a dict of int64 arrays (`pairs`, `pairs_ptr`, `carry`,
/// `carry_ptr`, `done`, `done_sets`, `done_ptr`) and `combines`.
#[pyfunction]
pub(crate) fn tree_schedule<'py>(
    py: Python<'py>,
    ptr: PyReadonlyArray1<'_, i64>,
    rows: usize,
    pad: Pad,
) -> PyResult<Bound<'py, PyDict>> {
    let p = offsets(py, &ptr, rows)?;
    let s = run(py, || Schedule::build(&p, pad))?;
    fn flat(lists: impl Iterator<Item = Vec<i64>>) -> (Vec<i64>, Vec<i64>) {
        let mut data = Vec::new();
        let mut off = vec![0i64];
        for l in lists {
            data.extend(l);
            off.push(data.len() as i64);
        }
        (data, off)
    }
    let combines = s.combines();
    let (pairs, pairs_ptr) = flat(s.levels.iter().map(|l| l.pairs.clone()));
    let (carry, carry_ptr) = flat(s.levels.into_iter().map(|l| l.carry));
    let (done, done_ptr) = flat(s.done.into_iter());
    let (done_sets, _) = flat(s.done_sets.into_iter());
    let d = PyDict::new(py);
    d.set_item("pairs", array(py, pairs))?;
    d.set_item("pairs_ptr", array(py, pairs_ptr))?;
    d.set_item("carry", array(py, carry))?;
    d.set_item("carry_ptr", array(py, carry_ptr))?;
    d.set_item("done", array(py, done))?;
    d.set_item("done_sets", array(py, done_sets))?;
    d.set_item("done_ptr", array(py, done_ptr))?;
    d.set_item("combines", combines)?;
    Ok(d)
}

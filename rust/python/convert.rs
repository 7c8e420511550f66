//! Python → core and core → Python. Inputs arrive as one 2-D array or a list of 1-D arrays of
//! float32 or float64 (the Python layer has checked dtypes and made every row contiguous);
//! either way the kernels get `n` row slices pointing into the caller's memory. No copy is made.
//! String options become the core's enums here, once, with one error message per option.
//!
//! Borrow policy across the GIL release (rust-numpy issue #497): we hold rust-numpy read-only
//! borrows for the whole call, which stops any Rust code from borrowing the arrays mutably,
//! and only ever read through them. We do not copy before releasing the GIL: a copy would
//! double the memory of the `(n, d)` input, which the library promises not to do. Another
//! Python thread mutating an input *while* aggkit reads it is a caller error, exactly as with
//! numpy's own GIL-releasing functions; the result is then unspecified (but memory-safe at the
//! level of plain float loads).

use numpy::ndarray::Axis;
use numpy::{PyArray1, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;

use super::{call_name, run_as, to_pyerr, InvalidParameterError, ShapeError};
use crate::alloc;
use crate::columns::ColumnsOut;
use crate::half::{Half, HalfRows};
use crate::input::{NonFinite, Rows};
use crate::monoid::tree::Pad;
use crate::monoid::Op;
use crate::order::Float;
use crate::rules::geometric_median::Init;
use crate::rules::median::Even;
use crate::simd::Level;

/// What a rule accepts for `x`. Half-precision input comes as a tuple `(format, bits)`: the
/// format's name (`Half::NAMES`) and the values' bit patterns as `uint16`, which only the
/// rules with half-precision kernels accept (the Python layer widens it for the others).
#[derive(FromPyObject)]
pub(crate) enum Matrix<'py> {
    F32(PyReadonlyArray2<'py, f32>),
    F64(PyReadonlyArray2<'py, f64>),
    F32Rows(Vec<PyReadonlyArray1<'py, f32>>),
    F64Rows(Vec<PyReadonlyArray1<'py, f64>>),
    Half(Half, PyReadonlyArray2<'py, u16>),
    HalfRows(Half, Vec<PyReadonlyArray1<'py, u16>>),
}

/// The rows of a [`Matrix`], typed.
pub(crate) enum AnyRows<'a> {
    F32(Rows<'a, f32>),
    F64(Rows<'a, f64>),
    Half(HalfRows<'a>),
}

fn not_contiguous() -> PyErr {
    ShapeError::new_err(
        "every input row must be C-contiguous (the Python layer should have ensured this)",
    )
}

fn err(e: crate::error::AggError) -> PyErr {
    Python::attach(|py| to_pyerr(py, e))
}

/// The `n` contiguous rows of a 2-D array.
fn slices_2d<'a, T: numpy::Element>(
    rule: &'static str,
    a: &'a PyReadonlyArray2<'_, T>,
) -> PyResult<Vec<&'a [T]>> {
    let v = a.as_array();
    let n = v.len_of(Axis(0));
    crate::input::check_n(rule, n).map_err(err)?;
    let mut rows = alloc::with_capacity::<&'a [T]>(n).map_err(err)?;
    for i in 0..n {
        rows.push(
            v.index_axis_move(Axis(0), i)
                .to_slice()
                .ok_or_else(not_contiguous)?,
        );
    }
    Ok(rows)
}

/// The rows of a list of contiguous 1-D arrays.
fn slices_list<'a, T: numpy::Element>(
    list: &'a [PyReadonlyArray1<'_, T>],
) -> PyResult<Vec<&'a [T]>> {
    list.iter()
        .map(|a| a.as_slice().map_err(|_| not_contiguous()))
        .collect()
}

impl Matrix<'_> {
    pub(crate) fn rows(&self, rule: &'static str) -> PyResult<AnyRows<'_>> {
        Ok(match self {
            Matrix::F32(a) => AnyRows::F32(Rows::new(rule, slices_2d(rule, a)?).map_err(err)?),
            Matrix::F64(a) => AnyRows::F64(Rows::new(rule, slices_2d(rule, a)?).map_err(err)?),
            Matrix::F32Rows(l) => AnyRows::F32(Rows::new(rule, slices_list(l)?).map_err(err)?),
            Matrix::F64Rows(l) => AnyRows::F64(Rows::new(rule, slices_list(l)?).map_err(err)?),
            Matrix::Half(k, a) => {
                AnyRows::Half(HalfRows::new(rule, *k, slices_2d(rule, a)?).map_err(err)?)
            }
            Matrix::HalfRows(k, l) => {
                AnyRows::Half(HalfRows::new(rule, *k, slices_list(l)?).map_err(err)?)
            }
        })
    }
}

/// Expand `$body` once per element type with `$r` bound to the typed [`Rows`]. A rule without
/// half-precision kernels refuses half-precision input here (the Python layer widens it first,
/// so this names a bug in that layer, not a user error).
macro_rules! dispatch {
    ($rows:expr, $r:ident => $body:expr) => {
        match $rows {
            $crate::python::convert::AnyRows::F32($r) => $body,
            $crate::python::convert::AnyRows::F64($r) => $body,
            $crate::python::convert::AnyRows::Half(h) => {
                Err($crate::python::convert::no_half_kernel(h.kind()))
            }
        }
    };
}
pub(crate) use dispatch;

/// `TypeError` for half-precision input to a rule without half-precision kernels.
pub(crate) fn no_half_kernel(kind: Half) -> PyErr {
    pyo3::exceptions::PyTypeError::new_err(format!(
        "this kernel has no {} form: widen the input to float32 first",
        Half::NAMES[kind as usize]
    ))
}

/// A half-precision kernel's output: `d` bit patterns that `kernel` fills with the GIL
/// released, as a 1-D `uint16` array (the Python layer views it as the input's dtype).
pub(crate) fn half_out<K>(py: Python<'_>, d: usize, kernel: K) -> PyResult<Out>
where
    K: FnOnce(&mut [u16]) -> Result<(), crate::error::AggError> + Send,
{
    let v = run_as(py, call_name::<K>(), move || {
        let mut out = alloc::zeroed::<u16>(d)?;
        kernel(&mut out)?;
        Ok(out)
    })?;
    Ok(array(py, v))
}

/// The half-precision kernels report no rows (no autograd reaches them).
pub(crate) fn no_rows_for_half(return_rows: bool) -> PyResult<()> {
    if return_rows {
        return Err(InvalidParameterError::new_err(
            "rows are not reported for half-precision input",
        ));
    }
    Ok(())
}

/// `InvalidParameterError`: `{what} must be one of 'a', 'b', got 'x'`.
fn bad_choice(what: &str, value: &str, accepted: &[&str]) -> PyErr {
    let list: Vec<String> = accepted.iter().map(|a| format!("{a:?}")).collect();
    InvalidParameterError::new_err(format!(
        "{what} must be one of {}, got {value:?}",
        list.join(", ")
    ))
}

/// A string option of the core (`NAMES`, `parse`) read from a Python `str`.
macro_rules! choice {
    ($ty:ty, $what:literal) => {
        impl<'a, 'py> FromPyObject<'a, 'py> for $ty {
            type Error = PyErr;
            fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
                let s: PyBackedStr = obj.extract()?;
                <$ty>::parse(&s).ok_or_else(|| bad_choice($what, &s, &<$ty>::NAMES))
            }
        }
    };
}

choice!(NonFinite, "nonfinite");
choice!(Even, "even");
choice!(Init, "init");
choice!(Op, "op");
choice!(Pad, "pad");
choice!(Level, "level");
choice!(Half, "format");

/// Core outputs go to Python as fresh numpy arrays.
pub(crate) type Out = Py<PyAny>;

/// A 1-D numpy array that takes over `v` (no copy).
pub(crate) fn array<T: numpy::Element>(py: Python<'_>, v: Vec<T>) -> Out {
    PyArray1::from_vec(py, v).into_any().unbind()
}

/// An `(rows, cols)` numpy array that takes over `v` (no copy).
pub(crate) fn matrix<T: numpy::Element>(
    py: Python<'_>,
    v: Vec<T>,
    rows: usize,
    cols: usize,
) -> PyResult<Out> {
    Ok(PyArray1::from_vec(py, v)
        .reshape([rows, cols])?
        .into_any()
        .unbind())
}

/// A contiguous 1-D array's data.
pub(crate) fn contiguous<'a, T: numpy::Element>(
    what: &str,
    a: &'a PyReadonlyArray1<'_, T>,
) -> PyResult<&'a [T]> {
    a.as_slice()
        .map_err(|_| InvalidParameterError::new_err(format!("{what} must be contiguous")))
}

/// Optional per-input weights (contiguous float64).
pub(crate) fn weights<'a>(w: &'a Option<PyReadonlyArray1<'_, f64>>) -> PyResult<Option<&'a [f64]>> {
    w.as_ref().map(|w| contiguous("weights", w)).transpose()
}

/// A full `(n, n)` float64 distance matrix, C-contiguous.
pub(crate) fn square<'a>(
    what: &str,
    dist: &'a PyReadonlyArray2<'_, f64>,
) -> PyResult<(usize, &'a [f64])> {
    use numpy::PyUntypedArrayMethods;
    let n = dist.shape()[0];
    if dist.shape()[1] != n {
        return Err(ShapeError::new_err(format!(
            "{what}: the distance matrix must be square, got shape {:?}",
            dist.shape()
        )));
    }
    let dm = dist
        .as_slice()
        .map_err(|_| InvalidParameterError::new_err("the distance matrix must be C-contiguous"))?;
    Ok((n, dm))
}

/// A selection kernel's values and, if asked for, the two row arrays that define it.
pub(crate) fn columns<T, K>(
    py: Python<'_>,
    d: usize,
    want_rows: bool,
    kernel: K,
) -> PyResult<(Out, Option<Out>, Option<Out>)>
where
    T: Float + numpy::Element + alloc::Zeroable,
    K: FnOnce(ColumnsOut<'_, T>) -> Result<(), crate::error::AggError> + Send,
{
    let (vals, lo, hi) = run_as(py, call_name::<K>(), move || {
        let mut vals = alloc::zeroed::<T>(d)?;
        if want_rows {
            let (mut lo, mut hi) = (alloc::zeroed::<u32>(d)?, alloc::zeroed::<u32>(d)?);
            kernel(ColumnsOut::with_rows(&mut vals, &mut lo, &mut hi))?;
            Ok((vals, Some(lo), Some(hi)))
        } else {
            kernel(ColumnsOut::new(&mut vals))?;
            Ok((vals, None, None))
        }
    })?;
    Ok((
        array(py, vals),
        lo.map(|v| array(py, v)),
        hi.map(|v| array(py, v)),
    ))
}

/// A fresh `(n, d)` numpy array filled by `fill` with the GIL released. numpy allocates it, so
/// a large output gets numpy's huge-page hint: a Rust `Vec` of 80 MB handed over with
/// `from_vec` spent 3x longer in page faults than the work (measured: 38 ms vs 12 ms).
pub(crate) fn fresh_matrix<T, K>(py: Python<'_>, n: usize, d: usize, fill: K) -> PyResult<Out>
where
    T: Float + numpy::Element,
    K: FnOnce(&mut [T]) -> Result<(), crate::error::AggError> + Send,
{
    Ok(fresh_matrix_with(py, n, d, fill)?.0)
}

/// [`fresh_matrix`] whose `fill` also returns a value.
pub(crate) fn fresh_matrix_with<T, R, K>(
    py: Python<'_>,
    n: usize,
    d: usize,
    fill: K,
) -> PyResult<(Out, R)>
where
    T: Float + numpy::Element,
    R: Send,
    K: FnOnce(&mut [T]) -> Result<R, crate::error::AggError> + Send,
{
    let arr = zeros_2d::<T>(py, n, d)?;
    let r = {
        // SAFETY: the array was just created here and no other reference to it exists.
        let out = unsafe { arr.as_slice_mut() }.expect("a new array is contiguous");
        run_as(py, call_name::<K>(), || fill(out))?
    };
    Ok((arr.into_any().unbind(), r))
}

/// `numpy.zeros((n, d))`, or `MemoryError` where numpy cannot allocate it (rust-numpy's
/// `PyArray2::zeros` panics then).
fn zeros_2d<T: numpy::Element>(
    py: Python<'_>,
    n: usize,
    d: usize,
) -> PyResult<Bound<'_, numpy::PyArray2<T>>> {
    use numpy::npyffi::{npy_intp, PY_ARRAY_API};
    use numpy::PyArrayDescrMethods;
    let too_large = || {
        to_pyerr(
            py,
            crate::error::AggError::OutOfMemory {
                bytes: n.saturating_mul(d).saturating_mul(std::mem::size_of::<T>()),
            },
        )
    };
    let bytes = n
        .checked_mul(d)
        .and_then(|v| v.checked_mul(std::mem::size_of::<T>()))
        .ok_or_else(too_large)?;
    if npy_intp::try_from(bytes).is_err() {
        return Err(too_large());
    }
    let mut dims = [n as npy_intp, d as npy_intp];
    // SAFETY: `dims` holds two in-range dimensions whose product in bytes fits `npy_intp`
    // (checked above); `PyArray_Zeros` steals the descriptor reference `into_dtype_ptr` gives
    // and returns a new reference or NULL with a Python error set.
    unsafe {
        let ptr = PY_ARRAY_API.PyArray_Zeros(
            py,
            2,
            dims.as_mut_ptr(),
            T::get_dtype(py).into_dtype_ptr(),
            0,
        );
        Ok(Bound::from_owned_ptr_or_err(py, ptr)?.cast_into_unchecked())
    }
}

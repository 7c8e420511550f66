//! The Python binding layer: the private extension `aggkit._core`. Everything here converts;
//! nothing computes. The typed, documented API is the Python package `aggkit`.

mod convert;
mod monoid;
mod rules;

use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::error::AggError;

create_exception!(
    aggkit,
    AggkitError,
    PyValueError,
    "Base class of every error aggkit raises for bad input (a ValueError)."
);
create_exception!(
    aggkit,
    EmptyInputError,
    AggkitError,
    "No inputs were given (n = 0)."
);
create_exception!(
    aggkit,
    ShapeError,
    AggkitError,
    "Inputs have inconsistent or unsupported shapes."
);
create_exception!(
    aggkit,
    TooFewInputsError,
    AggkitError,
    "Fewer inputs than the rule needs for the requested f."
);
create_exception!(
    aggkit,
    InvalidParameterError,
    AggkitError,
    "A rule parameter is out of range."
);
create_exception!(
    aggkit,
    NonFiniteError,
    AggkitError,
    "NaN or infinite values where the policy forbids them; `.rows` lists the inputs."
);

/// The one mapping from core errors to Python exceptions.
pub(crate) fn to_pyerr(py: Python<'_>, e: AggError) -> PyErr {
    let msg = e.to_string();
    match e {
        AggError::Empty { .. } => EmptyInputError::new_err(msg),
        AggError::Ragged { .. } => ShapeError::new_err(msg),
        AggError::TooFewInputs { .. } => TooFewInputsError::new_err(msg),
        AggError::InvalidParameter { .. } => InvalidParameterError::new_err(msg),
        AggError::NonFinite { rows, .. } => {
            let err = NonFiniteError::new_err(msg);
            // Best effort: the message already names the rows.
            let _ = err.value(py).setattr("rows", rows);
            err
        }
    }
}

/// A `NonFiniteError` for the Python layers, formatted as the core formats it.
#[pyfunction]
fn nonfinite_error<'py>(
    py: Python<'py>,
    rule: &str,
    rows: Vec<usize>,
    detail: &str,
) -> Bound<'py, pyo3::exceptions::PyBaseException> {
    let err = NonFiniteError::new_err(crate::error::nonfinite_message(rule, &rows, detail));
    let value = err.into_value(py).into_bound(py);
    // Best effort: the message already names the rows.
    let _ = value.setattr("rows", rows);
    value
}

/// A `TooFewInputsError` for the Python layers, formatted as the core formats it.
#[pyfunction]
fn too_few_inputs_error<'py>(
    py: Python<'py>,
    rule: &str,
    requirement: &str,
    n: &Bound<'py, PyAny>,
    f: &Bound<'py, PyAny>,
) -> Bound<'py, pyo3::exceptions::PyBaseException> {
    let msg = crate::error::too_few_message(rule, requirement, n, f);
    TooFewInputsError::new_err(msg)
        .into_value(py)
        .into_bound(py)
}

/// An `EmptyInputError` for the Python layers, formatted as the core formats it.
#[pyfunction]
fn empty_input_error<'py>(
    py: Python<'py>,
    rule: &str,
) -> Bound<'py, pyo3::exceptions::PyBaseException> {
    EmptyInputError::new_err(crate::error::empty_message(rule))
        .into_value(py)
        .into_bound(py)
}

/// The one way bindings call into the core: release the GIL, run the kernel, map the error.
pub(crate) fn run<T, F>(py: Python<'_>, f: F) -> PyResult<T>
where
    // `Send` is what pyo3's `Ungil` means on stable Rust; spelled out so generic callers work.
    F: Send + FnOnce() -> Result<T, AggError>,
    T: Send,
{
    py.detach(f).map_err(|e| to_pyerr(py, e))
}

/// Parse a string option or raise `InvalidParameterError` listing the accepted values.
pub(crate) fn parse<T>(
    what: &str,
    value: &str,
    accepted: &[&str],
    f: impl Fn(&str) -> Option<T>,
) -> PyResult<T> {
    f(value).ok_or_else(|| {
        InvalidParameterError::new_err(format!(
            "{what} must be one of {}, got {value:?}",
            accepted
                .iter()
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("AggkitError", py.get_type::<AggkitError>())?;
    m.add("EmptyInputError", py.get_type::<EmptyInputError>())?;
    m.add("ShapeError", py.get_type::<ShapeError>())?;
    m.add("TooFewInputsError", py.get_type::<TooFewInputsError>())?;
    m.add(
        "InvalidParameterError",
        py.get_type::<InvalidParameterError>(),
    )?;
    m.add("NonFiniteError", py.get_type::<NonFiniteError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(nonfinite_error, m)?)?;
    m.add_function(wrap_pyfunction!(too_few_inputs_error, m)?)?;
    m.add_function(wrap_pyfunction!(empty_input_error, m)?)?;
    rules::register(m)?;
    monoid::register(m)
}

//! The Python binding layer: the private extension `aggkit._core`. Everything here converts;
//! nothing computes. The typed, documented API is the Python package `aggkit`.
//!
//! One file per rule family, named as the family is everywhere else (`median.rs` binds
//! `rules/median.rs`); the module below lists what each exports.

mod bulyan;
mod centered_clipping;
mod convert;
mod crossmax;
mod detox;
mod distance;
mod foolsgold;
mod geometric_median;
mod krum;
mod meamed;
mod mean;
mod median;
mod monoid;
mod preagg;
mod runtime;
mod sign_vote;
mod subsets;
mod trimmed_mean;

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

thread_local! {
    /// The exception a signal handler raised while a kernel ran on this thread.
    static PENDING: std::cell::RefCell<Option<PyErr>> = const { std::cell::RefCell::new(None) };
}

/// The interruption hook of the core: run Python's signal handlers (Ctrl-C raises
/// `KeyboardInterrupt` there) and keep what they raise for [`to_pyerr`].
fn python_asks_to_stop() -> bool {
    Python::attach(|py| match py.check_signals() {
        Ok(()) => false,
        Err(e) => {
            PENDING.with(|p| *p.borrow_mut() = Some(e));
            true
        }
    })
}

/// The one mapping from core errors to Python exceptions.
pub(crate) fn to_pyerr(py: Python<'_>, e: AggError) -> PyErr {
    let msg = e.to_string();
    match e {
        AggError::Interrupted => PENDING
            .with(|p| p.borrow_mut().take())
            .unwrap_or_else(|| pyo3::exceptions::PyKeyboardInterrupt::new_err(msg)),
        AggError::Empty { .. } => EmptyInputError::new_err(msg),
        AggError::Ragged { .. } => ShapeError::new_err(msg),
        AggError::TooFewInputs { .. } => TooFewInputsError::new_err(msg),
        AggError::InvalidParameter { .. } => InvalidParameterError::new_err(msg),
        AggError::OutOfMemory { .. } => pyo3::exceptions::PyMemoryError::new_err(msg),
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
    run_as(py, call_name::<F>(), f)
}

/// [`run`] for helpers that run a kernel on behalf of a binding: `name` is the binding's.
///
/// A panic in the kernel (a bug: every input is validated before it runs) becomes an
/// `AggkitError` naming the call instead of pyo3's `PanicException`, a `BaseException` that
/// `except Exception` in a server loop would not catch.
pub(crate) fn run_as<T, F>(py: Python<'_>, name: &str, f: F) -> PyResult<T>
where
    F: Send + FnOnce() -> Result<T, AggError>,
    T: Send,
{
    crate::interrupt::start();
    match py.detach(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))) {
        Ok(result) => result.map_err(|e| to_pyerr(py, e)),
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(AggkitError::new_err(format!(
                "aggkit._core.{name}: internal error ({what}); this is a bug in aggkit, please \
                 report it with the call that raised it"
            )))
        }
    }
}

/// The binding a closure was written in: `_core::python::<family>::<function>::{{closure}}`
/// names `<function>` (generic parameters dropped).
pub(crate) fn call_name<F>() -> &'static str {
    std::any::type_name::<F>()
        .split("::")
        .skip_while(|s| *s != "python")
        .nth(2)
        .and_then(|s| s.split('<').next())
        .unwrap_or("call")
}

#[pymodule]
mod _core {
    #[pymodule_export]
    use super::bulyan::bulyan_select;
    #[pymodule_export]
    use super::centered_clipping::centered_clipping;
    #[pymodule_export]
    use super::crossmax::{crossmax, crossmax_backward};
    #[pymodule_export]
    use super::detox::detox_vote;
    #[pymodule_export]
    use super::distance::{dists_to, pairwise_sq_distances, scaled_dots};
    #[pymodule_export]
    use super::foolsgold::{foolsgold_history, scaled_distances};
    #[pymodule_export]
    use super::geometric_median::geometric_median;
    #[pymodule_export]
    use super::krum::{krum, krum_select, multi_krum};
    #[pymodule_export]
    use super::meamed::meamed;
    #[pymodule_export]
    use super::mean::mean;
    #[pymodule_export]
    use super::median::{median, median_backward, weighted_median};
    #[pymodule_export]
    use super::monoid::{
        check_segment_ptr, segment_ptr, segment_reduce, segment_reduce_backward, tree_schedule,
    };
    #[pymodule_export]
    use super::preagg::{group_means, row_norms, scale_rows};
    #[pymodule_export]
    use super::runtime::{
        _panic_in_kernel, _set_simd_level, get_num_threads, max_threads, set_num_threads,
        simd_level,
    };
    #[pymodule_export]
    use super::sign_vote::sign_vote;
    #[pymodule_export]
    use super::subsets::mda_select;
    #[pymodule_export]
    use super::trimmed_mean::{trimmed_mean, trimmed_mean_backward, weighted_trimmed_mean};
    #[pymodule_export]
    use super::{
        empty_input_error, nonfinite_error, too_few_inputs_error, AggkitError, EmptyInputError,
        InvalidParameterError, NonFiniteError, ShapeError, TooFewInputsError,
    };

    use pyo3::prelude::*;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        crate::interrupt::set_hook(super::python_asks_to_stop);
        m.add("__version__", env!("CARGO_PKG_VERSION"))
    }
}

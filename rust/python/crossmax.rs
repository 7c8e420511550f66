//! `rules/crossmax.rs` for Python: CrossMax and its one-pass backward.

use numpy::{PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;

use super::convert::{array, contiguous, Out};
use super::{run_as, InvalidParameterError, ShapeError};
use crate::input::NonFinite;
use crate::order::Float;
use crate::rules::crossmax::{self as core, CrossmaxIndices, CrossmaxOut, Reducer};
use crate::rules::median::Even;

type CrossmaxResult = (Out, Option<Out>, Option<Out>, Option<Out>, Option<Out>);

fn reducer(name: &str, k: usize, even: Even) -> PyResult<Reducer> {
    match name {
        "kth" => Ok(Reducer::Kth(k)),
        "median" => Ok(Reducer::Median(even)),
        other => Err(InvalidParameterError::new_err(format!(
            "crossmax: reducer must be one of 'kth', 'median', got {other:?}"
        ))),
    }
}

fn run_crossmax<T: Float + numpy::Element>(
    py: Python<'_>,
    z: PyReadonlyArray2<'_, T>,
    n: usize,
    reducer: Reducer,
    policy: NonFinite,
    want: bool,
) -> PyResult<CrossmaxResult> {
    let (rows, c) = (z.shape()[0], z.shape()[1]);
    if n == 0 || !rows.is_multiple_of(n) {
        return Err(ShapeError::new_err(format!(
            "crossmax: {rows} rows cannot be split into examples of n={n} predictors"
        )));
    }
    let b = rows / n;
    let zs = z
        .as_slice()
        .map_err(|_| ShapeError::new_err("crossmax: logits must be C-contiguous"))?;
    let (vals, ix) = run_as(py, "crossmax", || {
        let mut vals = crate::alloc::zeroed::<T>(b * c)?;
        if !want {
            let out = CrossmaxOut {
                values: &mut vals,
                indices: None,
            };
            core::crossmax(zs, b, n, c, reducer, policy, out)?;
            return Ok((vals, None));
        }
        let (mut t, mut k1, mut k2, mut am) = (
            crate::alloc::zeroed::<u32>(b * c)?,
            crate::alloc::zeroed::<u32>(b * c)?,
            crate::alloc::zeroed::<u32>(b * c)?,
            crate::alloc::zeroed::<u32>(b * n)?,
        );
        let indices = CrossmaxIndices {
            top: &mut t,
            kth: &mut k1,
            kth2: &mut k2,
            argmax: &mut am,
        };
        let out = CrossmaxOut {
            values: &mut vals,
            indices: Some(indices),
        };
        core::crossmax(zs, b, n, c, reducer, policy, out)?;
        Ok((vals, Some((t, k1, k2, am))))
    })?;
    let vals = array(py, vals);
    Ok(match ix {
        Some((t, k1, k2, am)) => (
            vals,
            Some(array(py, t)),
            Some(array(py, k1)),
            Some(array(py, k2)),
            Some(array(py, am)),
        ),
        None => (vals, None, None, None, None),
    })
}

/// CrossMax over `z` viewed as `(b * n, c)` (C-contiguous): flat `b * c` scores and, when
/// asked for, the backward's indices (top, kth, kth2 per `(b, c)`; argmax per `(b, n)`).
#[pyfunction]
#[pyo3(signature = (z, n, k, reducer, even, nonfinite, return_indices))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn crossmax(
    py: Python<'_>,
    z: &Bound<'_, PyAny>,
    n: usize,
    k: usize,
    reducer: PyBackedStr,
    even: Even,
    nonfinite: NonFinite,
    return_indices: bool,
) -> PyResult<CrossmaxResult> {
    let reducer = self::reducer(&reducer, k, even)?;
    if let Ok(a) = z.extract::<PyReadonlyArray2<'_, f32>>() {
        run_crossmax(py, a, n, reducer, nonfinite, return_indices)
    } else if let Ok(a) = z.extract::<PyReadonlyArray2<'_, f64>>() {
        run_crossmax(py, a, n, reducer, nonfinite, return_indices)
    } else {
        Err(pyo3::exceptions::PyTypeError::new_err(
            "crossmax: logits must be a 2-D float32 or float64 numpy array",
        ))
    }
}

#[allow(clippy::too_many_arguments)]
fn backward<T: Float + numpy::Element>(
    py: Python<'_>,
    g: &[T],
    finite: &[bool],
    ix: [&[u32]; 4],
    n: usize,
    c: usize,
    average: bool,
) -> PyResult<Out> {
    let bc = g.len();
    let b = bc.checked_div(c).unwrap_or(0);
    let sizes_agree = finite.len() == bc
        && ix[..3].iter().all(|a| a.len() == bc)
        && b.checked_mul(n) == Some(ix[3].len())
        && b.checked_mul(c) == Some(bc);
    if !sizes_agree {
        return Err(ShapeError::new_err("crossmax_backward: inconsistent sizes"));
    }
    let len = b
        .checked_mul(n)
        .and_then(|bn| bn.checked_mul(c))
        .ok_or_else(|| ShapeError::new_err("crossmax_backward: sizes overflow"))?;
    let out = run_as(py, "crossmax_backward", || {
        let mut out = crate::alloc::zeroed::<T>(len)?;
        core::backward(
            g, finite, ix[0], ix[1], ix[2], ix[3], n, c, average, &mut out,
        );
        Ok(out)
    })?;
    Ok(array(py, out))
}

/// CrossMax backward on the CPU: the flat `b * n * c` input gradient.
#[pyfunction]
#[pyo3(signature = (g, finite, top, kth, kth2, argmax, n, c, average))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn crossmax_backward(
    py: Python<'_>,
    g: &Bound<'_, PyAny>,
    finite: PyReadonlyArray1<'_, bool>,
    top: PyReadonlyArray1<'_, u32>,
    kth: PyReadonlyArray1<'_, u32>,
    kth2: PyReadonlyArray1<'_, u32>,
    argmax: PyReadonlyArray1<'_, u32>,
    n: usize,
    c: usize,
    average: bool,
) -> PyResult<Out> {
    let finite = contiguous("finite", &finite)?;
    let ix = [
        contiguous("top", &top)?,
        contiguous("kth", &kth)?,
        contiguous("kth2", &kth2)?,
        contiguous("argmax", &argmax)?,
    ];
    if let Ok(g) = g.extract::<PyReadonlyArray1<'_, f32>>() {
        backward(py, contiguous("g", &g)?, finite, ix, n, c, average)
    } else {
        let g: PyReadonlyArray1<'_, f64> = g.extract()?;
        backward(py, contiguous("g", &g)?, finite, ix, n, c, average)
    }
}

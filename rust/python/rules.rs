//! One thin `#[pyfunction]` per rule: parse options, dispatch on dtype, run detached, return
//! fresh numpy arrays (outputs are moved into numpy without a copy).

use numpy::{PyArray1, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::prelude::*;

use super::convert::{dispatch, Matrix};
use super::{parse, run};
use crate::input::NonFinite;
use crate::order::Float;
use crate::rules::median::Even;
use crate::rules::{self as core, ColumnsOut};
use crate::{distance, pool, simd};

fn policy(s: &str) -> PyResult<NonFinite> {
    parse(
        "nonfinite",
        s,
        &["robust", "raise", "propagate"],
        NonFinite::parse,
    )
}

pub(crate) type Out = Py<PyAny>;

pub(crate) fn array<T: numpy::Element>(py: Python<'_>, v: Vec<T>) -> Out {
    PyArray1::from_vec(py, v).into_any().unbind()
}

/// A selection kernel's values and, if asked for, the two row arrays that define it.
fn columns<T: Float + numpy::Element>(
    py: Python<'_>,
    d: usize,
    want_rows: bool,
    kernel: impl FnOnce(ColumnsOut<'_, T>) -> Result<(), crate::AggError> + Send,
) -> PyResult<(Out, Option<Out>, Option<Out>)> {
    let (vals, lo, hi) = run(py, move || {
        let mut vals = vec![T::ZERO; d];
        if want_rows {
            let (mut lo, mut hi) = (vec![0u32; d], vec![0u32; d]);
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

#[pyfunction]
#[pyo3(signature = (x, weights, nonfinite))]
fn mean(
    py: Python<'_>,
    x: Matrix<'_>,
    weights: Option<numpy::PyReadonlyArray1<'_, f64>>,
    nonfinite: &str,
) -> PyResult<(Out, Vec<usize>)> {
    let policy = policy(nonfinite)?;
    let w = weights
        .as_ref()
        .map(|w| w.as_slice())
        .transpose()
        .map_err(|_| {
            super::InvalidParameterError::new_err("weights must be a contiguous float64 array")
        })?;
    dispatch!(x.rows(core::mean::NAME)?, r => {
        let (vals, info) = run(py, || {
            let mut out = vec![Float::ZERO; r.d()];
            let info = core::mean::mean(&r, w, policy, &mut out)?;
            Ok((out, info))
        })?;
        Ok((array(py, vals), info.dropped))
    })
}

#[pyfunction]
#[pyo3(signature = (x, even, nonfinite, return_rows))]
fn median(
    py: Python<'_>,
    x: Matrix<'_>,
    even: &str,
    nonfinite: &str,
    return_rows: bool,
) -> PyResult<(Out, Option<Out>, Option<Out>)> {
    let policy = policy(nonfinite)?;
    let even = parse("even", even, &["mean", "lower", "upper"], Even::parse)?;
    dispatch!(x.rows(core::median::NAME)?, r => {
        let rr = &r;
        columns(py, r.d(), return_rows, move |out| core::median::median(rr, even, policy, out))
    })
}

#[pyfunction]
#[pyo3(signature = (x, f, nonfinite, return_rows))]
fn trimmed_mean(
    py: Python<'_>,
    x: Matrix<'_>,
    f: usize,
    nonfinite: &str,
    return_rows: bool,
) -> PyResult<(Out, Option<Out>, Option<Out>)> {
    let policy = policy(nonfinite)?;
    dispatch!(x.rows(core::trimmed_mean::NAME)?, r => {
        let rr = &r;
        columns(py, r.d(), return_rows, move |out| core::trimmed_mean::trimmed_mean(rr, f, policy, out))
    })
}

#[pyfunction]
#[pyo3(signature = (x, f, m, nonfinite))]
fn multi_krum(
    py: Python<'_>,
    x: Matrix<'_>,
    f: usize,
    m: usize,
    nonfinite: &str,
) -> PyResult<(Out, Vec<usize>, Out)> {
    let policy = policy(nonfinite)?;
    dispatch!(x.rows(core::krum::MULTI_NAME)?, r => {
        let (vals, sel) = run(py, || {
            let mut out = vec![Float::ZERO; r.d()];
            let sel = if m == 1 {
                core::krum::krum(&r, f, policy, &mut out)?
            } else {
                core::krum::multi_krum(&r, f, m, policy, &mut out)?
            };
            Ok((out, sel))
        })?;
        Ok((array(py, vals), sel.indices, array(py, sel.scores)))
    })
}

#[pyfunction]
#[pyo3(signature = (x, f, nonfinite))]
fn krum(
    py: Python<'_>,
    x: Matrix<'_>,
    f: usize,
    nonfinite: &str,
) -> PyResult<(Out, Vec<usize>, Out)> {
    let policy = policy(nonfinite)?;
    dispatch!(x.rows(core::krum::NAME)?, r => {
        let (vals, sel) = run(py, || {
            let mut out = vec![Float::ZERO; r.d()];
            let sel = core::krum::krum(&r, f, policy, &mut out)?;
            Ok((out, sel))
        })?;
        Ok((array(py, vals), sel.indices, array(py, sel.scores)))
    })
}

/// DETOX stage 1: winners per (group, segment) (`u32::MAX` = none) and per-member agreement.
#[pyfunction]
#[pyo3(signature = (x, groups, r, segments, mode, atol, rtol))]
#[allow(clippy::too_many_arguments)]
fn detox_vote(
    py: Python<'_>,
    x: Matrix<'_>,
    groups: numpy::PyReadonlyArray1<'_, u32>,
    r: usize,
    segments: Vec<usize>,
    mode: &str,
    atol: f64,
    rtol: f64,
) -> PyResult<(Out, Out)> {
    use crate::rules::detox::{self as dx, Vote};
    let mode = match mode {
        "exact" => Vote::Exact,
        "approx" => Vote::Approx { atol, rtol },
        "reference" => Vote::Reference,
        other => {
            return Err(super::InvalidParameterError::new_err(format!(
                "detox: vote must be one of 'exact', 'approx', 'reference', got {other:?}"
            )))
        }
    };
    let groups = contiguous(&groups)?;
    dispatch!(x.rows(dx::NAME)?, rr => {
        let res = run(py, || dx::vote(&rr, groups, r, &segments, mode))?;
        Ok((array(py, res.winners), array(py, res.agree)))
    })
}

/// Geometric median (smoothed Weiszfeld): values, iterations, converged, objective, weights.
#[pyfunction]
#[pyo3(signature = (x, weights, nu, maxiter, ftol, init, nonfinite))]
#[allow(clippy::too_many_arguments)]
fn geometric_median(
    py: Python<'_>,
    x: Matrix<'_>,
    weights: Option<numpy::PyReadonlyArray1<'_, f64>>,
    nu: f64,
    maxiter: usize,
    ftol: f64,
    init: &str,
    nonfinite: &str,
) -> PyResult<(Out, usize, bool, f64, Out)> {
    use crate::rules::geometric_median::{self as gm, Init};
    let policy = policy(nonfinite)?;
    let init = parse("init", init, &["mean", "median", "zero"], Init::parse)?;
    let w = weights
        .as_ref()
        .map(|w| w.as_slice())
        .transpose()
        .map_err(|_| {
            super::InvalidParameterError::new_err("weights must be a contiguous float64 array")
        })?;
    dispatch!(x.rows(gm::NAME)?, r => {
        let (vals, info) = run(py, || {
            let mut out = vec![Float::ZERO; r.d()];
            let info = gm::geometric_median(&r, w, nu, maxiter, ftol, init, policy, &mut out)?;
            Ok((out, info))
        })?;
        Ok((array(py, vals), info.iterations, info.converged, info.objective, array(py, info.weights)))
    })
}

type CrossmaxResult = (Out, Option<Out>, Option<Out>, Option<Out>, Option<Out>);

/// CrossMax over `z` viewed as `(b * n, c)` (C-contiguous): flat `b * c` scores and, when
/// asked for, the backward's indices (top, kth, kth2 per `(b, c)`; argmax per `(b, n)`).
#[pyfunction]
#[pyo3(signature = (z, n, k, reducer, even, nonfinite, return_indices))]
#[allow(clippy::too_many_arguments)]
fn crossmax(
    py: Python<'_>,
    z: &Bound<'_, PyAny>,
    n: usize,
    k: usize,
    reducer: &str,
    even: &str,
    nonfinite: &str,
    return_indices: bool,
) -> PyResult<CrossmaxResult> {
    use crate::rules::crossmax::{self as cm, CrossmaxIndices, CrossmaxOut, Reducer};
    let policy = policy(nonfinite)?;
    let reducer = match reducer {
        "kth" => Reducer::Kth(k),
        "median" => Reducer::Median(parse(
            "even",
            even,
            &["mean", "lower", "upper"],
            Even::parse,
        )?),
        other => {
            return Err(super::InvalidParameterError::new_err(format!(
                "crossmax: reducer must be one of 'kth', 'median', got {other:?}"
            )))
        }
    };
    fn go<T: Float + numpy::Element>(
        py: Python<'_>,
        z: numpy::PyReadonlyArray2<'_, T>,
        n: usize,
        reducer: Reducer,
        policy: NonFinite,
        want: bool,
    ) -> PyResult<CrossmaxResult> {
        let (rows, c) = (z.shape()[0], z.shape()[1]);
        if n == 0 || !rows.is_multiple_of(n) {
            return Err(super::ShapeError::new_err(format!(
                "crossmax: {rows} rows cannot be split into examples of n={n} predictors"
            )));
        }
        let b = rows / n;
        let zs = z
            .as_slice()
            .map_err(|_| super::ShapeError::new_err("crossmax: logits must be C-contiguous"))?;
        let (vals, ix) = run(py, || {
            let mut vals = vec![T::ZERO; b * c];
            if want {
                let (mut t, mut k1, mut k2, mut am) = (
                    vec![0u32; b * c],
                    vec![0u32; b * c],
                    vec![0u32; b * c],
                    vec![0u32; b * n],
                );
                let indices = CrossmaxIndices {
                    top: &mut t,
                    kth: &mut k1,
                    kth2: &mut k2,
                    argmax: &mut am,
                };
                cm::crossmax(
                    zs,
                    b,
                    n,
                    c,
                    reducer,
                    policy,
                    CrossmaxOut {
                        values: &mut vals,
                        indices: Some(indices),
                    },
                )?;
                Ok((vals, Some((t, k1, k2, am))))
            } else {
                cm::crossmax(
                    zs,
                    b,
                    n,
                    c,
                    reducer,
                    policy,
                    CrossmaxOut {
                        values: &mut vals,
                        indices: None,
                    },
                )?;
                Ok((vals, None))
            }
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
    if let Ok(a) = z.extract::<numpy::PyReadonlyArray2<'_, f32>>() {
        go(py, a, n, reducer, policy, return_indices)
    } else if let Ok(a) = z.extract::<numpy::PyReadonlyArray2<'_, f64>>() {
        go(py, a, n, reducer, policy, return_indices)
    } else {
        Err(pyo3::exceptions::PyTypeError::new_err(
            "crossmax: logits must be a 2-D float32 or float64 numpy array",
        ))
    }
}

/// CrossMax backward on the CPU: the flat `b * n * c` input gradient.
#[pyfunction]
#[pyo3(signature = (g, finite, top, kth, kth2, argmax, n, c, average))]
#[allow(clippy::too_many_arguments)]
fn crossmax_backward(
    py: Python<'_>,
    g: &Bound<'_, PyAny>,
    finite: numpy::PyReadonlyArray1<'_, bool>,
    top: numpy::PyReadonlyArray1<'_, u32>,
    kth: numpy::PyReadonlyArray1<'_, u32>,
    kth2: numpy::PyReadonlyArray1<'_, u32>,
    argmax: numpy::PyReadonlyArray1<'_, u32>,
    n: usize,
    c: usize,
    average: bool,
) -> PyResult<Out> {
    #[allow(clippy::too_many_arguments)]
    fn go<T: Float + numpy::Element>(
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
        if finite.len() != bc
            || ix[0].len() != bc
            || ix[1].len() != bc
            || ix[2].len() != bc
            || b * n != ix[3].len()
        {
            return Err(super::ShapeError::new_err(
                "crossmax_backward: inconsistent sizes",
            ));
        }
        let out = run(py, || {
            let mut out = vec![T::ZERO; b * n * c];
            crate::rules::crossmax::backward(
                g, finite, ix[0], ix[1], ix[2], ix[3], n, c, average, &mut out,
            );
            Ok(out)
        })?;
        Ok(array(py, out))
    }
    let finite_s = finite.as_slice().map_err(|_| {
        super::InvalidParameterError::new_err("backward: arrays must be contiguous")
    })?;
    let ix = [
        contiguous(&top)?,
        contiguous(&kth)?,
        contiguous(&kth2)?,
        contiguous(&argmax)?,
    ];
    if let Ok(g) = g.extract::<numpy::PyReadonlyArray1<'_, f32>>() {
        go(py, contiguous(&g)?, finite_s, ix, n, c, average)
    } else {
        let g: numpy::PyReadonlyArray1<'_, f64> = g.extract()?;
        go(py, contiguous(&g)?, finite_s, ix, n, c, average)
    }
}

/// Run `kernel` detached on a fresh `n × d` buffer and return it as an `(n, d)` numpy array.
fn matrix<T: Float + numpy::Element>(
    py: Python<'_>,
    n: usize,
    d: usize,
    kernel: impl FnOnce(&mut [T]) -> Result<(), crate::AggError> + Send,
) -> PyResult<Out> {
    let out = run(py, || {
        let mut out = vec![T::ZERO; n * d];
        kernel(&mut out)?;
        Ok(out)
    })?;
    Ok(PyArray1::from_vec(py, out)
        .reshape([n, d])?
        .into_any()
        .unbind())
}

/// Median backward on the CPU: the `(n, d)` input gradient from `g` and the middle rows.
#[pyfunction]
#[pyo3(signature = (n, lo, hi, g))]
fn median_backward(
    py: Python<'_>,
    n: usize,
    lo: numpy::PyReadonlyArray1<'_, u32>,
    hi: Option<numpy::PyReadonlyArray1<'_, u32>>,
    g: &Bound<'_, PyAny>,
) -> PyResult<Out> {
    fn go<T: Float + numpy::Element>(
        py: Python<'_>,
        n: usize,
        lo: &[u32],
        hi: Option<&[u32]>,
        g: &[T],
    ) -> PyResult<Out> {
        matrix(py, n, g.len(), |out| core::grad::route(n, lo, hi, g, out))
    }
    let lo = contiguous(&lo)?;
    let hi_arr = hi.as_ref().map(contiguous).transpose()?;
    if let Ok(g) = g.extract::<numpy::PyReadonlyArray1<'_, f32>>() {
        go(py, n, lo, hi_arr, contiguous(&g)?)
    } else {
        let g: numpy::PyReadonlyArray1<'_, f64> = g.extract()?;
        go(py, n, lo, hi_arr, contiguous(&g)?)
    }
}

fn contiguous<'a, T: numpy::Element>(a: &'a numpy::PyReadonlyArray1<'_, T>) -> PyResult<&'a [T]> {
    a.as_slice()
        .map_err(|_| super::InvalidParameterError::new_err("backward: arrays must be contiguous"))
}

/// Trimmed-mean backward on the CPU: `g / kept` at every kept `(row, coordinate)`.
#[pyfunction]
#[pyo3(signature = (x, lo, hi, g, kept))]
fn trimmed_mean_backward(
    py: Python<'_>,
    x: Matrix<'_>,
    lo: numpy::PyReadonlyArray1<'_, u32>,
    hi: numpy::PyReadonlyArray1<'_, u32>,
    g: &Bound<'_, PyAny>,
    kept: usize,
) -> PyResult<Out> {
    fn go<T: Float + numpy::Element>(
        py: Python<'_>,
        r: &crate::input::Rows<'_, T>,
        lo: &[u32],
        hi: &[u32],
        g: &Bound<'_, PyAny>,
        kept: usize,
    ) -> PyResult<Out> {
        let g: numpy::PyReadonlyArray1<'_, T> = g.extract()?;
        let g = contiguous(&g)?;
        matrix(py, r.n(), r.d(), |out| {
            core::grad::kept(r, lo, hi, g, kept, out)
        })
    }
    let (lo, hi) = (contiguous(&lo)?, contiguous(&hi)?);
    dispatch!(x.rows("trimmed_mean_backward")?, r => go(py, &r, lo, hi, g, kept))
}

/// Krum / Multi-Krum selection from a full `(n, n)` float64 squared-distance matrix.
#[pyfunction]
#[pyo3(signature = (dist, f, m, nonfinite))]
fn krum_select(
    py: Python<'_>,
    dist: numpy::PyReadonlyArray2<'_, f64>,
    f: usize,
    m: usize,
    nonfinite: &str,
) -> PyResult<(Vec<usize>, Out)> {
    let policy = policy(nonfinite)?;
    let n = dist.shape()[0];
    if dist.shape()[1] != n {
        return Err(super::ShapeError::new_err(format!(
            "krum_select: the distance matrix must be square, got shape {:?}",
            dist.shape()
        )));
    }
    let dm = dist.as_slice().map_err(|_| {
        super::InvalidParameterError::new_err("the distance matrix must be C-contiguous")
    })?;
    let sel = run(py, || {
        core::krum::select_from_distances(dm, n, f, m, policy)
    })?;
    Ok((sel.indices, array(py, sel.scores)))
}

/// All pairwise squared distances as an `(n, n)` float64 array.
#[pyfunction]
fn pairwise_sq_distances(py: Python<'_>, x: Matrix<'_>) -> PyResult<Out> {
    dispatch!(x.rows("pairwise_sq_distances")?, r => {
        let n = r.n();
        let dm = run(py, || Ok(distance::pairwise_sq_dists(&r)))?;
        Ok(PyArray1::from_vec(py, dm).reshape([n, n])?.into_any().unbind())
    })
}

fn weights_slice<'a>(
    w: &'a Option<numpy::PyReadonlyArray1<'_, f64>>,
) -> PyResult<Option<&'a [f64]>> {
    w.as_ref().map(|w| w.as_slice()).transpose().map_err(|_| {
        super::InvalidParameterError::new_err("weights must be a contiguous float64 array")
    })
}

/// Weighted median (values, and the rows of the one or two values used).
#[pyfunction]
#[pyo3(signature = (x, weights, even, nonfinite, return_rows))]
fn weighted_median(
    py: Python<'_>,
    x: Matrix<'_>,
    weights: numpy::PyReadonlyArray1<'_, f64>,
    even: &str,
    nonfinite: &str,
    return_rows: bool,
) -> PyResult<(Out, Option<Out>, Option<Out>)> {
    let policy = policy(nonfinite)?;
    let even = parse("even", even, &["mean", "lower", "upper"], Even::parse)?;
    let w = weights_slice(&Some(weights))?
        .map(|w| w.to_vec())
        .unwrap_or_default();
    dispatch!(x.rows(core::median::NAME)?, r => {
        let (rr, ww) = (&r, &w[..]);
        columns(py, r.d(), return_rows, move |out| core::weighted::weighted_median(rr, ww, even, policy, out))
    })
}

/// Weighted trimmed mean (values, and the rows of the lowest and highest value kept in part).
#[pyfunction]
#[pyo3(signature = (x, weights, f, nonfinite, return_rows))]
fn weighted_trimmed_mean(
    py: Python<'_>,
    x: Matrix<'_>,
    weights: numpy::PyReadonlyArray1<'_, f64>,
    f: usize,
    nonfinite: &str,
    return_rows: bool,
) -> PyResult<(Out, Option<Out>, Option<Out>)> {
    let policy = policy(nonfinite)?;
    let w = weights_slice(&Some(weights))?
        .map(|w| w.to_vec())
        .unwrap_or_default();
    dispatch!(x.rows(core::trimmed_mean::NAME)?, r => {
        let (rr, ww) = (&r, &w[..]);
        columns(py, r.d(), return_rows, move |out| core::weighted::weighted_trimmed_mean(rr, ww, f, policy, out))
    })
}

/// Meamed with `f`, or (`keep` given) the mean of the `keep` values closest to the median.
#[pyfunction]
#[pyo3(signature = (x, f, keep, nonfinite, return_rows))]
fn meamed(
    py: Python<'_>,
    x: Matrix<'_>,
    f: usize,
    keep: Option<usize>,
    nonfinite: &str,
    return_rows: bool,
) -> PyResult<(Out, Option<Out>, Option<Out>)> {
    let policy = policy(nonfinite)?;
    dispatch!(x.rows(core::meamed::NAME)?, r => {
        let rr = &r;
        columns(py, r.d(), return_rows, move |out| match keep {
            None => core::meamed::meamed(rr, f, policy, out),
            Some(k) => core::meamed::closest_to_median(rr, k, policy, out, "bulyan"),
        })
    })
}

/// Centered clipping: values, dropped inputs, last clipping factors.
#[pyfunction]
#[pyo3(signature = (x, center, tau, iters, nonfinite))]
fn centered_clipping(
    py: Python<'_>,
    x: Matrix<'_>,
    center: Option<numpy::PyReadonlyArray1<'_, f64>>,
    tau: f64,
    iters: usize,
    nonfinite: &str,
) -> PyResult<(Out, Vec<usize>, Out)> {
    let policy = policy(nonfinite)?;
    let c = center
        .as_ref()
        .map(|c| c.as_slice())
        .transpose()
        .map_err(|_| {
            super::InvalidParameterError::new_err("center must be a contiguous float64 array")
        })?;
    dispatch!(x.rows(core::centered_clipping::NAME)?, r => {
        let (vals, info) = run(py, || {
            let mut out = vec![Float::ZERO; r.d()];
            let info = core::centered_clipping::centered_clipping(&r, c, tau, iters, policy, &mut out)?;
            Ok((out, info))
        })?;
        Ok((array(py, vals), info.dropped, array(py, info.scales)))
    })
}

/// The Euclidean norm of each input (float64).
#[pyfunction]
fn row_norms(py: Python<'_>, x: Matrix<'_>) -> PyResult<Out> {
    dispatch!(x.rows("row_norms")?, r => {
        let v = run(py, || Ok(core::preagg::row_norms(&r)))?;
        Ok(array(py, v))
    })
}

/// Euclidean distances of each input to one float64 point.
#[pyfunction]
fn dists_to(py: Python<'_>, x: Matrix<'_>, z: numpy::PyReadonlyArray1<'_, f64>) -> PyResult<Out> {
    let z = z
        .as_slice()
        .map_err(|_| super::InvalidParameterError::new_err("z must be contiguous"))?;
    dispatch!(x.rows("dists_to")?, r => {
        if z.len() != r.d() {
            return Err(super::ShapeError::new_err(format!(
                "the point has {} values, the inputs {}", z.len(), r.d()
            )));
        }
        let v = run(py, || Ok(distance::dists_to(&r, z)))?;
        Ok(array(py, v))
    })
}

/// Means of groups of inputs (CSR `offsets` / `members`), as a `(groups, d)` array.
#[pyfunction]
fn group_means(
    py: Python<'_>,
    x: Matrix<'_>,
    offsets: Vec<usize>,
    members: Vec<usize>,
) -> PyResult<Out> {
    dispatch!(x.rows("group_means")?, r => {
        let d = r.d();
        let g = offsets.len().saturating_sub(1);
        let v = run(py, || {
            let mut out = vec![Float::ZERO; g * d];
            core::preagg::group_means(&r, &offsets, &members, &mut out)?;
            Ok(out)
        })?;
        Ok(PyArray1::from_vec(py, v).reshape([g, d])?.into_any().unbind())
    })
}

/// A fresh `(n, d)` numpy array filled by `fill` with the GIL released. numpy allocates it, so
/// a large output gets numpy's huge-page hint: a Rust `Vec` of 80 MB handed over with
/// `from_vec` spent 3x longer in page faults than the work (measured: 38 ms vs 12 ms).
pub(crate) fn fresh_matrix<T: Float + numpy::Element>(
    py: Python<'_>,
    n: usize,
    d: usize,
    fill: impl FnOnce(&mut [T]) -> Result<(), crate::AggError> + Send,
) -> PyResult<Out> {
    let arr = numpy::PyArray2::<T>::zeros(py, [n, d], false);
    {
        // SAFETY: the array was just created here and no other reference to it exists.
        let out = unsafe { arr.as_slice_mut() }.expect("a new array is contiguous");
        run(py, || fill(out))?;
    }
    Ok(arr.into_any().unbind())
}

/// Each input scaled by its factor, as a `(n, d)` array.
#[pyfunction]
fn scale_rows(py: Python<'_>, x: Matrix<'_>, scales: Vec<f64>) -> PyResult<Out> {
    dispatch!(x.rows("scale_rows")?, r => {
        let (n, d) = (r.n(), r.d());
        if scales.len() != n {
            return Err(super::InvalidParameterError::new_err(format!(
                "scale_rows: {} scales for n={n}", scales.len()
            )));
        }
        let (rr, sc) = (&r, &scales);
        fresh_matrix(py, n, d, move |out| {
            core::preagg::scale_rows(rr, sc, out);
            Ok(())
        })
    })
}

/// signSGD majority vote.
#[pyfunction]
fn sign_vote(py: Python<'_>, x: Matrix<'_>, nonfinite: &str) -> PyResult<Out> {
    let policy = policy(nonfinite)?;
    dispatch!(x.rows("sign_vote")?, r => {
        let v = run(py, || {
            r.check_policy("sign_vote", policy)?;
            let mut out = vec![Float::ZERO; r.d()];
            core::preagg::sign_vote(&r, policy == NonFinite::Propagate, &mut out);
            Ok(out)
        })?;
        Ok(array(py, v))
    })
}

fn square<'a>(
    what: &str,
    dist: &'a numpy::PyReadonlyArray2<'_, f64>,
) -> PyResult<(usize, &'a [f64])> {
    let n = dist.shape()[0];
    if dist.shape()[1] != n {
        return Err(super::ShapeError::new_err(format!(
            "{what}: the distance matrix must be square, got shape {:?}",
            dist.shape()
        )));
    }
    let dm = dist.as_slice().map_err(|_| {
        super::InvalidParameterError::new_err("the distance matrix must be C-contiguous")
    })?;
    Ok((n, dm))
}

/// MDA's kept inputs from a full squared-distance matrix.
#[pyfunction]
fn mda_select(
    py: Python<'_>,
    dist: numpy::PyReadonlyArray2<'_, f64>,
    f: usize,
    max_subsets: u64,
) -> PyResult<Vec<usize>> {
    let (n, dm) = square("mda", &dist)?;
    run(py, || core::subsets::mda_select(dm, n, f, max_subsets))
}

/// Bulyan's iterated-Krum selection (order chosen, scores) from a full squared-distance matrix.
#[pyfunction]
fn bulyan_select(
    py: Python<'_>,
    dist: numpy::PyReadonlyArray2<'_, f64>,
    f: usize,
    clamp: bool,
) -> PyResult<(Vec<usize>, Out)> {
    let (n, dm) = square("bulyan", &dist)?;
    let (sel, scores) = run(py, || core::subsets::bulyan_select(dm, n, f, clamp))?;
    Ok((sel, array(py, scores)))
}

/// `C(n, k)`, saturating.
#[pyfunction]
fn binomial(n: usize, k: usize) -> u64 {
    core::subsets::binomial(n, k)
}

#[pyfunction]
fn set_num_threads(py: Python<'_>, n: usize) -> PyResult<()> {
    run(py, || pool::set_num_threads(n))
}

#[pyfunction]
fn get_num_threads(py: Python<'_>) -> usize {
    py.detach(pool::num_threads)
}

#[pyfunction]
fn simd_level() -> &'static str {
    simd::level().name()
}

/// Force a SIMD level (tests use it to compare paths); returns the level now in force.
#[pyfunction]
fn _set_simd_level(level: &str) -> PyResult<&'static str> {
    let l = parse(
        "level",
        level,
        &["scalar", "avx2", "avx512", "neon"],
        simd::Level::parse,
    )?;
    Ok(simd::set_level(l).name())
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(mean, m)?)?;
    m.add_function(wrap_pyfunction!(median, m)?)?;
    m.add_function(wrap_pyfunction!(trimmed_mean, m)?)?;
    m.add_function(wrap_pyfunction!(krum, m)?)?;
    m.add_function(wrap_pyfunction!(multi_krum, m)?)?;
    m.add_function(wrap_pyfunction!(pairwise_sq_distances, m)?)?;
    m.add_function(wrap_pyfunction!(krum_select, m)?)?;
    m.add_function(wrap_pyfunction!(crossmax, m)?)?;
    m.add_function(wrap_pyfunction!(detox_vote, m)?)?;
    m.add_function(wrap_pyfunction!(geometric_median, m)?)?;
    m.add_function(wrap_pyfunction!(crossmax_backward, m)?)?;
    m.add_function(wrap_pyfunction!(median_backward, m)?)?;
    m.add_function(wrap_pyfunction!(trimmed_mean_backward, m)?)?;
    m.add_function(wrap_pyfunction!(weighted_median, m)?)?;
    m.add_function(wrap_pyfunction!(weighted_trimmed_mean, m)?)?;
    m.add_function(wrap_pyfunction!(meamed, m)?)?;
    m.add_function(wrap_pyfunction!(centered_clipping, m)?)?;
    m.add_function(wrap_pyfunction!(row_norms, m)?)?;
    m.add_function(wrap_pyfunction!(dists_to, m)?)?;
    m.add_function(wrap_pyfunction!(group_means, m)?)?;
    m.add_function(wrap_pyfunction!(sign_vote, m)?)?;
    m.add_function(wrap_pyfunction!(scale_rows, m)?)?;
    m.add_function(wrap_pyfunction!(mda_select, m)?)?;
    m.add_function(wrap_pyfunction!(bulyan_select, m)?)?;
    m.add_function(wrap_pyfunction!(binomial, m)?)?;
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(get_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(simd_level, m)?)?;
    m.add_function(wrap_pyfunction!(_set_simd_level, m)?)?;
    Ok(())
}

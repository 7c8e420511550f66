"""CrossMax: robust ensembling of the logits of several predictors."""

from __future__ import annotations

from typing import Any

import numpy as np

from aggkit import _core
from aggkit._validate import POLICIES, _as_array, _compute_dtype, _mirror, _torch, check_choice, is_torch
from aggkit.errors import InvalidParameterError, ShapeError

REDUCERS = ("kth", "median")
EVENS = ("lower", "upper", "mean")


def check_crossmax_params(k: Any, reducer: str, even: str, nonfinite: str) -> int:
    """Validate CrossMax's options; returns ``k`` (0 for the median, which has none)."""
    reducer = check_choice(reducer, "reducer", REDUCERS, "crossmax")
    check_choice(even, "even", EVENS, "crossmax")
    check_choice(nonfinite, "nonfinite", POLICIES, "crossmax")
    if reducer == "median":
        if k is not None:
            raise InvalidParameterError("crossmax: k is not used with reducer='median'; leave it unset")
        return 0
    if k is None:
        return 3
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"crossmax: k must be an int, got {type(k).__name__}")
    if k < 2:
        raise InvalidParameterError(
            f"crossmax: k must satisfy 2 <= k <= N, got k={k}"
            + (
                " (k=1 is degenerate: every class scores 0, so the argmax is an all-way tie)"
                if k == 1
                else ""
            )
        )
    return int(k)


def normalize_dims(ndim: int, predictor_dim: int, class_dim: int) -> tuple[int, int]:
    """Non-negative, distinct predictor and class dimensions of an ``ndim``-array."""
    if ndim < 2:
        raise ShapeError(f"crossmax: logits must have at least 2 dimensions (N, C), got {ndim}")
    dims = []
    for name, d in (("predictor_dim", predictor_dim), ("class_dim", class_dim)):
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)):
            raise TypeError(f"crossmax: {name} must be an int, got {type(d).__name__}")
        if not -ndim <= d < ndim:
            raise ShapeError(f"crossmax: {name}={d} is out of range for {ndim}-dimensional logits")
        dims.append(int(d) % ndim)
    if dims[0] == dims[1]:
        raise ShapeError(f"crossmax: predictor_dim and class_dim must differ, both are {dims[0]}")
    return dims[0], dims[1]


def crossmax(
    z: Any,
    *,
    k: int | None = None,
    reducer: str = "kth",
    even: str = "lower",
    predictor_dim: int = -2,
    class_dim: int = -1,
    nonfinite: str = "robust",
) -> Any:
    r"""CrossMax: combine the logits of ``N`` predictors into one score per class.

    Parameters
    ----------
    z : array_like, shape (..., N, C)
        Logits (or log-probabilities: the result is the same) of ``N`` predictors over ``C``
        classes, with any leading batch dimensions. float16, float32 or float64.
    k : int, optional
        The rank read per class, ``2 <= k <= N``; default 3 (the reference's). ``k = 1`` is
        rejected: every class would score 0.
    reducer : {"kth", "median"}, default "kth"
        ``"median"`` reads the median over predictors instead of the k-th largest.
    even : {"lower", "upper", "mean"}, default "lower"
        The median's convention for even ``N`` (``"lower"`` is ``torch.median``'s; for
        ``N = 4`` it equals ``k = 3``).
    predictor_dim, class_dim : int, default -2, -1
        Where the predictors and the classes are.
    nonfinite : {"robust", "raise", "propagate"}, default "robust"
        See Notes.

    Returns
    -------
    numpy.ndarray, shape (..., C)
        Scores ``<= 0`` (``-inf`` for a class every predictor gives ``-inf``), the dtype of
        ``z``; the prediction is their argmax.

    Notes
    -----
    With :math:`A_{n,c} = z_{n,c} - \max_{c'} z_{n,c'}` (each predictor's top logit becomes
    0), :math:`Y_c = A_{(k),c} - A_{(1),c}`, where :math:`A_{(j),c}` is the j-th largest of
    :math:`A_{\cdot,c}`: the reference's second normalisation (subtract each class's best
    predictor) followed by the k-th largest, in closed form (ALGORITHMS.md §13). A class's
    score is minus the gap between its best and its k-th best predictor, so one predictor
    shouting for a class cannot set that class's score (a Vickrey auction). Adding a constant
    to one predictor's logits changes nothing (logits and log-softmax give the same result);
    scaling them does. Predictors are ranked per class by ``(value, index)``, descending, so
    ties go to the lower predictor index (this fixes the gradient's routing in
    :func:`aggkit.torch.crossmax`).

    ``nonfinite="robust"`` reads NaN as ``-inf`` (no bid for that class) and ``+inf`` as the
    largest finite value, and a predictor whose logits are all ``-inf`` abstains;
    ``"raise"`` refuses NaN and ``+inf`` (``-inf`` masks a class and is always allowed);
    ``"propagate"`` computes naively, so a NaN logit makes its example's scores NaN.

    Convention: ``k = 3`` is the default because the authors' reference notebook uses it (with
    ``N = 8``); the paper's Algorithm 1 is said to take the median for generic ensembles, which
    could not be checked against the paper here, so both are offered (``reducer="median"``).

    CrossMax is an aggregation operator. Its reported adversarial robustness was largely
    gradient masking under adaptive attacks (Zhang, Nikolić, Carlini, Tramèr 2024,
    arXiv:2411.14834): do not treat it as a certified defence.

    References
    ----------
    S. Fort, B. Lakshminarayanan. Ensemble everything everywhere: multi-scale aggregation for
    adversarial robustness. arXiv:2408.05446, 2024.

    Examples
    --------
    >>> import numpy as np, aggkit
    >>> z = np.array([[1, 0, -1, 0.5], [0, 2, 0, -3], [0.5, -1, 3, 0], [2, 1.5, 0, 1.9]])
    >>> aggkit.crossmax(z, k=3)
    array([-2. , -1. , -2. , -2.9])
    >>> int(np.argmax(aggkit.crossmax(z, k=3)))
    1
    """
    k_ = check_crossmax_params(k, reducer, even, nonfinite)
    if is_torch(z):
        return _torch().crossmax(
            z, k=k, reducer=reducer, even=even, predictor_dim=predictor_dim, class_dim=class_dim,
            nonfinite=nonfinite,
        )  # fmt: skip
    a = _as_array(z, "crossmax: z")
    dt = _compute_dtype(a.dtype, "crossmax: z")
    pd, cd = normalize_dims(a.ndim, predictor_dim, class_dim)
    moved = np.moveaxis(a, (pd, cd), (-2, -1))
    n, c = moved.shape[-2], moved.shape[-1]
    batch = moved.shape[:-2]
    if k_ > n:
        raise InvalidParameterError(f"crossmax: k must satisfy 2 <= k <= N, got k={k_}, N={n}")
    flat = np.ascontiguousarray(moved.reshape(-1, c) if moved.size else moved.reshape(0, c), dtype=dt)
    if flat.shape[0] == 0:
        out = np.zeros((*batch, c), dtype=dt)
        if n < 2:
            _core.crossmax(np.zeros((n, c), dt), n, k_, reducer, even, nonfinite, False)  # the core's error
    else:
        out = _core.crossmax(flat, n, k_, reducer, even, nonfinite, False)[0].reshape(*batch, c)
    if out.dtype != a.dtype:
        out = out.astype(a.dtype)
    wrap = _mirror(z)
    return out if wrap is None else wrap(out)

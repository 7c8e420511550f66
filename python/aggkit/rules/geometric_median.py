"""The geometric median (RFA): the point minimising the sum of Euclidean distances to the inputs."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from aggkit import _core
from aggkit._validate import POLICIES, _torch, check_choice, check_weights, is_torch, prepare
from aggkit.errors import InvalidParameterError
from aggkit.registry import Rule, register

INITS = ("mean", "median", "zero")


class GeometricMedianInfo(NamedTuple):
    """How the Weiszfeld iterations went.

    Attributes
    ----------
    iterations : int
        Updates made.
    converged : bool
        Whether the objective's relative change reached ``ftol`` before ``maxiter``.
    objective : float
        ``sum_i alpha_i ||z - x_i||`` at the result (finite inputs only under ``"robust"``).
    weights : numpy.ndarray (n,)
        The weight of each input in the result, which is their weighted mean (0 for dropped
        inputs); the torch gradient is ``w_i / Σ w`` per input.
    """

    iterations: int
    converged: bool
    objective: float
    weights: np.ndarray


def check_gm_params(nu: Any, maxiter: Any, ftol: Any, init: str, nonfinite: str) -> None:
    """Validate the options (the core checks them again)."""
    for name, v, lo in (("nu", nu, "> 0"), ("ftol", ftol, ">= 0")):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise TypeError(f"geometric_median: {name} must be a number, got {type(v).__name__}")
        if not math.isfinite(v) or (v <= 0 if lo == "> 0" else v < 0):
            raise InvalidParameterError(f"geometric_median: {name} must be finite and {lo}, got {name}={v}")
    if isinstance(maxiter, bool) or not isinstance(maxiter, (int, np.integer)):
        raise TypeError(f"geometric_median: maxiter must be an int, got {type(maxiter).__name__}")
    if maxiter < 1:
        raise InvalidParameterError(f"geometric_median: maxiter must be >= 1, got maxiter={maxiter}")
    check_choice(init, "init", INITS, "geometric_median")
    check_choice(nonfinite, "nonfinite", POLICIES, "geometric_median")


def geometric_median(
    x: Any,
    *,
    weights: Any = None,
    nu: float = 1e-6,
    maxiter: int = 100,
    ftol: float = 1e-10,
    init: str = "median",
    nonfinite: str = "robust",
    return_info: bool = False,
) -> Any:
    r"""The geometric median, by smoothed Weiszfeld iterations run to convergence.

    Parameters
    ----------
    x : array_like, shape (n, \*shape), or sequence of n arrays of one shape
        The inputs (float16, float32 or float64), flattened for the distances.
    weights : array_like of shape (n,), optional
        Non-negative weights :math:`\alpha_i` (e.g. example counts).
    nu : float, default 1e-6
        Smoothing: distances below ``nu`` count as ``nu`` (an absolute distance: scale it
        with your data), so an iterate on an input does not divide by zero.
    maxiter : int, default 100
        Iteration cap (>= 1).
    ftol : float, default 1e-10
        Stop when the objective changes by at most ``ftol`` relative.
    init : {"median", "mean", "zero"}, default "median"
        Starting point: the coordinate-wise median (robust: it starts inside the honest inputs'
        range however far the outliers are), the weighted mean (the RFA author's code), or
        zero (byzfl's). From the mean, far outliers dominate the objective, so its relative
        change can fall below ``ftol`` long before the iterate reaches the honest cluster.
    nonfinite : {"robust", "raise", "propagate"}, default "robust"
        ``"robust"`` drops inputs holding NaN or ±inf.
    return_info : bool, default False
        Also return a :class:`GeometricMedianInfo` (iterations, convergence, weights).

    Returns
    -------
    numpy.ndarray or (numpy.ndarray, GeometricMedianInfo)

    Notes
    -----
    Minimises :math:`\sum_i \alpha_i \|z - x_i\|_2`; each iteration sets
    :math:`z \leftarrow \sum_i w_i x_i / \sum_i w_i` with
    :math:`w_i = \alpha_i / \max(\nu, \|z - x_i\|)` (Pillutla, Kakade, Harchaoui, RFA).
    Breakdown point 1/2; rotation- and translation-equivariant (to the tolerance). Distances
    are direct differences in float64, the weighted means aggkit's float64 accumulation, so
    the result is the same for any thread count. byzfl's ``GeometricMedian`` stops after 3
    iterations from zero with ``nu = 0.1`` and is far from converged (``[3.79, 4.79, 5.79]``
    where the answer is ``[4, 5, 6]``); ``init="zero", nu=0.1, maxiter=3, ftol=0`` reproduces it.

    Examples
    --------
    >>> import numpy as np, aggkit
    >>> x = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    >>> z, info = aggkit.geometric_median(x, return_info=True)
    >>> np.round(z, 6), info.converged
    (array([4., 5., 6.]), True)
    """
    check_gm_params(nu, maxiter, ftol, init, nonfinite)
    if is_torch(x):
        return _torch().geometric_median(
            x, weights=weights, nu=nu, maxiter=maxiter, ftol=ftol, init=init, nonfinite=nonfinite,
            return_info=return_info,
        )  # fmt: skip
    p = prepare(x, "geometric_median")
    w = None if weights is None else np.asarray(check_weights(weights, p.n, "geometric_median"))
    out, it, conv, obj, wts = _core.geometric_median(
        p.data, w, float(nu), int(maxiter), float(ftol), init, nonfinite
    )
    y = p.finish(out)
    return (y, GeometricMedianInfo(it, conv, obj, wts)) if return_info else y


@register
class GeometricMedian(Rule):
    """Rule object for :func:`aggkit.geometric_median`."""

    name = "geometric_median"
    params = ("nu", "maxiter", "ftol", "init", "nonfinite")
    supports_weights = True

    def __init__(
        self,
        *,
        nu: float = 1e-6,
        maxiter: int = 100,
        ftol: float = 1e-10,
        init: str = "median",
        nonfinite: str = "robust",
    ) -> None:
        check_gm_params(nu, maxiter, ftol, init, nonfinite)
        self.nu, self.maxiter, self.ftol, self.init, self.nonfinite = nu, maxiter, ftol, init, nonfinite
        self._freeze()

    def __call__(self, x: Any, *, weights: Any = None) -> Any:
        """Aggregate ``x``; see :func:`aggkit.geometric_median`."""
        return geometric_median(
            x, weights=weights, nu=self.nu, maxiter=self.maxiter, ftol=self.ftol, init=self.init,
            nonfinite=self.nonfinite,
        )  # fmt: skip

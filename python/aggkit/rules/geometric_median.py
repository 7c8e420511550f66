"""The geometric median (RFA): the point minimising the sum of Euclidean distances to the inputs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal, NamedTuple, overload

from aggkit._params import NonFinite, NonNegative, Positive, StrictlyPositive
from aggkit._types import ArrayLike, ArrayT, NDArray, Weights
from aggkit.registry import WeightedRule, register

Init = Literal["median", "mean", "zero"]
"""The starting point of the Weiszfeld iterations."""


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
    weights: Any


@register
class GeometricMedian(WeightedRule):
    """The rule object of :func:`aggkit.geometric_median` (weights are given per call)."""

    name: ClassVar[str] = "geometric_median"
    nu: StrictlyPositive = 1e-6
    maxiter: Positive = 100
    ftol: NonNegative = 1e-10
    init: Init = "median"
    nonfinite: NonFinite = "robust"

    def work(self, n: int, d: int) -> tuple[int, str] | None:
        """Up to ``maxiter`` Weiszfeld passes, each with a fixed cost: ``maxiter (n d + 10^4)``."""
        return self.maxiter * (n * d + 10**4), "maxiter (n d + 10^4)"


@overload
def geometric_median(
    x: ArrayT | Sequence[ArrayT],
    *,
    weights: Weights = ...,
    nu: float = ...,
    maxiter: int = ...,
    ftol: float = ...,
    init: Init = ...,
    nonfinite: NonFinite = ...,
    return_info: Literal[False] = ...,
) -> ArrayT: ...
@overload
def geometric_median(
    x: ArrayT | Sequence[ArrayT],
    *,
    weights: Weights = ...,
    nu: float = ...,
    maxiter: int = ...,
    ftol: float = ...,
    init: Init = ...,
    nonfinite: NonFinite = ...,
    return_info: Literal[True],
) -> tuple[ArrayT, GeometricMedianInfo]: ...
@overload
def geometric_median(
    x: ArrayLike,
    *,
    weights: Weights = ...,
    nu: float = ...,
    maxiter: int = ...,
    ftol: float = ...,
    init: Init = ...,
    nonfinite: NonFinite = ...,
    return_info: Literal[False] = ...,
) -> NDArray: ...
@overload
def geometric_median(
    x: ArrayLike,
    *,
    weights: Weights = ...,
    nu: float = ...,
    maxiter: int = ...,
    ftol: float = ...,
    init: Init = ...,
    nonfinite: NonFinite = ...,
    return_info: Literal[True],
) -> tuple[NDArray, GeometricMedianInfo]: ...
def geometric_median(
    x: Any,
    *,
    weights: Weights = None,
    nu: float = GeometricMedian.nu,
    maxiter: int = GeometricMedian.maxiter,
    ftol: float = GeometricMedian.ftol,
    init: Init = GeometricMedian.init,
    nonfinite: NonFinite = GeometricMedian.nonfinite,
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
    rule = GeometricMedian(nu=nu, maxiter=maxiter, ftol=ftol, init=init, nonfinite=nonfinite)
    y, info = rule._run(x, weights=weights)
    return (y, info) if return_info else y

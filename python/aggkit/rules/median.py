"""Coordinate-wise median."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, overload

from aggkit import _axes
from aggkit._axes import Axis
from aggkit._params import Even, NonFinite
from aggkit._types import ArrayLike, ArrayT, NDArray, OutT, Weights
from aggkit.registry import WeightedRule, register


@register
class Median(WeightedRule):
    """The rule object of :func:`aggkit.median` (weights are given per call)."""

    name: ClassVar[str] = "median"
    _coordinate_wise: ClassVar[bool] = True
    even: Even = "mean"
    nonfinite: NonFinite = "robust"


@overload
def median(
    x: ArrayT | Sequence[ArrayT],
    *,
    even: Even = ...,
    weights: Weights = ...,
    nonfinite: NonFinite = ...,
    axis: Axis = ...,
    out: None = ...,
    keepdims: bool = ...,
) -> ArrayT: ...
@overload
def median(
    x: ArrayLike,
    *,
    even: Even = ...,
    weights: Weights = ...,
    nonfinite: NonFinite = ...,
    axis: Axis = ...,
    out: None = ...,
    keepdims: bool = ...,
) -> NDArray: ...
@overload
def median(
    x: Any,
    *,
    even: Even = ...,
    weights: Weights = ...,
    nonfinite: NonFinite = ...,
    axis: Axis = ...,
    out: OutT,
    keepdims: bool = ...,
) -> OutT: ...
def median(
    x: Any,
    *,
    even: Even = Median.even,
    weights: Weights = None,
    nonfinite: NonFinite = Median.nonfinite,
    axis: Axis = 0,
    out: Any = None,
    keepdims: bool = False,
) -> Any:
    r"""Coordinate-wise median of the inputs.

    Parameters
    ----------
    x : array_like, shape (n, \*shape), or sequence of n arrays of one shape
        The inputs (one per client). float16, float32 or float64.
    even : {"mean", "lower", "upper"}, default "mean"
        For even ``n``: the average of the two middle values (numpy, byzfl, Flower), the
        lower one (``torch.median``) or the upper one.
    weights : array_like of shape (n,), optional
        Non-negative weights (e.g. example counts): the weighted median, the value at half of
        the total weight (see Notes).
    nonfinite : {"robust", "raise", "propagate"}, default "robust"
        ``"robust"`` ranks NaN above +inf, so NaN and ±inf are outliers like any other;
        ``"raise"`` refuses them; ``"propagate"`` returns NaN in every coordinate that holds
        a NaN (numpy).
    axis : int, tuple of ints or None, default 0
        The axis along which the inputs lie (numpy's ``axis``): ``axis=1`` reads a
        ``(d, n)`` array as ``n`` inputs of ``d`` values. A tuple merges several axes into one
        client axis (in C order); ``None`` makes every value an input.
    out : array, optional
        Where to write the result, which is then returned: an array of the result's shape
        whose dtype the result's casts to under numpy's ``same_kind`` rule (a tensor on the
        result's device for tensor input; not under autograd, as in torch).
    keepdims : bool, default False
        Keep the client axes, with length 1, so that the result broadcasts against ``x``.

    Returns
    -------
    numpy.ndarray
        Shape ``shape`` (``x``'s shape without the client axes, kept with length 1 under
        ``keepdims``), the dtype of ``x``; ``out`` if given.

    Raises
    ------
    EmptyInputError
        If ``n = 0``.
    NonFiniteError
        Under ``"raise"`` with non-finite inputs.

    Notes
    -----
    :math:`y_j = \mathrm{median}(x_{1j}, \dots, x_{nj})`. Values are ranked by
    ``(value, row index)`` in IEEE total order (``-0.0`` below ``+0.0``, NaN above ``+inf``),
    so the result is bitwise independent of the order of the inputs. With at most
    :math:`\lceil n/2 \rceil - 1` arbitrary inputs, every coordinate stays within the range
    of the honest values. The average of the two middle values is computed without overflow.
    Cost: :math:`O(n d)`.

    With ``weights``, input :math:`i` counts as :math:`w_i` copies: the result is the first
    ranked value whose cumulative weight reaches half the total; when it reaches exactly half,
    ``even`` decides between it and the next value of positive weight. Unit weights give the
    unweighted median; integer weights give the median of the inputs repeated that many times.
    Cost: :math:`O(n \log n)` per coordinate (a full sort).

    References
    ----------
    D. Yin, Y. Chen, K. Ramchandran, P. Bartlett. Byzantine-robust distributed learning:
    towards optimal statistical rates. ICML 2018, arXiv:1803.01498.

    Examples
    --------
    >>> import numpy as np, aggkit
    >>> aggkit.median(np.array([[1.0, 10.0], [2.0, -3.0], [4.0, 7.0], [100.0, 0.5]]))
    array([3.  , 3.75])
    """
    return _axes.reduce(Median(even=even, nonfinite=nonfinite), x, axis, out, keepdims, weights=weights)

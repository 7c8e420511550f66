"""Coordinate-wise trimmed mean."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, overload

from aggkit import _axes
from aggkit._axes import Axis
from aggkit._params import MAJORITY, Count, NonFinite
from aggkit._types import ArrayLike, ArrayT, NDArray, OutT, Weights
from aggkit.registry import WeightedRule, register


@register
class TrimmedMean(WeightedRule):
    """The rule object of :func:`aggkit.trimmed_mean` (weights are given per call)."""

    name: ClassVar[str] = "trimmed_mean"
    _coordinate_wise: ClassVar[bool] = True
    f: Count
    nonfinite: NonFinite = "robust"

    def min_inputs(self) -> int:
        """``2f + 1``."""
        return MAJORITY.min_n(self.f)

    def check_n(self, n: int) -> None:
        """``n >= 2f + 1``."""
        MAJORITY.check("trimmed mean", n, self.f)


@overload
def trimmed_mean(
    x: ArrayT | Sequence[ArrayT],
    *,
    f: int,
    weights: Weights = ...,
    nonfinite: NonFinite = ...,
    axis: Axis = ...,
    out: None = ...,
    keepdims: bool = ...,
) -> ArrayT: ...
@overload
def trimmed_mean(
    x: ArrayLike,
    *,
    f: int,
    weights: Weights = ...,
    nonfinite: NonFinite = ...,
    axis: Axis = ...,
    out: None = ...,
    keepdims: bool = ...,
) -> NDArray: ...
@overload
def trimmed_mean(
    x: Any,
    *,
    f: int,
    weights: Weights = ...,
    nonfinite: NonFinite = ...,
    axis: Axis = ...,
    out: OutT,
    keepdims: bool = ...,
) -> OutT: ...
def trimmed_mean(
    x: Any,
    *,
    f: int,
    weights: Weights = None,
    nonfinite: NonFinite = TrimmedMean.nonfinite,
    axis: Axis = 0,
    out: Any = None,
    keepdims: bool = False,
) -> Any:
    r"""Coordinate-wise mean after dropping the ``f`` lowest and ``f`` highest values.

    Parameters
    ----------
    x : array_like, shape (n, \*shape), or sequence of n arrays of one shape
        The inputs (one per client). float16, float32 or float64.
    f : int
        Number of values trimmed on each side (the number of Byzantine inputs tolerated).
        Needs ``n >= 2f + 1``; ``f = 0`` is the mean.
    weights : array_like of shape (n,), optional
        Non-negative weights (e.g. example counts): trims the weight ``f/n`` of the total from
        each end instead of ``f`` inputs (see Notes).
    nonfinite : {"robust", "raise", "propagate"}, default "robust"
        ``"robust"`` ranks NaN above +inf, so up to ``f`` NaN or infinite values per side
        are trimmed like any outlier; ``"raise"`` refuses them; ``"propagate"`` returns NaN
        in every coordinate that holds a NaN (numpy).
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
    TooFewInputsError
        If ``n < 2f + 1``.
    EmptyInputError
        If ``n = 0``.
    NonFiniteError
        Under ``"raise"`` with non-finite inputs.

    Notes
    -----
    :math:`y_j = \frac{1}{n-2f} \sum_{r=f+1}^{n-f} x_{(r)j}`, where :math:`x_{(r)j}` is the
    value of rank :math:`r` in coordinate :math:`j` under the ``(value, row index)`` order.
    The kept values are summed in ascending order in float64 (compensated for float64
    input), so the result is bitwise independent of the order of the inputs, and no
    ``total - smallest - largest`` shortcut lets a 1e38 outlier overflow. With at most
    ``f`` arbitrary inputs every coordinate stays within the range of the honest values.
    byzfl's ``TrMean(f)`` uses the same ``f``; Flower's ``FedTrimmedAvg(beta)`` trims
    ``int(beta * n)`` per side.

    With ``weights``, input :math:`i` counts as a mass :math:`w_i`: the mass
    :math:`t = W f / n` (:math:`W = \sum w`) is trimmed from each end of the ranked values and
    the rest averaged, a value on the cut counting with its kept part. Unit weights give the
    unweighted rule, integer weights the trimmed mean of repeated inputs with ``f`` scaled to
    match. The bound on the honest range holds when the Byzantine inputs' total weight is at
    most :math:`t`. Cost: :math:`O(n \log n)` per coordinate (a full sort).

    References
    ----------
    D. Yin, Y. Chen, K. Ramchandran, P. Bartlett. Byzantine-robust distributed learning:
    towards optimal statistical rates. ICML 2018, arXiv:1803.01498.

    Examples
    --------
    >>> import numpy as np, aggkit
    >>> aggkit.trimmed_mean(np.array([[1.0], [2.0], [3.0], [1e30]]), f=1)
    array([2.5])
    """
    return _axes.reduce(TrimmedMean(f=f, nonfinite=nonfinite), x, axis, out, keepdims, weights=weights)

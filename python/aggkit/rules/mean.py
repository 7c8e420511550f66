"""The (weighted) mean: FedAvg, the non-robust baseline."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, overload

from aggkit import _axes
from aggkit._axes import Axis
from aggkit._params import NonFinite
from aggkit._types import ArrayLike, ArrayT, NDArray, OutT, Weights
from aggkit.registry import WeightedRule, register


@register
class Mean(WeightedRule):
    """The rule object of :func:`aggkit.mean` (weights are given per call)."""

    name: ClassVar[str] = "mean"
    nonfinite: NonFinite = "robust"

    @property
    def coordinate_wise(self) -> bool:
        """Whether the rule works coordinate by coordinate: not under ``nonfinite="robust"``.

        There an input holding a NaN anywhere is dropped from every coordinate, so the rule
        must see whole inputs.
        """
        return self.nonfinite != "robust"


@overload
def mean(
    x: ArrayT | Sequence[ArrayT],
    *,
    weights: Weights = ...,
    nonfinite: NonFinite = ...,
    axis: Axis = ...,
    out: None = ...,
    keepdims: bool = ...,
) -> ArrayT: ...
@overload
def mean(
    x: ArrayLike,
    *,
    weights: Weights = ...,
    nonfinite: NonFinite = ...,
    axis: Axis = ...,
    out: None = ...,
    keepdims: bool = ...,
) -> NDArray: ...
@overload
def mean(
    x: Any,
    *,
    weights: Weights = ...,
    nonfinite: NonFinite = ...,
    axis: Axis = ...,
    out: OutT,
    keepdims: bool = ...,
) -> OutT: ...
def mean(
    x: Any,
    *,
    weights: Weights = None,
    nonfinite: NonFinite = Mean.nonfinite,
    axis: Axis = 0,
    out: Any = None,
    keepdims: bool = False,
) -> Any:
    r"""Average the inputs coordinate by coordinate, optionally weighted.

    Parameters
    ----------
    x : array_like, shape (n, \*shape), or sequence of n arrays of one shape
        The inputs (one per client). float16, float32 or float64.
    weights : array_like of n non-negative floats, optional
        Per-input weights (e.g. the number of examples behind each update, as FedAvg).
    nonfinite : {"robust", "raise", "propagate"}, default "robust"
        ``"robust"`` drops every input that holds a NaN or ±inf and averages the others;
        ``"raise"`` refuses them; ``"propagate"`` is plain IEEE arithmetic (numpy).
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
    InvalidParameterError
        If a weight is negative or not finite, or the weights averaged sum to 0.
    NonFiniteError
        Under ``"raise"`` with non-finite inputs; under ``"robust"`` if every input is
        non-finite.

    Notes
    -----
    :math:`y_j = \sum_i w_i x_{ij} / \sum_i w_i`, accumulated in float64. The mean has no
    robustness at all: one input can move it anywhere. It is here as the baseline, and as
    the last step of rules that average what they keep.

    Examples
    --------
    >>> import numpy as np, aggkit
    >>> aggkit.mean(np.array([[1.0, 2.0], [3.0, 4.0], [np.nan, 0.0]]))
    array([2., 3.])
    """
    return _axes.reduce(Mean(nonfinite=nonfinite), x, axis, out, keepdims, weights=weights)

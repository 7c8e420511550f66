"""The (weighted) mean: FedAvg, the non-robust baseline."""

from __future__ import annotations

from typing import Any

import numpy as np

from aggkit import _core
from aggkit._validate import POLICIES, _torch, check_choice, is_torch, prepare
from aggkit.errors import ShapeError
from aggkit.registry import Rule, register


def mean(x: Any, *, weights: Any = None, nonfinite: str = "robust") -> np.ndarray:
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

    Returns
    -------
    numpy.ndarray
        Shape ``shape``, the dtype of ``x``.

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
    nonfinite = check_choice(nonfinite, "nonfinite", POLICIES, "mean")
    if is_torch(x):
        return _torch().mean(x, weights=weights, nonfinite=nonfinite)
    p = prepare(x, "mean")
    w = None
    if weights is not None:
        w = np.ascontiguousarray(weights, dtype=np.float64)
        if w.ndim != 1:
            raise ShapeError(f"mean: weights must be 1-D with one entry per input, got shape {w.shape}")
    out, _dropped = _core.mean(p.data, w, nonfinite)
    return p.finish(out)


@register
class Mean(Rule):
    """Rule object for :func:`aggkit.mean` (weights are given per call)."""

    name = "mean"
    params = ("nonfinite",)
    supports_weights = True

    @property
    def coordinate_wise(self) -> bool:  # type: ignore[override]
        """Whether the rule works coordinate by coordinate: not under ``nonfinite="robust"``.

        There an input holding a NaN anywhere is dropped from every coordinate, so the rule
        must see whole inputs.
        """
        return self.nonfinite != "robust"

    def __init__(self, *, nonfinite: str = "robust") -> None:
        self.nonfinite = check_choice(nonfinite, "nonfinite", POLICIES, "mean")
        self._freeze()

    def __call__(self, x: Any, *, weights: Any = None) -> np.ndarray:
        """Aggregate ``x``; see :func:`aggkit.mean`."""
        return mean(x, weights=weights, nonfinite=self.nonfinite)

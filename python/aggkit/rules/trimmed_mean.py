"""Coordinate-wise trimmed mean."""

from __future__ import annotations

from typing import Any

import numpy as np

from aggkit import _core
from aggkit._validate import (
    POLICIES,
    _torch,
    check_choice,
    check_f,
    check_n,
    check_weights,
    is_torch,
    prepare,
)
from aggkit.registry import Rule, register


def trimmed_mean(x: Any, *, f: int, weights: Any = None, nonfinite: str = "robust") -> np.ndarray:
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

    Returns
    -------
    numpy.ndarray
        Shape ``shape``, the dtype of ``x``.

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
    f = check_f(f, "trimmed_mean")
    nonfinite = check_choice(nonfinite, "nonfinite", POLICIES, "trimmed_mean")
    if is_torch(x):
        return _torch().trimmed_mean(x, f=f, weights=weights, nonfinite=nonfinite)
    p = prepare(x, "trimmed_mean")
    if weights is not None:
        check_n("trimmed mean", "n >= 2f + 1", p.n, f, 2 * f + 1)
        w = np.asarray(check_weights(weights, p.n, "trimmed_mean"))
        out, _, _ = _core.weighted_trimmed_mean(p.data, w, f, nonfinite, False)
    else:
        out, _, _ = _core.trimmed_mean(p.data, f, nonfinite, False)
    return p.finish(out)


@register
class TrimmedMean(Rule):
    """Rule object for :func:`aggkit.trimmed_mean`."""

    name = "trimmed_mean"
    coordinate_wise = True
    params = ("f", "nonfinite")
    supports_weights = True

    def __init__(self, *, f: int, nonfinite: str = "robust") -> None:
        self.f = check_f(f, "trimmed_mean")
        self.nonfinite = check_choice(nonfinite, "nonfinite", POLICIES, "trimmed_mean")
        self._freeze()

    def min_inputs(self) -> int:
        """``2f + 1``."""
        return 2 * self.f + 1

    def __call__(self, x: Any, *, weights: Any = None) -> np.ndarray:
        """Aggregate ``x``; see :func:`aggkit.trimmed_mean`."""
        return trimmed_mean(x, f=self.f, weights=weights, nonfinite=self.nonfinite)

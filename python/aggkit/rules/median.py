"""Coordinate-wise median."""

from __future__ import annotations

from typing import Any

import numpy as np

from aggkit import _core
from aggkit._validate import POLICIES, _torch, check_choice, check_weights, is_torch, prepare
from aggkit.registry import Rule, register

EVEN = ("mean", "lower", "upper")


def median(x: Any, *, even: str = "mean", weights: Any = None, nonfinite: str = "robust") -> np.ndarray:
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

    Returns
    -------
    numpy.ndarray
        Shape ``shape``, the dtype of ``x``.

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
    even = check_choice(even, "even", EVEN, "median")
    nonfinite = check_choice(nonfinite, "nonfinite", POLICIES, "median")
    if is_torch(x):
        return _torch().median(x, even=even, weights=weights, nonfinite=nonfinite)
    p = prepare(x, "median")
    if weights is not None:
        w = np.asarray(check_weights(weights, p.n, "median"))
        out, _, _ = _core.weighted_median(p.data, w, even, nonfinite, False)
    else:
        out, _, _ = _core.median(p.data, even, nonfinite, False)
    return p.finish(out)


@register
class Median(Rule):
    """Rule object for :func:`aggkit.median`."""

    name = "median"
    coordinate_wise = True
    params = ("even", "nonfinite")
    supports_weights = True

    def __init__(self, *, even: str = "mean", nonfinite: str = "robust") -> None:
        self.even = check_choice(even, "even", EVEN, "median")
        self.nonfinite = check_choice(nonfinite, "nonfinite", POLICIES, "median")
        self._freeze()

    def __call__(self, x: Any, *, weights: Any = None) -> np.ndarray:
        """Aggregate ``x``; see :func:`aggkit.median`."""
        return median(x, even=self.even, weights=weights, nonfinite=self.nonfinite)

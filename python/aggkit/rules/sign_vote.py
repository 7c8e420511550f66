"""signSGD with majority vote."""

from __future__ import annotations

from typing import Any

import numpy as np

from aggkit import _core
from aggkit._validate import POLICIES, _torch, check_choice, is_torch, prepare
from aggkit.registry import Rule, register


def sign_vote(x: Any, *, nonfinite: str = "robust") -> np.ndarray:
    r"""SignSGD's majority vote: per coordinate, the sign of the sum of the inputs' signs.

    Parameters
    ----------
    x : array_like, shape (n, \*shape), or sequence of n arrays of one shape
        The inputs: gradients, or the signs the workers sent (float16, float32 or float64).
    nonfinite : {"robust", "raise", "propagate"}, default "robust"
        A NaN has no sign: ``"robust"`` counts it as an abstention, ``"raise"`` refuses it,
        ``"propagate"`` makes the coordinate NaN. ±inf votes with its sign.

    Returns
    -------
    numpy.ndarray
        Values in {-1, 0, +1}, shape ``shape``, the dtype of ``x``.

    Notes
    -----
    :math:`y_j = \mathrm{sign}(\sum_i \mathrm{sign}(x_{ij}))`, with ``sign(0) = 0``, so a tied
    vote (even ``n``) or zeros give 0: prefer an odd number of workers. Each worker's influence
    is one vote per coordinate whatever its magnitude. For the noisy variants of Chen et al.
    (2020), which bridge the sign / median and the mean on heterogeneous data, put
    :class:`aggkit.Perturb` before it:
    ``aggkit.Pipeline([aggkit.Perturb(b=...), aggkit.SignVote()])``.
    Cost :math:`O(n d)`.

    References
    ----------
    J. Bernstein, J. Zhao, K. Azizzadenesheli, A. Anandkumar. signSGD with majority vote is
    communication efficient and fault tolerant. ICLR 2019, arXiv:1810.05291.

    Examples
    --------
    >>> import numpy as np, aggkit
    >>> aggkit.sign_vote(np.array([[0.5, -2.0, 1.0], [0.1, 3.0, -1.0], [-9.0, -1.0, 0.0]]))
    array([ 1., -1.,  0.])
    """
    nonfinite = check_choice(nonfinite, "nonfinite", POLICIES, "sign_vote")
    if is_torch(x):
        return _torch().sign_vote(x, nonfinite=nonfinite)
    p = prepare(x, "sign_vote")
    out = _core.sign_vote(p.data, nonfinite)
    return p.finish(out)


@register
class SignVote(Rule):
    """Rule object for :func:`aggkit.sign_vote`."""

    name = "sign_vote"
    coordinate_wise = True
    params = ("nonfinite",)

    def __init__(self, *, nonfinite: str = "robust") -> None:
        self.nonfinite = check_choice(nonfinite, "nonfinite", POLICIES, "sign_vote")
        self._freeze()

    def __call__(self, x: Any) -> np.ndarray:
        """Aggregate ``x``; see :func:`aggkit.sign_vote`."""
        return sign_vote(x, nonfinite=self.nonfinite)

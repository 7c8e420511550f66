"""signSGD with majority vote."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, overload

from aggkit._params import NonFinite
from aggkit._types import ArrayLike, ArrayT, NDArray
from aggkit.registry import Rule, register


@register
class SignVote(Rule):
    """The rule object of :func:`aggkit.sign_vote`."""

    name: ClassVar[str] = "sign_vote"
    _coordinate_wise: ClassVar[bool] = True
    nonfinite: NonFinite = "robust"


@overload
def sign_vote(x: ArrayT | Sequence[ArrayT], *, nonfinite: NonFinite = ...) -> ArrayT: ...
@overload
def sign_vote(x: ArrayLike, *, nonfinite: NonFinite = ...) -> NDArray: ...
def sign_vote(x: Any, *, nonfinite: NonFinite = SignVote.nonfinite) -> Any:
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
    return SignVote(nonfinite=nonfinite)(x)

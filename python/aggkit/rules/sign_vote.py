"""signSGD with majority vote."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, overload

from aggkit import _axes
from aggkit._axes import Axis
from aggkit._params import NonFinite
from aggkit._types import ArrayLike, ArrayT, NDArray, OutT
from aggkit.registry import Rule, register


@register
class SignVote(Rule):
    """The rule object of :func:`aggkit.sign_vote`."""

    name: ClassVar[str] = "sign_vote"
    _coordinate_wise: ClassVar[bool] = True
    nonfinite: NonFinite = "robust"


@overload
def sign_vote(
    x: ArrayT | Sequence[ArrayT],
    *,
    nonfinite: NonFinite = ...,
    axis: Axis = ...,
    out: None = ...,
    keepdims: bool = ...,
) -> ArrayT: ...
@overload
def sign_vote(
    x: ArrayLike, *, nonfinite: NonFinite = ..., axis: Axis = ..., out: None = ..., keepdims: bool = ...
) -> NDArray: ...
@overload
def sign_vote(
    x: Any, *, nonfinite: NonFinite = ..., axis: Axis = ..., out: OutT, keepdims: bool = ...
) -> OutT: ...
def sign_vote(
    x: Any,
    *,
    nonfinite: NonFinite = SignVote.nonfinite,
    axis: Axis = 0,
    out: Any = None,
    keepdims: bool = False,
) -> Any:
    r"""SignSGD's majority vote: per coordinate, the sign of the sum of the inputs' signs.

    Parameters
    ----------
    x : array_like, shape (n, \*shape), or sequence of n arrays of one shape
        The inputs: gradients, or the signs the workers sent (float16, float32 or float64).
    nonfinite : {"robust", "raise", "propagate"}, default "robust"
        A NaN has no sign: ``"robust"`` counts it as an abstention, ``"raise"`` refuses it,
        ``"propagate"`` makes the coordinate NaN. ±inf votes with its sign.
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
        Values in {-1, 0, +1}, shape ``shape`` (``x``'s shape without the client axes, kept
        with length 1 under ``keepdims``), the dtype of ``x``; ``out`` if given.

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
    return _axes.reduce(SignVote(nonfinite=nonfinite), x, axis, out, keepdims)

"""Meamed: the coordinate-wise mean of the values closest to the median."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, overload

from aggkit import _axes
from aggkit._axes import Axis
from aggkit._params import MAJORITY, Count, NonFinite
from aggkit._types import ArrayLike, ArrayT, NDArray, OutT
from aggkit.registry import Rule, register


@register
class Meamed(Rule):
    """The rule object of :func:`aggkit.meamed`."""

    name: ClassVar[str] = "meamed"
    _coordinate_wise: ClassVar[bool] = True
    f: Count
    nonfinite: NonFinite = "robust"

    def min_inputs(self) -> int:
        """``2f + 1``."""
        return MAJORITY.min_n(self.f)

    def check_n(self, n: int) -> None:
        """``n >= 2f + 1``."""
        MAJORITY.check("meamed", n, self.f)


@overload
def meamed(
    x: ArrayT | Sequence[ArrayT],
    *,
    f: int,
    nonfinite: NonFinite = ...,
    axis: Axis = ...,
    out: None = ...,
    keepdims: bool = ...,
) -> ArrayT: ...
@overload
def meamed(
    x: ArrayLike,
    *,
    f: int,
    nonfinite: NonFinite = ...,
    axis: Axis = ...,
    out: None = ...,
    keepdims: bool = ...,
) -> NDArray: ...
@overload
def meamed(
    x: Any, *, f: int, nonfinite: NonFinite = ..., axis: Axis = ..., out: OutT, keepdims: bool = ...
) -> OutT: ...
def meamed(
    x: Any,
    *,
    f: int,
    nonfinite: NonFinite = Meamed.nonfinite,
    axis: Axis = 0,
    out: Any = None,
    keepdims: bool = False,
) -> Any:
    r"""Mean around the median: per coordinate, the mean of the ``n - f`` values closest to the median.

    Parameters
    ----------
    x : array_like, shape (n, \*shape), or sequence of n arrays of one shape
        The inputs (float16, float32 or float64).
    f : int
        Number of Byzantine inputs tolerated; ``n - f`` values are kept per coordinate.
        Needs ``n >= 2f + 1`` (byzfl: ``2f < n``).
    nonfinite : {"robust", "raise", "propagate"}, default "robust"
        ``"robust"`` ranks NaN above +inf: NaN and ±inf are far from a finite median and left
        out (up to ``f`` per coordinate); ``"raise"`` refuses them; ``"propagate"`` makes a
        coordinate holding a NaN NaN.
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

    Notes
    -----
    The median uses the even-``n`` ``"mean"`` convention (byzfl, the paper). The kept values
    are grown outward from the median over the values ranked by ``(value, row)``; when the next
    value below and the next value above are equally far, the one from the lower row is kept
    (byzfl's ``argpartition`` leaves this tie unspecified: the same values, possibly a
    different one of two equidistant ones). The kept values are averaged in float64 in rank
    order, so the result does not depend on the order of the inputs. With at most ``f``
    arbitrary inputs the median lies in the honest range and every kept value is at most as far
    from it as the farthest honest value, so each coordinate stays within the honest range
    widened by its width on each side (a Byzantine value closer to the median than a far honest
    one is kept: Meamed does not bound the output by the honest range itself, unlike the trimmed
    mean). Cost :math:`O(n \log n)` per coordinate.

    References
    ----------
    C. Xie, O. Koyejo, I. Gupta. Generalized Byzantine-tolerant SGD. arXiv:1802.10116, 2018.

    Examples
    --------
    >>> import numpy as np, aggkit
    >>> aggkit.meamed(np.array([[1.0], [2.0], [3.0], [10.0]]), f=1)
    array([2.])
    """
    return _axes.reduce(Meamed(f=f, nonfinite=nonfinite), x, axis, out, keepdims)

"""Centered clipping: average the inputs' differences to a centre, each clipped to a radius."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, overload

import numpy as np

from aggkit._params import Count, NonFinite, NonNegative
from aggkit._types import ArrayLike, ArrayT, NDArray, Weights
from aggkit.errors import InvalidParameterError
from aggkit.registry import Rounds, Rule, check_reference, register


def parse_center(center: Any) -> NDArray:
    """A ``center`` given as numbers, as one flat float64 array.

    Its size and values are checked against the inputs by the kernel, or :func:`check_center`.
    """
    try:
        c = np.asarray(center, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidParameterError(
            f"centered_clipping: the center must be an array of numbers, got {type(center).__name__}"
        ) from None
    return np.ascontiguousarray(c.reshape(-1))


def check_center(size: int, finite: bool, d: int) -> None:
    """The core's checks of a ``center``, for the paths that do not reach it (same messages)."""
    if size != d:
        raise InvalidParameterError(
            f"centered_clipping: the center must have the inputs' size: got {size} values for d={d}"
        )
    if not finite:
        raise InvalidParameterError("centered_clipping: the center must be finite")


@register
class CenteredClipping(Rule):
    """The rule object of :func:`aggkit.centered_clipping` (from zero, or a ``center`` per call).

    For the paper's use, from the previous aggregate, see :class:`CenteredClippingState`.
    """

    name: ClassVar[str] = "centered_clipping"
    tau: NonNegative = 100.0
    iters: Count = 1
    nonfinite: NonFinite = "robust"

    def work(self, n: int, d: int) -> tuple[int, str] | None:
        """``iters`` passes over the input, each with a fixed cost: ``iters (n d + 10^4)``."""
        return self.iters * (n * d + 10**4), "iters (n d + 10^4)"

    def rounds(self) -> CenteredClippingState:
        """Round after round from the previous aggregate (the paper's rule)."""
        return CenteredClippingState(tau=self.tau, iters=self.iters, nonfinite=self.nonfinite)

    @overload
    def __call__(self, x: ArrayT | Sequence[ArrayT], *, center: Any = None) -> ArrayT: ...
    @overload
    def __call__(self, x: ArrayLike, *, center: Any = None) -> NDArray: ...
    def __call__(self, x: Any, *, center: Any = None) -> Any:
        """Aggregate ``x`` starting from ``center`` (zero if ``None``)."""
        return self._run(x, center=center)[0]


@overload
def centered_clipping(
    x: ArrayT | Sequence[ArrayT],
    *,
    tau: float = ...,
    iters: int = ...,
    center: Any = ...,
    nonfinite: NonFinite = ...,
) -> ArrayT: ...
@overload
def centered_clipping(
    x: ArrayLike, *, tau: float = ..., iters: int = ..., center: Any = ..., nonfinite: NonFinite = ...
) -> NDArray: ...
def centered_clipping(
    x: Any,
    *,
    tau: float = CenteredClipping.tau,
    iters: int = CenteredClipping.iters,
    center: Any = None,
    nonfinite: NonFinite = CenteredClipping.nonfinite,
) -> Any:
    r"""Centered clipping: move a centre by the mean of the inputs' clipped differences to it.

    Parameters
    ----------
    x : array_like, shape (n, \*shape), or sequence of n arrays of one shape
        The inputs (float16, float32 or float64); norms are over all coordinates.
    tau : float, default 100.0
        Clipping radius (byzfl's default). ``0`` returns the centre.
    iters : int, default 1
        Number of clipping steps ``L`` (1 in the paper's experiments).
    center : array_like of shape ``shape``, optional
        The starting point ``v_0``: the previous round's aggregate (the paper's choice, see
        :class:`CenteredClippingState`); zero if omitted (byzfl's only usable value).
    nonfinite : {"robust", "raise", "propagate"}, default "robust"
        ``"robust"`` drops inputs holding NaN or ±inf (they count against the Byzantine
        budget); ``"raise"`` refuses them; ``"propagate"`` lets NaN reach the output.

    Returns
    -------
    numpy.ndarray
        Shape ``shape``, the dtype of ``x``.

    Notes
    -----
    :math:`v_{l+1} = v_l + \frac{1}{n}\sum_i (x_i - v_l)\min(1, \tau / \|x_i - v_l\|)`; a zero
    distance counts as the smallest normal positive float64 (no 0/0 at ``tau = 0``). The centre and
    updates are float64, rounded to the input dtype at the end; every value is summed in a fixed
    order, so the result does not depend on the thread count. Cost :math:`O(L n d)`.

    References
    ----------
    S. P. Karimireddy, L. He, M. Jaggi. Learning from history for Byzantine robust
    optimization. ICML 2021, arXiv:2012.10333.

    Examples
    --------
    >>> import numpy as np, aggkit
    >>> x = np.array([[3.0, 4.0], [0.0, 0.0]])
    >>> aggkit.centered_clipping(x, tau=1.0)
    array([0.3, 0.4])
    """
    return CenteredClipping(tau=tau, iters=iters, nonfinite=nonfinite)(x, center=center)


class CenteredClippingState(Rounds):
    """Centered clipping that starts each call from its previous output (the paper's momentum use).

    Not a rule object (it changes with every call); ``center`` holds the last output (``None``
    before the first call, which starts from zero). ``reset()`` forgets it.

    Examples
    --------
    >>> import numpy as np, aggkit
    >>> cc = aggkit.CenteredClippingState(tau=1.0)
    >>> cc(np.array([[3.0, 4.0], [3.0, 4.0]]))
    array([0.6, 0.8])
    >>> cc(np.array([[3.0, 4.0], [3.0, 4.0]]))
    array([1.2, 1.6])
    """

    rule: CenteredClipping

    def __init__(
        self,
        *,
        tau: float = CenteredClipping.tau,
        iters: int = CenteredClipping.iters,
        nonfinite: NonFinite = CenteredClipping.nonfinite,
    ) -> None:
        super().__init__(CenteredClipping(tau=tau, iters=iters, nonfinite=nonfinite))
        self.center: Any = None

    def aggregate(
        self, x: Any, *, weights: Weights = None, reference: Any = None, ids: Sequence[Any] | None = None
    ) -> tuple[Any, None]:
        """``(output, None)``: this round from the stored centre (integrations call this)."""
        if weights is not None:
            raise InvalidParameterError(f"{self.rule!r} does not take weights")
        check_reference(self.rule, reference)
        return self(x), None

    def __call__(self, x: Any) -> Any:
        """Aggregate ``x`` from the stored centre and store the result."""
        c = self.center
        if c is not None and hasattr(c, "detach"):
            c = c.detach()
        y = self.rule(x, center=c)
        self.center = y.detach().clone() if hasattr(y, "detach") else np.array(y, copy=True)
        return y

    def reset(self) -> None:
        """Start the next call from zero."""
        self.center = None

    def __repr__(self) -> str:
        return f"CenteredClippingState({self.rule!r})"

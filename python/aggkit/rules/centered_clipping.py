"""Centered clipping: average the inputs' differences to a centre, each clipped to a radius."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from aggkit import _core
from aggkit._validate import _torch, check_choice, is_torch, prepare
from aggkit.errors import InvalidParameterError
from aggkit.registry import Rule, register

POLICIES_CC = ("robust", "raise", "propagate")


def check_cc_params(tau: Any, iters: Any, nonfinite: str) -> None:
    """Validate ``tau`` (finite, >= 0) and ``iters`` (int >= 0)."""
    if isinstance(tau, bool) or not isinstance(tau, (int, float, np.integer, np.floating)):
        raise TypeError(f"centered_clipping: tau must be a number, got {type(tau).__name__}")
    if not (math.isfinite(tau) and tau >= 0):
        raise InvalidParameterError(f"centered_clipping: tau must be finite and >= 0, got tau={tau}")
    if isinstance(iters, bool) or not isinstance(iters, (int, np.integer)):
        raise TypeError(f"centered_clipping: iters must be an int, got {type(iters).__name__}")
    if iters < 0:
        raise InvalidParameterError(f"centered_clipping: iters must be >= 0, got iters={iters}")
    check_choice(nonfinite, "nonfinite", POLICIES_CC, "centered_clipping")


def centered_clipping(
    x: Any, *, tau: float = 100.0, iters: int = 1, center: Any = None, nonfinite: str = "robust"
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
    distance counts as the smallest positive float64 (no 0/0 at ``tau = 0``). The centre and
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
    check_cc_params(tau, iters, nonfinite)
    if is_torch(x):
        return _torch().centered_clipping(x, tau=tau, iters=iters, center=center, nonfinite=nonfinite)
    p = prepare(x, "centered_clipping")
    c = None
    if center is not None:
        c = np.ascontiguousarray(np.asarray(center, dtype=np.float64).reshape(-1))
    out, _, _ = _core.centered_clipping(p.data, c, float(tau), int(iters), nonfinite)
    return p.finish(out)


@register
class CenteredClipping(Rule):
    """Rule object for :func:`aggkit.centered_clipping` (from zero, or a fixed ``center``).

    For the paper's use, from the previous aggregate, see :class:`CenteredClippingState`.
    """

    name = "centered_clipping"
    params = ("tau", "iters", "nonfinite")

    def __init__(self, *, tau: float = 100.0, iters: int = 1, nonfinite: str = "robust") -> None:
        check_cc_params(tau, iters, nonfinite)
        self.tau, self.iters, self.nonfinite = tau, iters, nonfinite
        self._freeze()

    def __call__(self, x: Any, *, center: Any = None) -> Any:
        """Aggregate ``x``; see :func:`aggkit.centered_clipping`."""
        return centered_clipping(x, tau=self.tau, iters=self.iters, center=center, nonfinite=self.nonfinite)


class CenteredClippingState:
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

    def __init__(self, *, tau: float = 100.0, iters: int = 1, nonfinite: str = "robust") -> None:
        self.rule = CenteredClipping(tau=tau, iters=iters, nonfinite=nonfinite)
        self.center: Any = None

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

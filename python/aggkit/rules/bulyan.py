"""Bulyan: Krum picks a subset, then a coordinate-wise trimmed average of it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal, overload

from aggkit._params import BULYAN, BULYAN_DETOX, Count, DropOrRaise, Flag, Needs
from aggkit._types import ArrayLike, ArrayT, NDArray
from aggkit.registry import Rule, Selection, register

Variant = Literal["paper", "detox"]
"""Bulyan as its paper defines it, or as the DETOX / ByzShield code computes it."""


@register
class Bulyan(Rule):
    """The rule object of :func:`aggkit.bulyan`."""

    name: ClassVar[str] = "bulyan"
    f: Count
    variant: Variant = "paper"
    clamp: Flag = True
    nonfinite: DropOrRaise = "robust"

    def min_inputs(self) -> int:
        """``4f + 3`` (paper) or ``3f + 3`` (detox)."""
        return self._needs().min_n(self.f)

    def check_n(self, n: int) -> None:
        """``n >= 4f + 3`` (paper) or ``n >= 3f + 3`` (detox)."""
        self._needs().check("bulyan", n, self.f)

    def _needs(self) -> Needs:
        return BULYAN if self.variant == "paper" else BULYAN_DETOX

    def work(self, n: int, d: int) -> tuple[int, str] | None:
        """``paper``: ``n - 2f`` rounds of Krum over up to ``n`` inputs, ``n^2 (n - 2f)``."""
        if self.variant != "paper":
            return None
        return n * n * max(n - 2 * self.f, 0), "n^2 (n - 2f)"


@overload
def bulyan(
    x: ArrayT | Sequence[ArrayT],
    *,
    f: int,
    variant: Variant = ...,
    clamp: bool = ...,
    nonfinite: DropOrRaise = ...,
    return_selection: Literal[False] = ...,
) -> ArrayT: ...
@overload
def bulyan(
    x: ArrayT | Sequence[ArrayT],
    *,
    f: int,
    variant: Variant = ...,
    clamp: bool = ...,
    nonfinite: DropOrRaise = ...,
    return_selection: Literal[True],
) -> tuple[ArrayT, Selection]: ...
@overload
def bulyan(
    x: ArrayLike,
    *,
    f: int,
    variant: Variant = ...,
    clamp: bool = ...,
    nonfinite: DropOrRaise = ...,
    return_selection: Literal[False] = ...,
) -> NDArray: ...
@overload
def bulyan(
    x: ArrayLike,
    *,
    f: int,
    variant: Variant = ...,
    clamp: bool = ...,
    nonfinite: DropOrRaise = ...,
    return_selection: Literal[True],
) -> tuple[NDArray, Selection]: ...
def bulyan(
    x: Any,
    *,
    f: int,
    variant: Variant = Bulyan.variant,
    clamp: bool = Bulyan.clamp,
    nonfinite: DropOrRaise = Bulyan.nonfinite,
    return_selection: bool = False,
) -> Any:
    r"""Bulyan: iterated Krum selects inputs, then each coordinate averages those near its median.

    Parameters
    ----------
    x : array_like, shape (n, \*shape), or sequence of n arrays of one shape
        The inputs (float16, float32 or float64).
    f : int
        Number of Byzantine inputs tolerated. Needs ``n >= 4f + 3`` (``variant="paper"``) or
        ``n >= 3f + 3`` (``"detox"``).
    variant : {"paper", "detox"}, default "paper"
        ``"paper"`` (El Mhamdi et al.; Flower's ``Bulyan``): :math:`\theta = n - 2f` rounds of
        Krum on the inputs not chosen yet, then per coordinate the mean of the
        :math:`\beta = \theta - 2f` chosen values closest to their median. ``"detox"`` (the
        DETOX / ByzShield reference code's "bulyan"): the :math:`n - f - 2` best Krum scores in
        one shot, then a coordinate-wise trimmed mean with ``f`` per side.
    clamp : bool, default True
        Paper variant: a Krum round over :math:`r` remaining inputs sums the :math:`r - f - 2`
        smallest distances, at least 1 (Flower's clamp; ``False`` allows 0, where all scores
        tie and the lowest index wins).
    nonfinite : {"robust", "raise"}, default "robust"
        ``"robust"`` leaves out inputs holding NaN or ±inf (at most ``f``); they are never
        selected.
    return_selection : bool, default False
        Also return a :class:`Selection`: the chosen inputs in the order chosen and each input's
        score (the Krum score it was chosen with; ``inf`` if never chosen).

    Returns
    -------
    numpy.ndarray or (numpy.ndarray, Selection)

    Notes
    -----
    One exact distance matrix serves every Krum round (:math:`O(n^2 d)`); the rounds cost
    :math:`O(n^3 \log n)`, the second stage :math:`O(\theta d \log \theta)`. Ties: lowest index
    in each Krum round; in the second stage, equidistant values go to the lower input index
    (see :func:`aggkit.meamed`). Oracle (docs/algorithms.md): selection order
    ``[5, 1, 3, 2, 0]``, output ``[-5, -1.333333]``. The AggregaThor "Bulyan over Multi-Krum"
    (averaged selections) is not provided.

    References
    ----------
    E.-M. El Mhamdi, R. Guerraoui, S. Rouault. The hidden vulnerability of distributed learning
    in Byzantium. ICML 2018, arXiv:1802.07927.

    Examples
    --------
    >>> import numpy as np, aggkit
    >>> x = np.array([[6, -8], [-6, -5], [-6, 6], [7, 2], [-9, -8], [-3, -1], [40, -30]], float)
    >>> aggkit.bulyan(x, f=1).round(6)
    array([-5.      , -1.333333])
    """
    y, sel = Bulyan(f=f, variant=variant, clamp=clamp, nonfinite=nonfinite)._run(x)
    return (y, sel) if return_selection else y

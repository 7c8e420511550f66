"""Bulyan: Krum picks a subset, then a coordinate-wise trimmed average of it."""

from __future__ import annotations

from typing import Any

import numpy as np

from aggkit import _core
from aggkit._validate import _torch, check_choice, check_f, check_n, is_torch, prepare
from aggkit.registry import Rule, register
from aggkit.rules.krum import Selection
from aggkit.rules.subsets import POLICIES_SUBSET, finite_part

VARIANTS = ("paper", "detox")


def bulyan_plan(
    dist: np.ndarray, n: int, f: int, variant: str, clamp: bool
) -> tuple[list[int], np.ndarray, int]:
    """The selected inputs (in order chosen), every input's score, and how many values stage 2 keeps.

    ``paper``: ``theta = n - 2f`` inputs by iterated Krum, stage 2 keeps ``beta = theta - 2f``
    values closest to the median. ``detox``: the ``n - f - 2`` best Krum scores, stage 2 trims
    ``f`` per side (keeps ``n - 3f - 2``).
    """
    if variant == "paper":
        check_n("bulyan", "n >= 4f + 3", n, f, 4 * f + 3)
        sel, sc = _core.bulyan_select(np.ascontiguousarray(dist), f, clamp)
        scores = np.full(n, np.inf)
        scores[sel] = sc
        return list(sel), scores, len(sel) - 2 * f
    check_n("bulyan", "n >= 3f + 3", n, f, 3 * f + 3)
    idx, scores = _core.krum_select(np.ascontiguousarray(dist), f, n - f - 2, "robust")
    return list(idx), scores, n - 3 * f - 2


def bulyan(
    x: Any,
    *,
    f: int,
    variant: str = "paper",
    clamp: bool = True,
    nonfinite: str = "robust",
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
    (see :func:`aggkit.meamed`). Spec oracle (ALGORITHMS.md §18): selection order
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
    f = check_f(f, "bulyan")
    check_choice(variant, "variant", VARIANTS, "bulyan")
    check_choice(nonfinite, "nonfinite", POLICIES_SUBSET, "bulyan")
    clamp = bool(clamp)
    if is_torch(x):
        return _torch().bulyan(
            x, f=f, variant=variant, clamp=clamp, nonfinite=nonfinite, return_selection=return_selection
        )
    p = prepare(x, "bulyan")
    finite_part(p.data, f, nonfinite, "bulyan")
    sel, scores, keep = bulyan_plan(_core.pairwise_sq_distances(p.data), p.n, f, variant, clamp)
    rows = [p.data[i] for i in sel]
    if variant == "paper":
        out, _, _ = _core.meamed(rows, 0, keep, "robust", False)
    else:
        out, _, _ = _core.trimmed_mean(rows, f, "robust", False)
    y = p.finish(out)
    return (y, Selection(np.asarray(sel, dtype=np.int64), scores)) if return_selection else y


@register
class Bulyan(Rule):
    """Rule object for :func:`aggkit.bulyan`."""

    name = "bulyan"
    params = ("f", "variant", "clamp", "nonfinite")

    def __init__(
        self, *, f: int, variant: str = "paper", clamp: bool = True, nonfinite: str = "robust"
    ) -> None:
        self.f = check_f(f, "bulyan")
        self.variant = check_choice(variant, "variant", VARIANTS, "bulyan")
        self.clamp = bool(clamp)
        self.nonfinite = check_choice(nonfinite, "nonfinite", POLICIES_SUBSET, "bulyan")
        self._freeze()

    def min_inputs(self) -> int:
        """``4f + 3`` (paper) or ``3f + 3`` (detox)."""
        return 4 * self.f + 3 if self.variant == "paper" else 3 * self.f + 3

    def __call__(self, x: Any) -> Any:
        """Aggregate ``x``; see :func:`aggkit.bulyan`."""
        return bulyan(x, f=self.f, variant=self.variant, clamp=self.clamp, nonfinite=self.nonfinite)

    def aggregate(self, x: Any, *, weights: Any = None) -> tuple[Any, Selection]:
        """Aggregate and report the selection."""
        if weights is not None:
            return super().aggregate(x, weights=weights)
        return bulyan(
            x,
            f=self.f,
            variant=self.variant,
            clamp=self.clamp,
            nonfinite=self.nonfinite,
            return_selection=True,
        )

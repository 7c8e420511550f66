"""Krum and Multi-Krum: keep the inputs closest to their nearest neighbours."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal, overload

from aggkit._params import KRUM, Count, NonFinite, OptionalPositive
from aggkit._types import ArrayLike, ArrayT, NDArray, Weights
from aggkit.errors import InvalidParameterError
from aggkit.registry import Rule, Selection, WeightedRule, register


@register
class Krum(Rule):
    """The rule object of :func:`aggkit.krum`."""

    name: ClassVar[str] = "krum"
    f: Count
    nonfinite: NonFinite = "robust"

    def min_inputs(self) -> int:
        """``2f + 3``."""
        return KRUM.min_n(self.f)

    def check_n(self, n: int) -> None:
        """``n >= 2f + 3``."""
        KRUM.check("Krum", n, self.f)


@register
class MultiKrum(WeightedRule):
    """The rule object of :func:`aggkit.multi_krum` (weights are given per call)."""

    name: ClassVar[str] = "multi_krum"
    f: Count
    m: OptionalPositive = None
    nonfinite: NonFinite = "robust"

    def min_inputs(self) -> int:
        """``max(2f + 3, m)``."""
        return max(KRUM.min_n(self.f), self.m or 1)

    def check_n(self, n: int) -> None:
        """``n >= 2f + 3`` and ``m <= n``."""
        KRUM.check("Multi-Krum", n, self.f)
        m = self.count(n)
        if m > n:
            raise InvalidParameterError(f"Multi-Krum: m must satisfy 1 <= m <= n, got m={m}, n={n}")

    def count(self, n: int) -> int:
        """How many inputs are averaged out of ``n``: ``m``, by default ``n - f``."""
        return max(n - self.f, 1) if self.m is None else self.m


@overload
def krum(
    x: ArrayT | Sequence[ArrayT],
    *,
    f: int,
    nonfinite: NonFinite = ...,
    return_selection: Literal[False] = ...,
) -> ArrayT: ...
@overload
def krum(
    x: ArrayT | Sequence[ArrayT], *, f: int, nonfinite: NonFinite = ..., return_selection: Literal[True]
) -> tuple[ArrayT, Selection]: ...
@overload
def krum(
    x: ArrayLike, *, f: int, nonfinite: NonFinite = ..., return_selection: Literal[False] = ...
) -> NDArray: ...
@overload
def krum(
    x: ArrayLike, *, f: int, nonfinite: NonFinite = ..., return_selection: Literal[True]
) -> tuple[NDArray, Selection]: ...
def krum(x: Any, *, f: int, nonfinite: NonFinite = Krum.nonfinite, return_selection: bool = False) -> Any:
    r"""Krum: return the input with the smallest Krum score.

    Parameters
    ----------
    x : array_like, shape (n, \*shape), or sequence of n arrays of one shape
        The inputs (one per client). float16, float32 or float64.
    f : int
        Number of Byzantine inputs tolerated. Needs ``n >= 2f + 3``.
    nonfinite : {"robust", "raise", "propagate"}, default "robust"
        See Notes.
    return_selection : bool, default False
        Also return a :class:`Selection` with the chosen index and every input's score.

    Returns
    -------
    numpy.ndarray or (numpy.ndarray, Selection)
        A copy of the selected input (shape ``shape``, the dtype of ``x``), and the
        selection if asked for.

    Raises
    ------
    TooFewInputsError
        If ``n < 2f + 3``.
    NonFiniteError
        Under ``"raise"`` with non-finite inputs, or under ``"robust"`` if every score is
        infinite.

    Notes
    -----
    The score of input :math:`i` is the sum of its :math:`n - f - 2` smallest squared
    Euclidean distances to the other inputs, :math:`s(i) = \sum_{j \in N_i} \|x_i - x_j\|^2`
    (the paper's count; byzfl sums :math:`n - f - 1`, Flower clamps to at least 1). Inputs
    are ranked by ``(score, index)``: on equal scores the lower index wins. Needs
    :math:`n \ge 2f + 3`. Distances are computed from direct differences, never with the
    :math:`\|a\|^2 + \|b\|^2 - 2ab` identity, which cancels catastrophically in float32 on
    near-identical updates (Flower's Krum returns negative squared distances there). Under
    ``nonfinite="robust"`` an input holding NaN or ±inf has an infinite score and is never
    selected; ``"propagate"`` ranks NaN scores first (as ``np.argmin``), so the NaN reaches
    the output. Cost: :math:`O(n^2 d)` time, :math:`O(n^2)` extra memory.

    References
    ----------
    P. Blanchard, E. M. El Mhamdi, R. Guerraoui, J. Stainer. Machine learning with
    adversaries: Byzantine tolerant gradient descent. NeurIPS 2017, arXiv:1703.02757.

    Examples
    --------
    >>> import numpy as np, aggkit
    >>> x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [10.0, 10.0]])
    >>> y, sel = aggkit.krum(x, f=1, return_selection=True)
    >>> y, sel.indices, sel.scores
    (array([0., 0.]), array([0]), array([  2.,   2.,   2.,   2., 343.]))
    """
    y, sel = Krum(f=f, nonfinite=nonfinite)._run(x)
    return (y, sel) if return_selection else y


@overload
def multi_krum(
    x: ArrayT | Sequence[ArrayT],
    *,
    f: int,
    m: int | None = ...,
    weights: Weights = ...,
    nonfinite: NonFinite = ...,
    return_selection: Literal[False] = ...,
) -> ArrayT: ...
@overload
def multi_krum(
    x: ArrayT | Sequence[ArrayT],
    *,
    f: int,
    m: int | None = ...,
    weights: Weights = ...,
    nonfinite: NonFinite = ...,
    return_selection: Literal[True],
) -> tuple[ArrayT, Selection]: ...
@overload
def multi_krum(
    x: ArrayLike,
    *,
    f: int,
    m: int | None = ...,
    weights: Weights = ...,
    nonfinite: NonFinite = ...,
    return_selection: Literal[False] = ...,
) -> NDArray: ...
@overload
def multi_krum(
    x: ArrayLike,
    *,
    f: int,
    m: int | None = ...,
    weights: Weights = ...,
    nonfinite: NonFinite = ...,
    return_selection: Literal[True],
) -> tuple[NDArray, Selection]: ...
def multi_krum(
    x: Any,
    *,
    f: int,
    m: int | None = MultiKrum.m,
    weights: Weights = None,
    nonfinite: NonFinite = MultiKrum.nonfinite,
    return_selection: bool = False,
) -> Any:
    r"""Multi-Krum: average the ``m`` inputs with the smallest Krum scores.

    Parameters
    ----------
    x : array_like, shape (n, \*shape), or sequence of n arrays of one shape
        The inputs (one per client). float16, float32 or float64.
    f : int
        Number of Byzantine inputs tolerated. Needs ``n >= 2f + 3``.
    m : int, optional
        Number of inputs averaged, ``1 <= m <= n``. Default ``n - f`` (byzfl's choice; the
        DETOX and Garfield code use ``n - f - 2``). ``m = 1`` is Krum.
    weights : array_like of shape (n,), optional
        Non-negative per-input weights (e.g. example counts). The selected inputs are then
        averaged with their weights, as Flower's ``MultiKrum`` does with ``num-examples``;
        the selection itself ignores the weights. The selected weights must not all be 0.
    nonfinite : {"robust", "raise", "propagate"}, default "robust"
        See Notes. Under ``"robust"``, fewer than ``m`` inputs with a finite score is an
        error rather than an average that includes a non-finite input.
    return_selection : bool, default False
        Also return a :class:`Selection` with the chosen indices and every input's score.

    Returns
    -------
    numpy.ndarray or (numpy.ndarray, Selection)
        The mean of the selected inputs (shape ``shape``, the dtype of ``x``; accumulated
        in float64 in score order), and the selection if asked for.

    Raises
    ------
    TooFewInputsError
        If ``n < 2f + 3``.
    InvalidParameterError
        If ``m`` is not in ``1..n``.
    NonFiniteError
        Under ``"raise"`` with non-finite inputs, or under ``"robust"`` if fewer than ``m``
        inputs have a finite score.

    Notes
    -----
    Scores, ranking, exact distances and the non-finite policies are those of
    :func:`krum`. The selected inputs are averaged in float64, best score first, so
    the output does not depend on the order of the inputs (up to ties in score).

    References
    ----------
    P. Blanchard, E. M. El Mhamdi, R. Guerraoui, J. Stainer. Machine learning with
    adversaries: Byzantine tolerant gradient descent. NeurIPS 2017, arXiv:1703.02757.

    Examples
    --------
    >>> import numpy as np, aggkit
    >>> x = np.array([[6., -8.], [-6., -5.], [-6., 6.], [7., 2.], [-9., -8.], [-3., -1.],
    ...               [40., -30.]])
    >>> aggkit.multi_krum(x, f=1, m=4)
    array([-6., -2.])
    """
    y, sel = MultiKrum(f=f, m=m, nonfinite=nonfinite)._run(x, weights=weights)
    return (y, sel) if return_selection else y

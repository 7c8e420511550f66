"""Krum and Multi-Krum: keep the inputs closest to their nearest neighbours."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from aggkit import _core
from aggkit._validate import POLICIES, _torch, check_choice, check_f, check_weights, is_torch, prepare
from aggkit.errors import InvalidParameterError
from aggkit.registry import Rule, register


class Selection(NamedTuple):
    """Which inputs a selection rule kept, and why.

    Attributes
    ----------
    indices : numpy.ndarray of int64
        The selected inputs, best score first.
    scores : numpy.ndarray of float64
        Every input's score, in input order (lower is better; ``inf`` for inputs that
        cannot be selected).

    For torch inputs both are tensors on the input's device (``aggkit.torch``).
    """

    indices: np.ndarray
    scores: np.ndarray


def _selection(idx: list[int], scores: np.ndarray) -> Selection:
    return Selection(np.asarray(idx, dtype=np.int64), scores)


def krum(
    x: Any, *, f: int, nonfinite: str = "robust", return_selection: bool = False
) -> np.ndarray | tuple[np.ndarray, Selection]:
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
    f = check_f(f, "krum")
    nonfinite = check_choice(nonfinite, "nonfinite", POLICIES, "krum")
    if is_torch(x):
        return _torch().krum(x, f=f, nonfinite=nonfinite, return_selection=return_selection)
    p = prepare(x, "krum")
    out, idx, scores = _core.krum(p.data, f, nonfinite)
    y = p.finish(out)
    return (y, _selection(idx, scores)) if return_selection else y


def multi_krum(
    x: Any,
    *,
    f: int,
    m: int | None = None,
    weights: Any = None,
    nonfinite: str = "robust",
    return_selection: bool = False,
) -> np.ndarray | tuple[np.ndarray, Selection]:
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
    f = check_f(f, "multi_krum")
    nonfinite = check_choice(nonfinite, "nonfinite", POLICIES, "multi_krum")
    if is_torch(x):
        return _torch().multi_krum(
            x, f=f, m=m, weights=weights, nonfinite=nonfinite, return_selection=return_selection
        )
    p = prepare(x, "multi_krum")
    m_ = _check_m(m, p.n, f)
    w = None if weights is None else check_weights(weights, p.n, "multi_krum")
    out, idx, scores = _core.multi_krum(p.data, f, m_, nonfinite)
    if w is not None:
        # The weighted average of the selected rows, best score first (as without weights).
        if not any(w[i] > 0 for i in idx):
            raise InvalidParameterError(f"multi_krum: the selected inputs {list(idx)} all have weight 0")
        rows = [p.data[i] for i in idx]
        out, _ = _core.mean(rows, np.array([w[i] for i in idx]), "propagate")
    y = p.finish(out)
    return (y, _selection(idx, scores)) if return_selection else y


def _check_m(m: Any, n: int, f: int) -> int:
    if m is None:
        return max(n - f, 1)
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)):
        raise TypeError(f"multi_krum: m must be an int or None, got {type(m).__name__}")
    if m < 1:
        raise InvalidParameterError(f"Multi-Krum: m must satisfy 1 <= m <= n, got m={m}, n={n}")
    return int(m)


@register
class Krum(Rule):
    """Rule object for :func:`aggkit.krum`."""

    name = "krum"
    params = ("f", "nonfinite")

    def __init__(self, *, f: int, nonfinite: str = "robust") -> None:
        self.f = check_f(f, "krum")
        self.nonfinite = check_choice(nonfinite, "nonfinite", POLICIES, "krum")
        self._freeze()

    def min_inputs(self) -> int:
        """``2f + 3``."""
        return 2 * self.f + 3

    def __call__(self, x: Any) -> np.ndarray:
        """Aggregate ``x``; see :func:`aggkit.krum`."""
        return krum(x, f=self.f, nonfinite=self.nonfinite)  # type: ignore[return-value]

    def aggregate(self, x: Any, *, weights: Any = None) -> tuple[Any, Selection]:
        """Aggregate ``x`` and return the :class:`Selection` too (weights are refused)."""
        if weights is not None:
            raise InvalidParameterError(f"{self!r} does not take weights: it returns one input")
        return krum(x, f=self.f, nonfinite=self.nonfinite, return_selection=True)  # type: ignore[return-value]


@register
class MultiKrum(Rule):
    """Rule object for :func:`aggkit.multi_krum`."""

    name = "multi_krum"
    params = ("f", "m", "nonfinite")
    supports_weights = True

    def __init__(self, *, f: int, m: int | None = None, nonfinite: str = "robust") -> None:
        self.f = check_f(f, "multi_krum")
        if m is not None:
            _check_m(m, m, self.f)
        self.m = None if m is None else int(m)
        self.nonfinite = check_choice(nonfinite, "nonfinite", POLICIES, "multi_krum")
        self._freeze()

    def min_inputs(self) -> int:
        """``max(2f + 3, m)``."""
        return max(2 * self.f + 3, self.m or 1)

    def __call__(self, x: Any, *, weights: Any = None) -> np.ndarray:
        """Aggregate ``x``; see :func:`aggkit.multi_krum`."""
        return multi_krum(  # type: ignore[return-value]
            x, f=self.f, m=self.m, weights=weights, nonfinite=self.nonfinite
        )

    def aggregate(self, x: Any, *, weights: Any = None) -> tuple[Any, Selection]:
        """Aggregate ``x`` and return the :class:`Selection` too."""
        return multi_krum(  # type: ignore[return-value]
            x, f=self.f, m=self.m, weights=weights, nonfinite=self.nonfinite, return_selection=True
        )

"""FoolsGold: down-weight clients whose histories of updates point the same way (sybils)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, ClassVar, NamedTuple, overload

import numpy as np

from aggkit._params import DropOrRaise, OptionalNonNegative, StrictlyPositive
from aggkit._types import ArrayLike, ArrayT, NDArray, Weights
from aggkit.errors import InvalidParameterError, ShapeError
from aggkit.registry import Rounds, Rule, check_reference, register


class FoolsGoldInfo(NamedTuple):
    """What a FoolsGold call decided (numpy arrays for numpy input, tensors for torch input).

    Attributes
    ----------
    weights : array of float64, shape (n,)
        Each input's weight in ``[0, 1]`` (0 for sybil-like and non-finite inputs).
    history : array of float64, shape (n, d)
        The clients' histories including this call's updates: the ``history`` to pass next
        round (:class:`FoolsGoldState` keeps it for you).
    """

    weights: Any
    history: Any


def history_rows(history: Any, n: int) -> list[Any]:
    """The ``n`` rows of a ``history`` argument (arrays, tensors or ``None``), checked for count.

    The values of each row are read by the backend; this checks only what every backend shares.
    """
    if isinstance(history, list | tuple):
        rows = list(history)
    elif isinstance(history, str | bytes) or len(getattr(history, "shape", ())) == 0:
        raise ShapeError(
            f"foolsgold: history must hold one row per input (n={n}), got {type(history).__name__}"
        )
    else:
        rows = list(history)
    if len(rows) != n:
        raise ShapeError(f"foolsgold: history must have one row per input: got {len(rows)} rows, n={n}")
    return rows


@register
class FoolsGold(Rule):
    """The rule object of :func:`aggkit.foolsgold`; :meth:`rounds` keeps the clients' histories."""

    name: ClassVar[str] = "foolsgold"
    _weighs_clients: ClassVar[bool] = True
    kappa: StrictlyPositive = 1.0
    clip: OptionalNonNegative = None
    nonfinite: DropOrRaise = "robust"

    def rounds(self) -> FoolsGoldState:
        """Round after round, each client's history summed over the rounds (the paper's rule)."""
        return FoolsGoldState(self)

    @overload
    def __call__(self, x: ArrayT | Sequence[ArrayT], *, history: Any = None) -> ArrayT: ...
    @overload
    def __call__(self, x: ArrayLike, *, history: Any = None) -> NDArray: ...
    def __call__(self, x: Any, *, history: Any = None) -> Any:
        """Aggregate ``x`` given the clients' earlier ``history`` (none: this round only)."""
        return self._run(x, history=history)[0]


@overload
def foolsgold(
    x: ArrayT | Sequence[ArrayT],
    *,
    history: Any = ...,
    kappa: float = ...,
    clip: float | None = ...,
    nonfinite: DropOrRaise = ...,
    return_info: bool = ...,
) -> Any: ...
@overload
def foolsgold(
    x: ArrayLike,
    *,
    history: Any = ...,
    kappa: float = ...,
    clip: float | None = ...,
    nonfinite: DropOrRaise = ...,
    return_info: bool = ...,
) -> Any: ...
def foolsgold(
    x: Any,
    *,
    history: Any = None,
    kappa: float = FoolsGold.kappa,
    clip: float | None = FoolsGold.clip,
    nonfinite: DropOrRaise = FoolsGold.nonfinite,
    return_info: bool = False,
) -> Any:
    r"""FoolsGold: a weighted mean that gives clients with similar update histories little weight.

    Colluding clients (sybils) pursuing one goal send updates that point the same way round
    after round, while honest clients with their own data differ; FoolsGold measures the
    cosine similarity of the clients' summed updates and weights each client down by its
    largest similarity to another.

    Parameters
    ----------
    x : array_like, shape (n, \*shape), or sequence of n arrays of one shape
        This round's updates, one per client (float16, float32 or float64).
    history : array_like, shape (n, \*shape), optional
        Each client's sum of its earlier updates (as :class:`FoolsGoldInfo` returns it), in the
        rows' order; ``None``: no earlier rounds. :class:`FoolsGoldState` (``rule.rounds()``)
        keeps it for you, by client id.
    kappa : float, default 1.0
        The confidence :math:`\kappa` of the logit step (the authors' code fixes it at 1).
    clip : float, optional
        If given, updates longer than ``clip`` are scaled to norm ``clip``, in the history and
        in the output (the authors' code clips at 1). ``None`` (default) keeps them as they are.
    nonfinite : {"robust", "raise"}, default "robust"
        ``"robust"`` gives inputs holding NaN or ±inf weight 0 and leaves them out of the
        history; ``"raise"`` refuses them.
    return_info : bool, default False
        Also return a :class:`FoolsGoldInfo` (weights and the updated history).

    Returns
    -------
    numpy.ndarray, or (numpy.ndarray, FoolsGoldInfo)
        Shape ``shape``, the dtype of ``x``.

    Notes
    -----
    With :math:`H_i` the history plus this update, :math:`cs_{ij} = \cos(H_i, H_j)`
    (:math:`i \ne j`) and :math:`m_i = \max_j cs_{ij} + 10^{-5}`: pardoning sets
    :math:`cs_{ij} \leftarrow cs_{ij} m_i / m_j` where :math:`m_i < m_j`;
    :math:`w_i = 1 - \max_j cs_{ij}` clipped to ``[0, 1]``, divided by :math:`\max_k w_k`, 1
    replaced by 0.99, then :math:`\kappa(\ln(w_i / (1 - w_i) + 10^{-5}) + 0.5)` clipped to
    ``[0, 1]``. The output is :math:`\sum_i w_i x_i / \sum_i w_i`; zero when every weight is 0
    (e.g. all histories identical, where the authors' code divides 0 by 0). Verified against
    the authors' code (``DistributedML/FoolsGold``, ``ML/code/model_aggregator.py``), whose
    output is the unnormalised sum :math:`\sum_i w_i x_i`: this one divides by the weights'
    sum so that its scale is a mean's, as every other rule's. Feature-importance weighting (off
    in the authors' runs) is not implemented. Cosines come from the exact distances of the
    histories (float64, Rust); the weighted mean is the core's. Memory: the ``(n, d)`` float64
    history. Cost :math:`O(n^2 d)` per round.

    FoolsGold holds only while the colluding clients' histories look alike: Byzantine clients
    that send different updates (independent noise, or different attacks) are not down-weighted
    by it.

    References
    ----------
    C. Fung, C. J. M. Yoon, I. Beschastnikh. The limitations of federated learning in sybil
    settings. RAID 2020, arXiv:1808.04866.

    Examples
    --------
    >>> import numpy as np, aggkit
    >>> x = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0], [-1.0, -1.0]])
    >>> aggkit.foolsgold(x)  # the two identical updates get weight 0
    array([0.5, 0.5])
    """
    out, info = FoolsGold(kappa=kappa, clip=clip, nonfinite=nonfinite)._run(x, history=history)
    return (out, info) if return_info else out


def _size(v: Any) -> int:
    """How many values ``v`` holds (an array, a tensor, or a sequence of them)."""
    if isinstance(v, Sequence) and not isinstance(v, str | bytes):
        return sum(_size(r) for r in v)
    return int(np.prod(v.shape if hasattr(v, "shape") else np.shape(v)))


def _count(x: Any) -> int:
    """How many inputs ``x`` holds (the rule itself checks the rest of the input)."""
    if isinstance(x, Sequence) and not isinstance(x, str | bytes):
        return len(x)
    shape = x.shape if hasattr(x, "shape") else np.shape(x)
    if len(shape) == 0:
        raise ShapeError("foolsgold: x must have shape (n, ...), got a 0-d array")
    return int(shape[0])


class FoolsGoldState(Rounds):
    """FoolsGold round after round: each client's history, by client id, across calls.

    ``aggregate(x, ids=...)`` names the client behind each row (Flower node ids, site names);
    without ``ids`` row ``i`` is client ``i`` every round. A client seen for the first time
    starts from an empty history; histories of clients absent from a round are kept.
    ``reset()`` forgets them all.
    """

    rule: FoolsGold

    def __init__(self, rule: FoolsGold) -> None:
        super().__init__(rule)
        self.histories: dict[Hashable, Any] = {}

    def aggregate(
        self, x: Any, *, weights: Weights = None, reference: Any = None, ids: Sequence[Any] | None = None
    ) -> tuple[Any, None]:
        """``(output, None)``: this round with the stored histories, which it then updates."""
        if weights is not None:
            raise InvalidParameterError(f"{self.rule!r} does not take weights")
        check_reference(self.rule, reference)
        n = _count(x)
        if isinstance(ids, str | bytes):
            raise TypeError(f"foolsgold: ids must be a sequence of client ids, got {type(ids).__name__}")
        keys: list[Hashable] = list(range(n)) if ids is None else list(ids)
        if len(keys) != n:
            raise InvalidParameterError(
                f"foolsgold: ids must name each of the {n} inputs, got {len(keys)} ids"
            )
        for k in keys:
            if not isinstance(k, Hashable):
                raise TypeError(f"foolsgold: ids must be hashable (ints, strings), got {type(k).__name__}")
        if len(set(keys)) != n:
            raise InvalidParameterError("foolsgold: the ids of one round must be distinct")
        history = None
        if any(k in self.histories for k in keys):
            history = [self.histories.get(k) for k in keys]
            for k, h in zip(keys, history, strict=True):
                if h is not None and _size(h) != _size(x) // max(n, 1):
                    raise ShapeError(
                        f"foolsgold: client {k!r} sent {_size(x) // max(n, 1)} values, its history has "
                        f"{_size(h)}; forget([{k!r}]) to start it over"
                    )
        out, info = self.rule._run(x, history=history)
        for k, h in zip(keys, info.history, strict=True):
            # a copy per client: a view would keep the round's whole (n, d) block alive
            self.histories[k] = h.clone() if hasattr(h, "clone") else np.array(h, copy=True)
        return out, None

    def forget(self, ids: Sequence[Any]) -> None:
        """Forget the histories of clients ``ids`` (gone for good, or starting over)."""
        for k in ids:
            self.histories.pop(k, None)

    def reset(self) -> None:
        """Forget every client's history."""
        self.histories = {}

    def __repr__(self) -> str:
        return f"FoolsGoldState({self.rule!r}, clients={len(self.histories)})"

r"""PyG-style aggregations for the built-in monoids: sum, mean, max, min, prod, logsumexp.

Each module reduces the sets of ``x`` with :func:`aggkit.torch.segment_reduce` (Rust on CPU,
the same trees in torch ops elsewhere) and follows PyTorch Geometric's aggregation interface,
``forward(x, index=None, ptr=None, dim_size=None, dim=-2)``, so it can be the ``aggr=`` of a
``MessagePassing`` layer (``SAGEConv``, ``GraphConv``, ...). When torch_geometric is installed
the classes subclass its ``Aggregation``; without it they are plain ``torch.nn.Module``\ s with
the same interface. Imported on first use of ``aggkit.torch.nn.SumAggregation`` (and the
others), so torch_geometric's import cost is paid only then.

PyG's conventions, throughout:

* ``index`` (any order) or CSR offsets ``ptr``; when both are given (``MessagePassing`` passes
  both for a sparse adjacency: ``ToSparseTensor``, a CSR tensor, a sorted ``EdgeIndex``),
  ``ptr`` defines the sets and ``index`` is not read. Neither: all elements form one set.
* ``dim_size``: the number of sets; with ``index`` it defaults to ``max(index) + 1`` and may be
  larger (trailing empty sets); with ``ptr`` it must equal ``len(ptr) - 1``.
* ``dim``: the dimension of ``x`` holding the elements (default -2); every other dimension is
  a feature.
* An empty set (an isolated node) gives what PyG's aggregation gives: 0, and 1 for the product
  (PyG's ``MulAggregation``); never ``±inf``. ``empty=`` picks another value, or
  ``empty="identity"`` the monoid's identity (``-inf`` for max and logsumexp, ``+inf`` for min,
  1 for prod, 0 for sum and mean).
* One-line ``repr`` (``SumAggregation()``), ``reset_parameters()`` (there are none).

Refused with an aggkit error (a ``ValueError``; a ``TypeError`` for dtypes) naming the
parameter and value: a negative ``index``, ``dim_size`` smaller than ``max(index) + 1``
(PyG also raises) or different from ``len(ptr) - 1``, a ``ptr`` not starting at 0, decreasing or
not ending at ``x.size(dim)``, an ``index`` without one entry per element, ``dim`` out of
range, a non-floating ``x``.

>>> import torch
>>> from aggkit.torch.nn import MaxAggregation
>>> x = torch.tensor([[1.0], [5.0], [3.0], [2.0]])
>>> MaxAggregation()(x, torch.tensor([2, 0, 2, 0]), dim_size=4)  # set 1 and 3 are empty
tensor([[5.],
        [0.],
        [3.],
        [0.]])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from aggkit._params import as_float, choice
from aggkit.torch._pyg import SetCache, aggregation_base, check_dim, check_index_beside_ptr, resolve_sets
from aggkit.torch.monoid import OPS, _float_input, _reduce

__all__ = [
    "LogSumExpAggregation",
    "MaxAggregation",
    "MeanAggregation",
    "MinAggregation",
    "MonoidAggregation",
    "ProdAggregation",
    "SumAggregation",
]


#: PyG's value of an empty set where it is not 0.
_PYG_EMPTY = {"prod": 1.0}


if TYPE_CHECKING:  # what type checkers see: PyG's class (a layer's ``aggr=`` accepts it)
    from torch_geometric.nn.aggr import Aggregation as _Base
else:
    _Base = aggregation_base()  # PyG's class when installed, else nn.Module


class MonoidAggregation(_Base):  # type: ignore[misc]
    r"""A built-in commutative monoid as a PyG aggregation: each set reduced over a fixed tree.

    Parameters
    ----------
    op : {"sum", "mean", "prod", "max", "min", "logsumexp"}
        The monoid (the subclasses fix it: :class:`SumAggregation`, ...).
    empty : float or "identity", optional
        The value of an empty set. Default: PyG's, 0 (1 for prod, as PyG's ``MulAggregation``).
        Any float, or ``"identity"`` for the monoid's identity (``-inf`` for max and
        logsumexp, ``+inf`` for min, 1 for prod; 0 for sum and mean). Cast to ``x``'s dtype.

    Notes
    -----
    ``forward(x, index=None, ptr=None, dim_size=None, dim=-2)`` returns ``x``'s shape with
    ``dim`` replaced by the number of sets. An unsorted ``index`` is sorted stably, so each set
    keeps its elements' relative order; the sorted sets (``ptr`` and the permutation) are
    cached and reused while the same ``index``/``ptr`` tensor comes back unmodified (e.g. every
    step on one graph).

    **What is exact.** Each set is reduced over its own balanced binary tree, which depends on
    the set's size alone (``((x0 ⊕ x1) ⊕ (x2 ⊕ x3)) ⊕ x4`` for 5 elements), in ``x``'s precision
    (float16 and bfloat16 in float32, rounded once at the end). So a set's result depends only
    on its own elements in their relative order: it is bit-identical run to run, for any thread
    count, SIMD level, batch composition, order of the sets, and interleaving of other sets'
    elements, and on CUDA as on CPU (except logsumexp: within rounding of ``exp``/``log1p``).
    ``max`` and ``min`` are exact, so they are also bit-identical under any permutation of a
    set's elements (NaN propagates; ``max(-0, +0) = +0``). ``sum``, ``mean``, ``prod`` and
    ``logsumexp`` round at each tree node: permuting a set's elements may change the last bits
    (the tree keeps a sum's error at ``O(log k)`` ulps; PyG's sequential scatter has ``O(k)``).
    Non-finite values propagate as in IEEE arithmetic (``inf + (-inf)`` gives NaN in a sum).

    Gradients (see :func:`aggkit.torch.segment_reduce`): sum and mean spread the output's
    gradient to every element (``1/k`` each for the mean); max and min split it evenly among
    the elements equal to the result (as PyG's scatter); logsumexp gives softmax weights; prod
    the product of the other elements (exact with zeros). ``torch.func`` transforms work.

    PyG's ``MulAggregation`` is this module's ``prod`` (PyG's accepts ``index`` only); PyG has
    no logsumexp aggregation.
    """

    def __init__(self, op: str, *, empty: float | str | None = None) -> None:
        super().__init__()
        what = type(self).__name__
        self.op = choice(op, "op", OPS, what)
        self.empty: float | str
        if empty is None:
            self.empty = _PYG_EMPTY.get(op, 0.0)
        elif isinstance(empty, str):
            self.empty = choice(empty, "empty", ("identity",), what)
        else:
            self.empty = as_float(empty, "empty", what)
        self._sets = SetCache()

    def reset_parameters(self) -> None:
        """Nothing to reset: the module has no parameters (PyG's interface)."""

    def forward(
        self,
        x: Tensor,
        index: Tensor | None = None,
        ptr: Tensor | None = None,
        dim_size: int | None = None,
        dim: int = -2,
    ) -> Tensor:
        """Reduce the sets of ``x`` along ``dim``: ``x``'s shape with ``dim`` -> the number of sets."""
        if _traced(x):
            # the sets are read on the host: one opaque operator for torch.export / compile
            d = check_dim(x, dim, type(self).__name__)
            empty = float("nan") if isinstance(self.empty, str) else float(self.empty)
            out: Tensor = sets_op(x, index, ptr, dim_size, d, self.op, empty, isinstance(self.empty, str))
            return out
        return self._eager(x, index, ptr, dim_size, dim)

    def _eager(
        self, x: Tensor, index: Tensor | None, ptr: Tensor | None, dim_size: int | None, dim: int
    ) -> Tensor:
        what = type(self).__name__
        x = _float_input(x, what)
        d = check_dim(x, dim, what)
        rows = x.shape[d]
        device = x.device

        def build() -> tuple[np.ndarray, Tensor | None]:
            p, perm = resolve_sets(what, rows, index, ptr, dim_size, sort=True)
            return p, None if perm is None else torch.from_numpy(perm).to(device)

        check_index_beside_ptr(what, rows, index, ptr)
        p, perm = self._sets.lookup(index, ptr, (rows, dim_size, device), build)
        if perm is not None:
            x = x.index_select(d, perm)
        return _reduce(x, p, d, self.op, None if isinstance(self.empty, str) else self.empty)

    def __repr__(self) -> str:
        args = [] if type(self) is not MonoidAggregation else [repr(self.op)]
        if isinstance(self.empty, str) or repr(self.empty) != repr(_PYG_EMPTY.get(self.op, 0.0)):
            args.append(f"empty={self.empty!r}")
        return f"{type(self).__name__}({', '.join(args)})"


class SumAggregation(MonoidAggregation):
    """The sum of each set (PyG's ``SumAggregation``); see :class:`MonoidAggregation`."""

    def __init__(self, *, empty: float | str = 0.0) -> None:
        super().__init__("sum", empty=empty)


class MeanAggregation(MonoidAggregation):
    """The mean of each set: its tree sum divided by its size (PyG's ``MeanAggregation``).

    See :class:`MonoidAggregation`; an empty set gives 0 (also with ``empty="identity"``).
    """

    def __init__(self, *, empty: float | str = 0.0) -> None:
        super().__init__("mean", empty=empty)


class MaxAggregation(MonoidAggregation):
    """The coordinate-wise maximum of each set (PyG's ``MaxAggregation``); exact.

    NaN propagates and ``max(-0, +0) = +0``, so the result is bit-identical under any order
    of the elements. An empty set gives 0 (``empty="identity"``: ``-inf``). See
    :class:`MonoidAggregation`.
    """

    def __init__(self, *, empty: float | str = 0.0) -> None:
        super().__init__("max", empty=empty)


class MinAggregation(MonoidAggregation):
    """The coordinate-wise minimum of each set (PyG's ``MinAggregation``); exact.

    NaN propagates and ``min(-0, +0) = -0``, so the result is bit-identical under any order
    of the elements. An empty set gives 0 (``empty="identity"``: ``+inf``). See
    :class:`MonoidAggregation`.
    """

    def __init__(self, *, empty: float | str = 0.0) -> None:
        super().__init__("min", empty=empty)


class ProdAggregation(MonoidAggregation):
    """The coordinate-wise product of each set (PyG's ``MulAggregation``).

    An empty set gives 1, the identity, as PyG's ``MulAggregation``. See
    :class:`MonoidAggregation`.
    """

    def __init__(self, *, empty: float | str = 1.0) -> None:
        super().__init__("prod", empty=empty)


class LogSumExpAggregation(MonoidAggregation):
    r"""``log Σ exp(x_i)`` of each set, coordinate-wise: a smooth maximum.

    Combined pairwise as ``m + log1p(exp(-|a - b|))`` with ``m = max(a, b)`` (no overflow);
    ``+inf`` if an element is ``+inf``. An empty set gives 0 (``empty="identity"``: ``-inf``).
    The gradient is the softmax of the set. See :class:`MonoidAggregation`.
    """

    def __init__(self, *, empty: float | str = 0.0) -> None:
        super().__init__("logsumexp", empty=empty)


def _traced(x: Tensor) -> bool:
    """Under torch.export, or torch.compile without autograd: take the opaque operator."""
    if not torch.compiler.is_compiling():
        return False
    return torch.compiler.is_exporting() or not (torch.is_grad_enabled() and x.requires_grad)


@torch.library.custom_op("aggkit::aggregate_sets", mutates_args=())
def sets_op(
    x: Tensor,
    index: Tensor | None,
    ptr: Tensor | None,
    dim_size: int | None,
    dim: int,
    op: str,
    empty: float,
    identity: bool,
) -> Tensor:
    """A monoid aggregation of ``x``'s sets along ``dim`` (its eager forward, whole)."""
    module = MonoidAggregation(op, empty="identity" if identity else empty)
    return module._eager(x, index, ptr, dim_size, dim).clone()


@sets_op.register_fake
def _(
    x: Tensor,
    index: Tensor | None,
    ptr: Tensor | None,
    dim_size: int | None,
    dim: int,
    op: str,
    empty: float,
    identity: bool,
) -> Tensor:
    if ptr is not None:
        sets: Any = ptr.shape[0] - 1
    elif dim_size is not None:
        sets = dim_size
    elif index is not None:
        sets = torch.library.get_ctx().new_dynamic_size()  # max(index) + 1: known when run
    else:
        sets = torch.sym_min(x.shape[dim], 1)  # all rows form one set (none without rows)
    shape = list(x.shape)
    shape[dim] = sets
    return x.new_empty(shape)

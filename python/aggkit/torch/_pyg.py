"""PyTorch Geometric's aggregation conventions, shared by aggkit's aggregation modules.

PyG's ``Aggregation`` takes ``forward(x, index=None, ptr=None, dim_size=None, dim=-2)``.
:func:`resolve_sets` turns those arguments into validated CSR offsets the way PyG reads them:

* ``ptr`` given (with or without ``index``, as ``MessagePassing`` passes both for a CSR
  adjacency): ``ptr`` defines the sets and ``index`` is not read; ``dim_size`` must equal
  ``len(ptr) - 1``.
* ``index`` alone: ``dim_size`` defaults to ``max(index) + 1`` (0 without elements) and may be
  larger (trailing empty sets); an unsorted ``index`` is stably sorted when the caller allows it.
* neither: every element in set 0 (PyG's all-zeros ``index``).

:func:`aggregation_base` is PyG's ``Aggregation`` when torch_geometric is installed (so the
modules are accepted as ``aggr=`` and pass ``isinstance`` checks), else ``nn.Module``.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable
from typing import Any, TypeVar, cast

import numpy as np
import torch
from torch import Tensor, nn

from aggkit._params import int_array
from aggkit.errors import InvalidParameterError, ShapeError
from aggkit.rules import monoid as _monoid
from aggkit.torch.monoid import _host

__all__ = ["SetCache", "aggregation_base", "check_dim", "check_index_beside_ptr", "resolve_sets"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def _eager(fn: F) -> F:
    """``fn`` run eagerly under ``torch.compile`` (dynamo does not trace it; a graph break)."""
    return cast(F, torch.compiler.disable(fn))  # type: ignore[no-untyped-call]  # torch: untyped


def aggregation_base() -> type[nn.Module]:
    """PyG's ``Aggregation`` when torch_geometric is installed, else ``nn.Module``."""
    if importlib.util.find_spec("torch_geometric") is None:
        return nn.Module
    try:
        with warnings.catch_warnings():  # its import may warn about torch APIs it uses
            warnings.simplefilter("ignore")
            from torch_geometric.nn.aggr import Aggregation
    except Exception:  # a broken install must not break aggkit
        return nn.Module
    base: type[nn.Module] = Aggregation
    return base


def check_dim(x: Tensor, dim: Any, what: str) -> int:
    """``dim`` as a non-negative dimension of ``x``; ``ShapeError`` when out of range."""
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
        raise TypeError(f"{what}: dim must be an int, got {type(dim).__name__}")
    if x.dim() == 0:
        raise ShapeError(f"{what}: x must have at least one dimension")
    if not -x.dim() <= dim < x.dim():
        raise ShapeError(f"{what}: dim={dim} is out of range for x with {x.dim()} dimensions")
    return int(dim) % x.dim()


def check_index_beside_ptr(what: str, rows: int, index: Any, ptr: Any) -> None:
    """With ``ptr`` given, ``index`` (not read) must still have one entry per element.

    Only the shape is checked (no data is read, so no device synchronisation): a mismatch means
    the two describe different elements.
    """
    if ptr is not None and isinstance(index, Tensor) and tuple(index.shape) != (rows,):
        raise ShapeError(
            f"{what}: index has shape {tuple(index.shape)} for {rows} elements of x "
            "(ptr defines the sets; index must still hold one entry per element)"
        )


def resolve_sets(
    what: str, rows: int, index: Any, ptr: Any, dim_size: Any, *, sort: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Validated CSR offsets of the sets, and the stable sorting permutation of an unsorted index.

    ``rows`` is the number of elements (``x.size(dim)``). With ``sort=False`` an unsorted
    ``index`` is refused (the order inside a set matters to a non-associative operator).

    Raises
    ------
    InvalidParameterError
        A negative ``index`` (naming its position), ``dim_size`` below ``max(index) + 1`` or
        different from ``len(ptr) - 1``, a ``ptr`` not starting at 0, decreasing or not ending
        at ``rows``; an unsorted ``index`` with ``sort=False``.
    ShapeError
        ``index`` or ``ptr`` not 1-D, or ``index`` without one entry per element.
    """
    if ptr is not None:
        check_index_beside_ptr(what, rows, index, ptr)
        return _monoid.segment_ptr(rows, None, _host(ptr), dim_size, what), None
    if index is None:
        idx = np.zeros(rows, dtype=np.int64)
    else:
        idx = int_array(_host(index), "index", what, 1)
        if idx.shape[0] != rows:
            raise ShapeError(f"{what}: index has {idx.shape[0]} entries for {rows} elements of x")
        neg = np.flatnonzero(idx < 0)
        if neg.size:
            i = int(neg[0])
            raise InvalidParameterError(f"{what}: index must be >= 0, got index[{i}] = {int(idx[i])}")
    perm = None
    if sort and idx.size > 1 and bool(np.any(idx[1:] < idx[:-1])):
        perm = np.argsort(idx, kind="stable")
        idx = idx[perm]
    return _monoid.segment_ptr(rows, idx, None, dim_size, what), perm


def _key(t: Tensor) -> tuple[Any, ...] | None:
    """A tensor's memory and version, or ``None`` where they cannot be trusted or read."""
    if (
        type(t) is not Tensor  # subclasses (PyG's Index, fake and functorch tensors) opt out
        or t.is_inference()  # no version counter
        or t.device.type == "meta"
        or torch.compiler.is_compiling()
        or torch._C._functorch.peek_interpreter_stack() is not None
    ):
        return None
    return (t.device, t.data_ptr(), tuple(t.shape), t.stride(), t.dtype, t._version)


class SetCache:
    """A module's last resolved sets, reused while the same ``index``/``ptr`` comes back.

    Keyed by the tensor's memory (device, address, shape, strides, dtype) and its version
    counter, so that ``edge_index[1]``, a new view on every call of a ``MessagePassing`` layer,
    hits. A hit is then confirmed against a copy of the values the sets were built from (one
    comparison, O(E), far cheaper than sorting): memory rewritten without moving torch's
    version counter (``dist.broadcast`` into a buffer, a DLPack or numpy alias, a new tensor over
    reused memory) builds the sets again instead of reusing stale ones. Not pickled.
    """

    def __init__(self) -> None:
        self._entry: tuple[tuple[Any, ...], Any, Any] | None = None

    @property
    def value(self) -> Any:
        """The cached value (``None`` when empty)."""
        return None if self._entry is None else self._entry[2]

    @_eager  # host work on the index
    def lookup(self, index: Any, ptr: Any, extra: tuple[Any, ...], build: Callable[[], T]) -> T:
        """The value for these sets: cached, or ``build()`` (then cached when keyable)."""
        src = ptr if ptr is not None else index
        kind = "ptr" if ptr is not None else "index" if index is not None else "none"
        if src is None:
            key: tuple[Any, ...] | None = (kind, *extra)
        elif isinstance(src, Tensor):
            k = _key(src)
            key = None if k is None else (kind, *k, *extra)
        else:
            key = None
        entry = self._entry
        if key is not None and entry is not None and entry[0] == key:
            if entry[1] is None or torch.equal(entry[1], src):
                hit: T = entry[2]
                return hit
        value = build()
        if key is not None:
            snapshot = src.detach().clone() if isinstance(src, Tensor) else None
            self._entry = (key, snapshot, value)  # one assignment: safe across threads
        return value

    def clear(self) -> None:
        """Forget the cached value."""
        self._entry = None

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._entry = None

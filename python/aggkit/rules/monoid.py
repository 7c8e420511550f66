"""Monoid reductions over sets of rows, with a fixed binary tree per set.

A *segmented* input is a matrix ``x`` whose rows are partitioned into consecutive sets: by a
sorted ``index`` (``index[e]`` is the set of row ``e``; graph messages sorted by destination,
as PyTorch Geometric's aggregations take them) or by CSR offsets ``ptr`` (set ``s`` is rows
``ptr[s]:ptr[s+1]``). Each set is reduced with a commutative monoid over its own balanced
binary tree: neighbours paired ``(0, 1), (2, 3), ...`` level by level, an odd last node carried
up unchanged (the tree of PyG's ``LCMAggregation``: ``k = 5`` gives
``((x0 ⊕ x1) ⊕ (x2 ⊕ x3)) ⊕ x4``). The tree depends on the set's size only, so results are
bit-identical for any thread count and do not depend on the other sets.

This module holds what every array framework shares: the sets' validation
(:func:`segment_ptr`) and their trees (:func:`tree_schedule`). :func:`aggkit.monoid.segment_reduce`
runs the built-in monoids on numpy arrays in Rust, :func:`aggkit.torch.segment_reduce` on
tensors; :class:`aggkit.torch.nn.LCMAggregation` evaluates the same trees with a learnable
operator (one batched operator call per level).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from aggkit import _core
from aggkit._params import choice, int_array
from aggkit.errors import InvalidParameterError, ShapeError

__all__ = ["OPS", "PADS", "TreeSchedule", "segment_ptr", "tree_schedule"]

#: The built-in monoids of :func:`segment_reduce`.
OPS = ("sum", "mean", "prod", "max", "min", "logsumexp")
#: Padding modes of :func:`tree_schedule`.
PADS = ("none", "zeros_dense", "identity")


def _int_array(v: Any, name: str, what: str) -> np.ndarray:
    return int_array(v, name, what, 1)


def _dim_size(dim_size: Any, what: str) -> int | None:
    if dim_size is None:
        return None
    if isinstance(dim_size, bool) or not isinstance(dim_size, (int, np.integer)) or not 0 <= dim_size < 2**63:
        raise InvalidParameterError(f"{what}: dim_size must be an int in [0, 2**63), got {dim_size!r}")
    return int(dim_size)


def segment_ptr(
    rows: int, index: Any = None, ptr: Any = None, dim_size: int | None = None, what: str = "segment"
) -> np.ndarray:
    """Validated CSR offsets (int64, one more than the number of sets) for ``rows`` rows.

    Exactly one of ``index`` (sorted, ``len(index) == rows``) and ``ptr`` must be given.
    ``dim_size`` is the number of sets: by default ``max(index) + 1`` or ``len(ptr) - 1``;
    with ``index`` it may be larger (trailing empty sets), with ``ptr`` it must agree.

    Raises
    ------
    InvalidParameterError
        Neither or both of ``index``/``ptr``; an unsorted or negative ``index``; ``dim_size``
        smaller than ``max(index) + 1`` or different from ``len(ptr) - 1``; ``ptr`` not starting
        at 0, decreasing, or not ending at ``rows``.
    ShapeError
        ``index``/``ptr`` not 1-D, or ``len(index) != rows``.
    """
    n = _dim_size(dim_size, what)
    if (index is None) == (ptr is None):
        raise InvalidParameterError(f"{what}: give exactly one of index and ptr")
    if index is not None:
        idx = _int_array(index, "index", what)
        if idx.shape[0] != rows:
            raise ShapeError(f"{what}: index has {idx.shape[0]} entries for {rows} rows of x")
        try:
            return _core.segment_ptr(idx, n)
        except InvalidParameterError as e:
            raise InvalidParameterError(f"{what}: {e}") from None
    p = _int_array(ptr, "ptr", what)
    try:
        _core.check_segment_ptr(p, rows, n)
    except InvalidParameterError as e:
        raise InvalidParameterError(f"{what}: {e}") from None
    return p


@dataclass(frozen=True, eq=False)
class TreeSchedule:
    """The carry trees of a partition into sets, level by level (numpy int64 arrays).

    Level 0's node list is the ``rows`` rows of ``x``, followed in a padded mode by one pad row
    at position ``rows``. At level ``l`` the ``P`` pairs ``pairs[l][:P]`` (left operands) and
    ``pairs[l][P:]`` (right operands) are combined; level ``l + 1``'s node list is their
    ``P`` results in order, then the nodes ``carry[l]`` carried up unchanged. ``done[l]`` lists
    the positions in level ``l``'s node list that hold a finished set's value and
    ``done_sets[l]`` which sets (``depth + 1`` entries each). Sets never done have no tree
    (empty sets with ``pad="none"``, or every set when all are empty with ``"zeros_dense"``).
    """

    num_sets: int
    rows: int
    pad: str
    pairs: tuple[np.ndarray, ...]
    carry: tuple[np.ndarray, ...]
    done: tuple[np.ndarray, ...]
    done_sets: tuple[np.ndarray, ...]
    combines: int
    ptr: np.ndarray

    @property
    def depth(self) -> int:
        """The number of levels (``⌈log2 k⌉`` for the largest set ``k``)."""
        return len(self.pairs)

    def __repr__(self) -> str:
        return (
            f"TreeSchedule(num_sets={self.num_sets}, rows={self.rows}, pad={self.pad!r}, "
            f"depth={self.depth}, combines={self.combines})"
        )


def tree_schedule(
    rows: int | None = None,
    *,
    index: Any = None,
    ptr: Any = None,
    dim_size: int | None = None,
    pad: str = "none",
) -> TreeSchedule:
    """Build the :class:`TreeSchedule` of the sets given by ``index`` or ``ptr``, in O(E).

    Parameters
    ----------
    rows : int, optional
        The number of elements (defaults to ``len(index)`` or ``ptr[-1]``).
    index, ptr, dim_size
        The sets, as in :func:`segment_ptr`.
    pad : {"none", "zeros_dense", "identity"}
        ``"none"``: each set reduced with its own tree. ``"zeros_dense"``: every set padded
        with the pad row to the largest set size (PyG's ``to_dense_batch`` with zeros, reduced
        with one shared tree). ``"identity"``: each set padded to ``2^⌈log2 k⌉`` leaves (one
        leaf for an empty set) with the pad row, meant to hold a learned identity element.

    Examples
    --------
    >>> from aggkit.monoid import tree_schedule
    >>> s = tree_schedule(ptr=[0, 5])
    >>> s.depth, s.combines, [p.tolist() for p in s.pairs]
    (3, 4, [[0, 2, 1, 3], [0, 1], [0, 1]])
    """
    what = "tree_schedule"
    choice(pad, "pad", PADS, what)
    if rows is None:
        if index is not None:
            rows = len(_int_array(index, "index", what))
        elif ptr is not None:
            p = _int_array(ptr, "ptr", what)
            rows = int(p[-1]) if p.size else 0
        else:
            raise InvalidParameterError(f"{what}: give exactly one of index and ptr")
    if isinstance(rows, bool) or not isinstance(rows, (int, np.integer)) or not 0 <= rows < 2**63:
        raise InvalidParameterError(f"{what}: rows must be an int in [0, 2**63), got {rows!r}")
    p = segment_ptr(int(rows), index, ptr, dim_size, what)
    d = _core.tree_schedule(p, int(rows), pad)

    def split(data: np.ndarray, off: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(data[off[i] : off[i + 1]] for i in range(len(off) - 1))

    return TreeSchedule(
        num_sets=p.shape[0] - 1,
        rows=int(rows),
        pad=pad,
        pairs=split(d["pairs"], d["pairs_ptr"]),
        carry=split(d["carry"], d["carry_ptr"]),
        done=split(d["done"], d["done_ptr"]),
        done_sets=split(d["done_sets"], d["done_ptr"]),
        combines=int(d["combines"]),
        ptr=p,
    )

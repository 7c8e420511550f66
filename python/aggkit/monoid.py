"""Monoid reductions over sets of rows on numpy arrays, with a fixed binary tree per set.

A *segmented* input is a matrix ``x`` whose rows are partitioned into consecutive sets: by a
sorted ``index`` (``index[e]`` is the set of row ``e``; graph messages sorted by destination,
as PyTorch Geometric's aggregations take them) or by CSR offsets ``ptr`` (set ``s`` is rows
``ptr[s]:ptr[s+1]``). Each set is reduced with a commutative monoid over its own balanced
binary tree: neighbours paired ``(0, 1), (2, 3), ...`` level by level, an odd last node carried
up unchanged (the tree of PyG's ``LCMAggregation``: ``k = 5`` gives
``((x0 ⊕ x1) ⊕ (x2 ⊕ x3)) ⊕ x4``). The tree depends on the set's size only, so results are
bit-identical for any thread count and do not depend on the other sets.

:func:`segment_reduce` runs the built-in monoids in Rust; :func:`tree_schedule` lists the same
trees level by level, for evaluating them with any operator, such as a learnable one (one
batched operator call per level; see ``aggkit.rules.monoid``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from aggkit import _core
from aggkit._numpy._input import as_array, c_array, compute_dtype
from aggkit._params import any_integer, as_float, choice
from aggkit.errors import ShapeError
from aggkit.rules.monoid import OPS, PADS, TreeSchedule, segment_ptr, tree_schedule

__all__ = ["OPS", "PADS", "TreeSchedule", "segment_ptr", "segment_reduce", "tree_schedule"]


def segment_reduce(
    x: Any,
    op: str = "sum",
    *,
    index: Any = None,
    ptr: Any = None,
    dim_size: int | None = None,
    axis: int = 0,
    empty: float | None = None,
) -> np.ndarray:
    """Reduce each set of rows of ``x`` with a built-in commutative monoid.

    Parameters
    ----------
    x : array_like, shape (E, ...)
        float16, float32 or float64 values; ``axis`` indexes the elements of the sets.
    op : {"sum", "mean", "prod", "max", "min", "logsumexp"}
        The monoid. ``mean`` is the tree sum divided by the set's size. ``max``/``min``
        propagate NaN and order ``-0 < +0``; ``logsumexp`` combines as
        ``m + log1p(exp(-|a - b|))`` with ``m = max(a, b)``.
    index, ptr : array_like of int
        The sets: a sorted ``index`` (one entry per element) or CSR offsets ``ptr``; exactly
        one. See :func:`segment_ptr`.
    dim_size : int, optional
        The number of sets (trailing sets may be empty).
    axis : int
        The axis of ``x`` holding the elements (default 0).
    empty : float, optional
        The value of an empty set. Default: the monoid's identity (0, 1, -inf, +inf, -inf for
        sum, prod, max, min, logsumexp) and 0 for the mean (as PyG's mean aggregation).

    Returns
    -------
    numpy.ndarray
        ``x``'s shape with ``axis`` replaced by the number of sets, in ``x``'s dtype (float16
        is computed in float32).

    Notes
    -----
    Each set is reduced over its own fixed tree (see the module docstring) in ``x``'s
    precision, so the result is bit-identical for every thread count and SIMD level and does
    not depend on the other sets; the grouping keeps the rounding error of a sum at
    ``O(log k)`` ulps.

    Examples
    --------
    >>> import numpy as np, aggkit.monoid as am
    >>> x = np.array([[1.0], [2.0], [3.0], [10.0]])
    >>> am.segment_reduce(x, "sum", index=[0, 0, 0, 2]).ravel().tolist()
    [6.0, 0.0, 10.0]
    >>> am.segment_reduce(x, "max", ptr=[0, 3, 4]).ravel().tolist()
    [3.0, 10.0]
    """
    what = "segment_reduce"
    choice(op, "op", OPS, what)
    empty = None if empty is None else as_float(empty, "empty", what)
    a = as_array(x, f"{what}: x")
    if a.ndim == 0:
        raise ShapeError(f"{what}: x must have at least one axis, got a 0-d array")
    axis = any_integer(axis, "axis", what)
    if not -a.ndim <= axis < a.ndim:
        raise ShapeError(f"{what}: axis {axis} is out of range for x with {a.ndim} axes")
    dt = compute_dtype(a.dtype, f"{what}: x")
    moved = np.moveaxis(a, axis, 0)
    rows, rest = moved.shape[0], moved.shape[1:]
    p = segment_ptr(rows, index, ptr, dim_size, what)
    m = c_array(moved.reshape(rows, -1) if moved.size else moved.reshape(rows, int(np.prod(rest))), dt)
    out = _core.segment_reduce(m, p, op, empty)
    out = np.moveaxis(out.reshape((p.shape[0] - 1, *rest)), 0, axis)
    return out.astype(a.dtype, copy=False) if out.dtype != a.dtype else out

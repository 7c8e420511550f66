"""numpy's reduction keywords for the coordinate-wise rules: ``axis=``, ``out=``, ``keepdims=``.

``aggkit.median(x, axis=1)`` reads as ``np.median(x, axis=1)``: the inputs (clients) lie
along ``axis`` instead of the first axis. Several axes (a tuple) are merged into one client
axis in C order; ``None`` makes every value an input. The backend of ``x`` moves the client
axes first (a view where it can), the rule runs as usual, and the backend puts length-1 axes
back (``keepdims``) and writes into ``out`` (``aggkit._dispatch.ArrayOps``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, SupportsIndex, TypeAlias

from aggkit import _dispatch, _params

if TYPE_CHECKING:
    from aggkit.registry import Rule

Axis: TypeAlias = "SupportsIndex | Sequence[SupportsIndex] | None"
"""The client axis (numpy's ``axis``): an int, a tuple of ints, or ``None`` for every axis."""


def reduce(rule: Rule, x: Any, axis: Any, out: Any, keepdims: Any, **data: Any) -> Any:
    """Run the coordinate-wise ``rule`` over the client axes ``axis`` of ``x``."""
    keep = _params.flag(keepdims, "keepdims", rule.name)
    if out is None and not keep and _params.is_zero_axis(axis):
        return rule._run(x, **data)[0]
    ops = _dispatch.array_ops(x)
    moved, plan = ops.clients_first(x, axis, keep, out, rule.name)
    return ops.deliver(rule._run(moved, **data)[0], plan)

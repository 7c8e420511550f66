r"""Tree reductions over sets of rows for torch: built-in monoids and learnable ones.

The sets are given as PyTorch Geometric's aggregations take them: ``x`` of shape ``(E, h)``
(messages) with a sorted ``index`` (the destination of each message) or CSR offsets ``ptr``,
and optionally ``dim_size`` (the number of sets). Every set is reduced over its own fixed
binary tree (:mod:`aggkit.monoid`): neighbours paired level by level, an odd last node carried
up, so ``k = 5`` gives ``((x0 ⊕ x1) ⊕ (x2 ⊕ x3)) ⊕ x4`` and a set's output never depends on
the other sets in the batch.

* :func:`segment_reduce`: sum, mean, prod, max, min, logsumexp (``torch.ops.aggkit.segment_reduce``):
  Rust on CPU, the same trees level by level in torch on other devices (bit-identical for
  sum/mean/prod/max/min, within rounding of ``exp``/``log1p`` for logsumexp), with autograd.
* :func:`tree_schedule` / :class:`TreeSchedule`: the trees level by level, built in Rust in O(E)
  and reusable across steps on the same graph.
* :func:`tree_reduce`: any binary operator (e.g. a learnable one) over a schedule, one batched
  operator call per tree level.
* :class:`aggkit.torch.nn.LCMAggregation`: the learnable commutative monoid of Ong &
  Veličković (2022), on these trees.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from aggkit import _core
from aggkit._params import as_float, choice
from aggkit.errors import InvalidParameterError, ShapeError
from aggkit.rules import monoid as _monoid
from aggkit.torch._paths import rust, rust_backward, view

__all__ = ["TreeSchedule", "segment_reduce", "tree_reduce", "tree_schedule"]

OPS = _monoid.OPS
PADS = _monoid.PADS


class TreeSchedule:
    """The carry trees of a partition into sets, as index tensors on one device.

    Built by :func:`tree_schedule`; see :class:`aggkit.monoid.TreeSchedule` for the layout.
    ``depth`` is the number of tree levels (operator calls per reduction) and ``combines`` the
    number of binary combines.
    """

    def __init__(self, s: _monoid.TreeSchedule, device: torch.device | str | None = None) -> None:
        dev = torch.device("cpu") if device is None else torch.device(device)

        def t(a: np.ndarray) -> Tensor:
            return torch.from_numpy(a).to(dev)

        self._numpy = s
        self.num_sets, self.rows, self.pad, self.combines = s.num_sets, s.rows, s.pad, s.combines
        self.device = dev
        self.pairs = [t(p) for p in s.pairs]
        self.carry = [t(c) if c.size else None for c in s.carry]
        self.done = [t(d) if d.size else None for d in s.done]
        self._done_sets = [t(d) for d in s.done_sets]
        done_sets = np.concatenate(s.done_sets) if s.done_sets else np.zeros(0, np.int64)
        self.done_sets = t(done_sets)
        self.complete = done_sets.size == s.num_sets  # every set has a tree
        self.counts = t(np.diff(s.ptr))

    @property
    def depth(self) -> int:
        """The number of levels."""
        return len(self.pairs)

    def to(self, device: torch.device | str) -> TreeSchedule:
        """The same schedule with its tensors on ``device``."""
        return self if torch.device(device) == self.device else TreeSchedule(self._numpy, device)

    def __repr__(self) -> str:
        return (
            f"TreeSchedule(num_sets={self.num_sets}, rows={self.rows}, pad={self.pad!r}, "
            f"depth={self.depth}, combines={self.combines}, device={str(self.device)!r})"
        )


def _host(v: Any) -> Any:
    """An index or offsets tensor as a host numpy array; anything else unchanged.

    Works inside ``torch.func`` transforms, where even a tensor captured from outside cannot be
    read with ``.numpy()`` (the integer sets are not transformed, so unwrapping is exact).
    """
    if not isinstance(v, Tensor) or torch.compiler.is_compiling():
        return v  # (torch.compile: the readers' own conversion, which dynamo handles)
    if torch._C._functorch.peek_interpreter_stack() is None:
        return v.detach().cpu().numpy()
    while torch._C._functorch.is_functorch_wrapped_tensor(v):
        v = torch._C._functorch.get_unwrapped(v)
    with torch._C._DisableFuncTorch():
        return v.detach().cpu().numpy()


def tree_schedule(
    index: Tensor | None = None,
    ptr: Tensor | None = None,
    dim_size: int | None = None,
    pad: str = "none",
    *,
    rows: int | None = None,
    device: torch.device | str | None = None,
) -> TreeSchedule:
    """The :class:`TreeSchedule` of the sets given by a sorted ``index`` or CSR ``ptr``.

    ``device`` defaults to the device of ``index``/``ptr``. The schedule is built on the CPU in
    O(E) (one copy of ``index`` from the device) and can be reused for every step on the same
    graph. ``pad`` is ``"none"`` (each set its own tree), ``"zeros_dense"`` (PyG's padding:
    every set padded with a pad row to the largest set) or ``"identity"`` (each set padded to
    a power of two with a pad row, meant for a learned identity).
    """
    src = index if index is not None else ptr
    if device is None:
        device = src.device if isinstance(src, Tensor) else "cpu"
    s = _monoid.tree_schedule(rows, index=_host(index), ptr=_host(ptr), dim_size=dim_size, pad=pad)
    return TreeSchedule(s, device)


def _tree_reduce(
    x: Tensor,
    schedule: TreeSchedule,
    combine: Callable[[Tensor, int], Tensor],
    pad_row: Tensor | None,
    fill: Tensor | None,
) -> Tensor:
    """Evaluate ``schedule`` over ``x``, one batched ``combine`` call per level.

    ``combine(both, P)`` gets the ``P`` left operands stacked over the ``P`` right ones and
    returns the ``P`` results.
    """
    if schedule.pad == "none":
        cur = x
    else:
        if pad_row is None:
            raise InvalidParameterError(f"a schedule with pad={schedule.pad!r} needs a pad row")
        cur = torch.cat([x, pad_row.to(x.dtype).reshape(1, -1)])
    finals = []
    for level in range(schedule.depth + 1):
        done = schedule.done[level]
        if done is not None:
            finals.append(cur.index_select(0, done))
        if level == schedule.depth:
            break
        pairs = schedule.pairs[level]
        out = combine(cur.index_select(0, pairs), pairs.shape[0] // 2)
        carry = schedule.carry[level]
        cur = out if carry is None else torch.cat([out, cur.index_select(0, carry)])
    h = x.shape[1]
    vals = torch.cat(finals) if finals else x.new_zeros((0, h))
    if schedule.complete:
        return x.new_empty((schedule.num_sets, h)).index_copy(0, schedule.done_sets, vals)
    base = x.new_zeros(()) if fill is None else fill.to(x.dtype)
    base = base.expand(schedule.num_sets, h)
    return torch.index_copy(base, 0, schedule.done_sets, vals)


def tree_reduce(
    x: Tensor,
    schedule: TreeSchedule,
    combine: Callable[[Tensor, Tensor], Tensor],
    *,
    pad_value: Tensor | None = None,
    fill: Tensor | float | None = None,
) -> Tensor:
    """Reduce the sets of ``x`` (shape ``(rows, h)``) with the binary operator ``combine``.

    ``combine(a, b)`` receives two ``(P, h)`` tensors (the left operands, from the lower
    positions of each set, and the right ones) and returns ``(P, h)``; it is called once per
    tree level with every pair of every set. ``pad_value`` (shape ``(h,)``) is the pad row of
    a padded schedule; ``fill`` (scalar or ``(h,)``) the value of sets without a tree (empty
    sets; default 0). Differentiable through ``combine``, ``x``, ``pad_value`` and ``fill``.

    >>> import torch
    >>> from aggkit.torch.monoid import tree_reduce, tree_schedule
    >>> s = tree_schedule(ptr=torch.tensor([0, 5]))
    >>> x = torch.arange(5.0)[:, None]
    >>> tree_reduce(x, s, lambda a, b: 10 * a + b)  # ((0,1),(2,3)),4 -> ((1, 23), 4)
    tensor([[334.]])
    """
    if x.dim() != 2:
        raise ShapeError(f"tree_reduce: x must have shape (rows, h), got {tuple(x.shape)}")
    if x.shape[0] != schedule.rows:
        raise ShapeError(f"tree_reduce: the schedule is for {schedule.rows} rows, x has {x.shape[0]}")
    s = schedule.to(x.device)
    f = None if fill is None else torch.as_tensor(fill, dtype=x.dtype, device=x.device)
    return _tree_reduce(x, s, lambda both, p: combine(both[:p], both[p:]), pad_value, f)


# ---------------------------------------------------------------------------------------------
# built-in monoids


def _max(a: Tensor, b: Tensor) -> Tensor:
    # NaN-propagating maximum with max(-0, +0) = +0 (the Rust kernel's rule; torch.maximum
    # returns its first argument for equal zeros, which is not commutative).
    return torch.where((a == b) & (a == 0), a + b, torch.maximum(a, b))


def _min(a: Tensor, b: Tensor) -> Tensor:
    return torch.where((a == b) & (a == 0), -((-a) + (-b)), torch.minimum(a, b))


def _logaddexp(a: Tensor, b: Tensor) -> Tensor:
    m = _max(a, b)
    return torch.where(torch.isinf(m), m, m + torch.log1p(torch.exp(-(a - b).abs())))


_COMBINE: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "sum": torch.add,
    "mean": torch.add,
    "prod": torch.mul,
    "max": _max,
    "min": _min,
    "logsumexp": _logaddexp,
}
_IDENTITY = {"sum": 0.0, "mean": 0.0, "prod": 1.0, "max": -np.inf, "min": np.inf, "logsumexp": -np.inf}


def _native_reduce(x: Tensor, ptr: Tensor | np.ndarray, op: str, empty: float | None) -> Tensor:
    s = TreeSchedule(_monoid.tree_schedule(x.shape[0], ptr=_host(ptr)), x.device)
    fill = torch.tensor(_IDENTITY[op] if empty is None else empty, dtype=x.dtype, device=x.device)
    c = _COMBINE[op]
    out = _tree_reduce(x, s, lambda both, p: c(both[:p], both[p:]), None, fill)
    if op == "mean":
        out = out / s.counts.clamp(min=1).to(x.dtype)[:, None]
    return out


def _native_prod_backward(x: Tensor, ptr: Tensor | np.ndarray, g: Tensor) -> Tensor:
    """Backpropagate ``g`` through each set's product tree (exact with zeros).

    The forward keeps every level's nodes; each node's gradient is its parent's times its
    sibling, level by level down.
    """
    s = TreeSchedule(_monoid.tree_schedule(x.shape[0], ptr=_host(ptr)), x.device)
    levels = [x]
    for lv in range(s.depth):
        cur, pairs, carry = levels[-1], s.pairs[lv], s.carry[lv]
        both = cur.index_select(0, pairs)
        p = pairs.shape[0] // 2
        out = both[:p] * both[p:]
        levels.append(out if carry is None else torch.cat([out, cur.index_select(0, carry)]))
    grad: Tensor | None = None
    for lv in range(s.depth, -1, -1):
        cur = levels[lv]
        gl = cur.new_zeros(cur.shape)
        done = s.done[lv]
        if done is not None:
            gl = gl.index_copy(0, done, g.index_select(0, s._done_sets[lv]))
        if grad is not None:  # grad holds level lv + 1's node gradients
            pairs, carry = s.pairs[lv], s.carry[lv]
            p = pairs.shape[0] // 2
            both = cur.index_select(0, pairs)
            gp = grad[:p]
            gl = gl.index_copy(0, pairs, torch.cat([gp * both[p:], gp * both[:p]]))
            if carry is not None:
                gl = gl.index_copy(0, carry, grad[p:])
        grad = gl
    assert grad is not None  # level 0 always runs
    return grad


def _native_backward(
    x: Tensor, ptr: Tensor, op: str, out: Tensor, g: Tensor, prod: Callable[[Tensor, Tensor, Tensor], Tensor]
) -> Tensor:
    """The gradient of ``segment_reduce`` with respect to ``x``, in torch ops (``prod`` for prod)."""
    counts = (ptr[1:] - ptr[:-1]).to(x.device)
    rows = torch.repeat_interleave(
        torch.arange(counts.shape[0], device=x.device), counts, output_size=x.shape[0]
    )
    if op == "sum":
        return g.index_select(0, rows)
    if op == "mean":
        return (g / counts.clamp(min=1).to(g.dtype)[:, None]).index_select(0, rows)
    if op in ("max", "min"):
        # Split evenly among the elements equal to the result (as torch.amax), NaN with NaN.
        o = out.index_select(0, rows)
        mask = (x == o) | (torch.isnan(x) & torch.isnan(o))
        ties = torch.zeros_like(out).index_add(0, rows, mask.to(out.dtype))
        return torch.where(mask, (g / ties.clamp(min=1)).index_select(0, rows), g.new_zeros(()))
    if op == "logsumexp":
        o = out.index_select(0, rows)
        w = torch.where(torch.isneginf(o), x.new_zeros(()), torch.exp(x - o))
        return w * g.index_select(0, rows)
    return prod(x, ptr, g)  # the product of the other elements (exact with zeros)


@torch.library.custom_op("aggkit::segment_reduce", mutates_args=())
def _segment_reduce_op(x: Tensor, ptr: Tensor, op: str, empty: float | None) -> Tensor:
    """``(sets, h)``: each set ``ptr[s]:ptr[s+1]`` of the rows of ``x`` reduced with ``op``."""
    if rust(x):
        return torch.from_numpy(_core.segment_reduce(view(x), ptr.cpu().numpy(), op, empty))
    return _native_reduce(x, ptr, op, empty)


@_segment_reduce_op.register_fake
def _(x: Tensor, ptr: Tensor, op: str, empty: float | None) -> Tensor:
    return x.new_empty((ptr.shape[0] - 1, x.shape[1]))


def _segment_setup(ctx: Any, inputs: Any, output: Any) -> None:
    x, ptr, op, _ = inputs
    ctx.op = op
    ctx.save_for_backward(x, ptr, output)


def _opaque_prod_backward(x: Tensor, ptr: Tensor, g: Tensor) -> Tensor:
    gx: Tensor = torch.ops.aggkit.segment_prod_backward(x, ptr, g.contiguous())
    return gx


def _segment_backward(ctx: Any, g: Tensor) -> tuple[Tensor, None, None, None]:
    x, ptr, out = ctx.saved_tensors
    op = ctx.op
    if op != "prod" and rust_backward(g):  # one pass in Rust
        gv = g.detach().contiguous().numpy()
        host = _core.segment_reduce_backward(view(x), ptr.cpu().numpy(), op, view(out), gv)
        return torch.from_numpy(host), None, None, None
    return _native_backward(x, ptr, op, out, g, _opaque_prod_backward), None, None, None


_segment_reduce_op.register_autograd(_segment_backward, setup_context=_segment_setup)


@torch.library.custom_op("aggkit::segment_prod_backward", mutates_args=())
def _segment_prod_backward_op(x: Tensor, ptr: Tensor, g: Tensor) -> Tensor:
    """``(rows, h)``: the gradient of the per-set product (no second derivative)."""
    if rust(x):  # (prod needs no output: g stands in for it)
        gv = view(g)
        return torch.from_numpy(_core.segment_reduce_backward(view(x), ptr.cpu().numpy(), "prod", gv, gv))
    return _native_prod_backward(x, ptr, g)


@_segment_prod_backward_op.register_fake
def _(x: Tensor, ptr: Tensor, g: Tensor) -> Tensor:
    return torch.empty_like(x)


def _function_backward(x: Tensor, ptr: np.ndarray, op: str, out: Tensor, g: Tensor) -> Tensor:
    def prod(x: Tensor, _ptr: Tensor, g: Tensor) -> Tensor:
        return _native_prod_backward(x, ptr, g)

    return _native_backward(x, torch.from_numpy(ptr).to(x.device), op, out, g, prod)


class _SegmentReduce(torch.autograd.Function):
    """``segment_reduce`` inside ``torch.func`` transforms (grad, jacrev, jacfwd, jvp, vmap).

    A custom op with an autograd formula cannot run under a functorch transform (torch wraps the
    formula in an ``autograd.Function`` without ``setup_context``), so there the reduction runs
    as this Function: the Rust kernel at the bottom level on CPU, the same trees in torch ops
    otherwise (bit-identical except logsumexp, as on other devices); the backward, the same
    formulas as the custom op's, in torch ops (so differentiable again); a forward-mode rule;
    and a vmap rule that folds the batch into the feature columns (reduced independently).
    ``ptr`` is a numpy array: the sets are not transformed.
    """

    @staticmethod
    def forward(x: Tensor, ptr: np.ndarray, op: str, empty: float | None) -> Tensor:
        if rust(x) and torch._C._functorch.peek_interpreter_stack() is None:
            return torch.from_numpy(_core.segment_reduce(view(x.contiguous()), ptr, op, empty))
        return _native_reduce(x, ptr, op, empty)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        x, ptr, op, _ = inputs
        ctx.ptr, ctx.op = ptr, op
        ctx.save_for_backward(x, output)
        ctx.save_for_forward(x, output)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None, None, None]:
        x, out = ctx.saved_tensors
        return _function_backward(x, ctx.ptr, ctx.op, out, g), None, None, None

    @staticmethod
    def jvp(ctx: Any, tx: Tensor, *_: Any) -> Tensor:
        # Each output coordinate depends on its own column of its own set only, so the
        # backward of a gradient of ones holds every partial derivative.
        x, out = ctx.saved_tensors
        w = _function_backward(x, ctx.ptr, ctx.op, out, torch.ones_like(out))
        return _native_reduce(w * tx, ctx.ptr, "sum", 0.0)

    @staticmethod
    def vmap(info: Any, in_dims: tuple[Any, ...], x: Tensor, ptr: np.ndarray, op: str, empty: Any) -> Any:
        if in_dims[0] is None:
            return _SegmentReduce.apply(x, ptr, op, empty), None
        xb = x.movedim(in_dims[0], 1)  # (rows, batch, h): the batch becomes more columns
        out = _SegmentReduce.apply(xb.reshape(xb.shape[0], -1), ptr, op, empty)
        return out.reshape(out.shape[0], *xb.shape[1:]), 1


def _transformed() -> bool:
    """Whether a ``torch.func`` transform is active (and not while torch.compile traces)."""
    return not torch.compiler.is_compiling() and torch._C._functorch.peek_interpreter_stack() is not None


def _float_input(x: Any, what: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{what}: x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{what}: x must be a floating-point tensor, got {x.dtype}")
    return x


def segment_reduce(
    x: Tensor,
    index: Tensor | None = None,
    ptr: Tensor | None = None,
    dim_size: int | None = None,
    dim: int = -2,
    op: str = "sum",
    empty: float | None = None,
) -> Tensor:
    """Reduce the sets of ``x`` along ``dim`` with a built-in monoid (PyG's calling convention).

    Parameters
    ----------
    x : Tensor
        Floating-point values; ``dim`` (default -2) indexes the elements, every other dimension
        is a feature. float16/bfloat16 are computed in float32 and returned in their dtype.
    index, ptr, dim_size
        The sets: a sorted ``index`` (one entry per element) or CSR offsets ``ptr``; see
        :func:`aggkit.monoid.segment_ptr`.
    op : {"sum", "mean", "prod", "max", "min", "logsumexp"}
    empty : float, optional
        The value of an empty set (default: the monoid's identity; 0 for the mean).

    Returns
    -------
    Tensor
        ``x``'s shape with ``dim`` replaced by the number of sets, on ``x``'s device.

    Notes
    -----
    Gradients: sum and mean spread the output's gradient to every element (``1/k`` each for
    the mean); max and min split it evenly among the elements equal to the result (as
    ``torch.amax``); logsumexp gives ``softmax`` weights; prod the product of the other
    elements (exact with zeros). Second derivatives through torch ops, except prod's (its
    backward is one opaque operator).

    ``torch.func`` transforms (``grad``, ``jacrev``, ``jacfwd``, ``hessian``, ``vmap``) work: a
    custom operator with an autograd formula cannot enter them, so under a transform the
    reduction runs as an ``autograd.Function`` with the same forward (Rust on CPU) and the same
    gradient formulas in torch ops (prod's included, so ``hessian`` works for every op), and
    ``vmap`` folds the batch into the feature columns (one call, no per-sample loop).
    ``index``/``ptr`` must not be batched. Under ``torch.compile`` the sets are read on the
    host (a graph break); ``torch.export`` needs them as constants, which this function cannot
    take (see :class:`aggkit.torch.nn.LCMAggregation`'s ``schedule=``).

    >>> import torch
    >>> from aggkit.torch import segment_reduce
    >>> x = torch.tensor([[1.0], [2.0], [3.0], [10.0]])
    >>> segment_reduce(x, torch.tensor([0, 0, 0, 2]), op="max", empty=0.0)
    tensor([[ 3.],
            [ 0.],
            [10.]])
    """
    what = "segment_reduce"
    x = _float_input(x, what)
    choice(op, "op", OPS, what)
    if x.dim() == 0:
        raise ShapeError(f"{what}: x must have at least one dimension")
    if not -x.dim() <= dim < x.dim():
        raise ShapeError(f"{what}: dim {dim} is out of range for x with {x.dim()} dimensions")
    p = _monoid.segment_ptr(x.shape[dim], _host(index), _host(ptr), dim_size, what)
    empty = None if empty is None else as_float(empty, "empty", what)
    return _reduce(x, p, dim, op, empty)


def _reduce(x: Tensor, p: np.ndarray, dim: int, op: str, empty: float | None) -> Tensor:
    """:func:`segment_reduce` with validated offsets ``p`` (``x`` floating, ``dim`` in range)."""
    moved = x.movedim(dim, 0)
    rows, rest = moved.shape[0], moved.shape[1:]
    m = moved.reshape(rows, -1) if moved.numel() else moved.reshape(rows, int(np.prod(rest)))
    compute = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    m = m.to(compute).contiguous()
    out: Tensor
    if _transformed():
        out = _SegmentReduce.apply(m, p, op, empty)
    else:
        out = _segment_reduce_op(m, torch.from_numpy(p), op, empty)
    return out.reshape(p.shape[0] - 1, *rest).movedim(0, dim).to(x.dtype)

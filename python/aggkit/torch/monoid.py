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
* :class:`LCMAggregation`: the learnable commutative monoid of Ong & Veličković (2022).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from aggkit import _core
from aggkit import monoid as _monoid
from aggkit._validate import check_choice
from aggkit.errors import InvalidParameterError, ShapeError
from aggkit.torch._ops import _rust, _rust_backward, _view

__all__ = ["LCMAggregation", "TreeSchedule", "segment_reduce", "tree_reduce", "tree_schedule"]

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
    s = _monoid.tree_schedule(rows, index=index, ptr=ptr, dim_size=dim_size, pad=pad)
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


def _native_reduce(x: Tensor, ptr: Tensor, op: str, empty: float | None) -> Tensor:
    s = TreeSchedule(_monoid.tree_schedule(x.shape[0], ptr=ptr.cpu()), x.device)
    fill = torch.tensor(_IDENTITY[op] if empty is None else empty, dtype=x.dtype, device=x.device)
    c = _COMBINE[op]
    out = _tree_reduce(x, s, lambda both, p: c(both[:p], both[p:]), None, fill)
    if op == "mean":
        out = out / s.counts.clamp(min=1).to(x.dtype)[:, None]
    return out


@torch.library.custom_op("aggkit::segment_reduce", mutates_args=())
def _segment_reduce_op(x: Tensor, ptr: Tensor, op: str, empty: float | None) -> Tensor:
    """``(sets, h)``: each set ``ptr[s]:ptr[s+1]`` of the rows of ``x`` reduced with ``op``."""
    if _rust(x):
        return torch.from_numpy(_core.segment_reduce(_view(x), ptr.cpu().numpy(), op, empty))
    return _native_reduce(x, ptr, op, empty)


@_segment_reduce_op.register_fake
def _(x: Tensor, ptr: Tensor, op: str, empty: float | None) -> Tensor:
    return x.new_empty((ptr.shape[0] - 1, x.shape[1]))


def _segment_setup(ctx, inputs, output) -> None:
    x, ptr, op, _ = inputs
    ctx.op = op
    ctx.save_for_backward(x, ptr, output)


def _segment_backward(ctx, g: Tensor):
    x, ptr, out = ctx.saved_tensors
    op = ctx.op
    counts = (ptr[1:] - ptr[:-1]).to(x.device)
    rows = torch.repeat_interleave(
        torch.arange(counts.shape[0], device=x.device), counts, output_size=x.shape[0]
    )
    if op == "sum":
        gx = g.index_select(0, rows)
    elif op == "mean":
        gx = (g / counts.clamp(min=1).to(g.dtype)[:, None]).index_select(0, rows)
    elif op in ("max", "min"):
        # Split evenly among the elements equal to the result (as torch.amax), NaN with NaN.
        o = out.index_select(0, rows)
        mask = (x == o) | (torch.isnan(x) & torch.isnan(o))
        ties = torch.zeros_like(out).index_add(0, rows, mask.to(out.dtype))
        gx = torch.where(mask, (g / ties.clamp(min=1)).index_select(0, rows), g.new_zeros(()))
    elif op == "logsumexp":
        o = out.index_select(0, rows)
        w = torch.where(torch.isneginf(o), x.new_zeros(()), torch.exp(x - o))
        gx = w * g.index_select(0, rows)
    elif _rust_backward(g):  # prod, one Rust pass of prefix/suffix products
        gv = g.detach().contiguous().numpy()
        gx = torch.from_numpy(_core.segment_prod_backward(_view(x), ptr.cpu().numpy(), gv))
    else:  # prod: differentiate the tree itself (exact with zeros; differentiable again)
        with torch.enable_grad():
            xx = x.detach().requires_grad_(True)
            y = _native_reduce(xx, ptr, "prod", 1.0)
            (gx,) = torch.autograd.grad(y, xx, g, create_graph=torch.is_grad_enabled())
    return gx, None, None, None


_segment_reduce_op.register_autograd(_segment_backward, setup_context=_segment_setup)


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
    elements (exact with zeros).

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
    check_choice(op, "op", OPS, what)
    if x.dim() == 0:
        raise ShapeError(f"{what}: x must have at least one dimension")
    if not -x.dim() <= dim < x.dim():
        raise ShapeError(f"{what}: dim {dim} is out of range for x with {x.dim()} dimensions")
    moved = x.movedim(dim, 0)
    rows, rest = moved.shape[0], moved.shape[1:]
    p = torch.from_numpy(_monoid.segment_ptr(rows, index, ptr, dim_size, what))
    m = moved.reshape(rows, -1) if moved.numel() else moved.reshape(rows, int(np.prod(rest)))
    compute = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    m = m.to(compute).contiguous()
    out = torch.ops.aggkit.segment_reduce(m, p, op, None if empty is None else float(empty))
    return out.reshape(p.shape[0] - 1, *rest).movedim(0, dim).to(x.dtype)


# ---------------------------------------------------------------------------------------------
# the learnable commutative monoid


#: The fewest rows a GRU call gets (see LCMAggregation._combine_stacked).
_MIN_ROWS = 16


class LCMAggregation(nn.Module):
    r"""Learnable commutative monoid aggregation (Ong & Veličković, LoG 2022), per-set trees.

    The binary operator is a GRU cell made commutative by averaging both orders,
    ``a ⊕ b = (GRU(a, b) + GRU(b, a)) / 2`` (input ``a``, hidden state ``b``; PyG's
    ``LCMAggregation`` uses the same construction), applied over a balanced binary tree per set:
    depth ``⌈log2 k⌉`` with ``k - 1`` combines, one batched GRU call per tree level for the
    whole batch. Associativity is not built in; :meth:`assoc_loss` is a regulariser towards it.

    Parameters
    ----------
    in_channels, out_channels : int
        Input and latent/output sizes.
    project : bool
        Apply ``Linear(in_channels, out_channels)`` and ReLU before aggregating (required when
        the sizes differ), as PyG.
    pad : {"none", "zeros_dense", "identity"}
        ``"none"`` (default): each set reduced over its own elements only, so a node's output
        does not depend on the other nodes of the batch; an empty set gives the learned
        identity if there is one, else 0. ``"zeros_dense"``: PyG's behaviour (every set padded
        with zeros to the largest set of the batch, the zeros combined like elements): use it
        to reproduce PyG's numbers (a model trained with PyG loads with ``load_state_dict``).
        ``"identity"``: each set padded with the learned identity ``e`` to a power of two.
    learn_identity : bool, optional
        Learn an identity element ``e`` (a parameter ``identity`` of size ``out_channels``,
        initialised to 0): the value of empty sets and the pad of ``pad="identity"`` (default:
        only for that mode). :meth:`identity_loss` pushes ``e ⊕ a`` towards ``a``.

    Notes
    -----
    ``forward(x, index=None, ptr=None, dim_size=None, dim=-2)`` follows PyG's aggregation
    interface, so the module can be the ``aggr`` of a ``torch_geometric.nn.MessagePassing``
    layer; torch_geometric is not needed otherwise. ``index`` must be sorted (sort the edges
    by destination). The tree schedule is built in Rust in O(E) and cached: it is rebuilt
    only when a different (or modified) ``index``/``ptr`` tensor arrives. Parameter names match
    PyG's (``lin``, ``gru_cell``).

    Examples
    --------
    >>> import torch
    >>> from aggkit.torch.nn import LCMAggregation
    >>> _ = torch.manual_seed(0)
    >>> aggr = LCMAggregation(4, 8)
    >>> x, index = torch.randn(5, 4), torch.tensor([0, 0, 0, 2, 2])
    >>> aggr(x, index, dim_size=4).shape
    torch.Size([4, 8])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        project: bool = True,
        *,
        pad: str = "none",
        learn_identity: bool | None = None,
    ) -> None:
        super().__init__()
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InvalidParameterError(f"LCMAggregation: {name} must be an int >= 1, got {v!r}")
        check_choice(pad, "pad", PADS, "LCMAggregation")
        if in_channels != out_channels and not project:
            raise InvalidParameterError(
                "LCMAggregation: inputs must be projected (project=True) when in_channels != out_channels"
            )
        if learn_identity is None:
            learn_identity = pad == "identity"
        if pad == "identity" and not learn_identity:
            raise InvalidParameterError("LCMAggregation: pad='identity' pads with the learned identity")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.project, self.pad, self.learn_identity = bool(project), pad, bool(learn_identity)
        self.lin = nn.Linear(in_channels, out_channels) if project else None
        self.gru_cell = nn.GRUCell(out_channels, out_channels)
        self.identity = nn.Parameter(torch.zeros(out_channels)) if learn_identity else None
        self._cache: tuple[Any, ...] | None = None
        self._last_input: Tensor | None = None

    def reset_parameters(self) -> None:
        """Re-initialise every parameter (torch's defaults; the identity to 0)."""
        if self.lin is not None:
            self.lin.reset_parameters()
        self.gru_cell.reset_parameters()
        if self.identity is not None:
            nn.init.zeros_(self.identity)

    def _combine_stacked(self, both: Tensor, p: int) -> Tensor:
        other = torch.cat([both[p:], both[:p]])
        if 2 * p < _MIN_ROWS:
            # BLAS picks other kernels (another summation order) for a handful of rows; padding
            # the call keeps each row's result independent of how many other rows it has.
            extra = both.new_zeros((_MIN_ROWS - 2 * p, both.shape[1]))
            out = self.gru_cell(torch.cat([both, extra]), torch.cat([other, extra]))[: 2 * p]
        else:
            out = self.gru_cell(both, other)
        return (out[:p] + out[p:]) / 2

    def _project(self, x: Tensor) -> Tensor:
        assert self.lin is not None
        if x.shape[0] < _MIN_ROWS:  # as in _combine_stacked: results independent of the batch
            return self.lin(torch.cat([x, x.new_zeros((_MIN_ROWS - x.shape[0], x.shape[1]))]))[
                : x.shape[0]
            ].relu()
        return self.lin(x).relu()

    def combine(self, a: Tensor, b: Tensor) -> Tensor:
        """The operator ``a ⊕ b`` on ``(P, out_channels)`` tensors (one GRU call)."""
        return self._combine_stacked(torch.cat([a, b]), a.shape[0])

    def schedule(
        self,
        rows: int,
        index: Tensor | None = None,
        ptr: Tensor | None = None,
        dim_size: int | None = None,
        device: torch.device | None = None,
    ) -> TreeSchedule:
        """The (cached) tree schedule of these sets, in this module's padding mode."""
        src = index if index is not None else ptr
        key = (src, getattr(src, "_version", None), index is None, rows, dim_size, device)
        c = self._cache
        if c is not None and c[0] is key[0] and c[1:-1] == key[1:]:
            return c[-1]
        s = tree_schedule(index, ptr, dim_size, self.pad, rows=rows, device=device)
        self._cache = (*key, s)
        return s

    def forward(
        self,
        x: Tensor,
        index: Tensor | None = None,
        ptr: Tensor | None = None,
        dim_size: int | None = None,
        dim: int = -2,
        *,
        schedule: TreeSchedule | None = None,
    ) -> Tensor:
        """Aggregate the rows of ``x`` (shape ``(E, in_channels)``) into ``(num_sets, out_channels)``."""
        x = _float_input(x, "LCMAggregation")
        if x.dim() != 2 or dim not in (0, -2):
            raise ShapeError(
                "LCMAggregation: x must have shape (E, in_channels) with dim=-2, "
                f"got {tuple(x.shape)}, dim={dim}"
            )
        if x.shape[1] != self.in_channels:
            raise ShapeError(
                f"LCMAggregation: x has {x.shape[1]} channels, expected in_channels={self.in_channels}"
            )
        if self.lin is not None:
            x = self._project(x)
        self._last_input = x.detach()
        if schedule is None:
            schedule = self.schedule(x.shape[0], index, ptr, dim_size, x.device)
        elif schedule.rows != x.shape[0] or schedule.pad != self.pad:
            raise ShapeError(
                f"LCMAggregation: the schedule is for {schedule.rows} rows with pad={schedule.pad!r}; "
                f"x has {x.shape[0]} rows and the module pad={self.pad!r}"
            )
        s = schedule.to(x.device)
        pad_row = x.new_zeros(x.shape[1]) if self.pad == "zeros_dense" else self.identity
        return _tree_reduce(x, s, self._combine_stacked, pad_row, self.identity)

    def _rows(self, x: Tensor | None) -> Tensor:
        if x is None:
            x = self._last_input
            if x is None:
                raise InvalidParameterError("LCMAggregation: no input yet; call forward or pass x")
        elif self.lin is not None:
            x = self._project(x)
        if x.dim() != 2 or x.shape[0] == 0 or x.shape[1] != self.out_channels:
            raise ShapeError(
                f"LCMAggregation: need rows of {self.out_channels} latent values, got {tuple(x.shape)}"
            )
        return x

    def assoc_loss(
        self, x: Tensor | None = None, num_triples: int = 256, generator: torch.Generator | None = None
    ) -> Tensor:
        r"""Associativity regulariser: mean over sampled triples of ``‖(a⊕b)⊕c - a⊕(b⊕c)‖²``.

        The triples are drawn uniformly (with replacement) from the rows of ``x`` (inputs, projected
        if ``project``) or, by default, from the latent inputs of the last :meth:`forward`
        (detached: the loss trains the operator, not the encoder). Two batched operator calls.
        The loss's exact form and weight in the paper are not pinned down here (ALGORITHMS.md
        §14.2 marks them unverified): add ``λ · assoc_loss()`` to the task loss, λ tuned.
        """
        rows = self._rows(x)
        n = rows.shape[0]
        idx = torch.randint(0, n, (3, num_triples), generator=generator).to(rows.device)
        a, b, c = rows[idx[0]], rows[idx[1]], rows[idx[2]]
        t = num_triples
        ab_bc = self._combine_stacked(torch.cat([a, b, b, c]), 2 * t)
        ab, bc = ab_bc[:t], ab_bc[t:]
        both = self._combine_stacked(torch.cat([ab, a, c, bc]), 2 * t)
        return (both[:t] - both[t:]).pow(2).sum(-1).mean()

    def identity_loss(
        self, x: Tensor | None = None, num_samples: int = 256, generator: torch.Generator | None = None
    ) -> Tensor:
        """Identity regulariser ``mean ‖e ⊕ a - a‖²`` over sampled rows (needs ``learn_identity``)."""
        if self.identity is None:
            raise InvalidParameterError("LCMAggregation: identity_loss needs learn_identity=True")
        rows = self._rows(x)
        idx = torch.randint(0, rows.shape[0], (num_samples,), generator=generator).to(rows.device)
        a = rows[idx]
        e = self.identity.to(a.dtype).expand_as(a)
        return (self.combine(e, a) - a).pow(2).sum(-1).mean()

    def extra_repr(self) -> str:  # noqa: D102 - nn.Module's hook
        return (
            f"{self.in_channels}, {self.out_channels}, project={self.project}, pad={self.pad!r}, "
            f"learn_identity={self.learn_identity}"
        )

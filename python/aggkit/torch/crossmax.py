"""CrossMax on tensors: ``torch.ops.aggkit.crossmax`` with its sparse four-entry gradient."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from aggkit import _core
from aggkit._dispatch import implements
from aggkit._params import NonFinite
from aggkit.errors import nonfinite_error
from aggkit.rules.crossmax import RAISE_DETAIL, CrossMax, CrossMaxEven, Reducer, normalize_dims
from aggkit.torch import _kernels as K
from aggkit.torch._input import compute_dtype, needs_grad
from aggkit.torch._paths import rust, rust_backward, u32, use_triton, view


def native(
    z: torch.Tensor, k: int, reducer: str, even: str, nonfinite: str, need_indices: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """CrossMax of ``z`` ``(B, N, C)`` with the core's semantics (rust/rules/crossmax.rs).

    Predictors are ranked per class by a stable descending sort (ties: lower index first),
    after ``+ 0.0`` turns ``-0.0`` into ``+0.0``, exactly as the core ranks them.
    """
    n = z.shape[1]
    if nonfinite == "raise":
        bad = (torch.isnan(z) | (z == math.inf)).any(dim=2).any(dim=0)
        if bool(bad.any()):
            raise nonfinite_error("crossmax", torch.nonzero(bad).flatten().tolist(), RAISE_DETAIL)
    if z.shape[2] == 0:  # no classes: no scores (argmax classes 0, as the core reports them)
        i32 = torch.int32
        none = z.new_empty(0, dtype=i32)
        if not need_indices:
            return z.new_empty(z.shape[0], 0), none, none.clone(), none.clone(), none.clone()
        bc = z.new_empty(z.shape[0], 0, dtype=i32)
        return z.new_empty(z.shape[0], 0), bc, bc.clone(), bc.clone(), z.new_zeros(z.shape[:2], dtype=i32)
    neg_inf = torch.tensor(-math.inf, dtype=z.dtype, device=z.device)
    if nonfinite == "robust":
        z = torch.where(torch.isnan(z), neg_inf, z)
        z = torch.where(
            z == math.inf, torch.tensor(torch.finfo(z.dtype).max, dtype=z.dtype, device=z.device), z
        )
    m = z.amax(dim=2, keepdim=True)
    a = (z - m) + 0.0
    if nonfinite != "propagate":
        a = torch.where(m == -math.inf, neg_inf, a)  # a predictor with no logit above -inf abstains
    vals, order = torch.sort(a, dim=1, descending=True, stable=True)
    if reducer == "kth":
        ra = rb = k
    else:
        upper, lower = (n + 1) // 2, n // 2 + 1
        ra, rb = {"lower": (lower, lower), "upper": (upper, upper), "mean": (upper, lower)}[even]
    top = vals[:, 0, :]
    y = vals[:, ra - 1, :] - top if ra == rb else K.midpoint(vals[:, ra - 1, :], vals[:, rb - 1, :]) - top
    y = torch.where(torch.isnan(a).any(dim=1), torch.tensor(math.nan, dtype=z.dtype, device=z.device), y)
    y = torch.where((z == -math.inf).all(dim=1), neg_inf, y)
    if not need_indices:
        none = torch.empty(0, dtype=torch.int32, device=z.device)
        return y, none, none.clone(), none.clone(), none.clone()
    i32 = torch.int32
    return (
        y,
        order[:, 0, :].to(i32),
        order[:, ra - 1, :].to(i32),
        order[:, rb - 1, :].to(i32),
        z.argmax(dim=2).to(i32),
    )


@torch.library.custom_op("aggkit::crossmax", mutates_args=())
def crossmax_op(
    z: Tensor, k: int, reducer: str, even: str, nonfinite: str, need_indices: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Scores ``(B, C)`` of logits ``(B, N, C)``, and int32 indices for the backward if asked.

    The indices: the top and the k-th predictor (the k-th twice; two different ones for an
    averaged median) ``(B, C)``, and each predictor's argmax class ``(B, N)``.
    """
    if rust(z):
        b, n, c = z.shape
        out, top, kth, kth2, am = _core.crossmax(
            view(z).reshape(b * n, c), n, k, reducer, even, nonfinite, need_indices
        )
        y = torch.from_numpy(out).reshape(b, c)
        if top is None or kth is None or kth2 is None or am is None:
            none = torch.empty(0, dtype=torch.int32)
            return y, none, none.clone(), none.clone(), none.clone()
        i = [torch.from_numpy(v.view(np.int32)) for v in (top, kth, kth2, am)]
        return y, i[0].reshape(b, c), i[1].reshape(b, c), i[2].reshape(b, c), i[3].reshape(b, n)
    if use_triton(z):
        from aggkit.torch import _triton_crossmax

        if _triton_crossmax.supported(z):  # N in registers (N <= 128): the kernel, else torch ops
            return _triton_crossmax.crossmax(z, k, reducer, even, nonfinite, need_indices)
    return native(z, k, reducer, even, nonfinite, need_indices)


@crossmax_op.register_fake
def _(
    z: Tensor, k: int, reducer: str, even: str, nonfinite: str, need_indices: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    b, n, c = z.shape
    bc = (b, c) if need_indices else (0,)
    bn = (b, n) if need_indices else (0,)
    i32 = torch.int32
    return (
        z.new_empty(b, c),
        z.new_empty(bc, dtype=i32),
        z.new_empty(bc, dtype=i32),
        z.new_empty(bc, dtype=i32),
        z.new_empty(bn, dtype=i32),
    )


def _setup(ctx: Any, inputs: Any, output: Any) -> None:
    z, _, reducer, even, _, need_indices = inputs
    y, top, kth, kth2, am = output
    ctx.shape = z.shape
    ctx.need_indices = need_indices
    n = z.shape[1]
    ctx.average = reducer == "median" and even == "mean" and n % 2 == 0
    ctx.save_for_backward(y, top, kth, kth2, am)


def _backward(ctx: Any, g: Tensor, *_: Any) -> tuple[Tensor, None, None, None, None, None]:
    """Four entries per output (docs/algorithms.md, CrossMax).

    ``+g`` at ``(k-th, c)``, ``-g`` at ``(k-th, its argmax)``, ``-g`` at ``(top, c)``, ``+g``
    at ``(top, its argmax)``; half of the k-th terms to each middle predictor for an averaged
    median. Non-finite outputs (masked classes) pass no gradient.
    """
    y, top, kth, kth2, am = ctx.saved_tensors
    if not ctx.need_indices:
        raise RuntimeError(
            "aggkit::crossmax was called with need_indices=False, so it saved nothing to "
            "differentiate; call it through aggkit.torch.crossmax"
        )
    b, n, c = ctx.shape
    if c == 0:  # no classes, no scores: nothing to route
        return g.new_zeros(b, n, 0), None, None, None, None, None
    if rust_backward(g):
        finite = torch.isfinite(y.detach()).reshape(-1).numpy()
        t, k1, k2, a = (u32(t.reshape(-1)) for t in (top, kth, kth2, am))
        gv = g.detach().contiguous().reshape(-1).numpy()
        host = _core.crossmax_backward(gv, finite, t, k1, k2, a, n, c, ctx.average)
        return torch.from_numpy(host).reshape(b, n, c), None, None, None, None, None
    g = torch.where(torch.isfinite(y.detach()), g, g.new_zeros(()))
    cls = torch.arange(c, device=g.device)[None, :]
    am = am.long()
    preds, weights = [top.long()], [-g]
    if ctx.average:
        preds += [kth.long(), kth2.long()]
        weights += [g / 2, g / 2]
    else:
        preds.append(kth.long())
        weights.append(g)
    # One scatter of every term: (p, c) gets w, (p, argmax of p) gets -w; ordered class by
    # class, then term by term, which is the order the Rust kernel adds them in (same bits).
    index = torch.stack([t for p in preds for t in (p * c + cls, p * c + am.gather(1, p))], dim=2)
    src = torch.stack([t for w in weights for t in (w, -w)], dim=2)
    index, src = index.reshape(b, -1), src.reshape(b, -1)
    grad = g.new_zeros(b, n * c)
    if torch.is_grad_enabled():  # double backward: keep the graph
        grad = grad.scatter_add(1, index, src)
    else:
        grad.scatter_add_(1, index, src)
    return grad.reshape(b, n, c), None, None, None, None, None


crossmax_op.register_autograd(_backward, setup_context=_setup)


@implements("crossmax", "torch")
def _crossmax(spec: CrossMax, z: Any) -> tuple[Tensor, None]:
    if not isinstance(z, Tensor):
        raise TypeError(f"crossmax: z must be a tensor, got {type(z).__name__}")
    dt = compute_dtype(z.dtype, "crossmax")
    pd, cd = normalize_dims(z.ndim, spec.predictor_dim, spec.class_dim)
    moved = z.movedim((pd, cd), (-2, -1))
    batch, (n, c) = moved.shape[:-2], moved.shape[-2:]
    spec.check_predictors(n)
    z3 = moved.reshape(math.prod(batch), n, c)  # (-1 cannot be inferred when c == 0)
    if z3.dtype != dt:
        z3 = z3.to(dt)
    y, *_ = crossmax_op(z3.contiguous(), spec.rank, spec.reducer, spec.even, spec.nonfinite, needs_grad(z3))
    y = y.reshape(*batch, c)
    return (y if y.dtype == z.dtype else y.to(z.dtype)), None


def crossmax(
    z: Tensor,
    *,
    k: int | None = CrossMax.k,
    reducer: Reducer = CrossMax.reducer,
    even: CrossMaxEven = CrossMax.even,
    predictor_dim: int = CrossMax.predictor_dim,
    class_dim: int = CrossMax.class_dim,
    nonfinite: NonFinite = CrossMax.nonfinite,
) -> Tensor:
    """CrossMax of logits ``(..., N, C) -> (..., C)``; see :func:`aggkit.crossmax`.

    The gradient of each output ``Y[c]`` has four entries (docs/algorithms.md): ``+1`` at
    the k-th predictor's logit for ``c`` and ``-1`` at that predictor's top logit, ``-1`` at
    the best predictor's logit for ``c`` and ``+1`` at its top logit (they cancel where ``c``
    is that predictor's top class); half of the k-th terms to each of the two middle
    predictors for ``reducer="median", even="mean"``. This sparse gradient is CrossMax's own;
    it is not smoothed.
    """
    spec = CrossMax(
        k=k, reducer=reducer, even=even, predictor_dim=predictor_dim, class_dim=class_dim, nonfinite=nonfinite
    )
    return _crossmax(spec, z)[0]

"""The trimmed mean on tensors: ``torch.ops.aggkit.trimmed_mean`` and the weighted one.

The gradient goes to the kept values. The weighted trimmed mean's values come from the core (CPU)
or a Triton kernel where no gradient is recorded; with one, it runs as torch ops.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from aggkit import _core, _params
from aggkit._dispatch import implements
from aggkit._params import NonFinite
from aggkit.errors import InvalidParameterError
from aggkit.rules.trimmed_mean import TrimmedMean
from aggkit.torch import _kernels as K
from aggkit.torch._input import Prepared, host, in_place_rows, needs_grad
from aggkit.torch._paths import plain, rust, u32, use_triton, view
from aggkit.torch.median import columns, columns_fake, missing_rows


def native(x: Tensor, f: int, nonfinite: str, need_rows: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Coordinate-wise ``f``-trimmed mean; rows of the lowest and highest kept values if asked."""
    K.check_policy(x, "trimmed_mean", nonfinite)
    n = x.shape[0]
    order = K.rank_order(x)
    kept = [x.gather(0, order[r][None])[0] for r in range(f, n - f)]
    s = K.accumulate([v.double() for v in kept], x.dtype)
    out = K.average(s, float(n - 2 * f), kept[0], kept[-1])
    return K.propagate(x, nonfinite, out, order[f], order[n - f - 1], need_rows)


def weighted(x: Tensor, w: list[float], f: int, nonfinite: str) -> Tensor:
    """Weighted trimmed mean of the columns of ``(n, d)`` ``x``.

    Without autograd: the core on CPU, a Triton kernel where one serves (``n <= 128``). Else,
    and for the gradient, torch ops on any device: the core's ``weighted::trimmed_column``
    column-parallel: in rank order, the part of each weight inside the kept mass ``[t, total -
    t]`` (``t = total f / n``) weighs its value, summed with the core's accumulator and kept
    within the values of positive part.
    """
    K.check_policy(x, "trimmed_mean", nonfinite)
    n = x.shape[0]
    wn = torch.tensor(K.normalise_weights(w), dtype=torch.float64, device=x.device)
    if not needs_grad(x) and plain(x):  # values only: the core, or a Triton kernel
        if rust(x):
            values, _, _ = _core.weighted_trimmed_mean(view(x), wn.numpy(), f, nonfinite, False)
            return torch.from_numpy(values)
        if use_triton(x):
            from aggkit.torch import _triton

            if n <= _triton.CONFIG.max_register_n:
                return _triton.weighted_trimmed_mean(x, wn, f, nonfinite).to(x.dtype)
    order = K.rank_order(x)
    wt = wn[order]
    vals = x.gather(0, order)
    total = K.plain_sum(list(wt)).value()
    lo_mass = total * f / n
    hi_mass = total - lo_mass
    c0 = torch.zeros_like(total)
    parts = []
    for r in range(n):
        c1 = c0 + wt[r]
        parts.append(torch.minimum(c1, hi_mass) - torch.maximum(c0, lo_mass))
        c0 = c1
    pos = torch.stack(parts) > 0
    # Ranks of no positive part add -0.0 (weight 1), the identity, as the core skips them.
    nothing = torch.full((), -0.0, dtype=torch.float64, device=x.device)
    terms = [torch.where(pos[r], vals[r].double(), nothing) for r in range(n)]
    weights = [torch.where(pos[r], parts[r], 1.0) for r in range(n)]
    kept = torch.zeros_like(total)
    for r in range(n):
        kept = kept + torch.where(pos[r], parts[r], 0.0)
    first = pos.to(torch.uint8).argmax(0)
    last = n - 1 - pos.flip(0).to(torch.uint8).argmax(0)
    s = K.accumulate(terms, x.dtype, weights)
    out = K.average(s, kept, vals.gather(0, first[None])[0], vals.gather(0, last[None])[0])
    out = torch.where(pos.any(0), out, torch.full_like(out, float("nan")))
    if nonfinite == "propagate":
        out = torch.where(torch.isnan(x).any(0), torch.full_like(out, float("nan")), out)
    return out


@torch.library.custom_op("aggkit::trimmed_mean", mutates_args=())
def trimmed_mean_op(x: Tensor, f: int, nonfinite: str, need_rows: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Values ``(d,)``; rows of the lowest and highest kept values ``(d,)`` int32 if asked."""
    if use_triton(x):
        from aggkit.torch import _triton

        out, lo, hi = _triton.trimmed_mean(x, f, nonfinite, need_rows)
        return out.to(x.dtype), lo, hi  # half precision: computed in float32, rounded once
    if rust(x):
        return columns("trimmed_mean", x, f, nonfinite, need_rows)
    return native(x, f, nonfinite, need_rows)


@trimmed_mean_op.register_fake
def _(x: Tensor, f: int, nonfinite: str, need_rows: bool) -> tuple[Tensor, Tensor, Tensor]:
    return columns_fake(x, need_rows)


def kept_range_setup(ctx: Any, x: Tensor, kept: int, need_rows: bool, lo: Tensor, hi: Tensor) -> None:
    """Save what :func:`kept_range_backward` needs, and which kernels the forward ran.

    The backward runs on autograd's thread (on CUDA, its device thread), where the per-thread
    switches of :mod:`aggkit.torch._paths` may say otherwise; ``x`` was laid out for the
    forward's path (uncopied strided or half-precision input goes to Triton only).
    """
    ctx.kept = kept
    ctx.need_rows = need_rows
    ctx.path = "triton" if use_triton(x) else "rust" if rust(x) else "native"
    ctx.save_for_backward(x, lo, hi)


def kept_range_backward(ctx: Any, g: Tensor, name: str) -> tuple[Tensor, None, None, None]:
    """``g / kept`` to each value of the kept range of ranks (trimmed mean, meamed), 0 elsewhere."""
    x, lo, hi = ctx.saved_tensors
    if not ctx.need_rows:
        raise missing_rows(name)
    kernel = plain(g) and not torch.is_grad_enabled()  # no higher-order graph, not traced
    if kernel and ctx.path == "rust" and g.device.type == "cpu":
        gv = g.detach().contiguous().numpy()
        grad = _core.trimmed_mean_backward(view(x), u32(lo), u32(hi), gv, ctx.kept)
        return torch.from_numpy(grad), None, None, None
    gw = g.float() if g.dtype in K.HALF else g  # half precision: as the float32 path, rounded once
    if kernel and ctx.path == "triton" and plain(x):
        from aggkit.torch import _triton

        return _triton.kept_grad(x, lo, hi, (gw / ctx.kept).to(g.dtype)), None, None, None
    mask = K.kept_mask(x, lo, hi)
    return torch.where(mask, (gw / ctx.kept)[None], gw.new_zeros(())).to(g.dtype), None, None, None


def _setup(ctx: Any, inputs: Any, output: Any) -> None:
    x, f, _, need_rows = inputs
    _, lo, hi = output
    kept_range_setup(ctx, x, x.shape[0] - 2 * f, need_rows, lo, hi)


def _backward(ctx: Any, g: Tensor, _lo: Tensor, _hi: Tensor) -> tuple[Tensor, None, None, None]:
    return kept_range_backward(ctx, g, "trimmed_mean")


trimmed_mean_op.register_autograd(_backward, setup_context=_setup)


@implements("trimmed_mean", "torch")
def _trimmed_mean(rule: TrimmedMean, x: Any, *, weights: Any = None, dim: int = 0) -> tuple[Tensor, None]:
    if weights is not None:
        p = Prepared(x, "trimmed_mean", dim)
        rule.check_n(p.n)
        w = _params.weights(host(weights), p.n, "trimmed_mean")
        if w.sum() <= 0:
            raise InvalidParameterError("trimmed mean: the weights sum to 0")
        return p.finish(weighted(p.x, w.tolist(), rule.f, rule.nonfinite)), None
    if dim == 0 and (rows := in_place_rows(x)) is not None:
        rule.check_n(rows.n)
        out, _, _ = _core.trimmed_mean(rows.core, rule.f, rule.nonfinite, False)
        return rows.finish(out), None
    p = Prepared(x, "trimmed_mean", dim, in_place=True)
    rule.check_n(p.n)
    out, _, _ = trimmed_mean_op(p.x, rule.f, rule.nonfinite, needs_grad(p.x))
    return p.finish(out), None


def trimmed_mean(
    x: Any, *, f: int, weights: Any = None, nonfinite: NonFinite = TrimmedMean.nonfinite, dim: int = 0
) -> Tensor:
    """Coordinate-wise trimmed mean; see :func:`aggkit.trimmed_mean`.

    The gradient is ``1/(n - 2f)`` for each kept value, 0 for the trimmed ones. With
    ``weights`` it runs as torch ops on every device; each value's gradient is the part of its
    mass that is kept over the kept mass.
    """
    return _trimmed_mean(TrimmedMean(f=f, nonfinite=nonfinite), x, weights=weights, dim=dim)[0]

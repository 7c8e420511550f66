"""The median on tensors: ``torch.ops.aggkit.median`` and the weighted median.

The gradient goes to the middle rows; the weighted median's value is gathered in torch ops from
rows the core, a Triton kernel or torch ops find.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from aggkit import _core, _params
from aggkit._dispatch import implements
from aggkit._params import Even, NonFinite
from aggkit.errors import InvalidParameterError
from aggkit.rules.median import Median
from aggkit.torch import _kernels as K
from aggkit.torch._input import Prepared, host, in_place_rows, needs_grad
from aggkit.torch._paths import plain, rows_tensor, rust, rust_backward, u32, use_triton, view


def native(x: Tensor, even: str, nonfinite: str, need_rows: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Coordinate-wise median in torch ops; rows of the lower and upper middle values if asked."""
    K.check_policy(x, "median", nonfinite)
    n = x.shape[0]
    if n % 2 == 1:
        r_lo = r_hi = n // 2
    else:
        r_lo, r_hi = {"mean": (n // 2 - 1, n // 2), "lower": (n // 2 - 1,) * 2, "upper": (n // 2,) * 2}[even]
    order = K.rank_order(x)
    lo, hi = order[r_lo], order[r_hi]
    b = x.gather(0, hi[None])[0]
    out = b if r_lo == r_hi else K.midpoint(x.gather(0, lo[None])[0], b)
    return K.propagate(x, nonfinite, out, lo, hi, need_rows)


def weighted(x: Tensor, w: list[float], even: str, nonfinite: str) -> Tensor:
    """Weighted median of the columns of ``(n, d)`` ``x``, differentiable in ``x``.

    The rows of the median come from the core on CPU, from a Triton kernel where one serves
    the tensor, else from torch ops; the value is gathered from them in torch ops.
    """
    K.check_policy(x, "median", nonfinite)
    n = x.shape[0]
    wn = torch.tensor(K.normalise_weights(w), dtype=torch.float64, device=x.device)
    if rust(x) and plain(x):  # the rows by the core, the value gathered (differentiable)
        _, lo, hi = _core.weighted_median(view(x), wn.numpy(), even, nonfinite, True)
        row_r, row_s = rows_tensor(lo, x).long(), rows_tensor(hi, x).long()
        vr, vs = x.gather(0, row_r[None])[0], x.gather(0, row_s[None])[0]
        return _weighted_value(x, vr, vs, row_r != row_s, even, nonfinite)
    if plain(x) and use_triton(x):
        from aggkit.torch import _triton

        if n <= _triton.CONFIG.max_register_n:  # the rows by a kernel (sequential sums, no sort)
            row_r, row_s, exact = _triton.weighted_median_rows(x, wn)
            vr, vs = x.gather(0, row_r[None])[0], x.gather(0, row_s[None])[0]
            return _weighted_value(x, vr, vs, exact, even, nonfinite)
    order = K.rank_order(x)
    wt = wn[order]
    c = wt.cumsum(0)
    total = c[-1:]
    reach = (2.0 * c >= total) & (wt > 0)
    r = reach.to(torch.uint8).argmax(0, keepdim=True)
    exact = (2.0 * c.gather(0, r) == total)[0]
    rank = torch.arange(n, device=x.device)[:, None]
    nxt = (rank > r) & (wt > 0)
    s = torch.where(nxt.any(0, keepdim=True), nxt.to(torch.uint8).argmax(0, keepdim=True), r)
    vr = x.gather(0, order.gather(0, r))[0]
    vs = x.gather(0, order.gather(0, s))[0]
    return _weighted_value(x, vr, vs, exact, even, nonfinite)


def _weighted_value(x: Tensor, vr: Tensor, vs: Tensor, exact: Tensor, even: str, nonfinite: str) -> Tensor:
    """The weighted median from the values of ranks ``r`` and ``s`` (differentiable in ``x``)."""
    if even == "lower":
        out = vr
    elif even == "upper":
        out = torch.where(exact, vs, vr)
    else:
        out = torch.where(exact, K.midpoint(vr, vs), vr)
    if nonfinite == "propagate":
        out = torch.where(torch.isnan(x).any(0), torch.full_like(out, float("nan")), out)
    return out


def columns(name: str, x: Tensor, *args: object) -> tuple[Tensor, Tensor, Tensor]:
    """Run the order-statistic kernel ``name`` of the core: values, lo rows, hi rows."""
    out, lo, hi = getattr(_core, name)(view(x), *args)
    return torch.from_numpy(out), rows_tensor(lo, x), rows_tensor(hi, x)


def columns_fake(x: Tensor, need_rows: bool) -> tuple[Tensor, Tensor, Tensor]:
    """The fake (meta) outputs of an order-statistic op."""
    rows = x.shape[1] if need_rows else 0
    return x.new_empty(x.shape[1]), x.new_empty(rows, dtype=torch.int32), x.new_empty(rows, dtype=torch.int32)


def missing_rows(name: str) -> RuntimeError:
    """The error of a backward through an op that was asked for no rows."""
    return RuntimeError(
        f"aggkit::{name} was called with need_rows=False, so it saved nothing to differentiate; "
        "call it through aggkit.torch, which asks for the rows when a gradient is needed"
    )


@torch.library.custom_op("aggkit::median", mutates_args=())
def median_op(x: Tensor, even: str, nonfinite: str, need_rows: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Values ``(d,)``; rows of the lower and upper middle values ``(d,)`` int32 if asked."""
    if use_triton(x):
        from aggkit.torch import _triton

        out, lo, hi = _triton.median(x, even, nonfinite, need_rows)
        return out.to(x.dtype), lo, hi  # half precision: computed in float32, rounded once
    if rust(x):
        return columns("median", x, even, nonfinite, need_rows)
    return native(x, even, nonfinite, need_rows)


@median_op.register_fake
def _(x: Tensor, even: str, nonfinite: str, need_rows: bool) -> tuple[Tensor, Tensor, Tensor]:
    return columns_fake(x, need_rows)


def _setup(ctx: Any, inputs: Any, output: Any) -> None:
    x, even, _, need_rows = inputs
    _, lo, hi = output
    ctx.shape = x.shape
    ctx.need_rows = need_rows
    n = x.shape[0]
    ctx.average = n % 2 == 0 and even == "mean"
    ctx.save_for_backward(lo, hi)


def _backward(ctx: Any, g: Tensor, _lo: Tensor, _hi: Tensor) -> tuple[Tensor, None, None, None]:
    lo, hi = ctx.saved_tensors
    if not ctx.need_rows:
        raise missing_rows("median")
    if rust_backward(g):
        gv = g.detach().contiguous().numpy()
        host = _core.median_backward(ctx.shape[0], u32(lo), u32(hi) if ctx.average else None, gv)
        return torch.from_numpy(host), None, None, None
    gw = g.float() if g.dtype in K.HALF else g  # half precision: as the float32 path, rounded once
    grad = gw.new_zeros(ctx.shape)
    if ctx.average:
        half = (gw / 2)[None]
        grad = grad.scatter_add(0, lo.long()[None], half).scatter_add(0, hi.long()[None], half)
    else:
        grad = grad.scatter(0, lo.long()[None], gw[None])
    return grad.to(g.dtype), None, None, None


median_op.register_autograd(_backward, setup_context=_setup)


@implements("median", "torch")
def _median(rule: Median, x: Any, *, weights: Any = None, dim: int = 0) -> tuple[Tensor, None]:
    if weights is not None:
        p = Prepared(x, "median", dim)
        w = _params.weights(host(weights), p.n, "median")
        if w.sum() <= 0:
            raise InvalidParameterError("median: the weights sum to 0")
        return p.finish(weighted(p.x, w.tolist(), rule.even, rule.nonfinite)), None
    if dim == 0 and (rows := in_place_rows(x)) is not None:
        out, _, _ = _core.median(rows.core, rule.even, rule.nonfinite, False)
        return rows.finish(out), None
    p = Prepared(x, "median", dim, in_place=True)
    out, _, _ = median_op(p.x, rule.even, rule.nonfinite, needs_grad(p.x))
    return p.finish(out), None


def median(
    x: Any,
    *,
    even: Even = Median.even,
    weights: Any = None,
    nonfinite: NonFinite = Median.nonfinite,
    dim: int = 0,
) -> Tensor:
    """Coordinate-wise median; see :func:`aggkit.median`.

    The gradient goes to the middle element of each coordinate (half to each of the two
    middle elements under ``even="mean"`` with even ``n``); ties are broken by row index.
    With ``weights`` the rows of the median come from the core (CPU), a Triton kernel (CUDA,
    ``n <= 128``) or torch ops, and the value is gathered from them, so the gradient goes to
    those rows.
    """
    return _median(Median(even=even, nonfinite=nonfinite), x, weights=weights, dim=dim)[0]

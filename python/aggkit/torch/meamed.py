"""Meamed on tensors: ``torch.ops.aggkit.meamed``, also Bulyan's second stage.

The gradient goes to the kept values (``1/keep`` each).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from aggkit import _core
from aggkit._dispatch import implements
from aggkit._params import NonFinite
from aggkit.rules.meamed import Meamed
from aggkit.torch import _kernels as K
from aggkit.torch._input import Prepared, needs_grad
from aggkit.torch._paths import rows_tensor, rust, use_triton, view
from aggkit.torch.median import columns_fake
from aggkit.torch.trimmed_mean import kept_range_backward, kept_range_setup


def native(x: Tensor, keep: int, nonfinite: str, need_rows: bool) -> tuple[Tensor, Tensor, Tensor]:
    """The mean of the ``keep`` values closest to the median (the core's outward growth and tie rule)."""
    K.check_policy(x, "meamed", nonfinite)
    n, d = x.shape
    order = K.rank_order(x)
    s = x.gather(0, order)  # values in rank order
    p = n // 2
    med = s[p].double() if n % 2 == 1 else K.midpoint(s[p - 1], s[p]).double()
    dist = (s.double() - med[None]).abs()
    dist = torch.where(torch.isnan(dist), torch.full_like(dist, float("inf")), dist)
    lo = torch.full((d,), p, dtype=torch.long, device=x.device)
    hi = lo.clone()
    cols = torch.arange(d, device=x.device)
    inf = torch.tensor(float("inf"), dtype=torch.float64, device=x.device)
    for _ in range(keep):
        has_low, has_high = lo > 0, hi < n
        dl = torch.where(has_low, dist[(lo - 1).clamp(min=0), cols], inf)
        dh = torch.where(has_high, dist[hi.clamp(max=n - 1), cols], inf)
        rl = order[(lo - 1).clamp(min=0), cols]
        rh = order[hi.clamp(max=n - 1), cols]
        take_low = has_low & (~has_high | (dl < dh) | ((dl == dh) & (rl < rh)))
        lo = torch.where(take_low, lo - 1, lo)
        hi = torch.where(take_low, hi, hi + 1)
    rank = torch.arange(n, device=x.device)[:, None]
    kept = (rank >= lo[None]) & (rank < hi[None])
    # Ranks outside the kept ones add -0.0, the identity: the sum is that of the kept values.
    nothing = torch.full((), -0.0, dtype=torch.float64, device=x.device)
    terms = [torch.where(kept[r], s[r].double(), nothing) for r in range(n)]
    out = K.average(K.accumulate(terms, x.dtype), float(keep), s[lo, cols], s[hi - 1, cols])
    return K.propagate(x, nonfinite, out, order[lo, cols], order[hi - 1, cols], need_rows)


@torch.library.custom_op("aggkit::meamed", mutates_args=())
def meamed_op(x: Tensor, keep: int, nonfinite: str, need_rows: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Mean of the ``keep`` values closest to the median ``(d,)``; rows of the kept range's ends."""
    if use_triton(x):
        from aggkit.torch import _triton

        if x.shape[0] <= _triton.CONFIG.max_register_n:  # above: the torch-native kernel
            values, row_lo, row_hi = _triton.meamed(x, keep, nonfinite, need_rows)
            return values.to(x.dtype), row_lo, row_hi
    if rust(x):
        out, lo, hi = _core.meamed(view(x), 0, keep, nonfinite, need_rows)
        return torch.from_numpy(out), rows_tensor(lo, x), rows_tensor(hi, x)
    return native(x, keep, nonfinite, need_rows)


@meamed_op.register_fake
def _(x: Tensor, keep: int, nonfinite: str, need_rows: bool) -> tuple[Tensor, Tensor, Tensor]:
    return columns_fake(x, need_rows)


def _setup(ctx: Any, inputs: Any, output: Any) -> None:
    x, keep, _, need_rows = inputs
    _, lo, hi = output
    kept_range_setup(ctx, x, keep, need_rows, lo, hi)


def _backward(ctx: Any, g: Tensor, _lo: Tensor, _hi: Tensor) -> tuple[Tensor, None, None, None]:
    return kept_range_backward(ctx, g, "meamed")


meamed_op.register_autograd(_backward, setup_context=_setup)


@implements("meamed", "torch")
def _meamed(rule: Meamed, x: Any) -> tuple[Tensor, None]:
    p = Prepared(x, "meamed")
    rule.check_n(p.n)
    out, _, _ = meamed_op(p.x, p.n - rule.f, rule.nonfinite, needs_grad(p.x))
    return p.finish(out), None


def meamed(x: Any, *, f: int, nonfinite: NonFinite = Meamed.nonfinite) -> Tensor:
    """Meamed; see :func:`aggkit.meamed`. The gradient is ``1/(n - f)`` to each kept value."""
    return _meamed(Meamed(f=f, nonfinite=nonfinite), x)[0]

"""Centered clipping on tensors, in torch ops (float64), with torch's exact autograd."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from aggkit._dispatch import implements
from aggkit._params import NonFinite
from aggkit.errors import nonfinite_error
from aggkit.rules.centered_clipping import CenteredClipping, check_center, parse_center
from aggkit.torch import _kernels as K
from aggkit.torch._input import Prepared


@implements("centered_clipping", "torch")
def _centered_clipping(rule: CenteredClipping, x: Any, *, center: Any = None) -> tuple[Tensor, None]:
    p = Prepared(x, "centered_clipping")
    rule.check_input(p.n, p.d)
    xs = p.x
    K.check_policy(xs, "centered_clipping", rule.nonfinite)
    if rule.nonfinite == "robust":
        good = torch.isfinite(xs).all(dim=1)
        if not bool(good.any()):
            raise nonfinite_error(
                "centered_clipping",
                list(range(p.n)),
                "every input holds NaN or infinite values, nothing is left",
            )
        if not bool(good.all()):
            xs = xs[good]
    xd = xs.double()
    d = xd.shape[1]
    if center is None:
        v = torch.zeros(d, dtype=torch.float64, device=xd.device)
    elif isinstance(center, torch.Tensor):
        v = center.detach().to(device=xd.device, dtype=torch.float64).reshape(-1)
        check_center(v.numel(), bool(torch.isfinite(v).all()), d)
    else:
        c = parse_center(center)
        check_center(c.size, bool(np.isfinite(c).all()), d)
        v = torch.from_numpy(c).to(xd.device)
    tiny = torch.finfo(torch.float64).tiny
    finite = torch.isfinite(xd).all(dim=1)
    for _ in range(rule.iters):
        diff = xd - v[None]
        norm = K.sqrt0(diff.square().sum(dim=1))
        scale = torch.clamp(rule.tau / norm.clamp(min=tiny), max=1.0)
        step = diff * scale[:, None]
        wide = torch.isinf(norm) & finite
        if bool(wide.any()):
            # A distance beyond float64's range, measured as m 2^(e+1) from the half differences
            # h = x/2 - v/2 scaled by 2^-e, as the Rust core does: a row within tau moves all
            # the way, a farther one by ((h 2^-e) / m) tau, which cannot overflow.
            h = xd[wide] * 0.5 - v[None] * 0.5
            e = torch.frexp(h.abs().amax(dim=1)).exponent.to(torch.int64)
            hs = K.ldexp(h, -e[:, None])
            m = hs.square().sum(dim=1).sqrt()
            within = K.ldexp(m, e + 1) <= rule.tau
            far = (hs / m[:, None]) * rule.tau
            step = step.masked_scatter(wide[:, None], torch.where(within[:, None], diff[wide], far))
        n = xd.shape[0]
        total = step.sum(dim=0)
        # Moves of at most tau each whose sum overflows (tau near float64's max): divide first.
        v = v + torch.where(torch.isinf(total), (step / n).sum(dim=0), total / n)
    return p.finish(v.to(p.x.dtype)), None


def centered_clipping(
    x: Any,
    *,
    tau: float = CenteredClipping.tau,
    iters: int = CenteredClipping.iters,
    center: Any = None,
    nonfinite: NonFinite = CenteredClipping.nonfinite,
) -> Tensor:
    """Centered clipping in torch ops (float64), with torch's exact autograd through every step.

    The centre receives no gradient (it is detached).
    """
    rule = CenteredClipping(tau=tau, iters=iters, nonfinite=nonfinite)
    return _centered_clipping(rule, x, center=center)[0]

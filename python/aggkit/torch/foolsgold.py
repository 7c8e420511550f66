"""FoolsGold on tensors: histories and the weighted mean in torch ops, weights from n x n cosines."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from aggkit import _plans
from aggkit._dispatch import implements
from aggkit._params import DropOrRaise
from aggkit.errors import InvalidParameterError, ShapeError
from aggkit.rules.foolsgold import FoolsGold, FoolsGoldInfo, history_rows
from aggkit.torch import _kernels as K
from aggkit.torch._input import Prepared
from aggkit.torch.preagg import _clip, _norms


def _history(history: Any, n: int, d: int, device: torch.device) -> Tensor:
    out = torch.zeros(n, d, dtype=torch.float64, device=device)
    if history is None:
        return out
    for i, h in enumerate(history_rows(history, n)):
        if h is None:
            continue
        if isinstance(h, Tensor):
            v = h.detach().to(device=device, dtype=torch.float64).reshape(-1)
        else:
            try:
                v = torch.from_numpy(np.asarray(h, dtype=np.float64).reshape(-1)).to(device)
            except (TypeError, ValueError):
                raise InvalidParameterError(
                    f"foolsgold: history rows must be arrays of numbers, got {type(h).__name__}"
                ) from None
        if v.numel() != d:
            raise ShapeError(f"foolsgold: history row {i} has {v.numel()} values, the inputs {d}")
        out[i] = v
    return out


@implements("foolsgold", "torch")
def _foolsgold(rule: FoolsGold, x: Any, *, history: Any = None) -> tuple[Tensor, FoolsGoldInfo]:
    p = Prepared(x, "foolsgold")
    xs = p.x
    K.check_policy(xs, "foolsgold", rule.nonfinite)
    h = _history(history, p.n, p.d, xs.device)
    active = torch.isfinite(xs).all(dim=1)
    xc = xs
    if rule.clip is not None:
        m, e = _norms(xs)
        xc = _clip(xs, m, e, (rule.clip, 0))
    h = h + torch.where(active[:, None], xc.detach().double(), 0.0)
    act = active & torch.isfinite(h).all(dim=1)
    hs = torch.where(act[:, None], h, 0.0)
    top = hs.abs().amax(dim=1) if p.d else torch.zeros(p.n, dtype=torch.float64, device=xs.device)
    hs = K.ldexp(hs, -torch.frexp(top).exponent.to(torch.int64)[:, None])
    dist = K.distances(hs)
    norms = torch.linalg.vector_norm(hs, dim=1).cpu().numpy()
    cos, act_np = _plans.cosines(dist, norms), act.cpu().numpy()
    w = torch.from_numpy(_plans.foolsgold_weights(cos, rule.kappa, act_np)).to(xs.device)
    shares = torch.from_numpy(_plans.foolsgold_shares(cos, rule.kappa, act_np)).to(xs.device)
    total = float(shares.sum())
    if total == 0.0:
        out = torch.zeros(p.d, dtype=xs.dtype, device=xs.device)
    else:
        used = shares > 0
        out = ((shares[used] / total)[:, None] * xc[used].double()).sum(dim=0).to(xs.dtype)
    return p.finish(out), FoolsGoldInfo(w, h)


def foolsgold(
    x: Any,
    *,
    history: Any = None,
    kappa: float = FoolsGold.kappa,
    clip: float | None = FoolsGold.clip,
    nonfinite: DropOrRaise = FoolsGold.nonfinite,
    return_info: bool = False,
) -> Any:
    """FoolsGold in torch ops; the gradient flows through the weighted mean (weights are constants)."""
    out, info = _foolsgold(FoolsGold(kappa=kappa, clip=clip, nonfinite=nonfinite), x, history=history)
    return (out, info) if return_info else out

"""FoolsGold on tensors: the weighted mean in torch ops, weights from n x n cosines.

CPU tensors build the histories and their distances with the Rust kernels of the numpy path
(on views); other devices in torch ops.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from aggkit import _core, _plans
from aggkit._dispatch import implements
from aggkit._params import DropOrRaise
from aggkit.errors import InvalidParameterError, ShapeError
from aggkit.rules.foolsgold import FoolsGold, FoolsGoldInfo, history_rows
from aggkit.torch import _kernels as K
from aggkit.torch._input import Prepared
from aggkit.torch._paths import rust, view
from aggkit.torch.preagg import _clip, _norms


def _history_rows(history: Any, n: int, d: int, device: torch.device) -> list[Tensor | None]:
    """Each client's history as a contiguous float64 tensor of ``d`` values on ``device``."""
    if history is None:
        return [None] * n
    out: list[Tensor | None] = []
    for i, h in enumerate(history_rows(history, n)):
        if h is None:
            out.append(None)
            continue
        if isinstance(h, Tensor):
            v = h.detach().to(device=device, dtype=torch.float64).reshape(-1)
        else:
            try:
                v = torch.from_numpy(np.asarray(h, dtype=np.float64).reshape(-1)).to(device)
            except (TypeError, ValueError, RuntimeError):
                raise InvalidParameterError(
                    f"foolsgold: history rows must be arrays of numbers, got {type(h).__name__}"
                ) from None
        if v.numel() != d:
            raise ShapeError(f"foolsgold: history row {i} has {v.numel()} values, the inputs {d}")
        out.append(v.contiguous())
    return out


def _history(history: Any, n: int, d: int, device: torch.device) -> Tensor:
    out = torch.zeros(n, d, dtype=torch.float64, device=device)
    for i, v in enumerate(_history_rows(history, n, d, device)):
        if v is not None:
            out[i] = v
    return out


def _on_host(xc: Tensor, active: Tensor, history: Any, kappa: float) -> tuple[Tensor, np.ndarray, np.ndarray]:
    """CPU tensors: the numpy path's Rust kernels on views (histories, scaled distances)."""
    n, d = xc.shape
    rows = [None if r is None else r.numpy() for r in _history_rows(history, n, d, xc.device)]
    act = active.numpy()
    h, top = _core.foolsgold_history(view(xc.contiguous()), [1.0] * n, act.tolist(), rows)
    w, shares = _plans.foolsgold_from_history(h, top, kappa, act)
    return torch.from_numpy(h), w, shares


def _in_torch(xc: Tensor, active: Tensor, h: Tensor, kappa: float) -> tuple[Tensor, np.ndarray, np.ndarray]:
    """Other devices: histories and their scaling in torch ops; only n x n numbers leave."""
    h = h + torch.where(active[:, None], xc.detach().double(), 0.0)
    act = active & torch.isfinite(h).all(dim=1)
    hs = torch.where(act[:, None], h, 0.0)
    n, d = h.shape
    top = hs.abs().amax(dim=1) if d else torch.zeros(n, dtype=torch.float64, device=h.device)
    hs = K.ldexp(hs, -torch.frexp(top).exponent.to(torch.int64)[:, None])
    dist = K.distances(hs)
    norms = torch.linalg.vector_norm(hs, dim=1).cpu().numpy()
    cos, act_np = _plans.cosines(dist, norms), act.cpu().numpy()
    return h, _plans.foolsgold_weights(cos, kappa, act_np), _plans.foolsgold_shares(cos, kappa, act_np)


@implements("foolsgold", "torch")
def _foolsgold(rule: FoolsGold, x: Any, *, history: Any = None) -> tuple[Tensor, FoolsGoldInfo]:
    p = Prepared(x, "foolsgold")
    xs = p.x
    K.check_policy(xs, "foolsgold", rule.nonfinite)
    active = torch.isfinite(xs).all(dim=1)
    xc = xs
    if rule.clip is not None:
        m, e = _norms(xs)
        xc = _clip(xs, m, e, (rule.clip, 0))
    if rust(xs):
        h, w_np, shares_np = _on_host(xc, active, history, rule.kappa)
    else:
        h, w_np, shares_np = _in_torch(xc, active, _history(history, p.n, p.d, xs.device), rule.kappa)
    w = torch.from_numpy(w_np).to(xs.device)
    shares = torch.from_numpy(shares_np).to(xs.device)
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

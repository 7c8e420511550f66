"""The pre-aggregators on tensors: ``(n, *shape) -> (m, *shape)``, differentiable, on the device.

NNM and bucketing average groups of inputs with one matrix product (decided on host distances
or a host permutation); clipping, ARC and perturbation are torch ops with torch's own autograd
(ARC's includes the path through its threshold).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from aggkit import _plans
from aggkit._dispatch import implements
from aggkit.registry import Pipeline
from aggkit.rules.preagg import ARC, NNM, Bucketing, Clipping, Perturb
from aggkit.torch import _kernels as K
from aggkit.torch._input import Prepared


def _group_means(x: Tensor, groups: list[list[int]]) -> Tensor:
    """Means of groups of rows as one differentiable matrix product (0/1 weights / size)."""
    m = torch.zeros(len(groups), x.shape[0], dtype=x.dtype, device=x.device)
    for g, members in enumerate(groups):
        m[g, members] = 1.0 / len(members)
    finite = torch.isfinite(x).all(dim=1)
    if bool(finite.all()):
        return m @ x
    # 0 * inf would be NaN: only the members, each divided first (their sum could overflow).
    return torch.stack([(x[members] / len(members)).sum(dim=0) for members in groups])


def _norms(x: Tensor) -> tuple[Tensor, Tensor]:
    """Differentiable norms as ``(m, e)``, ``||x_i|| = m_i * 2**e_i`` (:func:`_plans.wide_norms`)."""
    m = K.sqrt0(x.double().square().sum(dim=1))
    e = torch.zeros(len(m), dtype=torch.int64, device=x.device)
    wide = torch.isinf(m) & torch.isfinite(x).all(dim=1)
    if bool(wide.any()):
        top = x.detach()[wide].double().abs().amax(dim=1)
        e = e.masked_scatter(wide, torch.frexp(top).exponent.to(torch.int64))
        m = torch.where(wide, K.sqrt0(K.ldexp(x.double(), -e[:, None]).square().sum(dim=1)), m)
    return m, e


def _clip(x: Tensor, m: Tensor, e: Tensor, c: tuple[Tensor | float, Tensor | int]) -> Tensor:
    """Every row scaled by ``min(1, c / ||x_i||)`` (1 for zero and non-finite norms).

    Mantissas and exponents apart, so that ``c / ||x_i||`` exists whatever the exponents; it is
    the float64 quotient itself where no exponent is needed.
    """
    valid = torch.isfinite(m) & (m > 0)
    m = torch.where(valid, m, torch.ones_like(m))
    ex = torch.frexp(m.detach()).exponent.to(torch.int64)
    cm = torch.as_tensor(c[0], dtype=torch.float64, device=x.device)
    cex = torch.frexp(cm.detach()).exponent.to(torch.int64) if bool(torch.isfinite(cm)) else 0
    ratio = K.ldexp(K.ldexp(cm, -cex) / K.ldexp(m, -ex), cex + c[1] - ex - e)
    scale = torch.where(valid & (ratio < 1.0), ratio, torch.ones_like(ratio))
    return x * scale.to(x.dtype)[:, None]


@implements("nnm", "torch")
def _nnm(pre: NNM, x: Any) -> tuple[Tensor, None]:
    p = Prepared(x, "nnm")
    pre.check_n(p.n)
    nb = _plans.nnm_neighbours(K.distances(p.x), pre.f)
    return p.finish_rows(_group_means(p.x, nb.tolist())), None


@implements("bucketing", "torch")
def _bucketing(pre: Bucketing, x: Any) -> tuple[Tensor, None]:
    p = Prepared(x, "bucketing")
    return p.finish_rows(_group_means(p.x, pre.buckets(p.n))), None


@implements("clipping", "torch")
def _clipping(pre: Clipping, x: Any) -> tuple[Tensor, None]:
    p = Prepared(x, "clipping")
    m, e = _norms(p.x)
    return p.finish_rows(_clip(p.x, m, e, (pre.c, 0))), None


@implements("arc", "torch")
def _arc(pre: ARC, x: Any) -> tuple[Tensor, None]:
    p = Prepared(x, "arc")
    pre.check_n(p.n)
    k = _plans.arc_count(p.n, pre.f)
    if k == 0:
        return p.finish_rows(p.x.clone()), None
    m, e = _norms(p.x)
    t = _plans.arc_threshold(m.detach().cpu().numpy(), e.cpu().numpy(), pre.f)
    assert t is not None
    tau = torch.where(torch.isnan(m[t]), torch.full_like(m[t], float("inf")), m[t])
    return p.finish_rows(_clip(p.x, m, e, (tau, e[t]))), None


@implements("perturb", "torch")
def _perturb(pre: Perturb, x: Any) -> tuple[Tensor, None]:
    p = Prepared(x, "perturb")
    noise = torch.from_numpy(pre.draw(p.n, p.x.shape[1])).to(device=p.x.device, dtype=p.x.dtype)
    return p.finish_rows(p.x + noise), None


def nnm(x: Any, *, f: int) -> Tensor:
    """Nearest-neighbour mixing; see :class:`aggkit.NNM`. Gradient ``1/(n - f)`` per neighbour."""
    return NNM(f=f)(x)  # type: ignore[no-any-return]


def bucketing(x: Any, *, s: int = Bucketing.s, seed: int | None = Bucketing.seed) -> Tensor:
    """Bucketing; see :class:`aggkit.Bucketing` (a fresh generator from ``seed`` per call)."""
    return Bucketing(s=s, seed=seed)(x)  # type: ignore[no-any-return]


def clipping(x: Any, *, c: float = Clipping.c) -> Tensor:
    """Static clipping; see :class:`aggkit.Clipping` (torch's autograd, any device)."""
    return Clipping(c=c)(x)  # type: ignore[no-any-return]


def arc(x: Any, *, f: int) -> Tensor:
    """ARC; see :class:`aggkit.ARC`. The gradient includes the path through the threshold."""
    return ARC(f=f)(x)  # type: ignore[no-any-return]


def perturb(x: Any, *, b: float, noise: str = Perturb.noise, seed: int | None = Perturb.seed) -> Tensor:
    """Noise ``b · xi`` added to each input; see :class:`aggkit.Perturb` (noise drawn by numpy)."""
    return Perturb(b=b, noise=noise, seed=seed)(x)  # type: ignore[arg-type, no-any-return]


def pipeline(x: Any, *, stages: Sequence[Any]) -> Tensor:
    """Apply :class:`aggkit.Pipeline` ``stages`` to tensors (each stage's torch version)."""
    return Pipeline(stages)(x)  # type: ignore[no-any-return]

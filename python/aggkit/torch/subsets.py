"""MDA, SMEA, CAF and MoNNA on tensors.

The shared plans decide on host distances; the chosen inputs' mean runs as ``aggkit::mean``
on the device, so the gradient reaches the chosen inputs (the choice held constant).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from aggkit import _core, _plans
from aggkit._dispatch import implements
from aggkit._params import DropOrRaise
from aggkit.errors import nonfinite_error
from aggkit.rules.subsets import CAF, MDA, SMEA, MoNNA
from aggkit.torch import _kernels as K
from aggkit.torch._input import Prepared
from aggkit.torch._paths import rust
from aggkit.torch.mean import subset_mean


def _finite(rule: MDA | SMEA | CAF | MoNNA, x: Any) -> tuple[Prepared, list[int], int]:
    p = Prepared(x, rule.name)
    rule.check_input(p.n, p.d)
    good, f_left = _plans.finite_part(K.nonfinite_rows(p.x), p.n, rule.f, rule.nonfinite, rule.name)
    return p, good, f_left


@implements("mda", "torch")
def _mda(rule: MDA, x: Any) -> tuple[Tensor, None]:
    p, good, f_left = _finite(rule, x)
    kept = _plans.mda_indices(K.distances(p.x[good]), f_left, rule.max_subsets)
    return p.finish(subset_mean(p.x, [good[i] for i in kept])), None


@implements("smea", "torch")
def _smea(rule: SMEA, x: Any) -> tuple[Tensor, None]:
    p, good, f_left = _finite(rule, x)
    kept = _plans.smea_indices(K.distances(p.x[good]), f_left, rule.max_subsets)
    return p.finish(subset_mean(p.x, [good[i] for i in kept])), None


@implements("caf", "torch")
def _caf(rule: CAF, x: Any) -> tuple[Tensor, None]:
    p, good, _ = _finite(rule, x)
    c = _plans.caf_weights(K.distances(p.x[good]), p.n, rule.f)
    keep = [k for k in range(len(good)) if c[k] > 0]
    return p.finish(subset_mean(p.x, [good[k] for k in keep], [float(c[k]) for k in keep])), None


@implements("monna", "torch")
def _monna(rule: MoNNA, x: Any) -> tuple[Tensor, None]:
    p, _, _ = _finite(rule, x)
    xd = p.x.detach()
    if not bool(torch.isfinite(xd[rule.idx]).all()):
        raise nonfinite_error("monna", [rule.idx], "the trusted input must be finite")
    if rust(xd):
        dist = _core.dists_to(xd.numpy(), xd[rule.idx].double().contiguous().numpy())
    else:
        dist = (xd.double() - xd[rule.idx].double()[None]).square().sum(dim=1).sqrt().cpu().numpy()
    return p.finish(subset_mean(p.x, _plans.monna_indices(dist, rule.f))), None


def mda(
    x: Any, *, f: int, max_subsets: int = MDA.max_subsets, nonfinite: DropOrRaise = MDA.nonfinite
) -> Tensor:
    """MDA; see :func:`aggkit.mda`. The gradient is ``1/(n - f)`` to each kept input."""
    return _mda(MDA(f=f, max_subsets=max_subsets, nonfinite=nonfinite), x)[0]


def smea(
    x: Any, *, f: int, max_subsets: int = SMEA.max_subsets, nonfinite: DropOrRaise = SMEA.nonfinite
) -> Tensor:
    """SMEA; see :func:`aggkit.smea`. The gradient is ``1/(n - f)`` to each kept input."""
    return _smea(SMEA(f=f, max_subsets=max_subsets, nonfinite=nonfinite), x)[0]


def caf(x: Any, *, f: int, nonfinite: DropOrRaise = CAF.nonfinite) -> Tensor:
    """CAF; see :func:`aggkit.caf`. The gradient is ``c_i / Σ c`` (final weights held constant)."""
    return _caf(CAF(f=f, nonfinite=nonfinite), x)[0]


def monna(x: Any, *, f: int, idx: int = MoNNA.idx, nonfinite: DropOrRaise = MoNNA.nonfinite) -> Tensor:
    """MoNNA; see :func:`aggkit.monna`. The gradient is ``1/(n - f)`` to each kept input."""
    return _monna(MoNNA(f=f, idx=idx, nonfinite=nonfinite), x)[0]

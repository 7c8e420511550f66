"""Bulyan on tensors: the shared plan on host distances, stage 2 as aggkit ops on the device."""

from __future__ import annotations

from typing import Any, Literal, overload

import torch
from torch import Tensor

from aggkit import _plans
from aggkit._dispatch import implements
from aggkit._params import DropOrRaise
from aggkit.registry import Selection
from aggkit.rules.bulyan import Bulyan, Variant
from aggkit.torch import _kernels as K
from aggkit.torch._input import Prepared, needs_grad
from aggkit.torch.meamed import meamed_op
from aggkit.torch.trimmed_mean import trimmed_mean_op


@implements("bulyan", "torch")
def _bulyan(rule: Bulyan, x: Any) -> tuple[Tensor, Selection]:
    p = Prepared(x, "bulyan")
    rule.check_input(p.n, p.d)
    _plans.finite_part(K.nonfinite_rows(p.x), p.n, rule.f, rule.nonfinite, "bulyan")
    sel, scores, keep = _plans.bulyan_plan(K.distances(p.x), rule.f, rule.variant, rule.clamp)
    dev = p.x.device
    sub = p.x[torch.tensor(sel, dtype=torch.long, device=dev)]
    if rule.variant == "paper":
        out, _, _ = meamed_op(sub, keep, "robust", needs_grad(sub))
    else:
        out, _, _ = trimmed_mean_op(sub, rule.f, "robust", needs_grad(sub))
    idx = torch.tensor(sel, dtype=torch.int64, device=dev)
    return p.finish(out), Selection(idx, torch.from_numpy(scores).to(dev))


@overload
def bulyan(
    x: Any,
    *,
    f: int,
    variant: Variant = ...,
    clamp: bool = ...,
    nonfinite: DropOrRaise = ...,
    return_selection: Literal[False] = ...,
) -> Tensor: ...
@overload
def bulyan(
    x: Any,
    *,
    f: int,
    variant: Variant = ...,
    clamp: bool = ...,
    nonfinite: DropOrRaise = ...,
    return_selection: Literal[True],
) -> tuple[Tensor, Selection]: ...
def bulyan(
    x: Any,
    *,
    f: int,
    variant: Variant = Bulyan.variant,
    clamp: bool = Bulyan.clamp,
    nonfinite: DropOrRaise = Bulyan.nonfinite,
    return_selection: bool = False,
) -> Tensor | tuple[Tensor, Selection]:
    """Bulyan; see :func:`aggkit.bulyan`. The gradient reaches the selected inputs' kept values."""
    y, sel = _bulyan(Bulyan(f=f, variant=variant, clamp=clamp, nonfinite=nonfinite), x)
    return (y, sel) if return_selection else y

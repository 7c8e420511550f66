"""FLTrust on tensors, in torch ops (float64), with torch's exact autograd."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from aggkit._dispatch import implements
from aggkit._params import NonFinite
from aggkit.errors import InvalidParameterError
from aggkit.rules.fltrust import FLTrust, check_reference_values, parse_reference
from aggkit.torch import _kernels as K
from aggkit.torch._input import Prepared


def reference_tensor(reference: Any, shape: tuple[int, ...], device: torch.device, rule: str) -> Tensor:
    """The reference update as a flat float64 tensor on ``device`` (detached), checked."""
    if isinstance(reference, Tensor):
        if reference.is_complex() or reference.dtype == torch.bool:
            raise InvalidParameterError(
                f"{rule}: the reference must hold real numbers, got {reference.dtype}"
            )
        ref = reference.detach().to(device=device, dtype=torch.float64)
        check_reference_values(tuple(ref.shape), bool(torch.isfinite(ref).all()), shape, rule)
        return ref.reshape(-1)
    return torch.from_numpy(parse_reference(reference, shape, rule)).to(device)


@implements("fltrust", "torch")
def _fltrust(rule: FLTrust, x: Any, *, reference: Any = None) -> tuple[Tensor, None]:
    p = Prepared(x, "fltrust")
    xs = p.x
    K.check_policy(xs, "fltrust", rule.nonfinite)
    if reference is None:
        raise InvalidParameterError("fltrust needs reference=...: the server's own update")
    ref = reference_tensor(reference, tuple(p.shape), xs.device, "fltrust")
    top = ref.abs().amax() if ref.numel() else torch.zeros((), dtype=torch.float64, device=ref.device)
    e = torch.frexp(top).exponent.to(torch.int64)
    ref = K.ldexp(ref, -e)  # scaled by a power of two: dot products cannot overflow
    ref_s_norm = torch.linalg.vector_norm(ref)
    with np.errstate(over="ignore"):
        ref_norm = float(np.ldexp(float(ref_s_norm), int(e)))
    if not math.isfinite(ref_norm):
        raise InvalidParameterError("fltrust: the reference update's norm overflows float64")
    good = torch.isfinite(xs).all(dim=1)
    if rule.nonfinite == "propagate" and not bool(good.all()):
        return p.finish(torch.full((p.d,), math.nan, dtype=xs.dtype, device=xs.device)), None
    xd = torch.where(good[:, None], xs.double(), 0.0)
    # Each row scaled by the power of two of its largest value: norms and dot products of rows
    # up to float64's largest values stay finite, and the scaling is exact.
    e = torch.frexp(xd.detach().abs().amax(dim=1)).exponent.to(torch.int64)
    xs2 = K.ldexp(xd, -e[:, None])
    norm = torch.linalg.vector_norm(xs2, dim=1)
    safe = torch.where(norm > 0, norm, 1.0)
    cos = (xs2 @ ref) / (safe * torch.clamp(ref_s_norm, min=math.ulp(0.0)))
    trust = torch.where(good & (norm > 0), cos.clamp(-1.0, 1.0).clamp(min=0.0), 0.0)
    total = trust.sum()
    if ref_norm == 0.0 or float(total.detach()) == 0.0:
        return p.finish(torch.zeros(p.d, dtype=torch.float64, device=xs.device).to(xs.dtype)), None
    coef = trust * ref_norm / (safe * total)
    out = (coef[:, None] * xs2).sum(dim=0)
    return p.finish(out.to(xs.dtype)), None


def fltrust(x: Any, *, reference: Any, nonfinite: NonFinite = FLTrust.nonfinite) -> Tensor:
    """FLTrust in torch ops (float64), with torch's exact autograd through the trust scores.

    The reference receives no gradient (it is detached).
    """
    return _fltrust(FLTrust(nonfinite=nonfinite), x, reference=reference)[0]

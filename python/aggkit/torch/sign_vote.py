"""The sign vote on tensors, in torch ops (zero gradient: the sign is flat)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from aggkit._dispatch import implements
from aggkit._params import NonFinite
from aggkit.rules.sign_vote import SignVote
from aggkit.torch import _kernels as K
from aggkit.torch._input import Prepared


@implements("sign_vote", "torch")
def _sign_vote(rule: SignVote, x: Any) -> tuple[Tensor, None]:
    p = Prepared(x, "sign_vote")
    K.check_policy(p.x, "sign_vote", rule.nonfinite)
    votes = torch.sign(torch.nan_to_num(p.x, nan=0.0)).sum(dim=0)
    out = torch.sign(votes).to(p.x.dtype)
    if rule.nonfinite == "propagate":
        out = torch.where(torch.isnan(p.x).any(0), torch.full_like(out, float("nan")), out)
    return p.finish(out), None


def sign_vote(x: Any, *, nonfinite: NonFinite = SignVote.nonfinite) -> Tensor:
    """Majority vote of signs; see :func:`aggkit.sign_vote`. Zero gradient (sign is flat)."""
    return _sign_vote(SignVote(nonfinite=nonfinite), x)[0]

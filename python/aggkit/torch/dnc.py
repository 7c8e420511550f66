"""DnC on tensors: distances of each subsample (Rust on CPU), the mean of the kept rows in torch."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from aggkit import _plans
from aggkit._dispatch import implements
from aggkit._params import DropOrRaise
from aggkit.errors import too_few_inputs_error
from aggkit.registry import Selection
from aggkit.rules.dnc import DnC
from aggkit.torch import _kernels as K
from aggkit.torch._input import Prepared


@implements("dnc", "torch")
def _dnc(rule: DnC, x: Any) -> tuple[Tensor, Selection]:
    p = Prepared(x, "dnc")
    rule.check_input(p.n, p.d)
    xs = p.x
    keep, f = _plans.finite_part(K.nonfinite_rows(xs), p.n, rule.f, rule.nonfinite, "dnc")
    if len(keep) <= rule.removed(f):
        raise too_few_inputs_error(
            "dnc", f"more finite inputs than floor(c f) = {rule.removed(f)}", p.n, rule.f
        )
    rows = xs[keep]
    whole: list[Any] = []

    def distances() -> Iterator[Any]:
        for cols in rule.iter_subsets(p.d):
            if cols is None:  # every coordinate: the same matrix each iteration
                if not whole:
                    whole.append(K.distances(rows))
                yield whole[0]
            else:
                yield K.distances(rows[:, torch.from_numpy(cols).to(xs.device)])

    kept, votes = _plans.dnc_keep(distances(), rule.removed(f))
    chosen = [keep[k] for k in kept]
    # each row divided first: a sum of values near float64's largest cannot overflow
    out = (xs[chosen].double() / len(chosen)).sum(dim=0).to(xs.dtype)
    scores = torch.full((p.n,), float("inf"), dtype=torch.float64, device=xs.device)
    scores[keep] = torch.from_numpy(rule.niters - votes).to(device=xs.device, dtype=torch.float64)
    idx = torch.tensor(chosen, dtype=torch.int64, device=xs.device)
    return p.finish(out), Selection(idx, scores)


def dnc(
    x: Any,
    *,
    f: int,
    b: int = DnC.b,
    niters: int = DnC.niters,
    c: float = DnC.c,
    seed: int | None = None,
    nonfinite: DropOrRaise = DnC.nonfinite,
    return_selection: bool = False,
) -> Any:
    """DnC on tensors; the gradient flows to the kept inputs (``1/m`` each)."""
    out, sel = _dnc(DnC(f=f, b=b, niters=niters, c=c, seed=seed, nonfinite=nonfinite), x)
    return (out, sel) if return_selection else out

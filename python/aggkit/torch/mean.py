"""The mean on tensors: ``torch.ops.aggkit.mean`` with its gradient ``w_i / Σ w``."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from aggkit import _core, _params
from aggkit._dispatch import implements
from aggkit._params import NonFinite
from aggkit.errors import InvalidParameterError, nonfinite_error
from aggkit.rules.mean import Mean
from aggkit.torch import _kernels as K
from aggkit.torch._input import Prepared, host, in_place_rows
from aggkit.torch._paths import rust, use_triton, view


def plan(n: int, weights: list[float] | None, dropped: list[int]) -> tuple[list[tuple[int, float]], float]:
    """The rows averaged with their weights, and the total they are divided by (the core's).

    The given weights of the inputs averaged (all but ``dropped``), their largest scaled into
    ``[1/2, 1)``, summed with Neumaier's compensation; refuses totals of 0 and a call that
    drops every input.
    """
    w = [1.0] * n if weights is None else weights
    if len(dropped) == n:
        raise nonfinite_error(
            "mean", dropped, "every input holds NaN or infinite values, nothing is left to average"
        )
    gone = set(dropped)
    keep = [i for i in range(n) if i not in gone]
    norm = K.normalise_weights if weights is not None else (lambda v: v)
    items = list(zip(keep, norm([w[i] for i in keep]), strict=True))
    total = K.weight_total([v for _, v in items])
    for total_, ndropped in ((K.weight_total(norm(w)), 0), (total, len(dropped))):
        if total_ <= 0.0:
            raise InvalidParameterError(
                f"mean: the weights of the inputs averaged sum to 0 ({ndropped} non-finite inputs dropped)"
            )
    return items, total


def coefficients(n: int, items: list[tuple[int, float]], total: float, device: torch.device) -> Tensor:
    """Each input's coefficient ``w_i / Σ w`` (0 for the inputs left out), float64."""
    coef = torch.zeros(n, dtype=torch.float64, device=device)
    values = torch.tensor([v / total for _, v in items], dtype=torch.float64, device=device)
    coef[[i for i, _ in items]] = values
    return coef


def native(x: Tensor, weights: list[float] | None, nonfinite: str) -> tuple[Tensor, Tensor]:
    """The (weighted) mean in torch ops; also each input's coefficient (0 for dropped inputs)."""
    n = x.shape[0]
    K.check_policy(x, "mean", nonfinite)
    dropped: list[int] = K.nonfinite_rows(x) if nonfinite == "robust" else []
    items, total = plan(n, weights, dropped)
    return K.weighted_mean(x, items, total), coefficients(n, items, total, x.device)


@torch.library.custom_op("aggkit::mean", mutates_args=())
def mean_op(x: Tensor, weights: list[float], nonfinite: str) -> tuple[Tensor, Tensor]:
    """Values ``(d,)`` and each input's coefficient ``w_i / Σ w`` ``(n,)`` float64.

    ``weights``: one per input, or empty for the unweighted mean.
    """
    w = np.asarray(weights, dtype=np.float64) if weights else None
    if use_triton(x):
        from aggkit.torch import _triton

        if w is None:
            values, coef = _triton.mean(x, nonfinite)
        else:
            _triton.check_policy(x, "mean", nonfinite)
            dropped = _triton.nonfinite_rows(x) if nonfinite == "robust" else []
            items, total = plan(x.shape[0], list(weights), dropped)
            values = _triton.weighted_mean(x, items, total)
            coef = coefficients(x.shape[0], items, total, x.device)
        return values.to(x.dtype), coef  # half precision: computed in float32, rounded once
    if rust(x):
        out, dropped = _core.mean(view(x), w, nonfinite)
        wv = np.ones(x.shape[0]) if w is None else w.copy()
        wv[dropped] = 0.0
        return torch.from_numpy(out), torch.from_numpy(wv / K.weight_total(list(wv)))
    return native(x, None if w is None else [float(v) for v in w], nonfinite)


@mean_op.register_fake
def _(x: Tensor, weights: list[float], nonfinite: str) -> tuple[Tensor, Tensor]:
    return x.new_empty(x.shape[1]), x.new_empty(x.shape[0], dtype=torch.float64)


def _setup(ctx: Any, inputs: Any, output: Any) -> None:
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(output[1])


def _backward(ctx: Any, g: Tensor, _coef: Tensor) -> tuple[Tensor, None, None]:
    (coef,) = ctx.saved_tensors
    gw = g.float() if g.dtype in K.HALF else g  # half precision: as the float32 path, rounded once
    return (coef.to(gw.dtype)[:, None] * gw[None]).to(g.dtype), None, None


mean_op.register_autograd(_backward, setup_context=_setup)


def subset_mean(x: Tensor, idx: list[int], weights: list[float] | None = None) -> Tensor:
    """The (weighted) mean of rows ``idx`` of ``x``, differentiable (the subset rules' output)."""
    sub = x[torch.tensor(idx, dtype=torch.long, device=x.device)]
    out: Tensor = mean_op(sub, weights or [], "propagate")[0]
    return out


@implements("mean", "torch")
def _mean(rule: Mean, x: Any, *, weights: Any = None, dim: int = 0) -> tuple[Tensor, None]:
    if weights is None and dim == 0 and (rows := in_place_rows(x)) is not None:
        out, _ = _core.mean(rows.core, None, rule.nonfinite)
        return rows.finish(out), None
    p = Prepared(x, "mean", dim, in_place=weights is None)
    w = [] if weights is None else _params.weights(host(weights), p.n, "mean").tolist()
    out, _ = mean_op(p.x, w, rule.nonfinite)
    return p.finish(out), None


def mean(x: Any, *, weights: Any = None, nonfinite: NonFinite = Mean.nonfinite, dim: int = 0) -> Tensor:
    """The (weighted) mean; see :func:`aggkit.mean`.

    The gradient of input ``i`` is ``w_i / Σ w`` (0 for inputs dropped as non-finite);
    ``weights`` (a sequence, array or tensor) receive no gradient.
    """
    return _mean(Mean(nonfinite=nonfinite), x, weights=weights, dim=dim)[0]

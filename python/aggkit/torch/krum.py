"""Krum and Multi-Krum on tensors: ``torch.ops.aggkit.krum`` and ``multi_krum``.

The gradient goes to the selected inputs (``1/m`` each).
"""

from __future__ import annotations

from typing import Any, Literal, overload

import numpy as np
import torch
from torch import Tensor

from aggkit import _core, _params
from aggkit._dispatch import implements
from aggkit._params import NonFinite
from aggkit.errors import InvalidParameterError, NonFiniteError, nonfinite_error
from aggkit.registry import Selection
from aggkit.rules.krum import Krum, MultiKrum
from aggkit.torch import _kernels as K
from aggkit.torch._input import Prepared, host, in_place_rows
from aggkit.torch._paths import rust, view
from aggkit.torch.mean import mean_op


def krum_select(
    dist: torch.Tensor, f: int, m: int, nonfinite: str, rule: str
) -> tuple[list[int], torch.Tensor]:
    """Scores from squared distances, then the ``m`` best rows (best first), as the core does."""
    n = dist.shape[0]
    k = n - f - 2
    off = ~torch.eye(n, dtype=torch.bool, device=dist.device)
    others = dist[off].reshape(n, n - 1)
    if nonfinite != "propagate":
        others = torch.where(torch.isfinite(others), others, torch.full_like(others, float("inf")))
    nearest = torch.sort(others, dim=1).values[:, :k]  # NaN sorts last, like the core's keys
    scores = K.compensated_sum(list(nearest.T)).value()  # k = n - f - 2 >= 1
    order = torch.sort(scores, stable=True).indices
    if nonfinite == "propagate":  # NaN scores first (np.argmin picks NaN)
        order = order[torch.sort((~torch.isnan(scores[order])).to(torch.uint8), stable=True).indices]
    idx = order[:m].tolist()
    if nonfinite != "propagate" and not bool(torch.isfinite(scores[idx]).all()):
        finite = int(torch.isfinite(scores).sum())
        detail = (
            "every score is infinite (more than f inputs are non-finite or their distances overflow)"
            if finite == 0
            else "fewer than m inputs have a finite score"
        )
        raise nonfinite_error(rule, torch.nonzero(~torch.isfinite(scores)).flatten().tolist(), detail)
    return idx, scores


def native(
    x: torch.Tensor, f: int, m: int, nonfinite: str, rule: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Multi-Krum (Krum for ``m = 1``): mean of the ``m`` best-scored rows, indices, scores."""
    K.check_policy(x, rule, nonfinite)
    try:
        idx, scores = krum_select(K.pairwise_sq_distances(x), f, m, nonfinite, rule)
    except NonFiniteError as e:
        rows = K.nonfinite_rows(x)
        if rows:  # name the inputs themselves, like the core
            raise nonfinite_error(rule, rows, str(e).split(";")[0].split(": ", 1)[1]) from None
        raise
    out = K.weighted_mean(x, [(i, 1.0) for i in idx], float(m))
    return out, torch.tensor(idx, dtype=torch.int64, device=x.device), scores


def _impl(x: Tensor, f: int, m: int, nonfinite: str, name: str) -> tuple[Tensor, Tensor, Tensor]:
    display = "Krum" if name == "krum" else "Multi-Krum"
    if rust(x):
        if name == "krum":
            out, idx, scores = _core.krum(view(x), f, nonfinite)
        else:
            out, idx, scores = _core.multi_krum(view(x), f, m, nonfinite)
        return torch.from_numpy(out), torch.tensor(idx, dtype=torch.int64), torch.from_numpy(scores)
    return native(x, f, m, nonfinite, display)


@torch.library.custom_op("aggkit::krum", mutates_args=())
def krum_op(x: Tensor, f: int, nonfinite: str) -> tuple[Tensor, Tensor, Tensor]:
    """The selected row ``(d,)``, its index ``(1,)`` int64 and every score ``(n,)`` float64."""
    return _impl(x, f, 1, nonfinite, "krum")


@krum_op.register_fake
def _(x: Tensor, f: int, nonfinite: str) -> tuple[Tensor, Tensor, Tensor]:
    return (
        x.new_empty(x.shape[1]),
        x.new_empty(1, dtype=torch.int64),
        x.new_empty(x.shape[0], dtype=torch.float64),
    )


@torch.library.custom_op("aggkit::multi_krum", mutates_args=())
def multi_krum_op(x: Tensor, f: int, m: int, nonfinite: str) -> tuple[Tensor, Tensor, Tensor]:
    """Mean of the ``m`` best rows ``(d,)``, their indices ``(m,)``, every score ``(n,)``."""
    return _impl(x, f, m, nonfinite, "multi_krum")


@multi_krum_op.register_fake
def _(x: Tensor, f: int, m: int, nonfinite: str) -> tuple[Tensor, Tensor, Tensor]:
    return (
        x.new_empty(x.shape[1]),
        x.new_empty(m, dtype=torch.int64),
        x.new_empty(x.shape[0], dtype=torch.float64),
    )


def _selection_setup(ctx: Any, inputs: Any, output: Any) -> None:
    ctx.shape = inputs[0].shape
    ctx.nargs = len(inputs)
    _, idx, scores = output
    ctx.mark_non_differentiable(scores)
    ctx.save_for_backward(idx)


def _selection_backward(ctx: Any, g: Tensor, _idx: Tensor, _scores: Tensor) -> tuple[Tensor | None, ...]:
    (idx,) = ctx.saved_tensors
    m = idx.shape[0]
    grad: Tensor = g.new_zeros(ctx.shape).index_add(0, idx, (g / m)[None].expand(m, -1))
    rest: int = ctx.nargs - 1
    return (grad,) + (None,) * rest


krum_op.register_autograd(_selection_backward, setup_context=_selection_setup)
multi_krum_op.register_autograd(_selection_backward, setup_context=_selection_setup)


def _host_selection(idx: Any, scores: np.ndarray) -> Selection:
    return Selection(torch.as_tensor(np.asarray(idx, dtype=np.int64)), torch.from_numpy(scores))


@implements("krum", "torch")
def _krum(rule: Krum, x: Any) -> tuple[Tensor, Selection]:
    if (rows := in_place_rows(x)) is not None:
        rule.check_n(rows.n)
        out, idx, scores = _core.krum(rows.core, rule.f, rule.nonfinite)
        return rows.finish(out), _host_selection(idx, scores)
    p = Prepared(x, "krum")
    rule.check_n(p.n)
    out, idx, scores = krum_op(p.x, rule.f, rule.nonfinite)
    return p.finish(out), Selection(idx, scores)


@implements("multi_krum", "torch")
def _multi_krum(rule: MultiKrum, x: Any, *, weights: Any = None) -> tuple[Tensor, Selection]:
    if (rows := in_place_rows(x)) is not None:
        rule.check_n(rows.n)
        m = rule.count(rows.n)
        out, idx, scores = _core.multi_krum(rows.core, rule.f, m, rule.nonfinite)
        if weights is not None:
            w = _weights_of_selection(weights, rows.n, idx)
            out, _ = _core.mean(rows.take(idx), np.asarray(w), "propagate")
        return rows.finish(out), _host_selection(idx, scores)
    p = Prepared(x, "multi_krum")
    rule.check_n(p.n)
    out, idx, scores = multi_krum_op(p.x, rule.f, rule.count(p.n), rule.nonfinite)
    if weights is not None:
        # As without weights, the selected rows' mean, best score first: now weighted.
        w = _weights_of_selection(weights, p.n, idx.tolist())
        out, _ = mean_op(p.x[idx], w, "propagate")
    return p.finish(out), Selection(idx, scores)


def _weights_of_selection(weights: Any, n: int, idx: list[int]) -> list[float]:
    w = _params.weights(host(weights), n, "multi_krum")
    if not (w[idx] > 0).any():
        raise InvalidParameterError(f"multi_krum: the selected inputs {list(idx)} all have weight 0")
    return [float(w[i]) for i in idx]


@overload
def krum(x: Any, *, f: int, nonfinite: NonFinite = ..., return_selection: Literal[False] = ...) -> Tensor: ...
@overload
def krum(
    x: Any, *, f: int, nonfinite: NonFinite = ..., return_selection: Literal[True]
) -> tuple[Tensor, Selection]: ...
def krum(
    x: Any, *, f: int, nonfinite: NonFinite = Krum.nonfinite, return_selection: bool = False
) -> Tensor | tuple[Tensor, Selection]:
    """Krum; see :func:`aggkit.krum`. The gradient goes to the selected input.

    With ``return_selection=True`` the :class:`aggkit.Selection` holds tensors (int64 indices,
    float64 scores) on the input's device.
    """
    y, sel = _krum(Krum(f=f, nonfinite=nonfinite), x)
    return (y, sel) if return_selection else y


@overload
def multi_krum(
    x: Any,
    *,
    f: int,
    m: int | None = ...,
    weights: Any = ...,
    nonfinite: NonFinite = ...,
    return_selection: Literal[False] = ...,
) -> Tensor: ...
@overload
def multi_krum(
    x: Any,
    *,
    f: int,
    m: int | None = ...,
    weights: Any = ...,
    nonfinite: NonFinite = ...,
    return_selection: Literal[True],
) -> tuple[Tensor, Selection]: ...
def multi_krum(
    x: Any,
    *,
    f: int,
    m: int | None = MultiKrum.m,
    weights: Any = None,
    nonfinite: NonFinite = MultiKrum.nonfinite,
    return_selection: bool = False,
) -> Tensor | tuple[Tensor, Selection]:
    """Multi-Krum; see :func:`aggkit.multi_krum`.

    The gradient is ``1/m`` to each selected input, or ``w_i / Σ_selected w`` with ``weights``.
    """
    y, sel = _multi_krum(MultiKrum(f=f, m=m, nonfinite=nonfinite), x, weights=weights)
    return (y, sel) if return_selection else y

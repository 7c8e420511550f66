"""Aggregate whole models: one ``state_dict`` per client in, one ``state_dict`` out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from aggkit import _core, _plans
from aggkit.errors import InvalidParameterError, ShapeError, empty_input_error
from aggkit.registry import Rule, Selection
from aggkit.registry import rule as make_rule
from aggkit.rules.krum import Krum, MultiKrum
from aggkit.rules.mean import Mean
from aggkit.torch import _kernels as K

NONFLOAT = ("median", "first", "skip", "raise")
_COORDINATEWISE = ("mean", "median", "trimmed_mean")
_DISTANCE = ("krum", "multi_krum")


def aggregate_state_dicts(
    state_dicts: Sequence[Mapping[str, Tensor]],
    rule: str | Rule,
    *,
    weights: Any = None,
    nonfloat: str = "median",
    return_selection: bool = False,
    **params: Any,
) -> dict[str, Tensor] | tuple[dict[str, Tensor], Selection]:
    r"""Aggregate the clients' ``state_dict``\ s (or update dicts) with one rule.

    Parameters
    ----------
    state_dicts : sequence of n mappings from name to tensor
        One per client, with the same keys, and per key the same shape, dtype and device.
    rule : str or aggkit.Rule
        A rule object (``aggkit.TrimmedMean(f=2)``) or a registered name (``"trimmed_mean"``,
        with its parameters in ``**params``).
    weights : sequence of n non-negative floats, optional
        Per-client weights (e.g. example counts), for rules that take weights (``mean``).
    nonfloat : {"median", "first", "skip", "raise"}, default "median"
        What to do with entries that are not floating point, such as BatchNorm's
        ``num_batches_tracked`` (int64) or boolean masks: the element-wise lower median over
        the clients (robust, and stays an integer), client 0's value, leave the entry out of the
        result, or raise.
    return_selection : bool, default False
        For selection rules (``krum``, ``multi_krum``): also return the
        :class:`aggkit.Selection` (which clients were kept, every client's score).
    **params
        The rule's parameters when ``rule`` is a name.

    Returns
    -------
    dict of str to torch.Tensor, or (dict, Selection)
        The aggregated entries, in the key order of ``state_dicts[0]``; each has its inputs'
        shape, dtype and device.

    Notes
    -----
    Coordinate-wise rules (mean, median, trimmed mean) run tensor by tensor: the model is never
    concatenated, and CPU tensors are read in place, so the extra memory is one output tensor at
    a time. Distance rules (Krum, Multi-Krum) score the clients on the whole model: their
    squared distances are summed over the floating-point tensors (in float64, tensor by tensor,
    without concatenating), the selection is made once, and every tensor is then the mean of
    the selected clients' tensors. float16 and bfloat16 tensors are computed in float32 and
    returned in their own dtype. Nothing the caller owns is modified.

    Examples
    --------
    >>> import torch, aggkit.torch
    >>> sds = [{"w": torch.tensor([1.0, 2.0]), "steps": torch.tensor(3)},
    ...        {"w": torch.tensor([2.0, 0.0]), "steps": torch.tensor(4)},
    ...        {"w": torch.tensor([100.0, 1.0]), "steps": torch.tensor(1000)}]
    >>> aggkit.torch.aggregate_state_dicts(sds, "median")
    {'w': tensor([2., 1.]), 'steps': tensor(4)}
    """
    r = make_rule(rule, **params)
    if nonfloat not in NONFLOAT:
        raise InvalidParameterError(
            f"aggregate_state_dicts: nonfloat must be one of {', '.join(map(repr, NONFLOAT))}, "
            f"got {nonfloat!r}"
        )
    keys = _check(state_dicts)
    floats = [k for k in keys if state_dicts[0][k].is_floating_point()]
    if weights is not None and r.name != "mean":
        raise InvalidParameterError(f"aggregate_state_dicts: rule {r.name!r} does not take weights")
    if return_selection and r.name not in _DISTANCE:
        raise InvalidParameterError(
            f"aggregate_state_dicts: return_selection needs a selection rule, got {r.name!r}"
        )
    out: dict[str, Tensor] = {}
    selection = None
    if r.name in _COORDINATEWISE:
        for k in floats:
            out[k], _ = r.aggregate([sd[k] for sd in state_dicts], weights=weights)
    elif isinstance(r, Krum | MultiKrum):
        selection = _select(state_dicts, floats, r)
        chosen = selection.indices.tolist()
        average = Mean(nonfinite="propagate")
        for k in floats:
            out[k] = average([state_dicts[i][k] for i in chosen])
    else:  # a rule without a per-tensor form: give it each client's whole model as one vector
        flat = torch.stack([torch.cat([sd[k].detach().reshape(-1) for k in floats]) for sd in state_dicts])
        y = r(flat)
        y = y if isinstance(y, Tensor) else torch.as_tensor(y)
        start = 0
        for k in floats:
            t = state_dicts[0][k]
            out[k] = y[start : start + t.numel()].reshape(t.shape).to(t.dtype)
            start += t.numel()
    for k in keys:
        if k in floats:
            continue
        if nonfloat == "raise":
            raise TypeError(
                f"aggregate_state_dicts: entry {k!r} has dtype {state_dicts[0][k].dtype}, "
                "not floating point (nonfloat='raise')"
            )
        if nonfloat == "first":
            out[k] = state_dicts[0][k].clone()
        elif nonfloat == "median":
            out[k] = _int_median([sd[k] for sd in state_dicts])
    result = {k: out[k] for k in keys if k in out}
    if return_selection:
        return result, selection  # type: ignore[return-value]
    return result


def _check(state_dicts: Sequence[Mapping[str, Tensor]]) -> list[str]:
    if isinstance(state_dicts, Mapping | str | bytes) or not isinstance(state_dicts, Sequence):
        raise TypeError(
            "aggregate_state_dicts: state_dicts must be a sequence of mappings (one per client), "
            f"got {type(state_dicts).__name__}"
        )
    if len(state_dicts) == 0:
        raise empty_input_error("aggregate_state_dicts")
    for i, sd in enumerate(state_dicts):
        if not isinstance(sd, Mapping):
            raise TypeError(
                f"aggregate_state_dicts: state_dicts[{i}] must be a mapping, got {type(sd).__name__}"
            )
    keys = list(state_dicts[0].keys())
    for i, sd in enumerate(state_dicts):
        if list(sd.keys()) != keys and set(sd.keys()) != set(keys):
            missing = sorted(set(keys) - set(sd.keys()))
            extra = sorted(set(sd.keys()) - set(keys))
            raise ShapeError(
                f"aggregate_state_dicts: state_dicts[{i}] has different keys from state_dicts[0] "
                f"(missing {missing}, extra {extra})"
            )
        for k in keys:
            t, t0 = sd[k], state_dicts[0][k]
            if not isinstance(t, Tensor):
                raise TypeError(f"aggregate_state_dicts: state_dicts[{i}][{k!r}] is not a tensor")
            if t.shape != t0.shape or t.dtype != t0.dtype:
                raise ShapeError(
                    f"aggregate_state_dicts: entry {k!r}: state_dicts[0] has {tuple(t0.shape)} {t0.dtype}, "
                    f"state_dicts[{i}] has {tuple(t.shape)} {t.dtype}"
                )
    return keys


def _int_median(ts: list[Tensor]) -> Tensor:
    """Element-wise lower median of integer or boolean tensors, in their dtype."""
    x = torch.stack([t.detach() for t in ts])
    if x.dtype == torch.bool:
        return x.to(torch.uint8).median(dim=0).values.to(torch.bool)
    return x.median(dim=0).values


def _select(state_dicts: Sequence[Mapping[str, Tensor]], floats: list[str], r: Krum | MultiKrum) -> Selection:
    """Krum / Multi-Krum selection on whole models: distances summed over the tensors."""
    n = len(state_dicts)
    dist = np.zeros((n, n))
    for k in floats:
        dist += pairwise_sq_distances([sd[k].detach().reshape(-1) for sd in state_dicts])
    idx, scores = krum_select(dist, r)
    dev = state_dicts[0][floats[0]].device if floats else torch.device("cpu")
    return Selection(torch.tensor(idx, dtype=torch.int64, device=dev), torch.from_numpy(scores).to(dev))


def pairwise_sq_distances(rows: Sequence[Tensor]) -> np.ndarray:
    """``(n, n)`` float64 squared distances between ``n`` 1-D tensors (CPU: read in place)."""
    if rows[0].device.type == "cpu" and rows[0].dtype != torch.bfloat16:
        return _core.pairwise_sq_distances([_f32_or_f64(t.numpy()) for t in rows])
    x = torch.stack(list(rows))
    x = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    return K.pairwise_sq_distances(x).cpu().numpy()


def krum_select(dist: np.ndarray, r: Krum | MultiKrum) -> tuple[list[int], np.ndarray]:
    """Krum / Multi-Krum's selection from a float64 distance matrix, with ``r``'s parameters."""
    n = dist.shape[0]
    r.check_n(n)
    m = 1 if isinstance(r, Krum) else r.count(n)
    return _plans.krum_select(dist, r.f, m, r.nonfinite)


def _f32_or_f64(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32) if a.dtype == np.float16 else np.ascontiguousarray(a)

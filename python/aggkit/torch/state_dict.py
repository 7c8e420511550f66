"""Aggregate whole models: one ``state_dict`` per client in, one ``state_dict`` out.

A client whose ``state_dict`` does not fit the model is a faulty client, as in
:class:`aggkit.flower.RobustStrategy`: it is left out of the aggregate and reported (which
clients, and why), never raised, as long as enough valid clients remain for the rule.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, overload

import numpy as np
import torch
from torch import Tensor

from aggkit import _core, _params, _plans
from aggkit.errors import AggkitError, InvalidParameterError, TooFewInputsError, empty_input_error
from aggkit.registry import Rule, Selection
from aggkit.registry import rule as make_rule
from aggkit.rules.krum import Krum, MultiKrum
from aggkit.rules.mean import Mean
from aggkit.torch import _kernels as K
from aggkit.torch._paths import rust

__all__ = ["StateDictInfo", "aggregate_state_dicts"]

NONFLOAT = ("median", "first", "skip", "raise")
_COORDINATEWISE = ("mean", "median", "trimmed_mean")
_DISTANCE = ("krum", "multi_krum")

#: The structure of a model: per key, its shape, dtype and device (``None``: any device).
_Signature = dict[str, tuple[tuple[int, ...], torch.dtype, torch.device | None]]


@dataclass(frozen=True)
class StateDictInfo:
    """What :func:`aggregate_state_dicts` did with each client (``return_info=True``).

    Attributes
    ----------
    valid : list of int
        The clients aggregated (indices into ``state_dicts``), in input order.
    invalid : dict of int to str
        The faulty clients left out, each with the reason (client index -> reason).
    selection : aggkit.Selection or None
        For Krum / Multi-Krum, the clients kept (indices into ``state_dicts``) and every
        client's score (``nan`` for the faulty clients, which were not scored).
    """

    valid: list[int]
    invalid: dict[int, str] = field(default_factory=dict)
    selection: Selection | None = None


@overload
def aggregate_state_dicts(
    state_dicts: Sequence[Mapping[str, Tensor]],
    rule: str | Rule,
    *,
    weights: Any = ...,
    nonfloat: str = ...,
    reference: Mapping[str, Tensor] | None = ...,
    return_selection: Literal[False] = ...,
    return_info: Literal[False] = ...,
    **params: Any,
) -> dict[str, Tensor]: ...
@overload
def aggregate_state_dicts(
    state_dicts: Sequence[Mapping[str, Tensor]],
    rule: str | Rule,
    *,
    weights: Any = ...,
    nonfloat: str = ...,
    reference: Mapping[str, Tensor] | None = ...,
    return_selection: Literal[True],
    return_info: Literal[False] = ...,
    **params: Any,
) -> tuple[dict[str, Tensor], Selection]: ...
@overload
def aggregate_state_dicts(
    state_dicts: Sequence[Mapping[str, Tensor]],
    rule: str | Rule,
    *,
    weights: Any = ...,
    nonfloat: str = ...,
    reference: Mapping[str, Tensor] | None = ...,
    return_selection: Literal[False] = ...,
    return_info: Literal[True],
    **params: Any,
) -> tuple[dict[str, Tensor], StateDictInfo]: ...
@overload
def aggregate_state_dicts(
    state_dicts: Sequence[Mapping[str, Tensor]],
    rule: str | Rule,
    *,
    weights: Any = ...,
    nonfloat: str = ...,
    reference: Mapping[str, Tensor] | None = ...,
    return_selection: bool = ...,
    return_info: bool = ...,
    **params: Any,
) -> dict[str, Tensor] | tuple[dict[str, Tensor], Selection] | tuple[dict[str, Tensor], StateDictInfo]: ...
def aggregate_state_dicts(
    state_dicts: Sequence[Mapping[str, Tensor]],
    rule: str | Rule,
    *,
    weights: Any = None,
    nonfloat: str = "median",
    reference: Mapping[str, Tensor] | None = None,
    return_selection: bool = False,
    return_info: bool = False,
    **params: Any,
) -> dict[str, Tensor] | tuple[dict[str, Tensor], Selection] | tuple[dict[str, Tensor], StateDictInfo]:
    r"""Aggregate the clients' ``state_dict``\ s (or update dicts) with one rule.

    Parameters
    ----------
    state_dicts : sequence of n mappings from name to tensor
        One per client, with the same keys, and per key the same shape, dtype and device. A
        client that does not fit (see Notes) is left out as faulty.
    rule : str or aggkit.Rule
        A rule object (``aggkit.TrimmedMean(f=2)``) or a registered name (``"trimmed_mean"``,
        with its parameters in ``**params``).
    weights : sequence of n non-negative floats, optional
        Per-client weights (e.g. example counts), for rules that take weights (``mean``). A
        client whose weight is negative or not finite is faulty.
    nonfloat : {"median", "first", "skip", "raise"}, default "median"
        What to do with entries that are not floating point, such as BatchNorm's
        ``num_batches_tracked`` (int64) or boolean masks: the element-wise lower median over
        the clients (robust, and stays an integer), the first valid client's value, leave the
        entry out of the result, or raise.
    reference : mapping from name to tensor, optional
        The model the clients should match, e.g. the global model they started from: its keys,
        shapes and dtypes (not its device, nor its values) are the structure a valid client
        has. By default the structure most clients share (the first such in input order on a
        tie).
    return_selection : bool, default False
        For selection rules (``krum``, ``multi_krum``): also return the
        :class:`aggkit.Selection` (which clients were kept, every client's score; indices into
        ``state_dicts``).
    return_info : bool, default False
        Also return a :class:`StateDictInfo`: the clients aggregated, the faulty clients left
        out and why, and the selection of selection rules. Without it, leaving a client out
        emits a :class:`UserWarning` naming the clients and the reasons.
    **params
        The rule's parameters when ``rule`` is a name.

    Returns
    -------
    dict of str to torch.Tensor, or (dict, Selection), or (dict, StateDictInfo)
        The aggregated entries, in the key order of ``reference`` (or of the first valid
        client); each has its inputs' shape, dtype and device.

    Raises
    ------
    TooFewInputsError
        Fewer valid clients remain than the rule needs; the message gives how many were valid
        and why each other client was left out.
    TypeError
        ``state_dicts`` is not a sequence, or none of its elements is a mapping of names to
        dense tensors (a caller's error, not a faulty client).

    Notes
    -----
    A client is faulty, and left out, when it is not a mapping; when one of its values is not
    a dense tensor (a sparse, nested or quantized tensor, an array, ``None``); when its keys
    differ from the reference's (missing or extra keys) or an entry has another shape, dtype
    or device; when its weight is negative or not finite; and, for a rule with
    ``nonfinite="raise"``, when a floating-point entry holds NaN or ±inf (under the other
    policies the rule handles such values itself). The faulty clients' reasons are in
    ``info.invalid`` (``return_info=True``) or in the warning.

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
    >>> sds.append({"w": torch.tensor([1.0, 2.0, 3.0]), "steps": torch.tensor(5)})  # faulty
    >>> out, info = aggkit.torch.aggregate_state_dicts(sds, "median", return_info=True)
    >>> info.valid, info.invalid
    ([0, 1, 2], {3: "entry 'w' has shape (3,) torch.float32, the model's is (2,) torch.float32"})
    """
    r = make_rule(rule, **params)
    if nonfloat not in NONFLOAT:
        raise InvalidParameterError(
            f"aggregate_state_dicts: nonfloat must be one of {', '.join(map(repr, NONFLOAT))}, "
            f"got {nonfloat!r}"
        )
    if weights is not None and r.name != "mean":
        raise InvalidParameterError(f"aggregate_state_dicts: rule {r.name!r} does not take weights")
    if return_selection and r.name not in _DISTANCE:
        raise InvalidParameterError(
            f"aggregate_state_dicts: return_selection needs a selection rule, got {r.name!r}"
        )
    if return_selection and return_info:
        raise InvalidParameterError(
            "aggregate_state_dicts: return_selection and return_info are exclusive "
            "(return_info=True gives the selection as info.selection)"
        )
    n = _check_sequence(state_dicts)
    valid, invalid, keys, signature = _screen(state_dicts, reference, r)
    client_weights = _screen_weights(weights, n, valid, invalid)
    invalid = dict(sorted(invalid.items()))
    if invalid:
        _check_enough(r, n, valid, invalid)
    sds = [state_dicts[i] for i in valid]
    if client_weights is not None and len(valid) < n:
        weights = client_weights[valid]
    floats = [k for k in keys if signature[k][1].is_floating_point]
    try:
        result, selection = _aggregate(sds, n, valid, keys, floats, signature, r, weights, nonfloat)
    except AggkitError as e:
        if invalid:
            e.add_note(_left_out(invalid, n))
        raise
    if invalid and not return_info:
        warnings.warn(_left_out(invalid, n), UserWarning, stacklevel=2)
    if return_info:
        return result, StateDictInfo(valid, invalid, selection)
    if return_selection:
        assert selection is not None  # return_selection is refused for other rules
        return result, selection
    return result


def _aggregate(
    sds: list[Mapping[str, Tensor]],
    n: int,
    valid: list[int],
    keys: list[str],
    floats: list[str],
    signature: _Signature,
    r: Rule,
    weights: Any,
    nonfloat: str,
) -> tuple[dict[str, Tensor], Selection | None]:
    """The rule over the valid clients ``sds`` (``valid``: their indices among the ``n``)."""
    out: dict[str, Tensor] = {}
    selection = None
    if r.name in _COORDINATEWISE:
        for k in floats:
            out[k], _ = r.aggregate([sd[k] for sd in sds], weights=weights)
    elif isinstance(r, Krum | MultiKrum):
        selection = _select(sds, floats, r)
        chosen = selection.indices.tolist()
        average = Mean(nonfinite="propagate")
        for k in floats:
            out[k] = average([sds[i][k] for i in chosen])
        if len(valid) < n:  # indices into state_dicts; the faulty clients have no score
            idx = torch.tensor(valid, dtype=torch.int64, device=selection.indices.device)
            scores = selection.scores.new_full((n,), float("nan"))
            scores[idx] = selection.scores
            selection = Selection(idx[selection.indices], scores)
    else:  # a rule without a per-tensor form: give it each client's whole model as one vector
        flat = torch.stack([torch.cat([sd[k].detach().reshape(-1) for k in floats]) for sd in sds])
        y = r(flat)
        y = y if isinstance(y, Tensor) else torch.as_tensor(y)
        start = 0
        for k in floats:
            t = sds[0][k]
            out[k] = y[start : start + t.numel()].reshape(t.shape).to(t.dtype)
            start += t.numel()
    for k in keys:
        if k in floats:
            continue
        if nonfloat == "raise":
            raise TypeError(
                f"aggregate_state_dicts: entry {k!r} has dtype {signature[k][1]}, "
                "not floating point (nonfloat='raise')"
            )
        if nonfloat == "first":
            out[k] = sds[0][k].clone()
        elif nonfloat == "median":
            out[k] = _int_median([sd[k] for sd in sds])
    return {k: out[k] for k in keys if k in out}, selection


def _check_sequence(state_dicts: Any) -> int:
    if isinstance(state_dicts, Mapping | str | bytes) or not isinstance(state_dicts, Sequence):
        raise TypeError(
            "aggregate_state_dicts: state_dicts must be a sequence of mappings (one per client), "
            f"got {type(state_dicts).__name__}"
        )
    if len(state_dicts) == 0:
        raise empty_input_error("aggregate_state_dicts")
    return len(state_dicts)


def _typing_fault(sd: Any, name: str) -> str | None:
    """Why ``sd`` is not a mapping of names to dense tensors (``None`` if it is)."""
    if not isinstance(sd, Mapping):
        return f"{name} is not a mapping (got {type(sd).__name__})"
    for k, t in sd.items():
        if not isinstance(t, Tensor):
            return f"{name}[{k!r}] is not a tensor (got {type(t).__name__})"
        if t.is_nested:
            return f"{name}[{k!r}] is a nested tensor"
        if t.layout != torch.strided:
            return f"{name}[{k!r}] is a {t.layout} tensor, not dense"
        if t.is_quantized:
            return f"{name}[{k!r}] is a quantized tensor"
    return None


def _signature(sd: Mapping[str, Tensor], device: bool = True) -> _Signature:
    return {k: (tuple(t.shape), t.dtype, t.device if device else None) for k, t in sd.items()}


def _sig_key(sig: _Signature) -> tuple[tuple[str, tuple[int, ...], str, str], ...]:
    return tuple(sorted((str(k), shape, str(dt), str(dev)) for k, (shape, dt, dev) in sig.items()))


def _mismatch(sig: _Signature, ref: _Signature, whose: str) -> str | None:
    """Why a client of structure ``sig`` does not fit ``ref`` (``None`` if it does)."""
    missing = [k for k in ref if k not in sig]
    extra = [k for k in sig if k not in ref]
    if missing or extra:
        return f"keys differ from {whose}: missing {missing}, extra {extra}"
    for k, (shape, dt, dev) in ref.items():
        s_shape, s_dt, s_dev = sig[k]
        if (s_shape, s_dt) != (shape, dt):
            return f"entry {k!r} has shape {s_shape} {s_dt}, {whose} is {shape} {dt}"
        if dev is not None and s_dev != dev:
            return f"entry {k!r} is on {s_dev}, {whose} on {dev}"
    return None


def _majority(candidates: list[tuple[int, _Signature]]) -> _Signature:
    counts = Counter(_sig_key(sig) for _, sig in candidates)
    top = max(counts.values())
    return next(sig for _, sig in candidates if counts[_sig_key(sig)] == top)


def _screen(
    state_dicts: Sequence[Any], reference: Mapping[str, Tensor] | None, r: Rule
) -> tuple[list[int], dict[int, str], list[str], _Signature]:
    """The clients that fit the model, why each other one does not, the keys and the structure."""
    invalid: dict[int, str] = {}
    typed: list[tuple[int, _Signature]] = []
    for i, sd in enumerate(state_dicts):
        why = _typing_fault(sd, f"state_dicts[{i}]")
        if why is None:
            typed.append((i, _signature(sd)))
        else:
            invalid[i] = why
    if reference is not None:
        why = _typing_fault(reference, "reference")
        if why is not None:
            raise TypeError(f"aggregate_state_dicts: {why}")
    if not typed:  # not one state dict: the caller passed something else
        raise TypeError(
            "aggregate_state_dicts: state_dicts holds no mapping of names to dense tensors "
            f"({_reasons(invalid)})"
        )
    candidates = typed
    if reference is not None:
        ref = _signature(reference, device=False)
        candidates = []
        for i, sig in typed:
            why = _mismatch(sig, ref, "the reference's")
            if why is None:
                candidates.append((i, sig))
            else:
                invalid[i] = why
    signature: _Signature = {}
    keys: list[str] = []
    valid: list[int] = []
    if candidates:
        signature = _majority(candidates)  # with a reference: agree on the devices too
        first = next(i for i, sig in candidates if _sig_key(sig) == _sig_key(signature))
        keys = list(reference.keys()) if reference is not None else list(state_dicts[first].keys())
        signature = {k: signature[k] for k in keys}
        for i, sig in candidates:
            why = _mismatch(sig, signature, "the model's")
            if why is None:
                valid.append(i)
            else:
                invalid[i] = why
    if getattr(r, "nonfinite", None) == "raise":
        floats = [k for k in keys if signature[k][1].is_floating_point]
        for i in list(valid):
            bad = [k for k in floats if not bool(torch.isfinite(state_dicts[i][k]).all())]
            if bad:
                invalid[i] = f"non-finite values in {bad} (the rule has nonfinite='raise')"
                valid.remove(i)
    return valid, invalid, keys, signature


def _screen_weights(weights: Any, n: int, valid: list[int], invalid: dict[int, str]) -> np.ndarray | None:
    """The weights as float64 (a caller's error raises); a negative or non-finite one is faulty."""
    if weights is None:
        return None
    w = weights.detach().cpu() if isinstance(weights, Tensor) else weights
    try:
        raw = np.asarray(w)
        a = np.array(raw, dtype=np.float64)
        usable = raw.dtype != np.bool_ and a.ndim == 1 and a.shape[0] == n
    except (TypeError, ValueError):
        usable = False
    if not usable:
        _params.weights(w, n, "aggregate_state_dicts")  # the caller's error, in the usual words
        raise AssertionError("unreachable")  # pragma: no cover
    for i in list(valid):
        if not (np.isfinite(a[i]) and a[i] >= 0.0):
            invalid[i] = f"weight {a[i]!r} is not a finite number >= 0"
            valid.remove(i)
    return a


def _check_enough(r: Rule, n: int, valid: list[int], invalid: dict[int, str]) -> None:
    """Refuse, naming the faulty clients, when fewer valid ones remain than ``r`` needs."""
    need = max(r.min_inputs(), 1)
    if len(valid) < need:
        raise TooFewInputsError(
            f"aggregate_state_dicts: {len(valid)} of {n} clients are valid, {r!r} needs at least "
            f"{need}; left out as faulty: {_reasons(invalid)}"
        )


def _left_out(invalid: Mapping[int, str], n: int) -> str:
    return f"aggregate_state_dicts left out {len(invalid)} of {n} clients as faulty: {_reasons(invalid)}"


def _reasons(invalid: Mapping[int, str], limit: int = 10) -> str:
    items = [f"client {i}: {why}" for i, why in list(invalid.items())[:limit]]
    more = f"; and {len(invalid) - limit} more" if len(invalid) > limit else ""
    return "; ".join(items) + more


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


def pairwise_sq_distances(rows: Sequence[Tensor] | Tensor) -> np.ndarray:
    """``(n, n)`` float64 squared distances between ``n`` 1-D tensors or the rows of a 2-D one.

    Read in place on CPU, and on other devices when ``rows`` is one tensor (a sequence is
    stacked first).
    """
    if rust(rows[0]) and rows[0].dtype != torch.bfloat16:
        return _core.pairwise_sq_distances([_f32_or_f64(t.numpy()) for t in rows])
    x = rows if isinstance(rows, Tensor) else torch.stack(list(rows))
    x = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    return K.pairwise_sq_distances(x).cpu().numpy()


def krum_select(dist: np.ndarray, r: Krum | MultiKrum) -> tuple[list[int], np.ndarray]:
    """Krum / Multi-Krum's selection from a float64 distance matrix, with ``r``'s parameters.

    Under ``nonfinite="raise"`` the caller has refused non-finite inputs first, so a non-finite
    distance is an overflow between finite inputs: it counts as ``+inf``, as ``aggkit.krum``
    scores it (the core's ``"raise"`` on distances would refuse it).
    """
    n = dist.shape[0]
    r.check_n(n)
    m = 1 if isinstance(r, Krum) else r.count(n)
    return _plans.krum_select(dist, r.f, m, "robust" if r.nonfinite == "raise" else r.nonfinite)


def _f32_or_f64(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32) if a.dtype == np.float16 else np.ascontiguousarray(a)

"""NVIDIA FLARE integration: robust aggregation as a ``ModelAggregator``.

:class:`RobustAggregator` is a ``ModelAggregator`` for NVFlare's ``FedAvg`` controller (and any
controller that drives ``accept_model`` / ``aggregate_model`` / ``reset_stats``, or
``ScatterAndGather`` through ``accept`` / ``aggregate``) whose aggregation is any aggkit rule::

    from nvflare.app_common.np.recipes.fedavg import NumpyFedAvgRecipe
    from aggkit.nvflare import RobustAggregator

    recipe = NumpyFedAvgRecipe(
        model=initial_model, min_clients=8, num_rounds=10, train_script="client.py",
        aggregator=RobustAggregator("multi_krum", f=2),
    )

NVFlare's own aggregators (``FedAvg``'s built-in one, ``InTimeAccumulateWeightedAggregator``)
add each result to a running weighted sum as it arrives; order statistics and distance-based
rules need every result of the round at once, so this aggregator keeps the round's results (a
reference to each one's arrays, no copy for numpy arrays and CPU tensors) and aggregates them
in ``aggregate_model``. What it does:

- **Updates, not models.** Results of ``ParamsType.DIFF`` are updates already. Results of
  ``ParamsType.FULL`` are turned into updates by subtracting the global model the controller
  sent this round, and the aggregate is added back to it (the result is ``FULL`` again, as
  ``FedAvg`` expects). The aggregator finds that model itself: the task data of
  ``AppEventType.BEFORE_TRAIN_TASK`` (what the controller sends, before task data filters), or
  else the ``AppConstants.GLOBAL_MODEL`` the controllers keep in the ``FLContext``; outside a
  running job, :meth:`RobustAggregator.set_global_model`. Median, trimmed mean and Krum select
  the same inputs either way, but distances between near-identical models cancel badly in
  float32 and clipping-type rules (centered clipping) are defined on updates. Where no global
  model is known (or with ``on_updates=False``) the models themselves are aggregated, with a
  warning, and ``meta["aggkit_on"]`` says ``"models"``.
- **One parameter type per round.** The round's type is that of most valid results (the first
  to arrive on a tie); a result of the other type is a faulty client, not mixed in.
- Coordinate-wise rules (``rule.coordinate_wise``: median, trimmed mean, ...) run key by key,
  so the extra memory is that of the largest array. Whole-model rules (Krum, Multi-Krum,
  centered clipping, pipelines, ...) see each client's float arrays flattened into one
  ``(n, d)`` matrix in the model's key order, float32 (float64 if any array is float64), in
  memory or, with ``spill_dir``, in a file (:class:`aggkit.UpdateBuffer`).
- **Weights** are NVFlare's: ``meta["NUM_STEPS_CURRENT_ROUND"]`` (``FLMetaKey``) times the
  client's ``aggregation_weights`` entry; a result without the key counts 1, as in
  NVFlare's ``FedAvg``. They weight the mean, Multi-Krum and the geometric median; the order
  statistics treat clients equally, because a Byzantine client can report any count
  (``weighted=True`` weights every rule that takes weights, ``False`` none).
- **Faulty results are left out and reported, never raised**: params that are not a dict of
  numpy arrays / torch tensors, keys, shapes or dtypes that do not fit the round's model, a
  ``NUM_STEPS_CURRENT_ROUND`` that is not a finite number ``>= 0``, a second result from one
  client, non-finite values when the rule has ``nonfinite="raise"``. Non-finite values are
  otherwise the rule's business (``nonfinite="robust"``, the default, treats them as outliers).
- A round with too few valid results for the rule (Krum with ``n < 2f + 3``), or one the rule
  refuses, keeps the current global model: the result is an empty ``DIFF``, which ``FedAvg``
  applies as "no change", and a warning is logged.
- Selection rules report whom they excluded. The result's ``meta`` carries the report under
  the keys of :class:`AggkitMetaKey`; :attr:`RobustAggregator.history` keeps every round's.
  ``FedAvg`` copies the aggregate's meta into the next global model, which it sends to the
  clients: they see the report (client names, reasons, scores).
- Arrays that are not floating point (BatchNorm's ``num_batches_tracked``) take the
  element-wise lower median of the clients' values.
- The round's metrics are the weighted average (NVFlare's helper) of the metrics of the
  clients the rule kept.

**Arrays.** Params may hold numpy arrays or torch tensors (torch is imported only if a client
sends tensors). Tensors are read through numpy on the CPU (no copy for CPU tensors; bfloat16 is
widened to float32 exactly and the result rounded back once, as aggkit does for half
precision), so the result is bit for bit the rule's on the same values as numpy arrays. Each
key of the result has the array type of the round's model: a CPU tensor of the original dtype
where that is a tensor, a numpy array otherwise. Lazy references of NVFlare's tensor disk
offload are materialized when a result is accepted.

Multi-round rules keep their state across rounds (``rule.rounds()``: centered clipping starts
each round from the previous aggregate); :meth:`RobustAggregator.reset_stats` clears the
round's results only, ``aggregator.rounds.reset()`` starts the rule over.

Requires ``nvflare>=2.9`` (``pip install 'aggkit[nvflare]'``; tested with 2.9.0).
"""

from __future__ import annotations

import math
import os
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

try:
    from nvflare.apis.fl_constant import FLMetaKey, ReservedKey
    from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
    from nvflare.app_common.abstract.model import ModelLearnableKey
    from nvflare.app_common.aggregators.model_aggregator import ModelAggregator
    from nvflare.app_common.aggregators.weighted_aggregation_helper import (
        WeightedAggregationHelper,
        filter_aggregatable_metrics,
    )
    from nvflare.app_common.app_constant import AppConstants
    from nvflare.app_common.app_event_type import AppEventType
    from nvflare.app_common.utils.fl_model_utils import FLModelUtils
except ImportError as e:  # pragma: no cover - exercised only without nvflare
    raise ImportError(
        f"aggkit.nvflare needs NVIDIA FLARE (nvflare>=2.9): pip install 'aggkit[nvflare]' ({e})"
    ) from e

from aggkit._integrations import lower_median, uses_weights
from aggkit._params import as_float
from aggkit.buffer import UpdateBuffer, spill_directory
from aggkit.errors import AggkitError, InvalidParameterError
from aggkit.registry import Rule, Selection, from_spec, to_spec
from aggkit.registry import rule as make_rule

__all__ = ["AggkitMetaKey", "RobustAggregator"]


class AggkitMetaKey:
    """The keys :class:`RobustAggregator` adds to the aggregate's ``meta``."""

    #: ``repr`` of the rule.
    RULE = "aggkit_rule"
    #: ``"updates"`` (results minus the global model, or DIFF results) or ``"models"``.
    ON = "aggkit_on"
    #: The clients whose results went into the rule, in input order.
    CLIENTS = "aggkit_clients"
    #: Faulty results left out: client name -> reason.
    INVALID_CLIENTS = "aggkit_invalid_clients"
    NUM_INVALID = "aggkit_num_invalid"
    #: Selection rules (Krum, Multi-Krum, Bulyan, ...): the clients kept and excluded, and each
    #: client's score (lower is better).
    KEPT_CLIENTS = "aggkit_kept_clients"
    EXCLUDED_CLIENTS = "aggkit_excluded_clients"
    NUM_EXCLUDED = "aggkit_num_excluded"
    SCORES = "aggkit_scores"
    #: Why the round kept the current global model (the result is then an empty DIFF).
    SKIPPED = "aggkit_skipped"


#: One array's structure: its shape and dtype name ("float32", "bfloat16", "int64", ...).
_Spec = tuple[tuple[int, ...], str]
_Signature = dict[Any, _Spec]


class _Array(NamedTuple):
    """One received array, readable by numpy, and how to give it back."""

    values: np.ndarray
    #: The torch dtype for a tensor (the result is a CPU tensor of it), ``None`` for numpy.
    torch_dtype: Any


class _Result(NamedTuple):
    """One client's result of the round, read but not yet screened against the others."""

    name: str
    params_type: ParamsType
    arrays: dict[Any, _Array]
    weight: float
    metrics: dict[str, Any] | None


class RobustAggregator(ModelAggregator):  # type: ignore[misc]  # nvflare has no type information
    """NVFlare ``ModelAggregator`` whose aggregation is an aggkit rule.

    Parameters
    ----------
    rule : str or aggkit.Rule, default "median"
        A rule object (``aggkit.MultiKrum(f=2)``), a registered name (``"trimmed_mean"``), a
        pipeline spec (``"nnm>trimmed_mean"``), or the JSON of :func:`aggkit.registry.to_spec`
        (what an exported NVFlare job config holds: the aggregator is rebuilt from it on the
        server).
    on_updates : bool, default True
        Aggregate ``FULL`` results as updates against the global model sent this round (see
        the module docstring); ``False`` aggregates the models.
    weighted : bool or None, default None
        Weight by ``NUM_STEPS_CURRENT_ROUND``: ``None`` for the mean, Multi-Krum and the
        geometric median only, ``True`` for every rule that takes weights, ``False`` never.
    aggregation_weights : dict of str to float, optional
        Per-client factors on the weights, by client name (as NVFlare's ``FedAvg`` and
        ``InTimeAccumulateWeightedAggregator`` take them); a client not named has 1.
    spill_dir : str or path, optional
        Keep the ``(n, d)`` block of whole-model rules in a file in this directory
        (:class:`aggkit.UpdateBuffer`) instead of memory.
    **rule_params
        The rule's parameters when ``rule`` is a name or pipeline spec (``f=2``; a pipeline
        gives each to every stage that takes it).

    Attributes
    ----------
    rule : aggkit.Rule
    rounds : aggkit.registry.Rounds
        The rule across rounds; ``rounds.reset()`` starts it over.
    history : list of dict
        One entry per aggregated round: ``round``, ``clients`` (valid results, input order),
        ``invalid`` (client -> reason), ``params_type``, ``on``, and either ``skipped`` or
        ``weights`` and, for selection rules, ``kept``, ``excluded`` and ``scores``.
    """

    #: Written into an exported job config even when equal to the default.
    _always_serialize_args = ("rule",)

    def __init__(
        self,
        rule: str | Rule = "median",
        *,
        on_updates: bool = True,
        weighted: bool | None = None,
        aggregation_weights: dict[str, float] | None = None,
        spill_dir: str | os.PathLike[str] | None = None,
        **rule_params: Any,
    ) -> None:
        super().__init__()
        if isinstance(rule, str) and rule.lstrip().startswith("{"):
            if rule_params:
                raise InvalidParameterError(
                    f"RobustAggregator: parameters {sorted(rule_params)} cannot be applied to "
                    f"the rule spec {rule!r}"
                )
            built = from_spec(rule)
        else:
            built = make_rule(rule, **rule_params)
        if built.uses_reference:
            raise InvalidParameterError(
                f"RobustAggregator: {built!r} needs the server's own update each round, which "
                "NVFlare's aggregator interface does not provide; use it through aggkit directly "
                "(rule.aggregate(x, reference=...)) or the Flower strategy's reference_fn"
            )
        self._rule_obj: Rule = built
        # NVFlare exports a component by its constructor arguments, read back from attributes
        # of the same name or with a leading underscore: the rule as JSON, the directory as text.
        self._rule = to_spec(built)
        self.on_updates = bool(on_updates)
        self.weighted = None if weighted is None else bool(weighted)
        self.aggregation_weights = _aggregation_weights(aggregation_weights)
        self._spill_path = spill_directory(spill_dir, "RobustAggregator")
        self._spill_dir = None if spill_dir is None else os.fspath(spill_dir)
        self.rounds = built.rounds()
        self.history: list[dict[str, Any]] = []
        self._lock = threading.RLock()
        self._results: list[_Result] = []
        self._invalid: dict[str, str] = {}
        self._names: Counter[str] = Counter()
        self._received = 0
        self._aggregated_rounds = 0
        self._base: dict[Any, _Array] | None = None
        self._base_error: str | None = None
        self._base_fresh = False

    @property
    def rule(self) -> Rule:
        """The aggkit rule."""
        return self._rule_obj

    @property
    def spill_dir(self) -> Path | None:
        """The directory of the spilled ``(n, d)`` block, if any."""
        return self._spill_path

    def __repr__(self) -> str:
        return f"RobustAggregator({self._rule_obj!r}, on_updates={self.on_updates}, weighted={self.weighted})"

    # ---------------------------------------------------------------------------------------
    # NVFlare's interface

    def handle_event(self, event_type: str, fl_ctx: Any) -> None:
        """Keep the ``FLContext`` (``START_RUN``) and the model sent this round (``BEFORE_TRAIN_TASK``)."""
        super().handle_event(event_type, fl_ctx)
        if event_type == AppEventType.BEFORE_TRAIN_TASK and not self._base_fresh:
            shareable = fl_ctx.get_prop(AppConstants.TRAIN_SHAREABLE) if fl_ctx is not None else None
            if shareable is None:
                return
            try:
                sent = FLModelUtils.from_shareable(shareable)
            except Exception:  # not a model: another kind of task
                return
            if sent.params_type == ParamsType.FULL and isinstance(sent.params, dict) and sent.params:
                with self._lock:
                    self._set_base(sent.params)

    def set_global_model(self, model: Any) -> None:
        """Give the global model of this round (an ``FLModel`` or its params dict).

        Inside a job the aggregator finds it itself (see the module docstring); this is for
        other drivers. It serves until the round is aggregated.
        """
        params = model.params if isinstance(model, FLModel) else model
        if not isinstance(params, dict):
            raise TypeError(
                f"RobustAggregator.set_global_model takes an FLModel or a dict, got {type(params).__name__}"
            )
        with self._lock:
            self._set_base(params)
            if self._base_error is not None:
                raise InvalidParameterError(
                    f"RobustAggregator: the global model is unusable: {self._base_error}"
                )

    def accept(self, shareable: Any, fl_ctx: Any) -> bool:
        """``ScatterAndGather``'s entry: the result, named by its sender's authenticated identity."""
        self.fl_ctx = fl_ctx
        name = shareable.get_peer_prop(ReservedKey.IDENTITY_NAME, None)
        try:
            model = FLModelUtils.from_shareable(shareable, fl_ctx)
        except Exception as e:  # a client's data: recorded, never raised
            return self._accept(FLModel(meta={"client_name": name}), unreadable=f"not a model: {e}")
        model.meta["client_name"] = name
        return self._accept(model)

    def accept_model(self, model: Any) -> None:
        """Keep one client's result for this round; a faulty one is recorded, not raised."""
        self._accept(model)

    def _accept(self, model: Any, unreadable: str | None = None) -> bool:
        with self._lock:
            index = self._received
            self._received += 1
            meta = getattr(model, "meta", None)
            meta = meta if isinstance(meta, dict) else {}
            given = meta.get("client_name")
            name = (
                given
                if isinstance(given, str) and given and given != AppConstants.CLIENT_UNKNOWN
                else f"#{index}"
            )
            self._names[name] += 1
            # A second result from one client is reported as "name (2)": the first one stands.
            key = name if self._names[name] == 1 else f"{name} ({self._names[name]})"
            try:
                if self._names[name] > 1:
                    raise ValueError("a second result from this client in the round")
                if unreadable is not None:
                    raise ValueError(unreadable)
                result = self._read(model, name, meta)
            except Exception as e:  # nothing a client sends raises out of the aggregator
                reason = _short(str(e) or type(e).__name__)
                _add(self._invalid, key, reason)
                self.warning(f"aggkit: left out the result of {key}: {reason}")
                return False
            self._results.append(result)
            return True

    def aggregate_model(self) -> Any:
        """Apply the rule to the round's results: an ``FLModel`` of the round's params type."""
        with self._lock:
            try:
                return self._aggregate()
            finally:
                self._base_fresh = False  # the next model sent is the next round's
                self._base = None
                self._aggregated_rounds += 1

    def reset_stats(self) -> None:
        """Forget the round's results (the rule's state across rounds stays)."""
        with self._lock:
            self._results = []
            self._invalid = {}
            self._names = Counter()
            self._received = 0

    # ---------------------------------------------------------------------------------------

    def _set_base(self, params: dict[Any, Any]) -> None:
        try:
            self._base = {k: _array(v, k) for k, v in params.items()}
            self._base_error = None
        except (ValueError, TypeError, RuntimeError) as e:
            self._base, self._base_error = None, str(e)
            self.warning(f"aggkit: the global model cannot be read, aggregating models: {e}")
        self._base_fresh = True

    def _read(self, model: Any, name: str, meta: dict[str, Any]) -> _Result:
        """The checks on one result alone: type, params, weight."""
        if not isinstance(model, FLModel):
            raise TypeError(f"not an FLModel: {type(model).__name__}")
        try:
            params_type = ParamsType(model.params_type)
        except ValueError:
            raise ValueError(f"params_type {model.params_type!r}, expected FULL or DIFF") from None
        if params_type not in (ParamsType.FULL, ParamsType.DIFF):
            raise ValueError(f"params_type {params_type.value}, expected FULL or DIFF")
        params = model.params
        if not isinstance(params, dict):
            raise TypeError(f"params is a {type(params).__name__}, expected a dict of arrays")
        if not params:
            raise ValueError("params is empty")
        arrays = {k: _array(v, k) for k, v in params.items()}
        weight = _steps(meta) * self.aggregation_weights.get(name, 1.0)
        metrics = model.metrics if isinstance(model.metrics, dict) else None
        return _Result(name, params_type, arrays, weight, metrics)

    def _resolve_base(self) -> dict[Any, _Array] | None:
        """The global model of this round: given or captured, else the FLContext's."""
        if self._base_fresh:
            return self._base
        ctx = self.fl_ctx
        learnable = ctx.get_prop(AppConstants.GLOBAL_MODEL) if ctx is not None else None
        weights = learnable.get(ModelLearnableKey.WEIGHTS) if isinstance(learnable, dict) else None
        if isinstance(weights, dict) and weights:
            self._set_base(weights)
            return self._base
        return None

    def _round(self) -> int:
        ctx = self.fl_ctx
        current = ctx.get_prop(AppConstants.CURRENT_ROUND) if ctx is not None else None
        return current if isinstance(current, int) else self._aggregated_rounds

    def _aggregate(self) -> Any:
        rule = self._rule_obj
        server_round = self._round()
        invalid = dict(self._invalid)
        results = list(self._results)
        if not results:
            return self._skip(server_round, [], invalid, None, "no valid results", None)
        # One params type per round: the most common one (first to arrive on a tie).
        types = Counter(r.params_type for r in results)
        top = max(types.values())
        round_type = next(r.params_type for r in results if types[r.params_type] == top)
        kept: list[_Result] = []
        for r in results:
            if r.params_type != round_type:
                _add(invalid, r.name, f"params_type {r.params_type.value}, the round's is {round_type.value}")
            else:
                kept.append(r)
        base = self._resolve_base()
        screened, reference = _screen(kept, base, round_type, invalid)
        if getattr(rule, "nonfinite", None) == "raise":
            finite = []
            for r in screened:
                bad = [k for k, a in r.arrays.items() if _is_float(a) and not np.isfinite(a.values).all()]
                if bad:
                    _add(
                        invalid, r.name, f"non-finite values in {_few(bad)} (the rule has nonfinite='raise')"
                    )
                else:
                    finite.append(r)
            screened = finite
        names = [r.name for r in screened]
        if invalid:
            self.warning(f"aggkit {rule!r} left out faulty results in round {server_round}: {invalid}")
        if reference is None or len(screened) < max(rule.min_inputs(), 1):
            why = f"{len(screened)} valid results, the rule needs {rule.min_inputs()}"
            return self._skip(server_round, names, invalid, round_type, why, None)
        subtract = base if self.on_updates and round_type == ParamsType.FULL and base is not None else None
        on = "models" if round_type == ParamsType.FULL and subtract is None else "updates"
        if on == "models":
            self.warning(
                f"aggkit: no global model known in round {server_round}"
                + ("" if self.on_updates else " (on_updates=False)")
                + "; aggregating the FULL models, not updates"
            )
        weights = [r.weight for r in screened] if uses_weights(rule, self.weighted) else None
        try:
            if rule.coordinate_wise:
                values, selection = self._per_key(rule, screened, reference, subtract, weights), None
            else:
                values, selection = self._whole_model(screened, reference, subtract, weights)
        except (AggkitError, MemoryError) as e:
            return self._skip(server_round, names, invalid, round_type, str(e) or type(e).__name__, on)
        kept_idx = (
            list(range(len(screened)))
            if selection is None
            else [int(i) for i in np.asarray(selection.indices)]
        )
        params = {k: _give_back(values[k], _template(k, screened[0], subtract)) for k in reference}
        meta: dict[str, Any] = {
            AggkitMetaKey.RULE: repr(rule),
            AggkitMetaKey.ON: on,
            AggkitMetaKey.CLIENTS: names,
            AggkitMetaKey.INVALID_CLIENTS: invalid,
            AggkitMetaKey.NUM_INVALID: len(invalid),
        }
        entry: dict[str, Any] = {
            "round": server_round,
            "clients": names,
            "invalid": invalid,
            "params_type": round_type.value,
            "on": on,
            "weights": weights,
        }
        if selection is not None:
            chosen = set(kept_idx)
            excluded = [names[i] for i in range(len(names)) if i not in chosen]
            scores = {n: float(s) for n, s in zip(names, np.asarray(selection.scores).tolist(), strict=True)}
            meta |= {
                AggkitMetaKey.KEPT_CLIENTS: [names[i] for i in kept_idx],
                AggkitMetaKey.EXCLUDED_CLIENTS: excluded,
                AggkitMetaKey.NUM_EXCLUDED: len(excluded),
                AggkitMetaKey.SCORES: scores,
            }
            entry |= {"kept": [names[i] for i in kept_idx], "excluded": excluded, "scores": scores}
            if excluded:
                self.info(f"aggkit {rule!r} excluded clients {excluded} in round {server_round}")
        self.history.append(entry)
        what = f"{len(names)} {round_type.value} results on {on}"
        self.info(f"aggkit {rule!r} aggregated {what} in round {server_round}")
        return FLModel(
            params_type=round_type,
            params=params,
            metrics=self._metrics([screened[i] for i in sorted(kept_idx)]),
            current_round=server_round,
            meta=meta,
        )

    def _skip(
        self,
        server_round: int,
        names: list[str],
        invalid: dict[str, str],
        round_type: ParamsType | None,
        why: str,
        on: str | None,
    ) -> Any:
        """Keep the current global model: an empty DIFF (``FedAvg`` adds nothing)."""
        self.warning(f"aggkit {self._rule_obj!r} kept the current model in round {server_round}: {why}")
        self.history.append(
            {
                "round": server_round,
                "clients": names,
                "invalid": invalid,
                "params_type": None if round_type is None else round_type.value,
                "on": on,
                "skipped": why,
            }
        )
        meta = {
            AggkitMetaKey.RULE: repr(self._rule_obj),
            AggkitMetaKey.CLIENTS: names,
            AggkitMetaKey.INVALID_CLIENTS: invalid,
            AggkitMetaKey.NUM_INVALID: len(invalid),
            AggkitMetaKey.SKIPPED: why,
        }
        return FLModel(params_type=ParamsType.DIFF, params={}, current_round=server_round, meta=meta)

    def _metrics(self, kept: list[_Result]) -> dict[str, Any] | None:
        """NVFlare's weighted average of the kept clients' metrics (``None`` if one has none)."""
        if not kept or any(r.metrics is None for r in kept):
            return None
        try:
            helper = WeightedAggregationHelper()
            for r in kept:
                usable = filter_aggregatable_metrics(r.metrics)
                if usable:
                    helper.add(data=usable, weight=r.weight, contributor_name=r.name, contribution_round=0)
            out = helper.get_result()
        except Exception as e:  # metrics must never break an aggregation
            self.warning(f"aggkit: the round's metrics could not be averaged: {e}")
            return None
        return dict(out) if out else None

    def _per_key(
        self,
        rule: Rule,
        results: list[_Result],
        reference: _Signature,
        base: dict[Any, _Array] | None,
        weights: list[float] | None,
    ) -> dict[Any, np.ndarray]:
        out: dict[Any, np.ndarray] = {}
        for key in reference:
            layers = [r.arrays[key].values for r in results]
            if not _is_float(results[0].arrays[key]):
                out[key] = lower_median(layers)
                continue
            b = None if base is None else base[key].values
            if b is not None:
                layers = [a - b.astype(a.dtype, copy=False) for a in layers]
            y, _ = rule.aggregate(layers, weights=weights)
            y = np.asarray(y)
            if b is not None:
                y = (b.astype(y.dtype, copy=False) + y).astype(layers[0].dtype, copy=False)
            out[key] = y
        return out

    def _whole_model(
        self,
        results: list[_Result],
        reference: _Signature,
        base: dict[Any, _Array] | None,
        weights: list[float] | None,
    ) -> tuple[dict[Any, np.ndarray], Selection | None]:
        first = results[0].arrays
        floats = [k for k in reference if _is_float(first[k])]
        wide = any(first[k].values.dtype.itemsize == 8 for k in floats)
        buf_dtype = np.float64 if wide else np.float32
        sizes = [math.prod(reference[k][0]) for k in floats]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        n, d = len(results), int(offsets[-1])
        out: dict[Any, np.ndarray] = {}
        selection: Selection | None = None
        if floats:
            # The one (n, d) copy, in memory or in a file; one row is built at a time.
            with UpdateBuffer(d, buf_dtype, n_max=n, spill_dir=self._spill_path) as buf:
                row: npt.NDArray[np.floating[Any]] = np.empty(d, dtype=buf_dtype)
                for i, r in enumerate(results):
                    for k, lo, hi in zip(floats, offsets[:-1], offsets[1:], strict=True):
                        seg = row[lo:hi]
                        seg[...] = r.arrays[k].values.reshape(-1)
                        if base is not None:
                            seg -= base[k].values.reshape(-1)
                    buf.append(row, weight=None if weights is None else weights[i])
                # client names for rules that keep a state per client (FoolsGold)
                ids = [r.name for r in results]
                y, selection = buf.aggregate(self.rounds, return_selection=True, ids=ids)
            for j, k in enumerate(floats):
                part = y[offsets[j] : offsets[j + 1]].reshape(reference[k][0])
                if base is not None:
                    part = np.add(base[k].values.astype(buf_dtype), part)
                out[k] = part.astype(first[k].values.dtype, copy=False)
        for k in reference:
            if k not in out:
                out[k] = lower_median([r.arrays[k].values for r in results])
        return out, selection


# ---------------------------------------------------------------------------------------------
# Reading and screening results


def _add(invalid: dict[str, str], name: str, why: str) -> None:
    """Record a faulty result under its client's name (made unique if the name repeats)."""
    key, i = name, 2
    while key in invalid:
        key, i = f"{name} ({i})", i + 1
    invalid[key] = _short(why)


def _short(text: str, limit: int = 500) -> str:
    """A reason of bounded length (it names a client's keys, which a client chooses)."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _few(items: list[Any], limit: int = 10) -> str:
    """``items`` as a list of at most ``limit`` reprs, and how many there are."""
    shown = ", ".join(_short(repr(x), 80) for x in items[:limit])
    return f"[{shown}]" if len(items) <= limit else f"[{shown}, ...] ({len(items)} in all)"


def _aggregation_weights(value: Any) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError(f"RobustAggregator: aggregation_weights must be a dict, got {type(value).__name__}")
    out = {}
    for name, w in value.items():
        v = as_float(w, f"aggregation_weights[{name!r}]", "RobustAggregator")
        if not math.isfinite(v) or v < 0:
            raise InvalidParameterError(
                f"RobustAggregator: aggregation_weights[{name!r}] must be finite and >= 0, got {w!r}"
            )
        out[str(name)] = v
    return out


def _steps(meta: dict[str, Any]) -> float:
    """The result's ``NUM_STEPS_CURRENT_ROUND`` (1 when absent, as NVFlare's FedAvg reads it)."""
    key = FLMetaKey.NUM_STEPS_CURRENT_ROUND
    if key not in meta or meta[key] is None:
        return 1.0
    value = meta[key]
    bad = ValueError(f"meta {key} must be a finite number >= 0, got {value!r}")
    if isinstance(value, bool | np.bool_):
        raise bad
    try:
        v = as_float(value, key, "RobustAggregator")
    except (TypeError, InvalidParameterError):
        raise bad from None
    if not math.isfinite(v) or v < 0:
        raise bad
    return v


def _array(value: Any, key: Any) -> _Array:
    """A params value as a numpy array (no copy where possible), or why it cannot be one."""
    materialize = getattr(value, "materialize", None)
    if callable(materialize) and not isinstance(value, np.ndarray):  # NVFlare's lazy references
        value = materialize()
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        if value.layout != torch.strided or value.is_quantized or value.is_complex():
            raise TypeError(
                f"array {key!r} is a {value.layout} / {value.dtype} tensor, expected a dense real tensor"
            )
        t = value.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        if t.dtype == torch.bfloat16:
            return _Array(t.float().numpy(), torch.bfloat16)
        return _check(_Array(t.numpy(), value.dtype), key)
    if isinstance(value, np.ma.MaskedArray):
        raise TypeError(f"array {key!r} is a masked array")
    if isinstance(value, np.ndarray | np.generic):
        return _check(_Array(np.asarray(value), None), key)
    raise TypeError(f"array {key!r} is a {type(value).__name__}, expected a numpy array or a torch tensor")


def _check(a: _Array, key: Any) -> _Array:
    if a.values.dtype.kind not in "fiub" and not _is_float(a):
        raise TypeError(f"array {key!r} has dtype {a.values.dtype}, expected a real or boolean dtype")
    return a


def _is_float(a: _Array) -> bool:
    return a.values.dtype.kind == "f" or a.values.dtype.name == "bfloat16"


def _spec(a: _Array) -> _Spec:
    name = (
        "bfloat16"
        if a.torch_dtype is not None and str(a.torch_dtype) == "torch.bfloat16"
        else a.values.dtype.name
    )
    return tuple(a.values.shape), name


def _signature(arrays: dict[Any, _Array]) -> _Signature:
    return {k: _spec(a) for k, a in arrays.items()}


def _mismatch(
    sig: _Signature, reference: _Signature, *, subset: bool = False, dtypes: bool = True
) -> str | None:
    """Why ``sig`` does not fit ``reference`` (``subset``: its keys may be fewer)."""
    missing = [] if subset else [k for k in reference if k not in sig]
    extra = [k for k in sig if k not in reference]
    if missing or extra:
        return f"keys differ from the model's: missing {_few(missing)}, extra {_few(extra)}"
    for k, (shape, dt) in sig.items():
        ref_shape, ref_dt = reference[k]
        if shape != ref_shape or (dtypes and dt != ref_dt):
            name = _short(repr(k), 80)
            return f"array {name} has shape {shape} dtype {dt}, the model's is {ref_shape} {ref_dt}"
    return None


def _screen(
    results: list[_Result], base: dict[Any, _Array] | None, round_type: ParamsType, invalid: dict[str, str]
) -> tuple[list[_Result], _Signature | None]:
    """The results that fit the round's model, and its structure; the others go to ``invalid``.

    A FULL round's model is the global model when it is known (same keys, shapes, dtypes). A
    DIFF result may hold fewer keys than the global model (NVFlare adds a DIFF key by key),
    each of the model's shape; the round's structure is then the one most results share.
    """
    base_sig = None if base is None else _signature(base)
    candidates: list[tuple[_Result, _Signature]] = []
    for r in results:
        sig = _signature(r.arrays)
        why = None
        if base_sig is not None:
            full = round_type == ParamsType.FULL
            why = _mismatch(sig, base_sig, subset=not full, dtypes=full)
        if why is None:
            candidates.append((r, sig))
        else:
            _add(invalid, r.name, why)
    if round_type == ParamsType.FULL and base_sig is not None:
        reference: _Signature | None = base_sig
    elif candidates:
        counts = Counter(_key(sig) for _, sig in candidates)
        top = max(counts.values())
        reference = next(sig for _, sig in candidates if counts[_key(sig)] == top)
    else:
        reference = None
    valid = []
    for r, sig in candidates:
        assert reference is not None
        why = _mismatch(sig, reference)
        if why is None:
            valid.append(r)
        else:
            _add(invalid, r.name, why)
    if reference is not None and valid:
        # The key order of the first valid result (the global model's for a FULL round).
        order = reference if round_type == ParamsType.FULL and base_sig is not None else valid[0].arrays
        reference = {k: reference[k] for k in order}
    return valid, reference


def _key(sig: _Signature) -> frozenset[tuple[Any, _Spec]]:
    return frozenset(sig.items())


def _template(key: Any, first: _Result, base: dict[Any, _Array] | None) -> _Array:
    """The array whose type and dtype ``key`` of the result takes (the global model's or the first's)."""
    return base[key] if base is not None else first.arrays[key]


def _give_back(values: np.ndarray, like: _Array) -> Any:
    """``values`` as the type of ``like``: a CPU tensor of its dtype, or a numpy array."""
    values = values if values.flags.c_contiguous else values.copy(order="C")  # 0-d stays 0-d
    if like.torch_dtype is None:
        return values
    import torch

    return torch.from_numpy(values).to(like.torch_dtype)

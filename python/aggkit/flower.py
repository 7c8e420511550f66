"""Flower integration: robust aggregation as a strategy of Flower's Message API.

:class:`RobustStrategy` is Flower's ``FedAvg`` (same sampling, configuration, evaluation and
metrics) whose training aggregation is any aggkit rule::

    from flwr.serverapp import Grid, ServerApp
    from flwr.app import ArrayRecord, Context
    from aggkit.flower import RobustStrategy

    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = RobustStrategy("trimmed_mean", f=2, fraction_evaluate=0.0)
        result = strategy.start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()),
                                num_rounds=10)

What it does differently from Flower's own ``FedMedian`` / ``FedTrimmedAvg`` / ``Krum``:

- It aggregates **updates**: the global model sent in ``configure_train`` is subtracted from
  each reply and added back to the result. Median, trimmed mean and Krum select the same
  inputs either way, but distances between near-identical models cancel badly in float32
  (Flower 1.41's Krum returns negative squared distances there), and clipping-type rules are
  defined on updates.
- Coordinate-wise rules (``rule.coordinate_wise``: median, trimmed mean, and the mean unless
  ``nonfinite="robust"``, which drops a client with a NaN anywhere) run key by key, so peak
  memory is ``n`` copies of the largest array, not of the model. Whole-model rules (Krum,
  Multi-Krum, the robust mean) see each client's float arrays flattened into one ``(n, d)``
  matrix, in the record's key order.
- Example counts (the ``weighted_by_key`` metric, ``"num-examples"`` by default) weight the
  mean, Multi-Krum and the geometric median, as Flower's strategies do; the order statistics
  (median, trimmed mean) treat clients equally like Flower's ``FedMedian`` and
  ``FedTrimmedAvg``, because a Byzantine client can report any count. ``weighted=True`` weights
  every rule that takes weights, ``weighted=False`` none.
- Replies are read, never modified (Flower's ``FedMedian`` pops the arrays out of them).
- Selection rules report which clients they excluded: the training metrics get
  ``aggkit-num-excluded`` and ``aggkit-excluded-node-ids``, and :attr:`RobustStrategy.history`
  keeps every round's node ids and scores.
- A reply that does not fit the round's model (other keys, shapes or dtypes, a missing,
  negative or non-finite example count, more than one array record; NaN when the rule has
  ``nonfinite="raise"``) is a faulty client: it is left out, logged, and reported in the
  metrics (``aggkit-num-invalid``, ``aggkit-invalid-node-ids``) and in ``history``
  (``invalid``: node id -> reason). Nothing a client sends raises out of ``aggregate_train``.
- A round with too few valid replies for the rule (e.g. Krum with ``n < 2f + 3``), or one the
  rule refuses (more than ``f`` clients with NaN), logs a warning and keeps the current global
  model, as Flower's ``Bulyan`` does (``history`` records it under ``skipped``).
- The round's training metrics average the replies the rule kept (Flower averages all).
- Arrays that are not floating point (e.g. BatchNorm's ``num_batches_tracked``) take the
  element-wise lower median of the clients' values.

Requires ``flwr>=1.21,<2`` (``pip install 'aggkit[flower]'``). The strategy calls Flower's
``FedAvg._check_and_log_replies`` for error filtering and reply validation, a private helper;
that is why the supported range is pinned.
"""

from __future__ import annotations

import inspect
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from logging import INFO, WARNING
from typing import Any

import numpy as np
import numpy.typing as npt

try:
    from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
    from flwr.common.logger import log
    from flwr.serverapp import Grid
    from flwr.serverapp.strategy import FedAvg
except ImportError as e:  # pragma: no cover - exercised only without flwr
    raise ImportError(
        f"aggkit.flower needs Flower's Message API (flwr>=1.21,<2): pip install 'aggkit[flower]' ({e})"
    ) from e

from aggkit._integrations import lower_median, uses_weights
from aggkit._params import as_float
from aggkit.buffer import UpdateBuffer, spill_directory
from aggkit.errors import AggkitError, InvalidParameterError
from aggkit.registry import Rule, param_names, spec_param_names
from aggkit.registry import rule as make_rule
from aggkit.rules.trimmed_mean import TrimmedMean

__all__ = ["RobustStrategy"]


class RobustStrategy(FedAvg):
    """Flower ``FedAvg`` whose training aggregation is an aggkit rule.

    Parameters
    ----------
    rule : str or aggkit.Rule
        A rule object (``aggkit.TrimmedMean(f=2)``) or a registered name (``"median"``).
    on_updates : bool, default True
        Aggregate the updates (reply minus the global model of this round) rather than the
        returned models. See the module docstring.
    weighted : bool or None, default None
        Weight by the ``weighted_by_key`` metric: ``None`` for the mean, Multi-Krum and the
        geometric median only (Flower's choice, see the module docstring), ``True`` for every
        rule that takes weights, ``False`` never.
    reference_fn : callable, optional
        For rules that use a reference update (FLTrust): called each round as
        ``reference_fn(global_arrays, server_round)`` with the global model as a dict of numpy
        arrays, it returns the server's own update on the data it holds (a dict with the model's
        float keys, shapes and dtypes). Needs ``on_updates=True``.
    spill_dir : str or path, optional
        Rules that are not coordinate-wise (Krum, Multi-Krum, Bulyan, the geometric median, ...)
        need the round's updates as one ``(n, d)`` block, a copy of the replies. With
        ``spill_dir`` that block is an :class:`aggkit.UpdateBuffer` file in this directory
        (paged in and out by the operating system, deleted after the round) instead of memory.
        Flower itself still holds the replies; coordinate-wise rules make no such copy.
    **kwargs
        The rule's parameters when ``rule`` is a name or a pipeline spec (``f=2``;
        ``"nnm>trimmed_mean", f=2`` gives ``f`` to every stage that takes it), then ``FedAvg``'s
        (``fraction_train``, ``min_train_nodes``, ``weighted_by_key``, ...). Flower's names for
        the rules its strategies share are accepted too: ``num_malicious_nodes`` for ``f``
        (Krum, MultiKrum, Bulyan, and any rule with an ``f``), ``num_nodes_to_select`` for
        Multi-Krum's ``m``, and FedTrimmedAvg's ``beta`` for ``"trimmed_mean"``: a fraction in
        ``[0, 0.5)``, trimming ``int(beta * n)`` per side of the ``n`` valid replies of each round,
        as Flower does. A name that neither the rule nor ``FedAvg`` takes is refused with the
        list of accepted ones.

    Attributes
    ----------
    rule : aggkit.Rule
    beta : float or None
        FedTrimmedAvg's fraction, if the strategy was built with ``beta`` (then each round uses
        ``TrimmedMean(f=int(beta * n))``; ``rule`` holds the other parameters).
    rounds : aggkit.registry.Rounds
        The rule across rounds (``rule.rounds()``): centered clipping starts each round from
        the previous aggregate; ``strategy.rounds.reset()`` starts over.
    history : list of dict
        One entry per round: ``round``, ``node_ids`` (reply order), ``invalid`` (faulty
        replies: node id -> reason) and either ``skipped`` (why the model was kept) or
        ``weights`` and, for selection rules, ``kept_node_ids``, ``excluded_node_ids`` and
        ``scores``.
    """

    def __init__(
        self,
        rule: str | Rule,
        *,
        on_updates: bool = True,
        weighted: bool | None = None,
        spill_dir: str | os.PathLike[str] | None = None,
        reference_fn: Callable[[dict[str, np.ndarray], int], Mapping[str, Any]] | None = None,
        **kwargs: Any,
    ):
        rule_kwargs, self.beta = _split_params(rule, kwargs)
        self.rule: Rule = make_rule(rule, **rule_kwargs)
        if self.rule.uses_reference and (reference_fn is None or not on_updates):
            raise InvalidParameterError(
                f"RobustStrategy: {self.rule!r} weighs the clients against the server's own update: "
                "pass reference_fn=... (and keep on_updates=True)"
            )
        if reference_fn is not None and not self.rule.uses_reference:
            raise InvalidParameterError(f"RobustStrategy: {self.rule!r} does not use reference_fn")
        self.reference_fn = reference_fn
        super().__init__(**kwargs)
        self.on_updates = bool(on_updates)
        self.weighted = None if weighted is None else bool(weighted)
        self.spill_dir = spill_directory(spill_dir, "RobustStrategy")
        self.history: list[dict[str, Any]] = []
        self.rounds = self.rule.rounds()
        self._global: dict[str, np.ndarray] | None = None
        self._reference: _Signature | None = None

    def summary(self) -> None:
        """Log the strategy's settings (FedAvg's summary, then the rule)."""
        super().summary()
        rule = (
            repr(self.rule)
            if self.beta is None
            else f"trimmed mean of beta={self.beta} (f = int(beta * n) per round)"
        )
        log(INFO, "\t└──> aggkit rule: %s (on %s)", rule, "updates" if self.on_updates else "models")

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's ``configure_train``; remembers ``arrays`` as this round's global model."""
        if self.on_updates:
            self._global = {k: v.numpy() for k, v in arrays.items()}
        self._reference = {k: (tuple(v.shape), np.dtype(v.dtype)) for k, v in arrays.items()}
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate the replies' arrays with the rule; metrics as FedAvg, plus diagnostics.

        A reply that does not fit this round's model is a faulty client: it is left out and
        reported (``aggkit-invalid-node-ids`` in the metrics, ``invalid`` in :attr:`history`),
        never raised. A round without enough valid replies for the rule, or whose aggregation
        the rule refuses (e.g. more than ``f`` inputs with NaN), keeps the current model with a
        warning. The metrics average the replies the rule kept.
        """
        received, _ = self._check_and_log_replies(replies, is_train=True, validate=False)
        if not received:
            return None, None
        valid, invalid = self._screen(received)
        rule = self._round_rule(len(valid))
        if invalid:
            log(WARNING, "aggkit %r left out faulty replies in round %d: %s", rule, server_round, invalid)
        if len(valid) < max(rule.min_inputs(), 1):
            why = f"{len(valid)} valid replies, the rule needs {rule.min_inputs()}"
            return self._skip(server_round, received, invalid, why)
        contents = [m.content for m in valid]
        record_key = next(iter(contents[0].array_records.keys()))
        records = [c.array_records[record_key] for c in contents]
        keys = list(records[0].keys())
        if self.on_updates:
            if self._global is None:
                raise InvalidParameterError(
                    "RobustStrategy(on_updates=True) aggregates updates against the model sent "
                    "in configure_train, which has not been called; call it first (start() does) "
                    "or build the strategy with on_updates=False"
                )
            missing = [k for k in keys if k not in self._global]
            if missing:
                raise InvalidParameterError(f"replies hold arrays the global model does not: {missing}")
        node_ids = [int(m.metadata.src_node_id) for m in valid]
        counts = [_weight(c, self.weighted_by_key) for c in contents]
        weights = counts if uses_weights(rule, self.weighted) else None
        entry: dict[str, Any] = {
            "round": server_round,
            "node_ids": node_ids,
            "weights": weights,
            "invalid": invalid,
        }
        try:
            if rule.coordinate_wise:
                arrays, selection = self._per_key(rule, records, keys, weights), None
            else:
                arrays, selection = self._whole_model(records, keys, weights, node_ids, server_round)
        except AggkitError as e:
            return self._skip(server_round, received, invalid, str(e))
        kept = list(range(len(valid))) if selection is None else selection.indices.tolist()
        # Flower's type says MetricRecord; a user's function may return None.
        metrics: MetricRecord | None = self.train_metrics_aggr_fn(
            [contents[i] for i in sorted(kept)], self.weighted_by_key
        )
        if invalid:
            if metrics is None:
                metrics = MetricRecord()
            metrics["aggkit-num-invalid"] = len(invalid)
            metrics["aggkit-invalid-node-ids"] = list(invalid)
        if selection is not None:
            excluded = [node_ids[i] for i in range(len(valid)) if i not in set(kept)]
            entry |= {
                "kept_node_ids": [node_ids[i] for i in kept],
                "excluded_node_ids": excluded,
                "scores": dict(zip(node_ids, selection.scores.tolist(), strict=True)),
            }
            if metrics is None:
                metrics = MetricRecord()
            metrics["aggkit-num-excluded"] = len(excluded)
            metrics["aggkit-excluded-node-ids"] = excluded
            if excluded:
                log(INFO, "aggkit %r excluded nodes %s in round %d", rule, excluded, server_round)
        self.history.append(entry)
        return arrays, metrics

    # -----------------------------------------------------------------------------------------

    def _skip(
        self, server_round: int, received: list[Message], invalid: dict[int, str], why: str
    ) -> tuple[None, MetricRecord | None]:
        """Keep the current model this round: warn, record why, report the faulty replies."""
        log(WARNING, "aggkit %r kept the current model in round %d: %s", self.rule, server_round, why)
        node_ids = [int(m.metadata.src_node_id) for m in received]
        self.history.append({"round": server_round, "node_ids": node_ids, "invalid": invalid, "skipped": why})
        if not invalid:
            return None, None
        return None, MetricRecord(
            {"aggkit-num-invalid": len(invalid), "aggkit-invalid-node-ids": list(invalid)}
        )

    def _screen(self, replies: list[Message]) -> tuple[list[Message], dict[int, str]]:
        """The replies that fit this round's model, and why each other one does not.

        The model is the one sent in ``configure_train`` (keys, shapes, dtypes), or, before any
        ``configure_train``, the structure most replies share. A reply must hold one array
        record of that structure and a finite, non-negative ``weighted_by_key`` metric; under
        ``nonfinite="raise"`` its float arrays must be finite.
        """
        invalid: dict[int, str] = {}
        shaped: list[tuple[Message, _Signature]] = []
        for m in replies:
            node, c = int(m.metadata.src_node_id), m.content
            try:
                if len(c.array_records) != 1:
                    raise ValueError(f"{len(c.array_records)} array records, expected 1")
                if not c.metric_records:
                    raise ValueError("no metric record")
                _weight(c, self.weighted_by_key)
                rec = next(iter(c.array_records.values()))
                shaped.append((m, {k: (tuple(a.shape), np.dtype(a.dtype)) for k, a in rec.items()}))
            except (ValueError, TypeError, KeyError) as e:  # AggkitError is a ValueError
                invalid[node] = str(e) if str(e) else type(e).__name__
        reference = self._reference
        if reference is None and shaped:
            counts = Counter(_key(sig) for _, sig in shaped)
            top = max(counts.values())
            reference = next(sig for _, sig in shaped if counts[_key(sig)] == top)
        check_finite = getattr(self.rule, "nonfinite", None) == "raise"
        valid = []
        for m, sig in shaped:
            why = _mismatch(sig, reference or sig)
            if why is None and check_finite:
                rec = next(iter(m.content.array_records.values()))
                bad = [
                    k
                    for k, a in rec.items()
                    if np.dtype(a.dtype).kind == "f" and not np.isfinite(a.numpy()).all()
                ]
                if bad:
                    why = f"non-finite values in {bad} (the rule has nonfinite='raise')"
            if why is None:
                valid.append(m)
            else:
                invalid[int(m.metadata.src_node_id)] = why
        return valid, invalid

    def _base(self, key: str) -> np.ndarray | None:
        return self._global[key] if self.on_updates and self._global is not None else None

    def _round_rule(self, n: int) -> Rule:
        """The rule for a round of ``n`` valid replies: FedTrimmedAvg's ``beta`` trims int(beta n)."""
        if self.beta is None:
            return self.rule
        return TrimmedMean(f=int(self.beta * n), nonfinite=getattr(self.rule, "nonfinite", "robust"))

    def _per_key(self, rule: Rule, records: list[ArrayRecord], keys: list[str], weights: Any) -> ArrayRecord:
        out = ArrayRecord()
        for key in keys:
            layers = [r[key].numpy() for r in records]
            base = self._base(key)
            if layers[0].dtype.kind != "f":
                out[key] = Array(lower_median(layers))
                continue
            if base is not None:
                layers = [a - base.astype(a.dtype, copy=False) for a in layers]
            y, _ = rule.aggregate(layers, weights=weights)
            if base is not None:
                y = (base.astype(y.dtype, copy=False) + y).astype(layers[0].dtype, copy=False)
            out[key] = Array(np.ascontiguousarray(y))
        return out

    def _reference_row(
        self, floats: list[str], shapes: dict[str, tuple[int, ...]], offsets: Any, server_round: int
    ) -> np.ndarray | None:
        """The server's own update from ``reference_fn``, flattened as the clients' rows are.

        A mistake in it is the server's own: it is raised, not taken for a faulty round.
        """
        if self.reference_fn is None or self._global is None:
            return None
        # copies: a function that trains on them in place must not move the next global model
        given = self.reference_fn({k: v.copy() for k, v in self._global.items()}, server_round)
        row = np.empty(int(offsets[-1]), dtype=np.float64)
        for k, lo, hi in zip(floats, offsets[:-1], offsets[1:], strict=True):
            if k not in given or np.shape(given[k]) != shapes[k]:
                raise TypeError(f"reference_fn: array {k!r} must have the model's shape {shapes[k]}")
            row[lo:hi] = np.asarray(given[k], dtype=np.float64).reshape(-1)
        return row

    def _whole_model(
        self,
        records: list[ArrayRecord],
        keys: list[str],
        weights: Any,
        node_ids: list[int],
        server_round: int,
    ) -> tuple[ArrayRecord, Any]:
        first = {k: records[0][k] for k in keys}
        dtypes = {k: np.dtype(first[k].dtype) for k in keys}
        shapes = {k: tuple(first[k].shape) for k in keys}
        floats = [k for k in keys if dtypes[k].kind == "f"]
        wide = any(dtypes[k].itemsize == 8 for k in floats)
        buf_dtype = np.float64 if wide else np.float32
        sizes = [int(np.prod(shapes[k])) for k in floats]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        n, d = len(records), int(offsets[-1])
        # The one (n, d) copy, in memory or in a file; one row is built at a time.
        with UpdateBuffer(d, buf_dtype, n_max=n, spill_dir=self.spill_dir) as buf:
            row: npt.NDArray[np.floating[Any]] = np.empty(d, dtype=buf_dtype)
            for i, r in enumerate(records):
                for k, lo, hi in zip(floats, offsets[:-1], offsets[1:], strict=True):
                    a = r[k].numpy()
                    if a.shape != shapes[k] or a.dtype != dtypes[k]:
                        raise InvalidParameterError(
                            f"array {k!r}: client {i} sent shape {a.shape} dtype {a.dtype}, client 0 "
                            f"sent shape {shapes[k]} dtype {dtypes[k]}"
                        )
                    seg = row[lo:hi]
                    seg[...] = a.reshape(-1)
                    base = self._base(k)
                    if base is not None:
                        seg -= base.reshape(-1)
                buf.append(row, weight=None if weights is None else weights[i])
            reference = self._reference_row(floats, shapes, offsets, server_round)
            # node ids name the clients for rules that keep a state per client (FoolsGold)
            y, selection = buf.aggregate(
                self.rounds, return_selection=True, reference=reference, ids=node_ids
            )
        out = ArrayRecord()
        for k in keys:
            if dtypes[k].kind != "f":
                out[k] = Array(lower_median([r[k].numpy() for r in records]))
                continue
            j = floats.index(k)
            part = y[offsets[j] : offsets[j + 1]].reshape(shapes[k])
            base = self._base(k)
            if base is not None:
                part = np.add(base.astype(buf_dtype), part)
            out[k] = Array(np.ascontiguousarray(part.astype(dtypes[k], copy=False)))
        return out, selection


def _weight(content: Any, key: str) -> float:
    record = next(iter(content.metric_records.values()))
    if key not in record:
        raise InvalidParameterError(f"the weight metric {key!r} is missing")
    value = record[key]
    bad = InvalidParameterError(f"the weight metric {key!r} must be a finite number >= 0, got {value!r}")
    if isinstance(value, list | bool | np.bool_):
        raise bad
    try:  # a client's own number: an int beyond float64 is as faulty as a negative one
        v = as_float(value, key, "weight metric")
    except (TypeError, InvalidParameterError):
        raise bad from None
    if not math.isfinite(v) or v < 0:
        raise bad
    return v


#: The structure of a model: each key's shape and dtype.
_Signature = dict[str, tuple[tuple[int, ...], np.dtype[Any]]]


def _key(sig: _Signature) -> tuple[tuple[str, tuple[int, ...], str], ...]:
    return tuple(sorted((k, shape, dt.str) for k, (shape, dt) in sig.items()))


def _mismatch(sig: _Signature, reference: _Signature) -> str | None:
    """Why a reply of structure ``sig`` does not fit ``reference`` (``None`` if it does)."""
    missing = [k for k in reference if k not in sig]
    extra = [k for k in sig if k not in reference]
    if missing or extra:
        return f"keys differ from the model's: missing {missing}, extra {extra}"
    for k, (shape, dt) in reference.items():
        if sig[k] != (shape, dt):
            return f"array {k!r} has shape {sig[k][0]} dtype {sig[k][1]}, the model's is {shape} {dt}"
    return None


#: Flower's names for the parameters of the rules its strategies share with aggkit (its Krum,
#: MultiKrum and Bulyan): Flower name -> aggkit name. FedTrimmedAvg's ``beta`` is a fraction,
#: resolved per round (:func:`_split_params`).
FLOWER_NAMES = {"num_malicious_nodes": "f", "num_nodes_to_select": "m"}
_FEDAVG_NAMES = tuple(p for p in inspect.signature(FedAvg.__init__).parameters if p != "self")


def _split_params(rule: str | Rule, kwargs: dict[str, Any]) -> tuple[dict[str, Any], float | None]:
    """Take the rule's parameters (aggkit's or Flower's names) out of ``kwargs``.

    Returns them in aggkit's names, and FedTrimmedAvg's ``beta`` if given; what is left in
    ``kwargs`` is FedAvg's. A name that none of them takes is refused with the accepted ones.
    """
    spec = rule if isinstance(rule, str) else None
    if spec is not None:
        names = spec_param_names(spec) or ()
    else:  # a rule object (anything else is refused by aggkit.rule afterwards)
        names = param_names(type(rule)) if isinstance(rule, Rule) else ()
    taken: dict[str, Any] = {}
    beta = None
    for key in list(kwargs):
        target = FLOWER_NAMES.get(key, key)
        if key == "beta" and spec == "trimmed_mean":
            value = as_float(kwargs.pop(key), "beta", "RobustStrategy")
            if not 0.0 <= value < 0.5:
                raise InvalidParameterError(f"RobustStrategy: beta must be in [0, 0.5), got beta={value}")
            beta = value
        elif target in names or (spec is None and key in FLOWER_NAMES):
            if target in taken:
                raise InvalidParameterError(
                    f"RobustStrategy: {key!r} and {target!r} name the same parameter; give one"
                )
            taken[target] = kwargs.pop(key)
        elif key not in _FEDAVG_NAMES and not (spec is not None and spec_param_names(spec) is None):
            # (an unknown rule name is left to make_rule, whose message lists the rules)
            flower = [k for k, v in FLOWER_NAMES.items() if v in names]
            flower += ["beta"] if spec == "trimmed_mean" else []
            raise InvalidParameterError(
                f"RobustStrategy: unknown parameter {key!r} for {rule!r}; the rule takes "
                f"{', '.join(names) or 'none'}"
                + (f" (Flower's names: {', '.join(flower)})" if flower else "")
                + f"; FedAvg takes {', '.join(_FEDAVG_NAMES)}"
            )
    if beta is not None and "f" in taken:
        raise InvalidParameterError(
            "RobustStrategy: give f (inputs trimmed per side) or beta (a fraction), not both"
        )
    if beta is not None:
        taken["f"] = 0  # a placeholder: each round trims int(beta * n) per side
    return taken, beta

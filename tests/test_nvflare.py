"""aggkit.nvflare.RobustAggregator: NVFlare's aggregator API driven with FLModels built by hand,
and NVFlare's simulator end to end (tests/nvflare_sim_job.py, in a subprocess)."""

from __future__ import annotations

import json
import math

import aggkit
import numpy as np
import pytest

pytest.importorskip("nvflare")
from aggkit.nvflare import AggkitMetaKey, RobustAggregator
from aggkit.registry import from_spec, to_spec
from nvflare.apis.event_type import EventType
from nvflare.apis.fl_constant import FLMetaKey, ReservedKey
from nvflare.apis.fl_context import FLContext
from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
from nvflare.app_common.abstract.model import make_model_learnable
from nvflare.app_common.app_constant import AppConstants
from nvflare.app_common.app_event_type import AppEventType
from nvflare.app_common.utils.fl_model_utils import FLModelUtils

STEPS = FLMetaKey.NUM_STEPS_CURRENT_ROUND

GLOBAL = {
    "w": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4),
    "b": np.zeros(4, dtype=np.float32),
    "count": np.array(10, dtype=np.int64),
}
FLOATS = ("w", "b")


def updates(rng, honest=6, byzantine=2):
    """Honest clients' updates, and Byzantine ones at -100 times the first honest update."""
    out = []
    for i in range(honest):
        out.append(
            {
                "w": (0.01 * rng.standard_normal((3, 4))).astype(np.float32),
                "b": np.full(4, 0.1 * (i + 1), np.float32),
                "count": np.array(i + 1, np.int64),
            }
        )
    for _ in range(byzantine):
        out.append({"w": -100 * out[0]["w"], "b": -100 * out[0]["b"], "count": np.array(10**6, np.int64)})
    return out


def as_models(ups):
    return [{k: GLOBAL[k] + u[k] if k in FLOATS else u[k] for k in u} for u in ups]


def diffs(models):
    """The FULL results minus the global model: the updates the aggregator computes (float32)."""
    return [{k: m[k] - GLOBAL[k] for k in FLOATS} for m in models]


def to_torch(params):
    import torch

    return {k: torch.from_numpy(np.array(v)) for k, v in params.items()}


def flmodel(i, params, steps=None, params_type=ParamsType.FULL, metrics=None, name=None):
    meta = {"client_name": name or f"site-{i + 1}"}
    if steps is not None:
        meta[STEPS] = steps
    return FLModel(params_type=params_type, params=params, meta=meta, metrics=metrics)


def run_round(agg, models, base=None):
    """What FedAvg does with a custom aggregator: reset, accept each result, aggregate."""
    agg.reset_stats()
    if base is not None:
        agg.set_global_model(base)
    for m in models:
        agg.accept_model(m)
    return agg.aggregate_model()


def numpy_params(result):
    return {k: v.numpy() if hasattr(v, "numpy") else v for k, v in result.params.items()}


def expected(rule, ups, weights=None):
    """The rule on the same updates: key by key for coordinate-wise rules, flattened otherwise."""
    r = aggkit.rule(rule) if isinstance(rule, str) else rule
    if r.coordinate_wise:
        return {k: r.aggregate([u[k] for u in ups], weights=weights)[0] for k in FLOATS}, None
    flat = np.stack([np.concatenate([u[k].ravel() for k in FLOATS]) for u in ups])
    y, selection = r.aggregate(flat, weights=weights)
    return {"w": y[:12].reshape(3, 4), "b": y[12:]}, selection


RULES = [
    ("median", {}),
    ("trimmed_mean", {"f": 2}),
    ("mean", {}),
    ("krum", {"f": 2}),
    ("multi_krum", {"f": 2}),
    ("geometric_median", {}),
    ("nnm>trimmed_mean", {"f": 2}),
]


@pytest.mark.parametrize("framework", ["numpy", "torch"])
@pytest.mark.parametrize("params_type", [ParamsType.FULL, ParamsType.DIFF])
@pytest.mark.parametrize(("rule", "kwargs"), RULES)
def test_matches_the_rule_bit_for_bit(rule, kwargs, params_type, framework):
    if framework == "torch":
        pytest.importorskip("torch")
    ups = updates(np.random.default_rng(0))
    sent = as_models(ups) if params_type == ParamsType.FULL else ups
    steps = [10.0 * (i + 1) for i in range(len(ups))]
    convert = to_torch if framework == "torch" else dict
    agg = RobustAggregator(rule, **kwargs)
    models = [flmodel(i, convert(p), steps[i], params_type) for i, p in enumerate(sent)]
    result = run_round(agg, models, base=convert(GLOBAL))
    r = aggkit.rule(rule, **kwargs)
    weighted = r.name in ("mean", "multi_krum", "geometric_median")
    # What the aggregator sees: the results minus the global model (FULL), or the results (DIFF).
    seen = diffs(sent) if params_type == ParamsType.FULL else sent
    want, selection = expected(r, seen, steps if weighted else None)
    got = numpy_params(result)
    assert result.params_type == params_type
    for k in FLOATS:
        target = GLOBAL[k] + want[k] if params_type == ParamsType.FULL else want[k]
        np.testing.assert_array_equal(got[k], target, err_msg=k)
        assert got[k].dtype == np.float32
    # The int key: the lower median of the values sent (8 clients: the 4th of 1..6, 10**6, 10**6).
    assert got["count"].tolist() == 4
    assert list(got) == ["w", "b", "count"]
    if framework == "torch":
        import torch

        assert all(isinstance(v, torch.Tensor) for v in result.params.values())
        assert result.params["count"].dtype == torch.int64
    else:
        assert all(isinstance(v, np.ndarray) for v in result.params.values())
    meta = result.meta
    assert meta[AggkitMetaKey.ON] == "updates"
    assert meta[AggkitMetaKey.CLIENTS] == [f"site-{i + 1}" for i in range(8)]
    assert meta[AggkitMetaKey.INVALID_CLIENTS] == {}
    assert agg.history[-1]["weights"] == (steps if weighted else None)
    if selection is not None:
        kept = [f"site-{i + 1}" for i in selection.indices.tolist()]
        assert meta[AggkitMetaKey.KEPT_CLIENTS] == kept
        assert {"site-7", "site-8"} <= set(meta[AggkitMetaKey.EXCLUDED_CLIENTS])
        assert meta[AggkitMetaKey.NUM_EXCLUDED] == 8 - len(kept)
        assert list(meta[AggkitMetaKey.SCORES].values()) == selection.scores.tolist()
    else:
        assert AggkitMetaKey.EXCLUDED_CLIENTS not in meta
    if rule != "mean":  # the 2 Byzantine clients at -100x are outvoted (honest b: 0.1 to 0.6)
        assert np.abs(got["b"] - (GLOBAL["b"] if params_type == ParamsType.FULL else 0) - 0.35).max() <= 0.25


@pytest.mark.parametrize("spill", [False, True])
def test_multi_krum_excludes_the_byzantine_clients_and_reports_them(spill, tmp_path):
    ups = updates(np.random.default_rng(1))
    agg = RobustAggregator(aggkit.MultiKrum(f=2), spill_dir=tmp_path if spill else None)
    result = run_round(agg, [flmodel(i, p, 10) for i, p in enumerate(as_models(ups))], base=GLOBAL)
    assert result.meta[AggkitMetaKey.EXCLUDED_CLIENTS] == ["site-7", "site-8"]
    assert result.meta[AggkitMetaKey.NUM_EXCLUDED] == 2
    assert sorted(result.meta[AggkitMetaKey.KEPT_CLIENTS]) == [f"site-{i}" for i in range(1, 7)]
    assert agg.history[-1]["excluded"] == ["site-7", "site-8"]
    np.testing.assert_allclose(result.params["b"], GLOBAL["b"] + 0.35, rtol=1e-5)
    assert list(tmp_path.iterdir()) == []  # the round's spill file is gone


def test_full_models_without_a_global_model_are_aggregated_as_models():
    ups = updates(np.random.default_rng(2))
    models = as_models(ups)
    for agg, base in (
        (RobustAggregator("multi_krum", f=2), None),
        (RobustAggregator("krum", f=2, on_updates=False), GLOBAL),
    ):
        result = run_round(agg, [flmodel(i, p, 1) for i, p in enumerate(models)], base=base)
        assert result.params_type == ParamsType.FULL
        assert result.meta[AggkitMetaKey.ON] == "models"
        want, _ = expected(agg.rule, models, [1.0] * 8 if agg.rule.name == "multi_krum" else None)
        for k in FLOATS:
            np.testing.assert_array_equal(result.params[k], want[k])


def test_the_global_model_is_found_in_the_events_and_the_context():
    ups = updates(np.random.default_rng(3))
    models = [flmodel(i, p, 1) for i, p in enumerate(as_models(ups))]
    want, _ = expected("median", diffs(as_models(ups)))
    # What the controller sends, before each client's task (AppEventType.BEFORE_TRAIN_TASK).
    agg = RobustAggregator("median")
    ctx = FLContext()
    agg.handle_event(EventType.START_RUN, ctx)
    ctx.set_prop(AppConstants.TRAIN_SHAREABLE, FLModelUtils.to_shareable(FLModel(params=dict(GLOBAL))))
    agg.reset_stats()
    agg.handle_event(AppEventType.BEFORE_TRAIN_TASK, ctx)
    for m in models:
        agg.accept_model(m)
    result = agg.aggregate_model()
    assert result.meta[AggkitMetaKey.ON] == "updates"
    np.testing.assert_array_equal(result.params["w"], GLOBAL["w"] + want["w"])
    # Used for one round only; then the FLContext's GLOBAL_MODEL (ScatterAndGather, FedAvg).
    assert run_round(agg, models).meta[AggkitMetaKey.ON] == "models"
    ctx.set_prop(AppConstants.GLOBAL_MODEL, make_model_learnable(dict(GLOBAL), {}), private=True, sticky=True)
    result = run_round(agg, models)
    assert result.meta[AggkitMetaKey.ON] == "updates"
    np.testing.assert_array_equal(result.params["w"], GLOBAL["w"] + want["w"])


def test_scatter_and_gather_entry_names_clients_by_their_identity():
    ups = updates(np.random.default_rng(4), honest=4, byzantine=1)
    agg = RobustAggregator("krum", f=1)
    agg.set_global_model(GLOBAL)
    ctx = FLContext()
    for i, p in enumerate(as_models(ups)):
        shareable = FLModelUtils.to_shareable(FLModel(params=p, meta={STEPS: 1}))
        shareable.set_peer_props({ReservedKey.IDENTITY_NAME: f"client-{i}"})
        assert agg.accept(shareable, ctx) is True
    assert agg.accept(FLModelUtils.to_shareable(FLModel(params={"w": "x"})), ctx) is False
    out = FLModelUtils.from_shareable(agg.aggregate(ctx))
    assert "client-4" in out.meta[AggkitMetaKey.EXCLUDED_CLIENTS]
    assert list(out.meta[AggkitMetaKey.INVALID_CLIENTS]) == ["#5"]


def test_weights_follow_nvflare_and_order_statistics_stay_unweighted():
    ups = updates(np.random.default_rng(5), honest=3, byzantine=0)
    steps = [1, 1, 98]
    models = [flmodel(i, p, steps[i]) for i, p in enumerate(as_models(ups))]
    b = np.stack([u["b"] for u in ups])
    result = run_round(RobustAggregator("mean"), models, base=GLOBAL)
    np.testing.assert_array_equal(result.params["b"], GLOBAL["b"] + aggkit.mean(b, weights=steps))
    result = run_round(RobustAggregator("median"), models, base=GLOBAL)
    np.testing.assert_array_equal(result.params["b"], GLOBAL["b"] + aggkit.median(b))
    result = run_round(RobustAggregator("median", weighted=True), models, base=GLOBAL)
    np.testing.assert_array_equal(result.params["b"], GLOBAL["b"] + aggkit.median(b, weights=steps))
    result = run_round(RobustAggregator("mean", weighted=False), models, base=GLOBAL)
    np.testing.assert_array_equal(result.params["b"], GLOBAL["b"] + aggkit.mean(b))
    # A missing step count counts 1 (NVFlare's FedAvg); aggregation_weights multiply by client.
    models = [flmodel(i, p) for i, p in enumerate(as_models(ups))]
    agg = RobustAggregator("mean", aggregation_weights={"site-3": 98})
    result = run_round(agg, models, base=GLOBAL)
    np.testing.assert_array_equal(result.params["b"], GLOBAL["b"] + aggkit.mean(b, weights=steps))
    assert agg.history[-1]["weights"] == [1.0, 1.0, 98.0]


def test_metrics_average_the_clients_the_rule_kept():
    ups = updates(np.random.default_rng(6), honest=5, byzantine=2)
    models = [
        flmodel(i, p, i + 1, metrics={"loss": float(i), "note": "text"}) for i, p in enumerate(as_models(ups))
    ]
    agg = RobustAggregator("multi_krum", f=2)
    result = run_round(agg, models, base=GLOBAL)
    kept = [int(n.split("-")[1]) - 1 for n in result.meta[AggkitMetaKey.KEPT_CLIENTS]]
    assert 5 not in kept
    assert 6 not in kept
    assert result.metrics["loss"] == pytest.approx(sum(i * (i + 1) for i in kept) / sum(i + 1 for i in kept))
    models[0].metrics = None  # one kept client without metrics: none for the round, as in FedAvg
    assert run_round(agg, models, base=GLOBAL).metrics is None


def _faulty(model, ups):
    """One faulty result per way a client can break a round, built from an honest model."""
    import torch

    m = model
    return {
        "shape (4,) for (3, 4)": ({**m, "w": m["w"][0]}, 10),
        "scalar for (3, 4)": ({**m, "w": np.float32(1.0)}, 10),
        "float64 for float32": ({**m, "w": m["w"].astype(np.float64)}, 10),
        "float for an int key": ({**m, "count": np.array(12.5)}, 10),
        "missing key": ({k: v for k, v in m.items() if k != "b"}, 10),
        "extra key": ({**m, "extra": np.ones(2, np.float32)}, 10),
        "100000 extra keys": ({**m, **{f"k{i}": np.float32(i) for i in range(10**5)}}, 10),
        "huge dims": ({**m, "w": np.broadcast_to(np.float32(1), (2**40, 3, 4))}, 10),
        "huge tensor dims": ({**m, "w": torch.zeros(1).expand(2**40)}, 10),
        "a list": ({**m, "w": m["w"].tolist()}, 10),
        "a string": ({**m, "w": "weights"}, 10),
        "None": ({**m, "w": None}, 10),
        "object array": ({**m, "w": np.array([object()] * 12).reshape(3, 4)}, 10),
        "complex": ({**m, "w": m["w"].astype(np.complex64)}, 10),
        "masked": ({**m, "w": np.ma.masked_array(m["w"], mask=True)}, 10),
        "sparse tensor": ({**m, "w": torch.from_numpy(m["w"]).to_sparse()}, 10),
        "params a list": (list(m.values()), 10),
        "params an array": (m["w"], 10),
        "params empty": ({}, 10),
        "steps negative": (m, -5),
        "steps nan": (m, float("nan")),
        "steps inf": (m, float("inf")),
        "steps a bool": (m, True),
        "steps a string": (m, "10"),
        "steps an int beyond float64": (m, 10**400),
        "steps a list": (m, [10]),
    }


@pytest.mark.parametrize(("rule", "kwargs"), [("median", {}), ("krum", {"f": 1}), ("mean", {})])
def test_a_faulty_client_is_left_out_and_reported_never_raised(rule, kwargs):
    pytest.importorskip("torch")
    ups = updates(np.random.default_rng(7), honest=5, byzantine=0)
    models = as_models(ups)
    honest = [flmodel(i, p, 10) for i, p in enumerate(models)]
    want = numpy_params(run_round(RobustAggregator(rule, **kwargs), honest, base=GLOBAL))
    for why, (params, steps) in _faulty(models[0], ups).items():
        agg = RobustAggregator(rule, **kwargs)
        bad = FLModel(params_type=ParamsType.FULL, params={"x": 1}, meta={"client_name": "byz", STEPS: steps})
        bad.params = params  # FLModel checks little; a client's params arrive as they are
        result = run_round(agg, [*honest[:2], bad, *honest[2:]], base=GLOBAL)
        got = numpy_params(result)
        for k in GLOBAL:
            np.testing.assert_array_equal(got[k], want[k], err_msg=why)
        assert list(result.meta[AggkitMetaKey.INVALID_CLIENTS]) == ["byz"], why
        assert result.meta[AggkitMetaKey.NUM_INVALID] == 1, why
        assert len(result.meta[AggkitMetaKey.INVALID_CLIENTS]["byz"]) < 600, why  # bounded reasons
        assert agg.history[-1]["invalid"] == result.meta[AggkitMetaKey.INVALID_CLIENTS]


def test_other_faulty_results_never_raise():
    ups = updates(np.random.default_rng(8), honest=5, byzantine=0)
    models = as_models(ups)
    honest = [flmodel(i, p, 1) for i, p in enumerate(models)]
    want = numpy_params(run_round(RobustAggregator("median"), honest, base=GLOBAL))
    weird_type = flmodel(7, models[0], 1, name="weird-type")
    weird_type.params_type = "WEIGHTS"
    cases = {
        "not an FLModel": models[0],
        "params_type": weird_type,
        "duplicate": flmodel(0, models[1], 1),
        "minority DIFF": flmodel(9, ups[0], 1, ParamsType.DIFF, name="diff"),
    }
    agg = RobustAggregator("median")
    result = run_round(agg, [*honest, *cases.values()], base=GLOBAL)
    for k in GLOBAL:
        np.testing.assert_array_equal(numpy_params(result)[k], want[k])
    invalid = result.meta[AggkitMetaKey.INVALID_CLIENTS]
    assert sorted(invalid) == sorted(["#5", "weird-type", "site-1 (2)", "diff"])
    assert "second result" in invalid["site-1 (2)"]
    assert "the round's is FULL" in invalid["diff"]
    assert result.meta[AggkitMetaKey.CLIENTS] == [f"site-{i + 1}" for i in range(5)]
    # A result without a client name (outside a job) is named by its arrival in the round.
    anonymous = [FLModel(params=p) for p in models]
    anonymous[1].meta = None
    result = run_round(agg, anonymous, base=GLOBAL)
    assert result.meta[AggkitMetaKey.CLIENTS] == ["#0", "#1", "#2", "#3", "#4"]


def test_mixed_params_types_the_majority_decides():
    ups = updates(np.random.default_rng(9), honest=5, byzantine=0)
    models = [flmodel(i, u, 1, ParamsType.DIFF) for i, u in enumerate(ups)]
    models.append(flmodel(5, as_models(ups)[0], 1, ParamsType.FULL))
    result = run_round(RobustAggregator("median"), models, base=GLOBAL)
    assert result.params_type == ParamsType.DIFF
    np.testing.assert_array_equal(result.params["w"], aggkit.median(np.stack([u["w"] for u in ups])))
    assert list(result.meta[AggkitMetaKey.INVALID_CLIENTS]) == ["site-6"]


def test_diff_results_may_hold_fewer_keys_than_the_global_model():
    ups = updates(np.random.default_rng(10), honest=5, byzantine=0)
    partial = [{"w": u["w"]} for u in ups]
    bad_shape = {"w": np.zeros((4, 3), np.float32)}
    models = [flmodel(i, u, 1, ParamsType.DIFF) for i, u in enumerate([*partial, bad_shape])]
    result = run_round(RobustAggregator("median"), models, base=GLOBAL)
    assert list(result.params) == ["w"]
    assert list(result.meta[AggkitMetaKey.INVALID_CLIENTS]) == ["site-6"]
    # Without a global model the structure most results share is the reference.
    result = run_round(RobustAggregator("median"), models[::-1])
    assert list(result.meta[AggkitMetaKey.INVALID_CLIENTS]) == ["site-6"]


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, 1e308])
def test_non_finite_and_huge_values_are_the_rules_business(value):
    ups = updates(np.random.default_rng(11), honest=6, byzantine=0)
    models = as_models(ups)
    f64 = {k: v.astype(np.float64) if k in FLOATS else v for k, v in GLOBAL.items()}
    bad = [{k: np.full_like(f64[k], value) if k in FLOATS else v for k, v in models[0].items()}] * 2
    sent = [{k: v.astype(np.float64) if k in FLOATS else v for k, v in m.items()} for m in models] + bad
    for rule, kwargs in [("median", {}), ("trimmed_mean", {"f": 2}), ("krum", {"f": 2}), ("mean", {})]:
        agg = RobustAggregator(rule, **kwargs)
        result = run_round(agg, [flmodel(i, p, 1) for i, p in enumerate(sent)], base=f64)
        assert AggkitMetaKey.SKIPPED not in result.meta, rule
        b = result.params["b"]
        assert np.isfinite(b).all(), rule
        if rule != "mean" or not math.isfinite(value):  # the robust mean drops non-finite inputs
            np.testing.assert_allclose(b, 0.35, atol=0.2, err_msg=rule)


def test_nonfinite_raise_makes_a_nan_client_faulty_and_robust_refusals_keep_the_model():
    ups = updates(np.random.default_rng(12), honest=5, byzantine=0)
    models = as_models(ups)
    nan_model = {**models[0], "w": np.full((3, 4), np.nan, np.float32)}
    honest = [flmodel(i, p, 1) for i, p in enumerate(models)]
    agg = RobustAggregator("trimmed_mean", f=1, nonfinite="raise")
    result = run_round(agg, [*honest, flmodel(9, nan_model, 1, name="nan")], base=GLOBAL)
    assert "non-finite" in result.meta[AggkitMetaKey.INVALID_CLIENTS]["nan"]
    assert result.params_type == ParamsType.FULL
    # "robust" Krum with more than f NaN clients: the rule refuses, the model is kept.
    agg = RobustAggregator("krum", f=1)
    many = honest + [flmodel(10 + i, nan_model, 1, name=f"nan-{i}") for i in range(3)]
    result = run_round(agg, many, base=GLOBAL)
    assert result.params_type == ParamsType.DIFF
    assert result.params == {}
    assert "non-finite" in result.meta[AggkitMetaKey.SKIPPED]
    assert "non-finite" in agg.history[-1]["skipped"]


def test_too_few_valid_results_keep_the_current_model():
    ups = updates(np.random.default_rng(13), honest=4, byzantine=0)
    models = [flmodel(i, p, 1) for i, p in enumerate(as_models(ups))]
    models.append(flmodel(4, {"w": GLOBAL["w"]}, 1))
    agg = RobustAggregator("krum", f=1)  # needs 5
    result = run_round(agg, models, base=GLOBAL)
    assert result.params_type == ParamsType.DIFF
    assert result.params == {}
    assert result.meta[AggkitMetaKey.SKIPPED] == "4 valid results, the rule needs 5"
    assert list(result.meta[AggkitMetaKey.INVALID_CLIENTS]) == ["site-5"]
    # FedAvg applies the empty DIFF as "no change".
    current = FLModel(params_type=ParamsType.FULL, params=dict(GLOBAL))
    updated = FLModelUtils.update_model(current, result)
    assert all(updated.params[k] is GLOBAL[k] for k in GLOBAL)
    assert run_round(agg, []).meta[AggkitMetaKey.SKIPPED] == "no valid results"


def test_centered_clipping_carries_its_centre_across_rounds():
    ups = updates(np.random.default_rng(14), honest=5, byzantine=1)
    agg = RobustAggregator("centered_clipping", tau=0.05, iters=1)
    state = aggkit.CenteredClippingState(tau=0.05, iters=1)
    flat = np.stack([np.concatenate([u[k].ravel() for k in FLOATS]) for u in diffs(as_models(ups))])
    models = [flmodel(i, p, 1) for i, p in enumerate(as_models(ups))]
    for _ in range(3):
        result = run_round(agg, models, base=GLOBAL)
        y = state(flat)
        np.testing.assert_array_equal(result.params["w"], GLOBAL["w"] + y[:12].reshape(3, 4))
    assert np.abs(y).max() > np.abs(aggkit.centered_clipping(flat, tau=0.05)).max()  # not from zero
    agg.rounds.reset()
    result = run_round(agg, models, base=GLOBAL)
    y0 = aggkit.centered_clipping(flat, tau=0.05)
    np.testing.assert_array_equal(result.params["w"], GLOBAL["w"] + y0[:12].reshape(3, 4))


def test_bfloat16_tensors_are_aggregated_in_float32_and_rounded_once():
    torch = pytest.importorskip("torch")
    ups = updates(np.random.default_rng(15), honest=5, byzantine=0)
    sent = [{k: torch.from_numpy(u[k]).to(torch.bfloat16) for k in FLOATS} for u in ups]
    result = run_round(
        RobustAggregator("median"), [flmodel(i, p, 1, ParamsType.DIFF) for i, p in enumerate(sent)]
    )
    for k in FLOATS:
        widened = np.stack([p[k].float().numpy() for p in sent])
        want = torch.from_numpy(aggkit.median(widened)).to(torch.bfloat16)
        assert result.params[k].dtype == torch.bfloat16
        assert torch.equal(result.params[k], want)
        assert torch.equal(result.params[k], aggkit.median(torch.stack([p[k] for p in sent])))


@pytest.mark.parametrize(("rule", "kwargs"), [("median", {}), ("multi_krum", {"f": 1})])
def test_zero_dim_arrays_keep_their_shape(rule, kwargs):
    base = {"s": np.array(1.0, np.float32), "n": np.array(3, np.int64), "v": np.zeros(2, np.float64)}
    models = [
        {"s": np.array(1.0 + i, np.float32), "n": np.array(i), "v": np.full(2, i, np.float64)}
        for i in range(5)
    ]
    result = run_round(
        RobustAggregator(rule, **kwargs), [flmodel(i, p, 1) for i, p in enumerate(models)], base=base
    )
    for k in base:
        assert result.params[k].shape == base[k].shape, k
        assert result.params[k].dtype == base[k].dtype, k
    assert result.params["n"].tolist() == 2


def test_lazy_references_are_materialized():
    """NVFlare's tensor disk offload hands custom aggregators objects with ``materialize()``."""

    class Lazy:
        def __init__(self, value):
            self.value = value

        def materialize(self):
            return self.value

    ups = updates(np.random.default_rng(17), honest=5, byzantine=0)
    models = as_models(ups)
    lazy = [{k: Lazy(v) for k, v in m.items()} for m in models]
    got = run_round(RobustAggregator("median"), [flmodel(i, p, 1) for i, p in enumerate(lazy)], base=GLOBAL)
    want = run_round(
        RobustAggregator("median"), [flmodel(i, p, 1) for i, p in enumerate(models)], base=GLOBAL
    )
    for k in GLOBAL:
        np.testing.assert_array_equal(got.params[k], want.params[k])


def test_inputs_are_not_modified():
    ups = updates(np.random.default_rng(16))
    models = as_models(ups)
    copies = [{k: v.copy() for k, v in m.items()} for m in models]
    base = {k: v.copy() for k, v in GLOBAL.items()}
    for rule in ("median", "multi_krum"):
        run_round(
            RobustAggregator(rule, f=2) if rule != "median" else RobustAggregator(rule),
            [flmodel(i, p, 1) for i, p in enumerate(models)],
            base=base,
        )
    for m, c in zip(models, copies, strict=True):
        for k in m:
            np.testing.assert_array_equal(m[k], c[k])
    for k in GLOBAL:
        np.testing.assert_array_equal(base[k], GLOBAL[k])


def test_constructor_and_job_config(tmp_path):
    agg = RobustAggregator("nnm>trimmed_mean", f=1, weighted=True, aggregation_weights={"site-1": 2})
    assert agg.rule == aggkit.rule("nnm>trimmed_mean", f=1)
    # The JSON of to_spec (what an exported job holds) rebuilds the same rule.
    assert RobustAggregator(to_spec(agg.rule)).rule == agg.rule
    with pytest.raises(aggkit.InvalidParameterError, match="unknown rule"):
        RobustAggregator("nope")
    with pytest.raises(aggkit.InvalidParameterError, match="cannot be applied"):
        RobustAggregator(aggkit.Median(), even="lower")
    with pytest.raises(aggkit.InvalidParameterError, match="cannot be applied"):
        RobustAggregator(to_spec(aggkit.Median()), even="lower")
    with pytest.raises(aggkit.InvalidParameterError, match="aggregation_weights"):
        RobustAggregator("mean", aggregation_weights={"a": -1})
    with pytest.raises(aggkit.InvalidParameterError, match="spill_dir"):
        RobustAggregator("krum", f=1, spill_dir=tmp_path / "missing")
    with pytest.raises(TypeError):
        agg.set_global_model([1, 2])
    # NVFlare exports the aggregator by its constructor arguments; the server rebuilds it.
    from nvflare.app_common.workflows.fedavg import FedAvg
    from nvflare.job_config.api import FedJob

    job = FedJob(name="robust")
    job.set_app_packages(["aggkit"])  # installed on the server: not copied into the job
    job.to_server(FedAvg(num_clients=2, num_rounds=1, aggregator=agg))
    job.export_job(str(tmp_path))
    config = json.loads(
        (tmp_path / "robust" / "app_server" / "config" / "config_fed_server.json").read_text()
    )
    spec = config["workflows"][0]["args"]["aggregator"]
    assert spec["path"] == "aggkit.nvflare.RobustAggregator"
    rebuilt = RobustAggregator(**spec["args"])
    assert rebuilt.rule == agg.rule
    assert rebuilt.weighted is True
    assert rebuilt.aggregation_weights == {"site-1": 2.0}
    assert from_spec(spec["args"]["rule"]) == agg.rule
    assert not (tmp_path / "robust" / "app_server" / "custom").exists()


def _simulate(cmd, log_path, cwd, timeout):
    """Run the simulation script; ``None`` when it finished, else why it was stopped.

    The simulator starts its server and site processes in sessions of their own: on a stop
    they are ended by their ids (psutil, an NVFlare dependency), leaves first.
    """
    import os
    import subprocess
    import time

    import psutil

    env = {k: v for k, v in os.environ.items() if k != "NVFLARE_SIMULATOR_WORKSPACE_ROOT"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline, why = time.monotonic() + timeout, None
    try:
        while proc.poll() is None:
            if time.monotonic() > deadline:
                why = f"no result after {timeout} s"
            elif "Communication error with client" in log_path.read_text(errors="replace"):
                # The simulator lost a site at start-up (seen under load); FedAvg would wait
                # for it forever.
                why = "the simulator lost a site"
            if why:
                break
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            try:
                tree = psutil.Process(proc.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                tree = []
            for p in [*reversed(tree), proc]:
                try:
                    p.kill()
                except psutil.NoSuchProcess:
                    pass
            proc.wait()
            psutil.wait_procs([p for p in tree if p.is_running()], timeout=10)
    return why


@pytest.mark.parametrize(
    ("rule", "params_type"),
    [(aggkit.MultiKrum(f=1), "FULL"), (aggkit.TrimmedMean(f=1), "DIFF")],
    ids=["multi_krum-FULL", "trimmed_mean-DIFF"],
)
def test_nvflare_simulator_end_to_end(rule, params_type, tmp_path):
    """NVFlare's simulator: FedAvg over 5 sites, one Byzantine at -100x, 3 rounds (about 20 s)."""
    import pathlib
    import sys

    pytest.importorskip("psutil")
    script = pathlib.Path(__file__).with_name("nvflare_sim_job.py")
    failures = []
    for attempt in range(3):
        out, log = tmp_path / f"result{attempt}.json", tmp_path / f"log{attempt}.txt"
        cmd = [
            sys.executable,
            str(script),
            to_spec(rule),
            params_type,
            str(tmp_path / f"ws{attempt}"),
            str(out),
        ]
        why = _simulate(cmd, log, tmp_path, timeout=150)
        if why is None:
            break
        failures.append(why)
        if why != "the simulator lost a site":
            break
    assert out.exists(), f"{failures}:\n" + log.read_text(errors="replace")[-3000:]
    data = json.loads(out.read_text())
    # Three halvings of the distance to the target 2.0, despite the Byzantine site.
    np.testing.assert_allclose(np.array(data["model"]), 2.0 * (1 - 0.5**3), rtol=1e-6)
    assert data["dtype"] == "float32"
    assert from_spec(data["aggregator"]["args"]["rule"]) == rule
    lines = [line.split(" - ")[-1] for line in data["aggkit_log"] if "RobustAggregator" in line]
    for r in range(3):
        assert f"aggkit {rule!r} aggregated 5 {params_type} results on updates in round {r}" in lines
        if rule.name == "multi_krum":
            assert f"aggkit {rule!r} excluded clients ['site-5'] in round {r}" in lines
    assert not any("left out" in line or "kept the current model" in line for line in lines)

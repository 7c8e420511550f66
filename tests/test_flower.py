"""aggkit.flower.RobustStrategy driven with real Flower objects (messages built by hand, no ray)."""

from __future__ import annotations

import time

import aggkit
import numpy as np
import pytest

flwr = pytest.importorskip("flwr")
from aggkit.flower import RobustStrategy  # noqa: E402
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, Metadata, MetricRecord, RecordDict  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402


@pytest.fixture(autouse=True)
def run_identity(monkeypatch):
    """Flower stamps outgoing messages with the run's identity, which a live run sets."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 0)


def record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.asarray(v)) for k, v in arrays.items()})


def reply(node: int, arrays: dict[str, np.ndarray], examples: float, server_round: int = 1) -> Message:
    md = Metadata(
        run_id=1,
        message_id=f"reply-{node}-{server_round}",
        src_node_id=node,
        dst_node_id=0,
        reply_to_message_id=f"ins-{node}",
        group_id=str(server_round),
        created_at=time.time(),
        ttl=60.0,
        message_type="train",
    )
    content = RecordDict(
        {"arrays": record(arrays), "metrics": MetricRecord({"num-examples": examples, "loss": float(node)})}
    )
    return Message(content=content, metadata=md)


class InProcessGrid:
    """A Grid that runs each node's ``train`` function in this process (what ray does, minus ray)."""

    def __init__(self, train_fns: dict[int, object]):
        self.train_fns = train_fns
        self.sent: list[Message] = []

    def get_node_ids(self):
        return list(self.train_fns)

    def send_and_receive(self, messages, *, timeout=None):
        out = []
        for msg in messages:
            self.sent.append(msg)
            node = msg.metadata.dst_node_id
            arrays = {k: v.numpy() for k, v in msg.content["arrays"].items()}
            new, examples = self.train_fns[node](arrays, msg.content["config"]["server-round"])
            out.append(reply(node, new, examples, msg.content["config"]["server-round"]))
        return out


GLOBAL = {
    "w": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4),
    "b": np.zeros(4, dtype=np.float32),
    "steps": np.array(10, dtype=np.int64),
}


def configured(strategy: RobustStrategy, nodes=(11, 12, 13, 14, 15)) -> None:
    msgs = list(
        strategy.configure_train(1, record(GLOBAL), ConfigRecord({}), InProcessGrid(dict.fromkeys(nodes)))
    )
    assert len(msgs) == len(nodes)


def client_models(rng, honest=4, byzantine=1):
    models = []
    for i in range(honest):
        models.append(
            {
                "w": GLOBAL["w"] + 0.01 * rng.standard_normal((3, 4)).astype(np.float32),
                "b": GLOBAL["b"] + np.float32(0.1 * (i + 1)),
                "steps": np.array(11 + i),
            }
        )
    for _ in range(byzantine):
        models.append({"w": GLOBAL["w"] + 1e4, "b": GLOBAL["b"] - 1e4, "steps": np.array(10**6)})
    return models


@pytest.mark.parametrize("spill", [False, True])
@pytest.mark.parametrize(
    ("rule", "kwargs"),
    [("median", {}), ("trimmed_mean", {"f": 1}), ("mean", {}), ("krum", {"f": 1}), ("multi_krum", {"f": 1})],
)
def test_matches_the_rule_on_updates(rule, kwargs, spill, tmp_path):
    rng = np.random.default_rng(0)
    models = client_models(rng)
    s = RobustStrategy(rule, **kwargs, weighted=False, spill_dir=tmp_path if spill else None)
    configured(s)
    replies = [reply(11 + i, m, 10 * (i + 1)) for i, m in enumerate(models)]
    arrays, metrics = s.aggregate_train(1, replies)
    r = aggkit.rule(rule, **kwargs)
    if r.coordinate_wise:
        for k in ("w", "b"):
            updates = np.stack([m[k] - GLOBAL[k] for m in models])
            expected = GLOBAL[k] + r(updates)
            np.testing.assert_array_equal(arrays[k].numpy(), expected)
    else:
        flat = np.stack([np.concatenate([(m[k] - GLOBAL[k]).ravel() for k in ("w", "b")]) for m in models])
        y = r(flat)
        np.testing.assert_array_equal(arrays["w"].numpy(), GLOBAL["w"] + y[:12].reshape(3, 4))
        np.testing.assert_array_equal(arrays["b"].numpy(), GLOBAL["b"] + y[12:])
    assert arrays["w"].numpy().dtype == np.float32
    assert arrays["steps"].numpy().tolist() == 13  # the median of 11, 12, 13, 14, 10**6
    assert arrays["steps"].numpy().dtype == np.int64
    # FedAvg's metric average by num-examples, over the replies the rule kept (node 11 + i sent
    # loss 11 + i and 10 (i + 1) examples).
    kept = s.history[-1].get("kept_node_ids", [11, 12, 13, 14, 15])
    w = {node: 10 * (node - 10) for node in kept}
    assert metrics["loss"] == pytest.approx(sum(node * w[node] for node in kept) / sum(w.values()))
    assert list(arrays.keys()) == ["w", "b", "steps"]
    # The Byzantine client (node 15) is outvoted by every robust rule.
    if rule != "mean":
        assert np.abs(arrays["w"].numpy() - GLOBAL["w"]).max() < 0.1
    # Replies are not modified (Flower's FedMedian pops their arrays).
    for i, m in enumerate(models):
        np.testing.assert_array_equal(replies[i].content["arrays"]["w"].numpy(), m["w"])
    assert list(tmp_path.iterdir()) == []  # the round's spill file is gone


@pytest.mark.parametrize("spill", [False, True])
def test_selection_diagnostics_and_weights(spill, tmp_path):
    rng = np.random.default_rng(1)
    models = client_models(rng, honest=5, byzantine=2)
    nodes = list(range(101, 108))
    s = RobustStrategy(aggkit.MultiKrum(f=2, m=3), spill_dir=tmp_path if spill else None)
    configured(s, nodes)
    replies = [reply(nodes[i], m, float(i + 1)) for i, m in enumerate(models)]
    arrays, metrics = s.aggregate_train(1, replies)
    h = s.history[-1]
    assert set(h["excluded_node_ids"]) >= {106, 107}
    assert len(h["kept_node_ids"]) == 3
    assert metrics["aggkit-num-excluded"] == 4
    assert sorted(metrics["aggkit-excluded-node-ids"]) == sorted(h["excluded_node_ids"])
    assert h["weights"] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    assert set(h["scores"]) == set(nodes)
    # Weighted by num-examples: the kept updates averaged with their example counts.
    kept = [nodes.index(i) for i in h["kept_node_ids"]]
    flat = np.stack([np.concatenate([(m[k] - GLOBAL[k]).ravel() for k in ("w", "b")]) for m in models])
    y = aggkit.multi_krum(flat, f=2, m=3, weights=[float(i + 1) for i in range(7)])
    np.testing.assert_array_equal(arrays["b"].numpy(), GLOBAL["b"] + y[12:])
    assert kept == sorted(kept, key=lambda i: h["scores"][nodes[i]])


def test_rules_without_weights_are_unweighted_and_mean_is_weighted():
    rng = np.random.default_rng(2)
    models = client_models(rng, honest=3, byzantine=0)
    replies = [reply(11 + i, m, [1.0, 1.0, 98.0][i]) for i, m in enumerate(models)]
    s = RobustStrategy("mean")
    configured(s, (11, 12, 13))
    arrays, _ = s.aggregate_train(1, replies)
    expected = GLOBAL["b"] + aggkit.mean(
        np.stack([m["b"] - GLOBAL["b"] for m in models]), weights=[1.0, 1.0, 98.0]
    )
    np.testing.assert_array_equal(arrays["b"].numpy(), expected)
    s = RobustStrategy("median")
    configured(s, (11, 12, 13))
    arrays, _ = s.aggregate_train(1, replies)
    np.testing.assert_allclose(arrays["b"].numpy(), GLOBAL["b"] + 0.2, rtol=1e-6)
    # Asked for, the median is weighted too (the heavy client's update wins).
    s = RobustStrategy("median", weighted=True)
    configured(s, (11, 12, 13))
    arrays, _ = s.aggregate_train(1, replies)
    np.testing.assert_allclose(arrays["b"].numpy(), GLOBAL["b"] + (models[2]["b"] - GLOBAL["b"]), rtol=1e-6)


def test_too_few_replies_keeps_the_model_and_errors_are_filtered():
    s = RobustStrategy("krum", f=2)  # needs 7
    configured(s)
    models = client_models(np.random.default_rng(3))
    assert s.aggregate_train(1, [reply(11 + i, m, 1.0) for i, m in enumerate(models)]) == (None, None)
    assert s.aggregate_train(1, []) == (None, None)


def test_must_know_the_global_model_for_updates():
    s = RobustStrategy("median")
    models = client_models(np.random.default_rng(4))
    replies = [reply(11 + i, m, 1.0) for i, m in enumerate(models)]
    with pytest.raises(aggkit.InvalidParameterError, match="configure_train"):
        s.aggregate_train(1, replies)
    s = RobustStrategy("median", on_updates=False)
    arrays, _ = s.aggregate_train(1, replies)
    np.testing.assert_array_equal(arrays["w"].numpy(), aggkit.median(np.stack([m["w"] for m in models])))


def test_constructor():
    s = RobustStrategy("trimmed_mean", f=2, min_train_nodes=7, fraction_evaluate=0.0)
    assert s.rule == aggkit.TrimmedMean(f=2)
    assert s.min_train_nodes == 7
    with pytest.raises(aggkit.InvalidParameterError, match="unknown rule"):
        RobustStrategy("nope")
    with pytest.raises(aggkit.InvalidParameterError, match="cannot be applied"):
        RobustStrategy(aggkit.Median(), even="lower")
    with pytest.raises(
        aggkit.InvalidParameterError, match=r"unknown parameter 'not_an_option'.*takes even, nonfinite"
    ):
        RobustStrategy("median", not_an_option=1)


@pytest.mark.parametrize(
    ("flower", "aggkit_kwargs"),
    [
        (("krum", {"num_malicious_nodes": 1}), ("krum", {"f": 1})),
        (
            ("multi_krum", {"num_malicious_nodes": 1, "num_nodes_to_select": 3}),
            ("multi_krum", {"f": 1, "m": 3}),
        ),
        (("bulyan", {"num_malicious_nodes": 0}), ("bulyan", {"f": 0})),
        (("nnm>trimmed_mean", {"num_malicious_nodes": 1}), ("nnm>trimmed_mean", {"f": 1})),
    ],
)
def test_flowers_parameter_names(flower, aggkit_kwargs):
    s = RobustStrategy(flower[0], **flower[1], min_train_nodes=3)
    assert s.rule == aggkit.rule(aggkit_kwargs[0], **aggkit_kwargs[1])
    assert s.min_train_nodes == 3


@pytest.mark.parametrize("n", [4, 5, 9, 10])
def test_beta_trims_like_flowers_fedtrimmedavg(n):
    from flwr.serverapp.strategy import FedTrimmedAvg

    models = client_models(np.random.default_rng(n), honest=n - 1, byzantine=1)
    ours = RobustStrategy("trimmed_mean", beta=0.2, on_updates=False, weighted=False)
    configured(ours, nodes=tuple(range(11, 11 + n)))
    got, _ = ours.aggregate_train(1, [reply(11 + i, m, 1.0) for i, m in enumerate(models)])
    theirs = FedTrimmedAvg(beta=0.2)
    want, _ = theirs.aggregate_train(1, [reply(11 + i, m, 1.0) for i, m in enumerate(models)])
    for k in ("w", "b"):
        np.testing.assert_allclose(got[k].numpy(), want[k].numpy(), rtol=1e-6, atol=1e-6)
    assert ours.rule == aggkit.TrimmedMean(f=0)  # beta's f is chosen each round
    assert ours.history[-1]["node_ids"] == list(range(11, 11 + n))


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("krum",), {"f": 1, "num_malicious_nodes": 2}, "name the same parameter"),
        (
            ("krum",),
            {"num_nodes_to_select": 2},
            r"unknown parameter 'num_nodes_to_select'.*Flower's names: num_malicious_nodes",
        ),
        (("median",), {"beta": 0.1}, r"unknown parameter 'beta' for 'median'"),
        (("trimmed_mean",), {"beta": 0.5}, r"beta must be in \[0, 0.5\), got beta=0.5"),
        (("trimmed_mean",), {"beta": float("nan")}, "beta must be in"),
        (("trimmed_mean",), {"beta": 0.2, "f": 1}, "not both"),
        (("trimmed_mean",), {}, r"\['f'\] have no default"),
        (("nnm>trimmed_mean",), {}, r"\['f'\] have no default"),
        (
            ("median",),
            {"fraction_trian": 0.5},
            r"unknown parameter 'fraction_trian'.*FedAvg takes fraction_train",
        ),
    ],
)
def test_bad_parameters_list_the_accepted_ones(args, kwargs, match):
    with pytest.raises(aggkit.InvalidParameterError, match=match):
        RobustStrategy(*args, **kwargs)


def test_start_trains_through_flower_with_a_byzantine_node():
    """Flower's own Strategy.start loop over an in-process grid: 3 rounds, node 5 is Byzantine."""
    target = {"w": np.full((3, 4), 2.0, np.float32), "b": np.full(4, -1.0, np.float32)}

    def honest(node):
        def train(arrays, rnd):
            g = np.random.default_rng(node * 100 + rnd)
            return {k: v + 0.5 * (target[k] - v) + 0.01 * g.standard_normal(v.shape).astype(v.dtype)
                    for k, v in arrays.items()}, 50.0  # fmt: skip

        return train

    def byzantine(arrays, rnd):
        return {k: np.full_like(v, 1e6) for k, v in arrays.items()}, 1000.0

    init = {"w": np.zeros((3, 4), np.float32), "b": np.zeros(4, np.float32)}
    results = {}
    for rule in ("mean", "median", "krum"):
        grid = InProcessGrid({1: honest(1), 2: honest(2), 3: honest(3), 4: honest(4), 5: byzantine})
        s = RobustStrategy(rule, **({"f": 1} if rule == "krum" else {}), fraction_evaluate=0.0,
                           min_available_nodes=5, min_train_nodes=5)  # fmt: skip
        result = s.start(grid=grid, initial_arrays=record(init), num_rounds=3)
        results[rule] = {k: v.numpy() for k, v in result.arrays.items()}
        assert len(s.history) == 3
    err = {r: max(np.abs(v[k] - target[k]).max() for k in target) for r, v in results.items()}
    assert err["mean"] > 1e4
    assert err["median"] < 0.3  # 3 halvings of the distance to the target
    assert err["krum"] < 0.3


@pytest.mark.parametrize("rule", ["median", "krum"])
def test_flower_simulation_end_to_end(rule, tmp_path):
    """A real Flower simulation (ray backend, 5 supernodes, one Byzantine): runs where ray is installed."""
    pytest.importorskip("ray")
    import json
    import os
    import pathlib
    import subprocess
    import sys

    out = tmp_path / "result.json"
    app = pathlib.Path(__file__).with_name("flower_sim_app.py")
    env = dict(os.environ, FLWR_TELEMETRY_ENABLED="0", RAY_USAGE_STATS_ENABLED="0")
    proc = subprocess.run(
        [sys.executable, str(app), rule, str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    w, b = np.array(data["arrays"]["w"]), np.array(data["arrays"]["b"])
    # Three halvings of the distance to the target (2, -1), despite the Byzantine node.
    np.testing.assert_allclose(w, 2.0 * (1 - 0.5**3), rtol=1e-5)
    np.testing.assert_allclose(b, -1.0 * (1 - 0.5**3), rtol=1e-5)
    if rule == "krum":
        assert all(len(ex) == 4 for ex in data["history"])


def _faulty(models):
    """One faulty reply per way a client can break a round, built from an honest model."""
    m = models[0]
    bad_examples = {"negative": -5.0, "nan": float("nan"), "inf": float("inf")}
    out = {
        "shape (4,) for (3, 4)": ({**m, "w": m["w"][0]}, 1.0),
        "scalar for (3, 4)": ({**m, "w": np.float32(1.0)}, 1.0),
        "float64 for float32": ({**m, "w": m["w"].astype(np.float64)}, 1.0),
        "float for an int key": ({**m, "steps": np.array(12.5)}, 1.0),
        "missing key": ({k: v for k, v in m.items() if k != "b"}, 1.0),
        "extra key": ({**m, "extra": np.ones(2, np.float32)}, 1.0),
    }
    out |= {f"num-examples {k}": (m, v) for k, v in bad_examples.items()}
    return out


@pytest.mark.parametrize("rule", ["median", "krum", "mean"])
def test_a_faulty_reply_is_left_out_and_reported_never_raised(rule):
    models = client_models(np.random.default_rng(5), honest=5, byzantine=0)
    honest = [reply(11 + i, m, 1.0) for i, m in enumerate(models)]
    for why, (model, examples) in _faulty(models).items():
        s = RobustStrategy(rule, **({"f": 1} if rule == "krum" else {}), weighted=False)
        configured(s, nodes=(11, 12, 13, 14, 15, 99))
        arrays, metrics = s.aggregate_train(1, [*honest[:2], reply(99, model, examples), *honest[2:]])
        want = RobustStrategy(rule, **({"f": 1} if rule == "krum" else {}), weighted=False)
        configured(want)
        expected, _ = want.aggregate_train(1, honest)
        assert arrays is not None, why
        for k in ("w", "b", "steps"):
            np.testing.assert_array_equal(arrays[k].numpy(), expected[k].numpy(), err_msg=why)
        assert metrics["aggkit-num-invalid"] == 1, why
        assert metrics["aggkit-invalid-node-ids"] == [99], why
        assert list(s.history[-1]["invalid"]) == [99], why


def test_nan_replies_beyond_the_rules_policy():
    models = client_models(np.random.default_rng(6), honest=5, byzantine=0)
    nan_model = {**models[0], "w": np.full((3, 4), np.nan, np.float32)}
    replies = [reply(11 + i, m, 1.0) for i, m in enumerate(models)] + [reply(98, nan_model, 1.0)]
    # nonfinite="raise": the NaN client is a faulty reply, the round goes on.
    s = RobustStrategy("trimmed_mean", f=1, nonfinite="raise")
    configured(s)
    arrays, metrics = s.aggregate_train(1, replies)
    assert arrays is not None
    assert metrics["aggkit-invalid-node-ids"] == [98]
    assert "non-finite" in s.history[-1]["invalid"][98]
    # "robust" with more than f NaN clients: the rule refuses, the model is kept with a warning.
    s = RobustStrategy("krum", f=1)
    configured(s)
    many = replies[:5] + [reply(96 + i, nan_model, 1.0) for i in range(3)]
    assert s.aggregate_train(1, many) == (None, None)
    assert "non-finite" in s.history[-1]["skipped"]


def test_too_few_valid_replies_keep_the_model_and_report_the_faulty_ones():
    models = client_models(np.random.default_rng(7), honest=5, byzantine=0)
    s = RobustStrategy("krum", f=1)  # needs 5
    configured(s)
    replies = [reply(11 + i, m, 1.0) for i, m in enumerate(models[:4])]
    replies.append(reply(15, {k: v for k, v in models[4].items() if k != "w"}, 1.0))
    arrays, metrics = s.aggregate_train(1, replies)
    assert arrays is None
    assert metrics["aggkit-invalid-node-ids"] == [15]
    assert s.history[-1]["skipped"] == "4 valid replies, the rule needs 5"
    # Every reply omitting a key of the model is every reply faulty: the layer cannot vanish.
    s = RobustStrategy("median")
    configured(s)
    arrays, _ = s.aggregate_train(
        1, [reply(11 + i, {"w": m["w"], "steps": m["steps"]}, 1.0) for i, m in enumerate(models)]
    )
    assert arrays is None


def test_without_configure_train_the_majority_structure_is_the_reference():
    models = client_models(np.random.default_rng(8), honest=5, byzantine=0)
    s = RobustStrategy("median", on_updates=False)
    replies = [reply(99, {**models[0], "w": models[0]["w"][:2]}, 1.0)]
    replies += [reply(11 + i, m, 1.0) for i, m in enumerate(models)]
    arrays, metrics = s.aggregate_train(1, replies)
    np.testing.assert_array_equal(arrays["w"].numpy(), aggkit.median(np.stack([m["w"] for m in models])))
    assert metrics["aggkit-invalid-node-ids"] == [99]


def test_centered_clipping_starts_each_round_from_the_previous_aggregate():
    models = client_models(np.random.default_rng(10), honest=5, byzantine=0)
    s = RobustStrategy("centered_clipping", tau=0.05, iters=1)
    state = aggkit.CenteredClippingState(tau=0.05, iters=1)
    flat = np.stack([np.concatenate([(m[k] - GLOBAL[k]).ravel() for k in ("w", "b")]) for m in models])
    for rnd in (1, 2, 3):
        configured(s)
        arrays, _ = s.aggregate_train(rnd, [reply(11 + i, m, 1.0, rnd) for i, m in enumerate(models)])
        y = state(flat)  # the paper's rule: from the previous aggregate
        np.testing.assert_array_equal(arrays["w"].numpy(), GLOBAL["w"] + y[:12].reshape(3, 4))
    assert np.abs(y).max() > np.abs(aggkit.centered_clipping(flat, tau=0.05)).max()  # not from zero
    s.rounds.reset()
    configured(s)
    arrays, _ = s.aggregate_train(4, [reply(11 + i, m, 1.0, 4) for i, m in enumerate(models)])
    y0 = aggkit.centered_clipping(flat, tau=0.05)
    np.testing.assert_array_equal(arrays["w"].numpy(), GLOBAL["w"] + y0[:12].reshape(3, 4))


def test_a_bad_spill_dir_is_refused_when_the_strategy_is_built(tmp_path):
    # Found in review: it was only seen in the first round, as a logged skip of every round.
    with pytest.raises(aggkit.InvalidParameterError, match="spill_dir must be an existing directory"):
        RobustStrategy("krum", f=1, spill_dir=tmp_path / "typo")


def test_foolsgold_keeps_each_nodes_history_by_node_id_whatever_the_reply_order():
    rng = np.random.default_rng(12)
    models = client_models(rng, honest=5, byzantine=0)
    flat = np.stack([np.concatenate([(m[k] - GLOBAL[k]).ravel() for k in ("w", "b")]) for m in models])
    s = RobustStrategy("foolsgold")
    state = aggkit.FoolsGold().rounds()
    nodes = [11, 12, 13, 14, 15]
    for rnd, order in ((1, [0, 1, 2, 3, 4]), (2, [4, 2, 0, 1, 3]), (3, [1, 0, 4, 3, 2])):
        configured(s)
        arrays, _ = s.aggregate_train(rnd, [reply(nodes[i], models[i], 1.0, rnd) for i in order])
        y, _ = state.aggregate(flat[order], ids=[nodes[i] for i in order])
        np.testing.assert_allclose(arrays["w"].numpy(), GLOBAL["w"] + y[:12].reshape(3, 4), rtol=1e-6)
    assert sorted(s.rounds.histories) == nodes
    for node in nodes:
        np.testing.assert_array_equal(s.rounds.histories[node], state.histories[node])
    # three rounds of the same update: each node's history is three times it
    np.testing.assert_allclose(s.rounds.histories[13], 3 * flat[2].astype(np.float64), rtol=1e-12)


def test_fltrust_takes_the_servers_update_from_reference_fn():
    rng = np.random.default_rng(13)
    models = client_models(rng, honest=4, byzantine=1)
    seen = []

    def server_update(global_arrays, server_round):
        seen.append((sorted(global_arrays), server_round))
        return {"w": np.full((3, 4), 0.01), "b": np.full(4, 0.1)}

    s = RobustStrategy("fltrust", reference_fn=server_update)
    configured(s)
    arrays, _ = s.aggregate_train(1, [reply(11 + i, m, 1.0) for i, m in enumerate(models)])
    assert seen == [(["b", "steps", "w"], 1)]
    flat = np.stack([np.concatenate([(m[k] - GLOBAL[k]).ravel() for k in ("w", "b")]) for m in models])
    g0 = np.concatenate([np.full(12, 0.01), np.full(4, 0.1)])
    y = aggkit.fltrust(flat, reference=g0)
    np.testing.assert_allclose(arrays["w"].numpy(), GLOBAL["w"] + y[:12].reshape(3, 4), rtol=1e-6)
    # the Byzantine node (all -1e4 on b) points away from the server's update: no influence
    assert np.abs(arrays["b"].numpy()).max() < 1.0
    with pytest.raises(aggkit.InvalidParameterError, match="pass reference_fn"):
        RobustStrategy("fltrust")
    with pytest.raises(aggkit.InvalidParameterError, match="pass reference_fn"):
        RobustStrategy("fltrust", reference_fn=server_update, on_updates=False)
    with pytest.raises(aggkit.InvalidParameterError, match="does not use reference_fn"):
        RobustStrategy("median", reference_fn=server_update)
    bad = RobustStrategy("fltrust", reference_fn=lambda a, r: {"w": np.zeros((4, 3)), "b": np.zeros(4)})
    configured(bad)
    with pytest.raises(TypeError, match="reference_fn: array 'w'"):
        bad.aggregate_train(1, [reply(11 + i, m, 1.0) for i, m in enumerate(models)])


def test_reference_fn_gets_copies_of_the_global_model():
    models = client_models(np.random.default_rng(14), honest=4, byzantine=0)
    results = []
    for in_place in (False, True):

        def server_update(global_arrays, server_round, in_place=in_place):
            if in_place:  # "training" the arrays it was given, in place
                global_arrays["w"] += 0.01
                global_arrays["b"] += 0.1
            return {"w": np.full((3, 4), 0.01), "b": np.full(4, 0.1)}

        s = RobustStrategy("fltrust", reference_fn=server_update)
        configured(s)
        arrays, _ = s.aggregate_train(1, [reply(11 + i, m, 1.0) for i, m in enumerate(models)])
        results.append({k: v.numpy() for k, v in arrays.items()})
    for k in results[0]:
        np.testing.assert_array_equal(results[0][k], results[1][k])

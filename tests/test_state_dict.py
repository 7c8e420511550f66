"""aggkit.torch.aggregate_state_dicts: whole models, tensor by tensor."""

from __future__ import annotations

import re

import aggkit
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import aggkit.torch as at  # noqa: E402


def _models(n=7, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    base = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 2))
    sds = []
    for i in range(n):
        sd = {k: v.clone() for k, v in base.state_dict().items()}
        for k, v in sd.items():
            if v.is_floating_point():
                sd[k] = (v + 0.01 * torch.randn_like(v)).to(dtype)
        sd["1.num_batches_tracked"] = torch.tensor(10 + i)
        sds.append(sd)
    return sds


def _flat(sd):
    return torch.cat([v.reshape(-1).double() for v in sd.values() if v.is_floating_point()])


@pytest.mark.parametrize(
    ("rule", "kw"), [("mean", {}), ("median", {}), ("trimmed_mean", {"f": 2}), ("median", {"even": "lower"})]
)
def test_coordinatewise_rules_per_tensor(rule, kw):
    sds = _models()
    out = at.aggregate_state_dicts(sds, rule, **kw)
    assert list(out) == list(sds[0])
    fn = getattr(aggkit, rule)
    for k, v in out.items():
        assert v.shape == sds[0][k].shape
        assert v.dtype == sds[0][k].dtype
        if v.is_floating_point():
            ref = fn(np.stack([sd[k].numpy() for sd in sds]), **kw)
            np.testing.assert_array_equal(v.numpy(), ref)
    assert out["1.num_batches_tracked"].item() == 13  # lower median of 10..16
    assert at.aggregate_state_dicts(sds, aggkit.rule(rule, **kw))["0.weight"].equal(out["0.weight"])


@pytest.mark.parametrize(("rule", "kw"), [("krum", {"f": 2}), ("multi_krum", {"f": 2, "m": 3})])
def test_distance_rules_score_the_whole_model(rule, kw):
    sds = _models()
    sds[2] = {k: (v * 50 if v.is_floating_point() else v) for k, v in sds[2].items()}  # an outlier
    out, sel = at.aggregate_state_dicts(sds, rule, return_selection=True, **kw)
    flat = torch.stack([_flat(sd) for sd in sds])
    _, ref = getattr(aggkit, rule)(flat.numpy(), return_selection=True, **kw)
    assert sel.indices.tolist() == ref.indices.tolist()
    np.testing.assert_allclose(sel.scores.numpy(), ref.scores, rtol=1e-6)
    assert 2 not in sel.indices.tolist()
    for k, v in out.items():
        if v.is_floating_point():
            expect = aggkit.mean([sds[i][k].numpy() for i in sel.indices.tolist()])
            np.testing.assert_array_equal(v.numpy(), expect)


def test_nonfloat_policies():
    sds = _models(5)
    assert at.aggregate_state_dicts(sds, "mean")["1.num_batches_tracked"].item() == 12
    assert at.aggregate_state_dicts(sds, "mean", nonfloat="first")["1.num_batches_tracked"].item() == 10
    assert "1.num_batches_tracked" not in at.aggregate_state_dicts(sds, "mean", nonfloat="skip")
    with pytest.raises(TypeError, match="num_batches_tracked"):
        at.aggregate_state_dicts(sds, "mean", nonfloat="raise")
    masks = [{"m": torch.tensor([True, False, True])} for _ in range(3)]
    masks[0]["m"] = torch.tensor([False, False, False])
    assert at.aggregate_state_dicts(masks, "median")["m"].tolist() == [True, False, True]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtypes(dtype):
    sds = _models(5, dtype=dtype)
    for rule, kw in [("median", {}), ("krum", {"f": 1})]:
        out = at.aggregate_state_dicts(sds, rule, **kw)
        for k, v in out.items():
            assert v.dtype == sds[0][k].dtype


def test_weights_and_errors():
    sds = _models(4)
    w = [1.0, 1.0, 1.0, 5.0]
    out = at.aggregate_state_dicts(sds, "mean", weights=w)
    ref = aggkit.mean(np.stack([sd["0.bias"].numpy() for sd in sds]), weights=w)
    np.testing.assert_array_equal(out["0.bias"].numpy(), ref)
    with pytest.raises(aggkit.InvalidParameterError, match="does not take weights"):
        at.aggregate_state_dicts(sds, "median", weights=w)
    with pytest.raises(aggkit.InvalidParameterError, match="return_selection"):
        at.aggregate_state_dicts(sds, "median", return_selection=True)
    with pytest.raises(aggkit.InvalidParameterError, match="nonfloat"):
        at.aggregate_state_dicts(sds, "median", nonfloat="mean")
    with pytest.raises(aggkit.EmptyInputError):
        at.aggregate_state_dicts([], "median")
    with pytest.raises(TypeError, match="sequence of mappings"):
        at.aggregate_state_dicts(sds[0], "median")
    with pytest.raises(aggkit.InvalidParameterError, match="exclusive"):
        at.aggregate_state_dicts(sds, "krum", f=0, return_selection=True, return_info=True)
    with pytest.raises(aggkit.InvalidParameterError, match="one entry per input"):
        at.aggregate_state_dicts(sds, "mean", weights=w[:3])  # the caller's error, not a client's
    with pytest.raises(TypeError, match="booleans"):
        at.aggregate_state_dicts(sds, "mean", weights=[True] * 4)
    with pytest.raises(TypeError, match=r"reference\['w'\] is not a tensor \(got list\)"):
        at.aggregate_state_dicts(sds, "mean", reference={"w": [1.0]})
    with pytest.raises(aggkit.TooFewInputsError):
        at.aggregate_state_dicts(sds, "krum", f=1)
    with pytest.raises(aggkit.InvalidParameterError, match="unknown"):
        at.aggregate_state_dicts(sds, "no_such_rule")


def test_nothing_is_mutated_and_nonfinite_clients_are_handled():
    sds = _models(7)
    sds[4]["0.weight"][0, 0] = float("nan")
    before = [{k: v.clone() for k, v in sd.items()} for sd in sds]
    out, sel = at.aggregate_state_dicts(sds, "krum", f=2, return_selection=True)
    assert 4 not in sel.indices.tolist()
    assert torch.isfinite(out["0.weight"]).all()
    assert torch.isfinite(at.aggregate_state_dicts(sds, "median")["0.weight"]).all()
    # nonfinite="raise": the NaN client is faulty; Krum(f=2) needs all 7 clients.
    with pytest.raises(aggkit.TooFewInputsError, match=r"6 of 7 clients are valid.*client 4: non-finite"):
        at.aggregate_state_dicts(sds, "krum", f=2, nonfinite="raise")
    for sd, b in zip(sds, before, strict=True):
        for k in sd:
            assert torch.equal(sd[k].nan_to_num(), b[k].nan_to_num())


# ---------------------------------------------------------------------------------------------
# Faulty clients: left out and reported, as RobustStrategy does with Flower replies.


def _faulty(sd):
    """One malformed state dict per way a client can break the round, built from an honest one."""
    without_bias = {k: v for k, v in sd.items() if k != "0.bias"}
    return {
        "not a mapping": ([sd["0.weight"]], "is not a mapping \\(got list\\)"),
        "a tensor": (sd["0.weight"], "is not a mapping \\(got Tensor\\)"),
        "missing key": (without_bias, r"missing \['0.bias'\], extra \[\]"),
        "extra key": ({**sd, "extra": torch.ones(2)}, r"missing \[\], extra \['extra'\]"),
        "shape": (
            {**sd, "0.bias": torch.zeros(5)},
            r"'0.bias' has shape \(5,\) torch.float32, the model's is \(3,\)",
        ),
        "transposed": ({**sd, "0.weight": sd["0.weight"].T.contiguous()}, r"'0.weight' has shape \(4, 3\)"),
        "dtype": ({**sd, "0.bias": sd["0.bias"].double()}, r"'0.bias' has shape \(3,\) torch.float64"),
        "int for float": ({**sd, "0.bias": sd["0.bias"].long()}, "torch.int64"),
        "float for int": ({**sd, "1.num_batches_tracked": torch.tensor(3.0)}, "num_batches_tracked"),
        "numpy value": (
            {**sd, "0.bias": sd["0.bias"].numpy()},
            r"\['0.bias'\] is not a tensor \(got ndarray\)",
        ),
        "None value": ({**sd, "0.bias": None}, "is not a tensor \\(got NoneType\\)"),
        "sparse": ({**sd, "0.weight": sd["0.weight"].to_sparse()}, "sparse_coo tensor, not dense"),
        "device": ({**sd, "0.bias": sd["0.bias"].to("meta")}, "'0.bias' is on meta, the model's on cpu"),
    }


@pytest.mark.parametrize(
    ("rule", "kw"),
    [("median", {}), ("trimmed_mean", {"f": 1}), ("mean", {}), ("krum", {"f": 1}), ("geometric_median", {})],
)
def test_a_faulty_client_is_left_out_and_reported_never_raised(rule, kw):
    honest = _models(5)
    want, want_info = at.aggregate_state_dicts(honest, rule, return_info=True, **kw)
    assert want_info.valid == [0, 1, 2, 3, 4]
    assert want_info.invalid == {}
    for case, (bad, why) in _faulty(honest[0]).items():
        sds = [*honest[:2], bad, *honest[2:]]
        out, info = at.aggregate_state_dicts(sds, rule, return_info=True, **kw)
        assert list(info.invalid) == [2], case
        assert re.search(why, info.invalid[2]), (case, info.invalid[2])
        assert info.valid == [0, 1, 3, 4, 5], case
        assert list(out) == list(want), case
        for k in want:
            assert torch.equal(out[k], want[k]), (case, k)
        if rule == "krum":  # indices into state_dicts; the faulty client has no score
            assert 2 not in info.selection.indices.tolist()
            assert torch.isnan(info.selection.scores[2])
            kept = [[0, 1, 3, 4, 5][i] for i in want_info.selection.indices.tolist()]
            assert info.selection.indices.tolist() == kept
        with pytest.warns(UserWarning, match=rf"left out 1 of 6 clients as faulty: client 2: .*{why}"):
            plain = at.aggregate_state_dicts(sds, rule, **kw)
        assert all(torch.equal(plain[k], want[k]) for k in want), case


def test_the_reference_decides_the_structure_else_the_majority():
    sds = _models(5)
    extra = [{**sd, "extra": torch.ones(2)} for sd in sds]
    # Without a reference the majority's structure wins, whichever client comes first.
    with pytest.warns(UserWarning, match=r"client 0: keys differ .* missing \['extra'\]"):
        out = at.aggregate_state_dicts([sds[0], *extra[1:]], "median")
    assert "extra" in out
    with pytest.warns(UserWarning, match=r"left out 2 of 5"):
        out = at.aggregate_state_dicts([*sds[:3], *extra[3:]], "median")
    assert "extra" not in out
    # A reference (e.g. the global model, on another device) decides, even against the majority.
    ref = {k: v.to("meta") for k, v in reversed(list(sds[0].items()))}
    out, info = at.aggregate_state_dicts([*sds[:2], *extra[2:]], "median", reference=ref, return_info=True)
    assert info.valid == [0, 1]
    assert set(info.invalid) == {2, 3, 4}
    assert "the reference's" in info.invalid[2]
    assert list(out) == list(ref)  # the reference's key order
    assert out["0.weight"].device.type == "cpu"
    assert torch.equal(out["0.weight"], at.median([sds[0]["0.weight"], sds[1]["0.weight"]]))


def test_too_few_valid_clients_is_a_clear_error():
    sds = _models(5)
    sds[3] = {k: v for k, v in sds[3].items() if k != "0.bias"}
    with pytest.raises(
        aggkit.TooFewInputsError,
        match=r"4 of 5 clients are valid, Krum\(f=1.*needs at least 5; left out as faulty: client 3: keys",
    ):
        at.aggregate_state_dicts(sds, "krum", f=1)
    # A reference every client misses: no valid client.
    with pytest.raises(aggkit.TooFewInputsError, match="0 of 5 clients are valid"):
        at.aggregate_state_dicts(sds, "median", reference={"other": torch.zeros(1)})
    # Not one state dict: the caller's error, a TypeError as before.
    with pytest.raises(
        TypeError, match=r"holds no mapping.*client 0: state_dicts\[0\] is not a mapping \(got int\)"
    ):
        at.aggregate_state_dicts([1, 2], "median")


def test_nonfinite_values_beyond_the_rules_policy_make_a_client_faulty():
    sds = _models(5)
    sds[1]["2.weight"][0, 0] = float("inf")
    # "robust" (default): the rule handles the value; the client stays.
    _, info = at.aggregate_state_dicts(sds, "median", return_info=True)
    assert info.invalid == {}
    # "raise": the client is faulty, the others are aggregated.
    out, info = at.aggregate_state_dicts(sds, "median", nonfinite="raise", return_info=True)
    assert info.invalid == {1: "non-finite values in ['2.weight'] (the rule has nonfinite='raise')"}
    rest = [sds[i] for i in (0, 2, 3, 4)]
    assert torch.equal(out["2.weight"], at.aggregate_state_dicts(rest, "median")["2.weight"])


def test_a_negative_or_nonfinite_weight_makes_a_client_faulty():
    sds = _models(5)
    for bad in (-1.0, float("nan"), float("inf")):
        w = [1.0, 2.0, bad, 3.0, 4.0]
        for weights in (w, np.array(w), torch.tensor(w)):
            out, info = at.aggregate_state_dicts(sds, "mean", weights=weights, return_info=True)
            assert list(info.invalid) == [2]
            assert "not a finite number >= 0" in info.invalid[2]
            rest = [sds[i] for i in (0, 1, 3, 4)]
            ref = at.aggregate_state_dicts(rest, "mean", weights=[1.0, 2.0, 3.0, 4.0])
            assert all(torch.equal(out[k], ref[k]) for k in ref)


def test_return_selection_with_a_faulty_client_indexes_state_dicts():
    sds = _models(6)
    sds[0] = {**sds[0], "0.bias": torch.zeros(7)}
    with pytest.warns(UserWarning, match="client 0"):
        _, sel = at.aggregate_state_dicts(sds, "multi_krum", f=1, m=3, return_selection=True)
    assert 0 not in sel.indices.tolist()
    assert len(sel.indices) == 3
    assert sel.scores.shape == (6,)
    assert torch.isnan(sel.scores[0])
    assert torch.isfinite(sel.scores[1:]).all()

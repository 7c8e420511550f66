"""aggkit.torch.aggregate_state_dicts: whole models, tensor by tensor."""

from __future__ import annotations

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
    bad = [dict(sd) for sd in sds]
    del bad[1]["0.bias"]
    with pytest.raises(aggkit.ShapeError, match=r"missing \['0.bias'\]"):
        at.aggregate_state_dicts(bad, "median")
    bad = [dict(sd) for sd in sds]
    bad[2]["0.bias"] = torch.zeros(5)
    with pytest.raises(aggkit.ShapeError, match=r"0\.bias"):
        at.aggregate_state_dicts(bad, "median")
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
    with pytest.raises(aggkit.NonFiniteError):
        at.aggregate_state_dicts(sds, "krum", f=2, nonfinite="raise")
    for sd, b in zip(sds, before, strict=True):
        for k in sd:
            assert torch.equal(sd[k].nan_to_num(), b[k].nan_to_num())

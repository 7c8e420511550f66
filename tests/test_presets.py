"""The presets (bucketing_cc, nnm_cc, nnm_trimmed_mean): named pipelines, round after round."""

from __future__ import annotations

import aggkit
import numpy as np
import pytest
from aggkit.registry import from_spec, to_spec


@pytest.fixture
def x():
    return np.random.default_rng(21).standard_normal((9, 5)) + 2.0


def test_each_preset_is_its_pipeline(x):
    nt = aggkit.rule("nnm_trimmed_mean", f=2)
    assert nt.pipeline() == aggkit.Pipeline([aggkit.NNM(f=2), aggkit.TrimmedMean(f=2)])
    np.testing.assert_array_equal(nt(x), aggkit.rule("nnm>trimmed_mean", f=2)(x))
    cc = aggkit.NNMCC(f=2, tau=0.3, iters=2)
    np.testing.assert_array_equal(
        cc(x), aggkit.Pipeline([aggkit.NNM(f=2), aggkit.CenteredClipping(tau=0.3, iters=2)])(x)
    )
    bc = aggkit.BucketingCC(s=3, tau=0.3, seed=5)
    twin = aggkit.Pipeline([aggkit.Bucketing(s=3, seed=5), aggkit.CenteredClipping(tau=0.3, iters=3)])
    for _ in range(3):  # one generator per preset: each call draws new buckets, as the twin does
        np.testing.assert_array_equal(bc(x), twin(x))


def test_presets_carry_centered_clippings_centre_across_rounds(x):
    preset = aggkit.NNMCC(f=2, tau=0.2)
    rounds = preset.rounds()
    twin = aggkit.CenteredClippingState(tau=0.2, iters=3)
    for _ in range(3):
        got, sel = rounds.aggregate(x)
        assert sel is None
        np.testing.assert_array_equal(got, twin(aggkit.NNM(f=2)(x)))
    assert np.abs(got).max() > np.abs(preset(x)).max()  # not from zero any more
    rounds.reset()
    np.testing.assert_array_equal(rounds.aggregate(x)[0], preset(x))


def test_names_parameters_specs_and_bounds():
    for name in ("bucketing_cc", "nnm_cc", "nnm_trimmed_mean"):
        assert name in aggkit.list_rules()
    assert repr(aggkit.rule("nnm_cc", f=1)) == "NNMCC(f=1, tau=10.0, iters=3)"
    for r in (aggkit.BucketingCC(seed=2), aggkit.NNMCC(f=3), aggkit.NNMTrimmedMean(f=1)):
        assert from_spec(to_spec(r)) == r
    assert aggkit.NNMTrimmedMean(f=2).min_inputs() == 5
    assert aggkit.NNMCC(f=2).min_inputs() == 3
    with pytest.raises(aggkit.InvalidParameterError, match=r"no default"):
        aggkit.rule("nnm_cc")
    with pytest.raises(aggkit.InvalidParameterError, match="tau must be"):
        aggkit.NNMCC(f=1, tau=-1.0)
    with pytest.raises(aggkit.TooFewInputsError):
        aggkit.NNMTrimmedMean(f=2)(np.ones((4, 3)))


def test_presets_on_tensors(x):
    torch = pytest.importorskip("torch")
    t = torch.from_numpy(x)
    for r in (aggkit.NNMTrimmedMean(f=2), aggkit.NNMCC(f=2, tau=0.5), aggkit.BucketingCC(seed=1)):
        np.testing.assert_allclose(r(t).numpy(), type(r)(**r.get_params())(x), rtol=1e-12, atol=1e-12)


def test_presets_in_the_simulation():
    from aggkit.simulate import simulate

    r = simulate(
        dataset="synthetic", clients=10, byzantine=2, rounds=4, progress=False,
        rules=["nnm_cc:tau=1", "nnm_trimmed_mean", "bucketing_cc:seed=0"], attacks=["none", "sign_flip"],
    )  # fmt: skip
    assert len(r.accuracy) == 6

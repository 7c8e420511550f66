"""Pre-aggregators (NNM, ARC, Bucketing, Clipping) and pipelines."""

from __future__ import annotations

import aggkit
import numpy as np
import pytest
import reference as ref
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import matrices

COL = np.array([[1.0], [2.0], [3.0], [10.0]])
A = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])


def test_oracles():
    np.testing.assert_allclose(
        aggkit.NNM(f=1)(A), [[2.5, 3.5, 4.5], [2.5, 3.5, 4.5], [5.5, 6.5, 7.5]], rtol=1e-15
    )
    arc = aggkit.ARC(f=1)(A)
    np.testing.assert_array_equal(arc[:2], A[:2])
    np.testing.assert_allclose(arc[2], [4.41004, 5.04005, 5.67005], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(arc[2]), np.sqrt(77), rtol=1e-14)


@settings(max_examples=40)
@given(matrices(min_n=2, max_n=7, max_d=3, ties=False), st.data())
def test_match_references(x, data):
    f = data.draw(st.integers(0, (x.shape[0] - 1) // 2))
    xd = x.astype(np.float64)
    tol = dict(rtol=1e-6, atol=1e-6 * (1 + np.abs(xd).max()))
    np.testing.assert_allclose(aggkit.NNM(f=f)(xd), ref.nnm(xd, f), **tol)
    np.testing.assert_allclose(aggkit.ARC(f=f)(xd), ref.arc(xd, f), **tol)


def test_bucketing_layout_and_reproducibility():
    x = np.arange(7.0)[:, None]
    out = aggkit.Bucketing(s=3, seed=5)(x)
    assert out.shape == (3, 1)
    # The same seed gives the same sequence of permutations, a new one at each call.
    b1, b2 = aggkit.Bucketing(s=3, seed=5), aggkit.Bucketing(s=3, seed=5)
    calls = [b1(x) for _ in range(4)]
    np.testing.assert_array_equal(calls[0], out)
    for c in calls:
        np.testing.assert_array_equal(b2(x), c)
    assert len({c.tobytes() for c in calls}) > 1
    # Every input lands in exactly one bucket; buckets of 3, 3, 1; sizes weight back the total.
    perm = aggkit.Bucketing(s=3, seed=5).buckets(7)
    assert sorted(i for g in perm for i in g) == list(range(7))
    assert [len(g) for g in perm] == [3, 3, 1]
    np.testing.assert_allclose(sum(out[k, 0] * len(perm[k]) for k in range(3)), x.sum())


def test_clipping_never_mutates_and_bounds_norms(rng):
    x = rng.standard_normal((6, 5)) * 10
    x.flags.writeable = False
    snap = x.copy()
    for pre in (aggkit.Clipping(c=2.0), aggkit.ARC(f=2), aggkit.NNM(f=2), aggkit.Bucketing(s=2, seed=0)):
        pre(x)
        pre(list(x))
    np.testing.assert_array_equal(x, snap)
    assert np.all(np.linalg.norm(aggkit.Clipping(c=2.0)(x), axis=1) <= 2.0 + 1e-12)


def test_pipelines_by_object_and_by_name():
    p = aggkit.Pipeline([aggkit.NNM(f=1), aggkit.TrimmedMean(f=1)])
    assert aggkit.rule("nnm>trimmed_mean", f=1) == p
    assert aggkit.pipeline("nnm", "trimmed_mean", f=1) == p
    assert aggkit.rule("arc > nnm > median", f=1) == aggkit.Pipeline(
        [aggkit.ARC(f=1), aggkit.NNM(f=1), aggkit.Median()]
    )
    assert eval(repr(p), {k: getattr(aggkit, k) for k in aggkit.__all__}) == p
    np.testing.assert_array_equal(p(COL), aggkit.trimmed_mean(aggkit.NNM(f=1)(COL), f=1))
    assert aggkit.Pipeline([aggkit.Bucketing(s=2), aggkit.TrimmedMean(f=1)]).min_inputs() == 5
    with pytest.raises(aggkit.InvalidParameterError, match="no stage takes"):
        aggkit.rule("nnm>median", f=1, bogus=2)
    with pytest.raises(aggkit.InvalidParameterError, match="last stage must be a rule"):
        aggkit.Pipeline([aggkit.NNM(f=1)])
    with pytest.raises(aggkit.InvalidParameterError, match="unknown pipeline stage"):
        aggkit.rule("nope>median")
    with pytest.raises(aggkit.InvalidParameterError, match="f < n"):
        aggkit.NNM(f=3)(np.zeros((3, 2)))


def test_pre_aggregated_rules_resist_a_far_attack(rng):
    honest = rng.standard_normal((12, 20)) * 0.1 + 1.0
    x = np.concatenate([honest, np.full((3, 20), -50.0)])
    rules = [
        aggkit.rule("nnm>trimmed_mean", f=3),
        aggkit.rule("nnm>median", f=3),
        aggkit.rule("arc>nnm>meamed", f=3),
        aggkit.Pipeline([aggkit.Bucketing(s=2, seed=0), aggkit.Median()]),
    ]
    for r in rules:
        assert np.linalg.norm(r(x) - honest.mean(0)) < 1.0, r


def test_torch_preaggregators_and_pipelines(rng):
    torch = pytest.importorskip("torch")
    import aggkit.torch as at

    x = rng.standard_normal((7, 6))
    t = torch.from_numpy(x).requires_grad_(True)
    for pre in (aggkit.NNM(f=2), aggkit.ARC(f=2), aggkit.Clipping(c=1.0)):
        np.testing.assert_allclose(pre(t).detach().numpy(), pre(x), rtol=1e-12)
        assert torch.autograd.gradcheck(lambda v, pre=pre: pre(v), (t,))
    np.testing.assert_array_equal(
        aggkit.Bucketing(s=2, seed=3)(t).detach().numpy(), aggkit.Bucketing(s=2, seed=3)(x)
    )
    p = aggkit.rule("nnm>trimmed_mean", f=2)
    np.testing.assert_allclose(p(t).detach().numpy(), p(x), rtol=1e-12)
    np.testing.assert_allclose(at.pipeline(t, stages=p.stages).detach().numpy(), p(x), rtol=1e-12)
    # A zero row keeps its scale 1: its gradient is the identity, not NaN (sqrt's inf times 0).
    z = x.copy()
    z[0] = 0.0
    tz = torch.from_numpy(z).requires_grad_(True)
    for pre in (aggkit.ARC(f=2), aggkit.Clipping(c=1.0)):
        (g,) = torch.autograd.grad(pre(tz).sum(), tz)
        assert torch.isfinite(g).all(), pre
        np.testing.assert_array_equal(g[0].numpy(), np.ones(6))
        assert torch.autograd.gradcheck(lambda v, pre=pre: pre(v), (tz,))
    (g,) = torch.autograd.grad(at.foolsgold(tz, clip=1.0).sum(), tz)
    assert torch.isfinite(g).all()

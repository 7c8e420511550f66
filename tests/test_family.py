"""The rest of the family (issue 9): spec oracles, slow references, torch, pre-aggregators, byzfl."""

from __future__ import annotations

import aggkit
import numpy as np
import pytest
import reference as ref
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import matrices

SPEC_X = np.array([[6, -8], [-6, -5], [-6, 6], [7, 2], [-9, -8], [-3, -1], [40, -30]], float)
COL = np.array([[1.0], [2.0], [3.0], [10.0]])
A = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])


# ---------------------------------------------------------------------------------------------
# spec oracles (ALGORITHMS.md §18)


def test_spec_oracles():
    y, sel = aggkit.bulyan(SPEC_X, f=1, return_selection=True)
    np.testing.assert_allclose(y, [-5.0, -4.0 / 3.0], rtol=1e-15)
    assert sel.indices.tolist() == [5, 1, 3, 2, 0]
    assert aggkit.bulyan(SPEC_X, f=1, clamp=False, return_selection=True)[1].indices.tolist() == [
        5,
        1,
        3,
        2,
        0,
    ]
    assert aggkit.meamed(COL, f=1).tolist() == [2.0]
    assert aggkit.mda(COL, f=1).tolist() == [2.0]
    np.testing.assert_allclose(
        aggkit.NNM(f=1)(A), [[2.5, 3.5, 4.5], [2.5, 3.5, 4.5], [5.5, 6.5, 7.5]], rtol=1e-15
    )
    arc = aggkit.ARC(f=1)(A)
    np.testing.assert_array_equal(arc[:2], A[:2])
    np.testing.assert_allclose(arc[2], [4.41004, 5.04005, 5.67005], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(arc[2]), np.sqrt(77), rtol=1e-14)


def test_bulyan_detox_variant_is_trimmed_mean_of_the_multi_krum_selection():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 5))
    f = 2
    _, sel = aggkit.multi_krum(x, f=f, m=12 - f - 2, return_selection=True)
    want = aggkit.trimmed_mean(x[sel.indices], f=f)
    np.testing.assert_array_equal(aggkit.bulyan(x, f=f, variant="detox"), want)


# ---------------------------------------------------------------------------------------------
# against the slow references


@given(matrices(min_n=1, max_n=11, max_d=4), st.data())
def test_meamed_matches_reference(x, data):
    f = data.draw(st.integers(0, (x.shape[0] - 1) // 2))
    np.testing.assert_array_equal(aggkit.meamed(x, f=f), ref.closest_to_median(x, x.shape[0] - f))


# float64: the core squares float32 differences in float32 lanes (distance.rs), so a float32
# difference below ~1e-19 squares to 0 there and not in the float64 reference.
@given(matrices(min_n=3, max_n=11, max_d=4, ties=False, dtype=np.float64))
def test_bulyan_matches_reference(x):
    f = (x.shape[0] - 3) // 4
    y, sel = aggkit.bulyan(x, f=f, return_selection=True)
    want, chosen = ref.bulyan(x, f)
    assert sel.indices.tolist() == chosen
    np.testing.assert_array_equal(y, want)


@given(matrices(min_n=1, max_n=9, max_d=4), st.data())
def test_weighted_order_statistics_match_repeated_inputs(x, data):
    n = x.shape[0]
    w = data.draw(st.lists(st.integers(0, 4), min_size=n, max_size=n).filter(lambda v: sum(v) > 0))
    for even in ("mean", "lower", "upper"):
        np.testing.assert_array_equal(aggkit.median(x, weights=w, even=even), ref.weighted_median(x, w, even))
    f = data.draw(st.integers(0, (n - 1) // 2))
    got = aggkit.trimmed_mean(x, f=f, weights=w)
    tol = 1e-5 if x.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, ref.weighted_trimmed_mean(x, w, f), rtol=tol, atol=tol * np.abs(x).max())


def test_unit_weights_are_the_unweighted_rules(rng):
    x = rng.standard_normal((8, 33)).astype(np.float32)
    np.testing.assert_array_equal(aggkit.median(x, weights=np.ones(8)), aggkit.median(x))
    np.testing.assert_allclose(
        aggkit.trimmed_mean(x, f=2, weights=np.ones(8)), aggkit.trimmed_mean(x, f=2), rtol=1e-6
    )


def test_weighted_rules_are_robust_to_a_light_byzantine_input(rng):
    x = rng.standard_normal((7, 10))
    x[6] = 1e30
    w = [5, 5, 5, 5, 5, 5, 1]  # the Byzantine client claims few examples
    for y in (aggkit.median(x, weights=w), aggkit.trimmed_mean(x, f=1, weights=w)):
        assert np.all((y >= x[:6].min(0)) & (y <= x[:6].max(0)))


@given(matrices(min_n=1, max_n=8, max_d=4, ties=False), st.data())
def test_centered_clipping_matches_reference(x, data):
    tau = data.draw(st.sampled_from([0.0, 0.5, 10.0, 1e9]))
    iters = data.draw(st.integers(0, 3))
    got = aggkit.centered_clipping(x, tau=tau, iters=iters)
    want = ref.centered_clipping(x, tau, iters).astype(x.dtype)
    tol = 1e-5 if x.dtype == np.float32 else 1e-9
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * (1 + np.abs(x).max()))


@settings(max_examples=40)
@given(matrices(min_n=2, max_n=7, max_d=3, ties=False), st.data())
def test_subset_rules_match_references(x, data):
    f = data.draw(st.integers(0, (x.shape[0] - 1) // 2))
    xd = x.astype(np.float64)
    tol = dict(rtol=1e-6, atol=1e-6 * (1 + np.abs(xd).max()))
    np.testing.assert_allclose(aggkit.mda(xd, f=f), ref.mda(xd, f)[0], **tol)
    np.testing.assert_allclose(aggkit.caf(xd, f=f), ref.caf(xd, f), **tol)
    np.testing.assert_allclose(aggkit.NNM(f=f)(xd), ref.nnm(xd, f), **tol)
    np.testing.assert_allclose(aggkit.ARC(f=f)(xd), ref.arc(xd, f), **tol)


def test_smea_matches_reference_on_separated_data(rng):
    for seed in range(5):
        r = np.random.default_rng(seed)
        x = r.standard_normal((7, 4))
        x[r.integers(7)] += 20 * r.standard_normal(4)
        np.testing.assert_allclose(aggkit.smea(x, f=2), ref.smea(x, 2)[0], rtol=1e-12)


def test_monna_keeps_the_nearest_to_the_trusted_input():
    x = np.array([[0.0], [1.0], [-2.0], [5.0], [100.0]])
    np.testing.assert_allclose(aggkit.monna(x, f=2, idx=0), [(0 + 1 - 2) / 3])
    np.testing.assert_allclose(aggkit.monna(x, f=2, idx=3), [(1 + 5 + 0) / 3])  # |-2-5| = 7 > |0-5| = 5


def test_sign_vote():
    x = np.array([[1.0, -1.0, 0.0, np.nan], [2.0, 1.0, 0.0, 1.0], [-3.0, -5.0, 0.0, 1.0]], np.float32)
    np.testing.assert_array_equal(aggkit.sign_vote(x), [1.0, -1.0, 0.0, 1.0])
    assert np.isnan(aggkit.sign_vote(x, nonfinite="propagate")[3])
    with pytest.raises(aggkit.NonFiniteError):
        aggkit.sign_vote(x, nonfinite="raise")
    assert aggkit.sign_vote(x).dtype == np.float32


def test_noisy_sign_vote_estimates_the_mean():
    # Chen et al. 2020: with uniform noise of scale b >= |g|, E[sign(g + b xi)] = g / b.
    g = np.array([0.3, -0.1, 0.05])
    x = np.repeat(g[None], 20001, axis=0)
    noisy = aggkit.Perturb(b=1.0, noise="uniform", seed=1)(x)
    np.testing.assert_allclose(np.sign(noisy).mean(axis=0), g, atol=0.02)
    assert aggkit.sign_vote(x).tolist() == [1.0, -1.0, 1.0]
    np.testing.assert_array_equal(
        aggkit.Pipeline([aggkit.Perturb(b=0.0), aggkit.SignVote()])(x), aggkit.sign_vote(x)
    )


# ---------------------------------------------------------------------------------------------
# pre-aggregators and pipelines


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


# ---------------------------------------------------------------------------------------------
# bad input


def test_errors():
    with pytest.raises(aggkit.TooFewInputsError, match="n >= 4f \\+ 3"):
        aggkit.bulyan(np.zeros((6, 2)), f=1)
    with pytest.raises(aggkit.TooFewInputsError):
        aggkit.meamed(np.zeros((2, 2)), f=1)
    with pytest.raises(aggkit.InvalidParameterError, match="max_subsets"):
        aggkit.mda(np.zeros((40, 2)), f=15)
    with pytest.raises(aggkit.InvalidParameterError, match="max_subsets"):
        aggkit.smea(np.zeros((30, 2)), f=10)
    with pytest.raises(aggkit.InvalidParameterError, match="tau"):
        aggkit.centered_clipping(np.zeros((3, 2)), tau=-1.0)
    with pytest.raises(aggkit.InvalidParameterError, match="center"):
        aggkit.centered_clipping(np.zeros((3, 2)), center=np.zeros(3))
    with pytest.raises(aggkit.InvalidParameterError, match="idx"):
        aggkit.monna(np.zeros((3, 2)), f=1, idx=3)
    with pytest.raises(aggkit.InvalidParameterError, match="weights"):
        aggkit.median(np.zeros((3, 2)), weights=[1, -1, 1])
    with pytest.raises(aggkit.InvalidParameterError, match="sum to 0"):
        aggkit.median(np.zeros((3, 2)), weights=[0, 0, 0])
    with pytest.raises(aggkit.InvalidParameterError, match="variant"):
        aggkit.Bulyan(f=1, variant="aggregathor")
    with pytest.raises(aggkit.InvalidParameterError, match="f < n"):
        aggkit.NNM(f=3)(np.zeros((3, 2)))
    x = np.ones((7, 3))
    x[0, 0] = np.nan
    x[1, 1] = np.inf
    with pytest.raises(aggkit.NonFiniteError, match="more than f=1"):
        aggkit.mda(x, f=1)
    with pytest.raises(aggkit.NonFiniteError):
        aggkit.caf(x, f=2, nonfinite="raise")
    assert np.isfinite(aggkit.mda(x, f=2)).all()
    assert np.isfinite(aggkit.centered_clipping(x)).all()


def test_nonfinite_inputs_are_left_out(rng):
    x = rng.standard_normal((11, 4))
    bad = x.copy()
    bad[3] = np.nan
    bad[7, 2] = np.inf
    for name, kw in [("mda", {}), ("smea", {}), ("caf", {}), ("bulyan", {"variant": "detox"})]:
        y = aggkit.rule(name, f=2, **kw)(bad)
        assert np.isfinite(y).all(), name


# ---------------------------------------------------------------------------------------------
# torch


torch = pytest.importorskip("torch")
import aggkit.torch as at  # noqa: E402

TORCH_RULES = {
    "meamed": dict(f=2),
    "bulyan": dict(f=1),
    "mda": dict(f=2),
    "smea": dict(f=2),
    "caf": dict(f=2),
    "monna": dict(f=2),
    "centered_clipping": dict(tau=2.0, iters=2),
    "sign_vote": {},
}


@pytest.mark.parametrize("name", list(TORCH_RULES))
def test_torch_matches_numpy_and_native(name, rng):
    x = rng.standard_normal((9, 3, 4)).astype(np.float32)
    kw = TORCH_RULES[name]
    want = aggkit.rule(name, **kw)(x)
    t = torch.from_numpy(x.copy())
    got = getattr(at, name)(t, **kw)
    assert got.dtype == torch.float32
    assert got.shape == (3, 4)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)
    with at.force_native():
        nat = getattr(at, name)(t, **kw)
    np.testing.assert_allclose(nat.numpy(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["meamed", "bulyan", "mda", "monna", "smea"])
def test_torch_gradient_reaches_the_kept_values(name, rng):
    x = torch.from_numpy(rng.standard_normal((9, 5))).requires_grad_(True)
    y = getattr(at, name)(x, **TORCH_RULES[name])
    (g,) = torch.autograd.grad(y.sum(), x)
    # Each output coordinate is an average of kept values: the gradient per coordinate sums to 1.
    np.testing.assert_allclose(g.sum(0).numpy(), np.ones(5), rtol=1e-12)
    assert (g >= 0).all()


def test_torch_meamed_backward_matches_native(rng):
    x = torch.from_numpy(rng.standard_normal((8, 50))).requires_grad_(True)
    gout = torch.from_numpy(rng.standard_normal(50))
    (a,) = torch.autograd.grad((at.meamed(x, f=3) * gout).sum(), x)
    with at.force_native():
        (b,) = torch.autograd.grad((at.meamed(x, f=3) * gout).sum(), x)
    torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(lambda t: at.meamed(t, f=3), (x,))


def test_torch_weighted_and_preaggregators(rng):
    x = rng.standard_normal((7, 6))
    w = [1, 2, 3, 1, 1, 2, 5]
    t = torch.from_numpy(x).requires_grad_(True)
    np.testing.assert_array_equal(at.median(t, weights=w).detach().numpy(), aggkit.median(x, weights=w))
    np.testing.assert_allclose(
        at.trimmed_mean(t, f=2, weights=w).detach().numpy(),
        aggkit.trimmed_mean(x, f=2, weights=w),
        rtol=1e-12,
    )
    assert torch.autograd.gradcheck(lambda v: at.trimmed_mean(v, f=2, weights=w), (t,))
    for pre in (aggkit.NNM(f=2), aggkit.ARC(f=2), aggkit.Clipping(c=1.0)):
        np.testing.assert_allclose(pre(t).detach().numpy(), pre(x), rtol=1e-12)
        assert torch.autograd.gradcheck(lambda v, pre=pre: pre(v), (t,))
    assert torch.autograd.gradcheck(lambda v: at.centered_clipping(v, tau=1.0, iters=3), (t,))
    np.testing.assert_array_equal(
        aggkit.Bucketing(s=2, seed=3)(t).detach().numpy(), aggkit.Bucketing(s=2, seed=3)(x)
    )
    p = aggkit.rule("nnm>trimmed_mean", f=2)
    np.testing.assert_allclose(p(t).detach().numpy(), p(x), rtol=1e-12)
    np.testing.assert_allclose(at.pipeline(t, stages=p.stages).detach().numpy(), p(x), rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# byzfl parity (optional dependency: pip install aggkit[parity])


def _byzfl():
    return pytest.importorskip("byzfl")


@pytest.mark.parametrize("seed", range(5))
def test_byzfl_parity(seed):
    byzfl = _byzfl()
    r = np.random.default_rng(seed)
    x = r.standard_normal((9, 6))
    x[r.integers(9)] += 30.0
    f = 2
    same = {
        "meamed": (byzfl.Meamed(f=f), aggkit.meamed(x, f=f)),
        "mda": (byzfl.MDA(f=f), aggkit.mda(x, f=f)),
        "monna": (byzfl.MoNNA(f=f, idx=1), aggkit.monna(x, f=f, idx=1)),
        "median": (byzfl.Median(), aggkit.median(x)),
        "trmean": (byzfl.TrMean(f=f), aggkit.trimmed_mean(x, f=f)),
        "cc": (byzfl.CenteredClipping(L=3, tau=2.0), aggkit.centered_clipping(x, tau=2.0, iters=3)),
        "gm-preset": (
            byzfl.GeometricMedian(),
            aggkit.geometric_median(x, init="zero", nu=0.1, maxiter=3, ftol=0.0),
        ),
    }
    for name, (theirs, ours) in same.items():
        np.testing.assert_allclose(ours, theirs(x.copy()), rtol=1e-10, atol=1e-12, err_msg=name)
    for theirs, ours in [
        (byzfl.NNM(f=f), aggkit.NNM(f=f)),
        (byzfl.ARC(f=f), aggkit.ARC(f=f)),
        (byzfl.Clipping(c=2.0), aggkit.Clipping(c=2.0)),
    ]:
        np.testing.assert_allclose(ours(x), theirs(x.copy()), rtol=1e-10, atol=1e-12)


def test_byzfl_mutates_and_aggkit_does_not():
    byzfl = _byzfl()
    x = np.array([[3.0, 4.0], [30.0, 40.0], [0.3, 0.4]])
    theirs = x.copy()
    byzfl.Clipping(c=1.0)(theirs)
    assert not np.array_equal(theirs, x)  # documented in ALGORITHMS.md §10
    mine = x.copy()
    aggkit.Clipping(c=1.0)(mine)
    np.testing.assert_array_equal(mine, x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("name", list(TORCH_RULES))
def test_cuda_matches_cpu(name, rng):
    x = torch.from_numpy(rng.standard_normal((9, 64)).astype(np.float32))
    kw = TORCH_RULES[name]
    cpu = getattr(at, name)(x, **kw)
    gpu = getattr(at, name)(x.cuda(), **kw)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-6)


def test_geometric_median_gradient_modes(rng):
    x = torch.from_numpy(rng.standard_normal((9, 4))).requires_grad_(True)
    xd = x.detach().numpy()
    grads = {}
    for mode in ("frozen", "unrolled", "implicit"):
        y = at.geometric_median(x, grad=mode, ftol=0.0, maxiter=500)
        np.testing.assert_allclose(y.detach().numpy(), aggkit.geometric_median(xd, ftol=0.0, maxiter=500))
        (grads[mode],) = torch.autograd.grad(y[0], x)
    # Finite differences of the converged median: the implicit (and unrolled) gradients match it,
    # the frozen-weights one is only the weighted mean's.
    eps, fd = 1e-4, np.zeros_like(xd)  # the objective is flat near the optimum: z is exact to ~1e-8
    for i in range(9):
        for j in range(4):
            a, b = xd.copy(), xd.copy()
            a[i, j] += eps
            b[i, j] -= eps
            ga = aggkit.geometric_median(a, ftol=0.0, maxiter=2000)[0]
            gb = aggkit.geometric_median(b, ftol=0.0, maxiter=2000)[0]
            fd[i, j] = (ga - gb) / (2 * eps)
    np.testing.assert_allclose(grads["implicit"].numpy(), fd, atol=5e-4)
    np.testing.assert_allclose(grads["unrolled"].numpy(), grads["implicit"].numpy(), atol=1e-6)
    assert np.abs(grads["frozen"].numpy() - fd).max() > 1e-2
    with pytest.raises(aggkit.InvalidParameterError, match="grad"):
        at.geometric_median(x, grad="exact")


def test_aggregate_module_wraps_every_rule(rng):
    from aggkit.torch.nn import Aggregate

    x = torch.from_numpy(rng.standard_normal((11, 6)))
    for name, kw in {**TORCH_RULES, "pipeline": {"stages": [aggkit.NNM(f=2), aggkit.Median()]}}.items():
        m = Aggregate(name, **kw)
        np.testing.assert_allclose(m(x).numpy(), aggkit.rule(name, **kw)(x.numpy()), rtol=1e-12, atol=1e-12)
    with pytest.raises(TypeError, match="tensor"):
        Aggregate("median")(x.numpy())

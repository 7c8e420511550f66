"""Geometric median: the oracle, optimality against a slow reference, properties, torch."""

from __future__ import annotations

import aggkit
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

X = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])


def objective(z, x, w=None):
    w = np.ones(len(x)) if w is None else np.asarray(w, dtype=float)
    return float((w * np.linalg.norm(x.astype(np.float64) - z.astype(np.float64), axis=1)).sum())


def reference(x, w=None, iters=5000):
    """Plain Weiszfeld in float64 from the mean, many iterations: the slow, obvious version."""
    x = x.astype(np.float64)
    w = np.ones(len(x)) if w is None else np.asarray(w, dtype=float)
    z = (w[:, None] * x).sum(0) / w.sum()
    for _ in range(iters):
        d = np.maximum(np.linalg.norm(x - z, axis=1), 1e-12)
        z = ((w / d)[:, None] * x).sum(0) / (w / d).sum()
    return z


def test_oracle_and_byzfl_preset():  # docs/algorithms.md, geometric median
    z, info = aggkit.geometric_median(X, return_info=True)
    np.testing.assert_allclose(z, [4, 5, 6], atol=1e-9)
    assert info.converged
    byzfl = aggkit.geometric_median(X, init="zero", nu=0.1, maxiter=3, ftol=0.0)
    np.testing.assert_allclose(byzfl, [3.7879, 4.7879, 5.7879], atol=1e-4)


@given(st.data())
def test_optimal_like_the_slow_reference(data):
    n = data.draw(st.integers(1, 9))
    d = data.draw(st.integers(1, 5))
    x = data.draw(hnp.arrays(np.float64, (n, d), elements=st.floats(-100, 100, allow_subnormal=False)))
    w = data.draw(st.one_of(st.none(), st.lists(st.integers(1, 5), min_size=n, max_size=n)))
    z, info = aggkit.geometric_median(x, weights=w, maxiter=1000, ftol=1e-14, return_info=True)
    ref = reference(x, w)
    scale = 1.0 + float(np.abs(x).max())
    # Same minimiser up to the smoothing and tolerance: compare objectives, the quantity minimised
    # (Weiszfeld converges slowly when the minimiser sits on a heavy input: 1e-5 relative; the
    # smoothing nu = 1e-6 moves the minimiser by up to about nu: n * nu absolute).
    slack = sum(w) if w is not None else len(x)
    assert objective(z, x, w) <= objective(ref, x, w) * (1 + 1e-5) + 1e-9 * scale + 2e-6 * slack
    # The result is the weighted mean with the reported weights (what the torch gradient uses).
    np.testing.assert_allclose(
        z, (info.weights[:, None] * x).sum(0) / info.weights.sum(), rtol=1e-12, atol=1e-12
    )


@given(st.data())
def test_equivariance_and_unanimity(data):
    n = data.draw(st.integers(3, 9).filter(lambda k: k % 2 == 1))
    x = data.draw(hnp.arrays(np.float64, (n, 3), elements=st.floats(-10, 10, allow_subnormal=False)))
    z = aggkit.geometric_median(x, ftol=1e-15, maxiter=2000)
    c = np.array(data.draw(st.lists(st.floats(-50, 50), min_size=3, max_size=3)))
    # Translation and rotation equivariance, to the iteration's tolerance.
    tol = 1e-5 * (1 + np.abs(x).max())
    assert objective(aggkit.geometric_median(x + c, ftol=1e-15, maxiter=2000) - c, x) <= objective(z, x) + tol
    q, _ = np.linalg.qr(np.random.default_rng(n).normal(size=(3, 3)))
    zr = aggkit.geometric_median(x @ q.T, ftol=1e-15, maxiter=2000)
    assert objective(zr @ q, x) <= objective(z, x) + tol
    same = np.tile(x[0], (n, 1))
    np.testing.assert_array_max_ulp(aggkit.geometric_median(same), x[0], maxulp=2)


def test_breakdown_half_and_nonfinite_policies():
    rng = np.random.default_rng(0)
    honest = rng.normal(size=(11, 20))
    z_honest = aggkit.geometric_median(honest)
    for junk in (np.full((10, 20), 1e12), rng.normal(size=(10, 20)) * 1e6):
        z = aggkit.geometric_median(np.concatenate([honest, junk]))
        assert np.linalg.norm(z - z_honest) < 10 * np.linalg.norm(honest - z_honest, axis=1).max()
    # From the mean the far junk dominates the objective and stops the iterations early: the
    # reason the default start is the coordinate-wise median.
    far = np.concatenate([honest, np.full((10, 20), 1e12)])
    _, info = aggkit.geometric_median(far, init="mean", return_info=True)
    assert np.linalg.norm(aggkit.geometric_median(far, init="mean") - z_honest) > 1e3
    bad = np.concatenate([honest, np.full((1, 20), np.nan), np.full((1, 20), np.inf)])
    z, info = aggkit.geometric_median(bad, return_info=True)
    np.testing.assert_array_equal(z, z_honest)  # dropped under "robust"
    assert info.weights[-2:].tolist() == [0.0, 0.0]
    with pytest.raises(aggkit.NonFiniteError) as e:
        aggkit.geometric_median(bad, nonfinite="raise")
    assert e.value.rows == [11, 12]
    assert np.isnan(aggkit.geometric_median(bad, nonfinite="propagate")).all()


def test_dtypes_shapes_threads_and_errors():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(7, 4, 5)).astype(np.float32)
    z = aggkit.geometric_median(x)
    assert z.shape == (4, 5)
    assert z.dtype == np.float32
    assert aggkit.geometric_median(x.astype(np.float16)).dtype == np.float16
    np.testing.assert_array_equal(aggkit.geometric_median(list(x)), z)
    big = rng.normal(size=(50, 3000))
    prev = aggkit.get_num_threads()
    try:
        aggkit.set_num_threads(1)
        one = aggkit.geometric_median(big)
        aggkit.set_num_threads(2)
        two = aggkit.geometric_median(big)
    finally:
        aggkit.set_num_threads(prev)
    assert one.tobytes() == two.tobytes()
    bad = [
        (dict(nu=0.0), aggkit.InvalidParameterError, "nu must be finite and > 0"),
        (dict(maxiter=0), aggkit.InvalidParameterError, "maxiter must be >= 1"),
        (dict(ftol=-1.0), aggkit.InvalidParameterError, "ftol"),
        (dict(init="random"), aggkit.InvalidParameterError, "init"),
        (dict(weights=[1, 2]), aggkit.InvalidParameterError, "one entry per input"),
        (dict(maxiter=2.5), TypeError, "maxiter must be an int"),
    ]
    for kw, exc, msg in bad:
        with pytest.raises(exc, match=msg):
            aggkit.geometric_median(X, **kw)
    r = aggkit.rule("geometric_median", maxiter=50)
    assert r == aggkit.GeometricMedian(maxiter=50)
    np.testing.assert_array_equal(r(X), aggkit.geometric_median(X, maxiter=50))
    np.testing.assert_array_equal(
        r(X, weights=[1, 1, 5]), aggkit.geometric_median(X, maxiter=50, weights=[1, 1, 5])
    )


def test_torch_frozen_weights_gradient_and_native_path():
    torch = pytest.importorskip("torch")
    import aggkit.torch as at

    rng = np.random.default_rng(2)
    x = rng.normal(size=(9, 6))
    t = torch.tensor(x, requires_grad=True)
    y, info = at.geometric_median(t, return_info=True)
    assert torch.equal(y.detach(), torch.from_numpy(aggkit.geometric_median(x)))
    y.sum().backward()
    expected = info.weights / info.weights.sum()
    torch.testing.assert_close(t.grad, torch.from_numpy(np.repeat(expected[:, None], 6, axis=1)))
    with at.force_native():
        yn, _ = at.geometric_median(t.detach(), return_info=True)
    torch.testing.assert_close(yn, y.detach(), rtol=1e-9, atol=1e-9)
    assert aggkit.geometric_median(t.detach()).dtype == torch.float64  # the numpy API hands over
    # No gradcheck: the frozen-weights gradient is deliberately not the exact derivative of the
    # iteration (the weights are held constant), so finite differences would not match it.


def test_torch_gradient_modes():
    torch = pytest.importorskip("torch")
    import aggkit.torch as at

    rng = np.random.default_rng(20261122)
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

"""Centered clipping: the slow reference, errors, torch."""

from __future__ import annotations

import aggkit
import numpy as np
import pytest
import reference as ref
from hypothesis import given
from hypothesis import strategies as st
from strategies import matrices


@given(matrices(min_n=1, max_n=8, max_d=4, ties=False), st.data())
def test_matches_reference(x, data):
    tau = data.draw(st.sampled_from([0.0, 0.5, 10.0, 1e9]))
    iters = data.draw(st.integers(0, 3))
    got = aggkit.centered_clipping(x, tau=tau, iters=iters)
    want = ref.centered_clipping(x, tau, iters).astype(x.dtype)
    tol = 1e-5 if x.dtype == np.float32 else 1e-9
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * (1 + np.abs(x).max()))


def test_errors_and_nonfinite_inputs():
    with pytest.raises(aggkit.InvalidParameterError, match="tau"):
        aggkit.centered_clipping(np.zeros((3, 2)), tau=-1.0)
    with pytest.raises(aggkit.InvalidParameterError, match="center"):
        aggkit.centered_clipping(np.zeros((3, 2)), center=np.zeros(3))
    x = np.ones((7, 3))
    x[0, 0] = np.nan
    x[1, 1] = np.inf
    assert np.isfinite(aggkit.centered_clipping(x)).all()


def test_torch_gradient(rng):
    torch = pytest.importorskip("torch")
    import aggkit.torch as at

    t = torch.from_numpy(rng.standard_normal((7, 6))).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: at.centered_clipping(v, tau=1.0, iters=3), (t,))
    # An input exactly at the centre: a finite gradient (its step is the constant-scale diff).
    x = rng.standard_normal((5, 3))
    x[1] = 0.0
    tz = torch.from_numpy(x).requires_grad_(True)
    (g,) = torch.autograd.grad(at.centered_clipping(tz, tau=0.5, iters=1).sum(), tz)
    assert torch.isfinite(g).all()
    np.testing.assert_allclose(g[1].numpy(), np.full(3, 1 / 5))


def test_rounds_carry_the_centre_and_stateless_rules_carry_nothing():
    x = np.random.default_rng(11).normal(size=(6, 4)) + 3.0
    r = aggkit.CenteredClipping(tau=0.5, iters=1)
    rounds = r.rounds()
    assert isinstance(rounds, aggkit.CenteredClippingState)
    first, sel = rounds.aggregate(x)
    assert sel is None
    second, _ = rounds.aggregate(x)
    np.testing.assert_array_equal(second, r(x, center=first))
    rounds.reset()
    np.testing.assert_array_equal(rounds.aggregate(x)[0], first)
    with pytest.raises(aggkit.InvalidParameterError, match="does not take weights"):
        rounds.aggregate(x, weights=np.ones(6))
    med = aggkit.Median().rounds()
    np.testing.assert_array_equal(med.aggregate(x)[0], aggkit.median(x))
    med.reset()


@pytest.mark.parametrize("tau", [1e308, 1e300, 1e250, 1.0])
def test_rows_beyond_float64_on_both_paths(tau):
    # A row whose distance overflows float64 but lies within tau moves the centre all the way
    # (the torch path clipped it to tau, and tau / m overflowed for tau near the max); moves
    # whose sum overflows are averaged all the same.
    torch = pytest.importorskip("torch")
    import aggkit.torch as at

    x = np.array([[1e308, 0.0], [1e308, 0.0], [0.0, 1.0], [-1e300, 5.0], [1e200, 1e200]])
    want = aggkit.centered_clipping(x, tau=tau, iters=3)
    assert np.isfinite(want).all()
    got = at.centered_clipping(torch.from_numpy(x), tau=tau, iters=3).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12)

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

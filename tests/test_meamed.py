"""Meamed (mean around the median): the oracle, the slow reference, errors, torch."""

from __future__ import annotations

import aggkit
import numpy as np
import pytest
import reference as ref
from hypothesis import given
from hypothesis import strategies as st
from strategies import matrices

COL = np.array([[1.0], [2.0], [3.0], [10.0]])


def test_oracle():
    assert aggkit.meamed(COL, f=1).tolist() == [2.0]


@given(matrices(min_n=1, max_n=11, max_d=4), st.data())
def test_matches_reference(x, data):
    f = data.draw(st.integers(0, (x.shape[0] - 1) // 2))
    np.testing.assert_array_equal(aggkit.meamed(x, f=f), ref.closest_to_median(x, x.shape[0] - f))


def test_errors():
    with pytest.raises(aggkit.TooFewInputsError):
        aggkit.meamed(np.zeros((2, 2)), f=1)


def test_torch_gradient_and_backward_match_native(rng):
    torch = pytest.importorskip("torch")
    import aggkit.torch as at

    x = torch.from_numpy(rng.standard_normal((9, 5))).requires_grad_(True)
    (g,) = torch.autograd.grad(at.meamed(x, f=2).sum(), x)
    np.testing.assert_allclose(g.sum(0).numpy(), np.ones(5), rtol=1e-12)
    assert (g >= 0).all()
    x = torch.from_numpy(rng.standard_normal((8, 50))).requires_grad_(True)
    gout = torch.from_numpy(rng.standard_normal(50))
    (a,) = torch.autograd.grad((at.meamed(x, f=3) * gout).sum(), x)
    with at.force_native():
        (b,) = torch.autograd.grad((at.meamed(x, f=3) * gout).sum(), x)
    torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(lambda t: at.meamed(t, f=3), (x,))

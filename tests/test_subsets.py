"""The subset rules (MDA, SMEA, CAF, MoNNA): oracles, slow references, errors, torch."""

from __future__ import annotations

import aggkit
import numpy as np
import pytest
import reference as ref
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import matrices

COL = np.array([[1.0], [2.0], [3.0], [10.0]])


def test_oracle():
    assert aggkit.mda(COL, f=1).tolist() == [2.0]


@settings(max_examples=40)
@given(matrices(min_n=2, max_n=7, max_d=3, ties=False), st.data())
def test_match_references(x, data):
    f = data.draw(st.integers(0, (x.shape[0] - 1) // 2))
    xd = x.astype(np.float64)
    tol = dict(rtol=1e-6, atol=1e-6 * (1 + np.abs(xd).max()))
    np.testing.assert_allclose(aggkit.mda(xd, f=f), ref.mda(xd, f)[0], **tol)
    np.testing.assert_allclose(aggkit.caf(xd, f=f), ref.caf(xd, f), **tol)


def test_smea_matches_reference_on_separated_data():
    for seed in range(5):
        r = np.random.default_rng(seed)
        x = r.standard_normal((7, 4))
        x[r.integers(7)] += 20 * r.standard_normal(4)
        np.testing.assert_allclose(aggkit.smea(x, f=2), ref.smea(x, 2)[0], rtol=1e-12)


def test_monna_keeps_the_nearest_to_the_trusted_input():
    x = np.array([[0.0], [1.0], [-2.0], [5.0], [100.0]])
    np.testing.assert_allclose(aggkit.monna(x, f=2, idx=0), [(0 + 1 - 2) / 3])
    np.testing.assert_allclose(aggkit.monna(x, f=2, idx=3), [(1 + 5 + 0) / 3])  # |-2-5| = 7 > |0-5| = 5


def test_errors():
    with pytest.raises(aggkit.InvalidParameterError, match="max_subsets"):
        aggkit.mda(np.zeros((40, 2)), f=15)
    with pytest.raises(aggkit.InvalidParameterError, match="max_subsets"):
        aggkit.smea(np.zeros((30, 2)), f=10)
    with pytest.raises(aggkit.InvalidParameterError, match="idx"):
        aggkit.monna(np.zeros((3, 2)), f=1, idx=3)
    x = np.ones((7, 3))
    x[0, 0] = np.nan
    x[1, 1] = np.inf
    with pytest.raises(aggkit.NonFiniteError, match="more than f=1"):
        aggkit.mda(x, f=1)
    with pytest.raises(aggkit.NonFiniteError):
        aggkit.caf(x, f=2, nonfinite="raise")
    assert np.isfinite(aggkit.mda(x, f=2)).all()


def test_nonfinite_inputs_are_left_out(rng):
    x = rng.standard_normal((11, 4))
    x[3] = np.nan
    x[7, 2] = np.inf
    for name in ("mda", "smea", "caf"):
        assert np.isfinite(aggkit.rule(name, f=2)(x)).all(), name


@pytest.mark.parametrize("name", ["mda", "monna", "smea"])
def test_torch_gradient_reaches_the_kept_values(name, rng):
    torch = pytest.importorskip("torch")
    import aggkit.torch as at

    x = torch.from_numpy(rng.standard_normal((9, 5))).requires_grad_(True)
    (g,) = torch.autograd.grad(getattr(at, name)(x, f=2).sum(), x)
    # Each output coordinate is an average of kept values: the gradient per coordinate sums to 1.
    np.testing.assert_allclose(g.sum(0).numpy(), np.ones(5), rtol=1e-12)
    assert (g >= 0).all()

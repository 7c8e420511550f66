"""Bulyan: the oracle, the slow reference, the DETOX variant, errors, torch."""

from __future__ import annotations

import aggkit
import numpy as np
import pytest
import reference as ref
from hypothesis import given
from strategies import matrices

# The oracle of docs/algorithms.md (Krum and Bulyan share it).
SPEC_X = np.array([[6, -8], [-6, -5], [-6, 6], [7, 2], [-9, -8], [-3, -1], [40, -30]], float)


def test_oracle():
    y, sel = aggkit.bulyan(SPEC_X, f=1, return_selection=True)
    np.testing.assert_allclose(y, [-5.0, -4.0 / 3.0], rtol=1e-15)
    assert sel.indices.tolist() == [5, 1, 3, 2, 0]
    unclamped = aggkit.bulyan(SPEC_X, f=1, clamp=False, return_selection=True)[1]
    assert unclamped.indices.tolist() == [5, 1, 3, 2, 0]


def test_detox_variant_is_trimmed_mean_of_the_multi_krum_selection():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 5))
    f = 2
    _, sel = aggkit.multi_krum(x, f=f, m=12 - f - 2, return_selection=True)
    want = aggkit.trimmed_mean(x[sel.indices], f=f)
    np.testing.assert_array_equal(aggkit.bulyan(x, f=f, variant="detox"), want)


# float64: the core squares float32 differences in float32 lanes (distance.rs), so a float32
# difference below ~1e-19 squares to 0 there and not in the float64 reference.
@given(matrices(min_n=3, max_n=11, max_d=4, ties=False, dtype=np.float64))
def test_matches_reference(x):
    f = (x.shape[0] - 3) // 4
    y, sel = aggkit.bulyan(x, f=f, return_selection=True)
    want, chosen = ref.bulyan(x, f)
    assert sel.indices.tolist() == chosen
    np.testing.assert_array_equal(y, want)


def test_errors():
    with pytest.raises(aggkit.TooFewInputsError, match="n >= 4f \\+ 3"):
        aggkit.bulyan(np.zeros((6, 2)), f=1)
    with pytest.raises(aggkit.InvalidParameterError, match="variant"):
        aggkit.Bulyan(f=1, variant="aggregathor")


def test_nonfinite_inputs_are_left_out_by_the_detox_variant(rng):
    x = rng.standard_normal((11, 4))
    x[3] = np.nan
    x[7, 2] = np.inf
    assert np.isfinite(aggkit.bulyan(x, f=2, variant="detox")).all()


def test_torch_gradient_reaches_the_kept_values(rng):
    torch = pytest.importorskip("torch")
    import aggkit.torch as at

    x = torch.from_numpy(rng.standard_normal((9, 5))).requires_grad_(True)
    (g,) = torch.autograd.grad(at.bulyan(x, f=1).sum(), x)
    # Each output coordinate is an average of kept values: the gradient per coordinate sums to 1.
    np.testing.assert_allclose(g.sum(0).numpy(), np.ones(5), rtol=1e-12)
    assert (g >= 0).all()

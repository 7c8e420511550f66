import aggkit
import numpy as np
import pytest
import reference as ref
from hypothesis import given
from strategies import matrices


@given(matrices())
def test_matches_reference_bitwise(x):
    np.testing.assert_array_equal(aggkit.mean(x), ref.mean(x))


def test_weighted(rng):
    x = rng.standard_normal((6, 50))
    w = rng.uniform(0, 10, 6)
    np.testing.assert_array_equal(aggkit.mean(x, weights=w), ref.mean(x, w))
    np.testing.assert_allclose(aggkit.mean(x, weights=w), np.average(x, axis=0, weights=w))


def test_robust_drops_nonfinite_inputs():
    x = np.array([[1.0, 2.0], [np.inf, 0.0], [3.0, 4.0], [0.0, np.nan]])
    np.testing.assert_array_equal(aggkit.mean(x), [2.0, 3.0])
    out = aggkit.mean(x, nonfinite="propagate")  # IEEE: inf + 3 = inf, 4 + nan = nan
    assert np.isposinf(out[0])
    assert np.isnan(out[1])
    with pytest.raises(aggkit.NonFiniteError, match=r"\[1, 3\]"):
        aggkit.mean(x, nonfinite="raise")
    with pytest.raises(aggkit.NonFiniteError, match="nothing is left"):
        aggkit.mean(np.full((2, 3), np.nan))


def test_bad_weights():
    x = np.ones((3, 2))
    with pytest.raises(aggkit.InvalidParameterError, match=r"weights\[1\]=-1"):
        aggkit.mean(x, weights=[1, -1, 1])
    with pytest.raises(aggkit.InvalidParameterError, match="one entry per input"):
        aggkit.mean(x, weights=[1, 1])
    with pytest.raises(aggkit.InvalidParameterError, match="sum to 0"):
        aggkit.mean(x, weights=[0, 0, 0])
    with pytest.raises(aggkit.ShapeError):
        aggkit.mean(x, weights=np.ones((3, 1)))


def test_large_input_reads_at_memory_speed_shape(rng):
    x = rng.standard_normal((8, 100_003)).astype(np.float32)
    np.testing.assert_allclose(aggkit.mean(x), x.astype(np.float64).mean(0), rtol=1e-6, atol=1e-7)

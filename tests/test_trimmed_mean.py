import aggkit
import numpy as np
import pytest
import reference as ref
from hypothesis import given
from hypothesis import strategies as st
from strategies import matrices


def test_spec_oracles():  # ALGORITHMS.md §18.1, §18.2, §18.6
    x = np.array([[1, 10], [2, -3], [4, 7], [100, 0.5]], dtype=np.float64)
    np.testing.assert_array_equal(aggkit.trimmed_mean(x, f=1), [3, 3.75])
    y = np.array([[6, -8], [-6, -5], [-6, 6], [7, 2], [-9, -8], [-3, -1], [40, -30]], np.float64)
    np.testing.assert_allclose(aggkit.trimmed_mean(y, f=1), [-0.4, -4.0], rtol=1e-15)
    np.testing.assert_allclose(aggkit.trimmed_mean(y, f=2), [-1.0, -14 / 3], rtol=1e-15)
    np.testing.assert_array_equal(aggkit.trimmed_mean(np.array([[1.0], [2], [3], [10]]), f=1), [2.5])


@given(st.data())
def test_matches_reference_bitwise(data):
    x = data.draw(matrices())
    f = data.draw(st.integers(0, (x.shape[0] - 1) // 2))
    np.testing.assert_array_equal(aggkit.trimmed_mean(x, f=f), ref.trimmed_mean(x, f))


def test_matches_reference_across_tiles(rng):
    x = rng.standard_normal((41, 1500))
    x[[0, 5], :] = 1e300
    np.testing.assert_array_equal(aggkit.trimmed_mean(x, f=4), ref.trimmed_mean(x, 4))


@pytest.mark.parametrize("n", [65, 130, 257])
def test_interpreted_network_across_tiles(rng, n):
    # n > 64: the interpreted network over several 256 KiB tiles, ties, extremes and NaN.
    d = 2 * (262144 // (n * 4)) + 37
    x = rng.integers(-20, 20, size=(n, d)).astype(np.float32)
    x[[0, 5], :] = 3e38
    x[7, ::5] = np.nan
    for f in (0, n // 10, (n - 1) // 2):
        np.testing.assert_array_equal(aggkit.trimmed_mean(x, f=f), ref.trimmed_mean(x, f))


def test_f_zero_is_the_mean(rng):
    x = rng.standard_normal((9, 100)).astype(np.float32)
    np.testing.assert_allclose(aggkit.trimmed_mean(x, f=0), x.mean(axis=0, dtype=np.float64), rtol=1e-6)


def test_never_overflows_on_byzantine_extremes():
    x = np.array([[3e38], [3e38], [1.0], [2.0], [3.0], [-3e38], [-3e38]], np.float32)
    np.testing.assert_array_equal(aggkit.trimmed_mean(x, f=2), [2.0])


def test_nonfinite_policies():
    x = np.array([[np.nan], [1.0], [2.0], [np.inf], [0.0]])
    np.testing.assert_array_equal(aggkit.trimmed_mean(x, f=2), [2.0])
    assert np.isnan(aggkit.trimmed_mean(x, f=2, nonfinite="propagate"))
    with pytest.raises(aggkit.NonFiniteError):
        aggkit.trimmed_mean(x, f=2, nonfinite="raise")
    # More bad values than f per side reach the sum: 1, 2 and inf are kept.
    assert np.isposinf(aggkit.trimmed_mean(x, f=1))


def test_reports_kept_bounds():
    x = np.array([[5.0], [1.0], [3.0], [9.0], [7.0]])
    _, lo, hi = aggkit._core.trimmed_mean(x, 1, "robust", True)
    assert (lo[0], hi[0]) == (2, 4)  # lowest kept 3.0 (row 2), highest kept 7.0 (row 4)

import aggkit
import numpy as np
import pytest
import reference as ref
from conftest import SIMD_LEVELS
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


def _mean_in_row_order(x, w, policy):
    """ref.mean for float32 input, vectorized over coordinates: the same float64 operations in
    the same order (each coordinate's sum runs over the rows in index order), so the same bits."""
    rows = [i for i in range(len(x)) if policy != "robust" or np.isfinite(x[i]).all()]
    w = np.ones(len(x)) if w is None else np.asarray(w, np.float64)
    acc = np.full(x.shape[1], -0.0)
    for i in rows:
        acc = acc + w[i] * x[i].astype(np.float64)
    return (acc / ref.fsum_in_order([w[i] for i in rows], np.float64)).astype(np.float32)


@pytest.mark.parametrize("n", [1, 3, 8, 9, 17, 23])
@pytest.mark.parametrize("weighted", [False, True])
def test_simd_kernels_across_tiles_and_groups(rng, n, weighted):
    # Two full 32768-coordinate tiles and a partial one whose last 5 coordinates are the
    # kernels' scalar tail; groups of 8 rows (first, middle and last passes); non-finite
    # values in a later group and in the tail. Every SIMD level gives the reference's bits.
    d = 2 * 32768 + 37
    x = rng.standard_normal((n, d)).astype(np.float32)
    if n > 2:
        x[n - 1, 40_000] = np.nan
        x[n // 2, d - 2] = -np.inf
    w = rng.uniform(0.5, 4.0, n) if weighted else None
    small = x[:, :40].copy()
    np.testing.assert_array_equal(_mean_in_row_order(small, w, "robust"), ref.mean(small, w))
    before = aggkit.simd_level()
    try:
        for policy in ("robust", "propagate"):
            expected = _mean_in_row_order(x, w, policy)
            for level in SIMD_LEVELS:
                aggkit._core._set_simd_level(level)
                out = aggkit.mean(x, weights=w, nonfinite=policy)
                np.testing.assert_array_equal(out.view(np.uint32), expected.view(np.uint32))
    finally:
        aggkit._core._set_simd_level(before)


def test_weight_product_overflow_is_not_a_bad_input():
    # 1e300 * 1e30 overflows float64 although both are finite. Only the ratio of the weights
    # matters, so they are rescaled by a power of two first: the mean of equal values is that
    # value (it used to come back +inf).
    x = np.full((2, 40), 1e30, np.float32)
    out = aggkit.mean(x, weights=[1e300, 1.0])
    np.testing.assert_array_equal(out, x[0])

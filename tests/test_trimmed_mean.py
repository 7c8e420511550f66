import aggkit
import numpy as np
import pytest
import reference as ref
from hypothesis import given
from hypothesis import strategies as st
from strategies import matrices


def test_oracles():  # docs/algorithms.md, Trimmed mean
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


@pytest.mark.parametrize("n", [65, 100, 200])
@pytest.mark.parametrize("case", ["gauss", "tiny", "wide", "zeros", "equal", "inf", "nan_propagate"])
def test_masked_sum_and_its_fallback(rng, simd, n, case):
    # float32, n > 64, no rows: the two boundary ranks, then the exact masked sum with tie
    # counts, or the sorted kept ranks in a block where the sum would not be exact (kept
    # values spanning more than ~2^21, or an infinity). Bitwise against the sorted sum.
    d = 16 * 9 + 5  # whole blocks and a partial one
    x = rng.standard_normal((n, d)).astype(np.float32)
    nonfinite = "robust"
    if case == "tiny":  # one tiny nonzero value kept in some columns: those blocks fall back
        x[3, ::7] = 1e-30
    elif case == "wide":  # kept values spanning 2^40: the row order would round differently
        x *= np.exp2(rng.integers(-20, 21, size=(n, 1))).astype(np.float32)
    elif case == "zeros":  # signed zeros, ties at both boundaries
        x = rng.integers(-1, 2, size=(n, d)).astype(np.float32)
        x[rng.random((n, d)) < 0.3] = -0.0
    elif case == "equal":  # whole columns of one value (the two boundaries equal)
        x[:, ::3] = np.float32(-0.0)
        x[:, 1::3] = np.float32(1.5)
    elif case == "inf":
        x[rng.random((n, d)) < 0.2] = np.inf
        x[rng.random((n, d)) < 0.2] = -np.inf
    elif case == "nan_propagate":
        x[rng.random((n, d)) < 0.01] = np.nan
        nonfinite = "propagate"
    for f in (0, 1, n // 10, n // 4, (n - 1) // 2):
        got = aggkit.trimmed_mean(x, f=f, nonfinite=nonfinite)
        want = ref.trimmed_mean(x, f, nonfinite)
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


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


@given(matrices(min_n=1, max_n=9, max_d=4), st.data())
def test_weighted_trimmed_mean_matches_repeated_inputs(x, data):
    n = x.shape[0]
    w = data.draw(st.lists(st.integers(0, 4), min_size=n, max_size=n).filter(lambda v: sum(v) > 0))
    f = data.draw(st.integers(0, (n - 1) // 2))
    got = aggkit.trimmed_mean(x, f=f, weights=w)
    tol = 1e-5 if x.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, ref.weighted_trimmed_mean(x, w, f), rtol=tol, atol=tol * np.abs(x).max())


def test_weighted_trimmed_mean(rng):
    x = rng.standard_normal((8, 33)).astype(np.float32)
    np.testing.assert_allclose(
        aggkit.trimmed_mean(x, f=2, weights=np.ones(8)), aggkit.trimmed_mean(x, f=2), rtol=1e-6
    )
    x = rng.standard_normal((7, 10))
    x[6] = 1e30
    y = aggkit.trimmed_mean(x, f=1, weights=[5, 5, 5, 5, 5, 5, 1])  # the Byzantine client claims few examples
    assert np.all((y >= x[:6].min(0)) & (y <= x[:6].max(0)))


def test_torch_weighted_trimmed_mean(rng):
    torch = pytest.importorskip("torch")
    import aggkit.torch as at

    x = rng.standard_normal((7, 6))
    w = [1, 2, 3, 1, 1, 2, 5]
    t = torch.from_numpy(x).requires_grad_(True)
    np.testing.assert_allclose(
        at.trimmed_mean(t, f=2, weights=w).detach().numpy(),
        aggkit.trimmed_mean(x, f=2, weights=w),
        rtol=1e-12,
    )
    assert torch.autograd.gradcheck(lambda v: at.trimmed_mean(v, f=2, weights=w), (t,))

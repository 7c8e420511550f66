import aggkit
import numpy as np
import pytest
import reference as ref
from hypothesis import given
from hypothesis import strategies as st
from strategies import matrices

ORACLE = np.array([[1, 10], [2, -3], [4, 7], [100, 0.5]], dtype=np.float64)


def test_oracle():  # docs/algorithms.md, Median
    np.testing.assert_array_equal(aggkit.median(ORACLE), [3, 3.75])
    np.testing.assert_array_equal(aggkit.median(ORACLE, even="lower"), [2, 0.5])
    np.testing.assert_array_equal(aggkit.median(ORACLE, even="upper"), [4, 7])
    x = np.array([[6, -8], [-6, -5], [-6, 6], [7, 2], [-9, -8], [-3, -1], [40, -30]], np.float32)
    np.testing.assert_array_equal(aggkit.median(x), [-3, -5])


@given(matrices(), st.sampled_from(["mean", "lower", "upper"]))
def test_matches_reference_bitwise(x, even):
    np.testing.assert_array_equal(aggkit.median(x, even=even), ref.median(x, even))


def test_matches_reference_across_tiles(rng):
    # Wider than one tile and large enough for the parallel path.
    x = rng.standard_normal((37, 2000)).astype(np.float32)
    x[3, ::7] = np.nan
    np.testing.assert_array_equal(aggkit.median(x), ref.median(x))
    np.testing.assert_array_equal(
        aggkit.median(x, nonfinite="propagate"), ref.median(x, nonfinite="propagate")
    )


@pytest.mark.parametrize("n", [65, 130, 257])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_interpreted_network_across_tiles(rng, n, dtype):
    # n > 64 runs the interpreted network over tiles of 256 KiB of keys (a few hundred
    # coordinates) with rows prefetched ahead: several tiles, a partial block, ties and NaN.
    d = 2 * (262144 // (n * np.dtype(dtype).itemsize)) + 37
    x = rng.integers(-20, 20, size=(n, d)).astype(dtype)
    x[3, ::7] = np.nan
    x[n - 1, 5::11] = -np.inf
    for even in ("mean", "lower", "upper"):
        np.testing.assert_array_equal(aggkit.median(x, even=even), ref.median(x, even))
    np.testing.assert_array_equal(
        aggkit.median(x, nonfinite="propagate"), ref.median(x, nonfinite="propagate")
    )
    _, lo, hi = aggkit._core.median(x, "lower", "robust", True)
    order = np.argsort(x, axis=0, kind="stable")  # robust: NaN ranks above +inf; ties by row
    want = order[(n - 1) // 2]
    np.testing.assert_array_equal(lo, want)
    np.testing.assert_array_equal(hi, want)


def test_lower_matches_torch_convention_and_numpy(rng):
    x = rng.standard_normal((10, 500))
    np.testing.assert_allclose(aggkit.median(x), np.median(x, axis=0), rtol=0, atol=0)
    lower = np.sort(x, axis=0)[4]
    np.testing.assert_array_equal(aggkit.median(x, even="lower"), lower)


def test_nonfinite_policies():
    x = np.array([[1.0, np.nan], [2.0, 5.0], [np.nan, 6.0]])
    np.testing.assert_array_equal(aggkit.median(x), [2.0, 6.0])
    assert np.isnan(aggkit.median(x, nonfinite="propagate")).all()
    with pytest.raises(aggkit.NonFiniteError, match=r"row indices\): \[0, 2\]") as e:
        aggkit.median(x, nonfinite="raise")
    assert e.value.rows == [0, 2]


def test_even_mean_does_not_overflow():
    x = np.array([[3e38], [3e38], [-1.0], [3e38]], np.float32)
    np.testing.assert_array_equal(aggkit.median(x), np.float32([3e38]))
    x = np.array([[-np.inf], [np.inf]])
    assert np.isnan(aggkit.median(x))  # documented: the two middles -inf, +inf average to NaN


def test_signed_zero_is_order_independent():
    a = np.array([[-0.0], [0.0]])
    for x in (a, a[::-1]):
        assert np.signbit(aggkit.median(x, even="lower"))[0]
        assert not np.signbit(aggkit.median(x, even="upper"))[0]


def test_reports_selected_rows():
    lo_hi = aggkit._core.median(ORACLE, "mean", "robust", True)
    np.testing.assert_array_equal(lo_hi[1], [1, 3])  # rows of the lower middles: 2 and 0.5
    np.testing.assert_array_equal(lo_hi[2], [2, 2])  # rows of the upper middles: 4 and 7


def test_selection_path_beyond_the_network(rng):
    # n > 1024 leaves the sorting network for per-coordinate selection: same results.
    x = rng.standard_normal((1030, 5))
    x[7, 1] = np.nan
    for even in ("mean", "lower", "upper"):
        np.testing.assert_array_equal(aggkit.median(x, even=even), ref.median(x, even))
    np.testing.assert_array_equal(
        aggkit.median(x, nonfinite="propagate"), ref.median(x, nonfinite="propagate")
    )
    np.testing.assert_array_equal(aggkit.trimmed_mean(x, f=100), ref.trimmed_mean(x, 100))


@given(matrices(min_n=1, max_n=9, max_d=4), st.data())
def test_weighted_median_matches_repeated_inputs(x, data):
    n = x.shape[0]
    w = data.draw(st.lists(st.integers(0, 4), min_size=n, max_size=n).filter(lambda v: sum(v) > 0))
    for even in ("mean", "lower", "upper"):
        np.testing.assert_array_equal(aggkit.median(x, weights=w, even=even), ref.weighted_median(x, w, even))


def test_weighted_median(rng):
    x = rng.standard_normal((8, 33)).astype(np.float32)
    np.testing.assert_array_equal(aggkit.median(x, weights=np.ones(8)), aggkit.median(x))
    x = rng.standard_normal((7, 10))
    x[6] = 1e30
    y = aggkit.median(x, weights=[5, 5, 5, 5, 5, 5, 1])  # the Byzantine client claims few examples
    assert np.all((y >= x[:6].min(0)) & (y <= x[:6].max(0)))
    with pytest.raises(aggkit.InvalidParameterError, match="weights"):
        aggkit.median(np.zeros((3, 2)), weights=[1, -1, 1])
    with pytest.raises(aggkit.InvalidParameterError, match="sum to 0"):
        aggkit.median(np.zeros((3, 2)), weights=[0, 0, 0])


def test_torch_weighted_median(rng):
    torch = pytest.importorskip("torch")
    import aggkit.torch as at

    x = rng.standard_normal((7, 6))
    w = [1, 2, 3, 1, 1, 2, 5]
    t = torch.from_numpy(x).requires_grad_(True)
    np.testing.assert_array_equal(at.median(t, weights=w).detach().numpy(), aggkit.median(x, weights=w))


def _large_n_inputs(rng, n, d):
    """Inputs that stress the sample brackets (n >= 384): ties, equal columns, the float32
    extremes with signed zeros, infinities and NaN, and values crowded near the median in rows
    the sample may miss."""
    big = np.finfo(np.float32).max
    extreme = np.array([big, -big, 0.0, -0.0, 1e-45], np.float32)
    crowd = rng.standard_normal((n, d)).astype(np.float32)
    rows = rng.permutation(n)[: int(0.4 * n)]
    crowd[rows] = (0.01 + np.arange(len(rows))[:, None] * 1e-7).astype(np.float32)
    nonfinite = rng.standard_normal((n, d)).astype(np.float32)
    nonfinite[rng.integers(0, n, n // 8), rng.integers(0, d, n // 8)] = np.inf
    nonfinite[rng.integers(0, n, n // 8), rng.integers(0, d, n // 8)] = -np.inf
    nonfinite[rng.integers(0, n, n // 8), rng.integers(0, d, n // 8)] = np.nan
    return {
        "gauss": rng.standard_normal((n, d)).astype(np.float32),
        "ties": rng.integers(-2, 3, (n, d)).astype(np.float32),
        "equal": np.full((n, d), 3.25, np.float32),
        "extreme": rng.choice(extreme, (n, d)),
        "crowd": crowd,
        "nonfinite": nonfinite,
    }


@pytest.mark.parametrize("n", [383, 384, 768, 1025, 2049])
def test_large_n_matches_reference_on_every_level(n, simd, rng):
    # Sample brackets from n = 384 (median) / 768 (trimmed mean), beyond the networks from
    # 1025: bit-identical to the reference on every SIMD level, whatever the data.
    for name, x in _large_n_inputs(rng, n, 24).items():
        for even in ("mean", "lower"):
            got, want = aggkit.median(x, even=even), ref.median(x, even)
            np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32), err_msg=f"{name} {even}")
        for f in (0, n // 10, (n - 1) // 2):
            with np.errstate(all="ignore"):
                got = aggkit.trimmed_mean(x, f=f)
            want = ref.trimmed_mean(x, f)
            np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32), err_msg=f"{name} f={f}")

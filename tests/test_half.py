"""Half-precision input (float16, ml_dtypes' bfloat16) read in place by the rules with
half-precision kernels: mean, median, trimmed mean (weighted or not), Krum and Multi-Krum.

The oracle is the float32 computation on the widened input, rounded once to the input's
format (round to nearest even), which is what these rules computed before they read half
precision in place: the results must match it bit for bit, on every SIMD level.
"""

from __future__ import annotations

import tracemalloc

import aggkit
import numpy as np
import pytest
from aggkit.errors import NonFiniteError, TooFewInputsError

ml_dtypes = pytest.importorskip("ml_dtypes")

FORMATS = [np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)]


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint16)


def hostile(n: int, d: int, dtype: np.dtype, seed: int) -> np.ndarray:
    """Values a client could send: ordinary ones, ties, ±0, subnormals, the format's largest
    finite values, infinities and NaN."""
    rng = np.random.default_rng(seed)
    info = ml_dtypes.finfo(dtype)
    x = (rng.standard_normal((n, d)) * 10).astype(dtype)
    x[:, : d // 8] = rng.integers(-2, 3, (n, d // 8)).astype(dtype)  # ties
    specials = np.array(
        [
            0.0,
            -0.0,
            float(info.smallest_subnormal),
            -float(info.smallest_subnormal),
            float(info.max),
            -float(info.max),
            float(info.tiny),
        ],
        dtype=np.float64,
    ).astype(dtype)
    mask = rng.random((n, d)) < 0.05
    x[mask] = rng.choice(specials, mask.sum())
    return x


RULES = [
    ("mean", lambda x, w: aggkit.mean(x)),
    ("weighted mean", lambda x, w: aggkit.mean(x, weights=w)),
    ("median", lambda x, w: aggkit.median(x)),
    ("median lower", lambda x, w: aggkit.median(x, even="lower")),
    ("weighted median", lambda x, w: aggkit.median(x, weights=w)),
    ("trimmed mean", lambda x, w: aggkit.trimmed_mean(x, f=2)),
    ("weighted trimmed mean", lambda x, w: aggkit.trimmed_mean(x, f=2, weights=w)),
    ("krum", lambda x, w: aggkit.krum(x, f=2)),
    ("multi_krum", lambda x, w: aggkit.multi_krum(x, f=2, m=4)),
    ("weighted multi_krum", lambda x, w: aggkit.multi_krum(x, f=2, m=4, weights=w)),
]


def oracle(rule, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return np.asarray(rule(x.astype(np.float32), w)).astype(x.dtype)


@pytest.mark.parametrize("dtype", FORMATS, ids=str)
@pytest.mark.parametrize(("name", "rule"), RULES, ids=[r[0] for r in RULES])
def test_matches_the_float32_computation_rounded_once(simd, dtype, name, rule):
    for n, d, seed in [(7, 1000, 1), (12, 3001, 2), (40, 517, 3), (150, 70, 4)]:
        x = hostile(n, d, dtype, seed)
        if "krum" in name or ("mean" in name and "trimmed" not in name):
            # rules on whole inputs: a few clean rows so that enough inputs are finite
            x[n // 2 :] = np.clip(x[n // 2 :].astype(np.float32), -100, 100).astype(dtype)
        w = np.random.default_rng(seed).random(n) + 0.1
        got = rule(x, w)
        want = oracle(rule, x, w)
        assert got.dtype == x.dtype, name
        assert got.shape == want.shape, name
        np.testing.assert_array_equal(bits(got), bits(want), err_msg=f"{name} n={n} d={d}")


@pytest.mark.parametrize("dtype", FORMATS, ids=str)
def test_policies_and_errors_are_those_of_the_float32_call(dtype):
    x = hostile(9, 300, dtype, 7)
    x[:, :] = np.clip(x.astype(np.float32), -5, 5).astype(dtype)
    x[3, 10] = np.nan
    x[6, 20] = np.inf
    for rule in (aggkit.mean, aggkit.median, lambda v, **k: aggkit.trimmed_mean(v, f=2, **k)):
        for nonfinite in ("robust", "propagate"):
            got = rule(x, nonfinite=nonfinite)
            want = rule(x.astype(np.float32), nonfinite=nonfinite).astype(dtype)
            np.testing.assert_array_equal(bits(got), bits(want))
        with pytest.raises(NonFiniteError) as half_err:
            rule(x, nonfinite="raise")
        with pytest.raises(NonFiniteError) as f32_err:
            rule(x.astype(np.float32), nonfinite="raise")
        assert half_err.value.rows == f32_err.value.rows == [3, 6]
        assert str(half_err.value) == str(f32_err.value)
    # every input non-finite: the mean has nothing left, under both input types
    bad = x.copy()
    bad[:, 0] = np.nan
    with pytest.raises(NonFiniteError) as half_err:
        aggkit.mean(bad)
    with pytest.raises(NonFiniteError) as f32_err:
        aggkit.mean(bad.astype(np.float32))
    assert str(half_err.value) == str(f32_err.value)
    with pytest.raises(TooFewInputsError):
        aggkit.krum(x[:4], f=1)
    with pytest.raises(TooFewInputsError):
        aggkit.trimmed_mean(x[:4], f=2)


@pytest.mark.parametrize("dtype", FORMATS, ids=str)
def test_shapes_layouts_and_sequences(dtype):
    x = hostile(11, 2 * 3 * 37, dtype, 9).reshape(11, 2, 3, 37)
    for rule in (aggkit.mean, aggkit.median, lambda v: aggkit.trimmed_mean(v, f=1)):
        want = rule(x)
        assert want.shape == (2, 3, 37)
        assert want.dtype == dtype
        # a list of arrays, a strided view, a Fortran-ordered copy: the same bits
        np.testing.assert_array_equal(bits(rule(list(x))), bits(want))
        np.testing.assert_array_equal(bits(rule(np.asfortranarray(x))), bits(want))
        np.testing.assert_array_equal(bits(rule(x[:, :, :, ::-1]))[..., ::-1], bits(want))
    # n = 1, and d = 0
    np.testing.assert_array_equal(bits(aggkit.median(x[:1])), bits(x[0]))
    assert aggkit.mean(np.zeros((3, 0), dtype)).shape == (0,)
    if dtype == np.float16:
        big = x.astype(">f2")  # non-native byte order
        np.testing.assert_array_equal(bits(aggkit.median(big)), bits(aggkit.median(x)))


@pytest.mark.parametrize("dtype", FORMATS, ids=str)
def test_the_input_is_read_in_place(dtype):
    """No float32 copy of the input: numpy's allocations (which tracemalloc sees) stay far below
    the 2x of the input a float32 copy would take. The Rust kernels' own buffers are one block
    per worker."""
    n, d = 16, 1_000_000
    x = np.ones((n, d), dtype)
    before = x.copy()
    aggkit.median(x)  # warm up (thread pool, plans)
    for rule in (
        aggkit.mean,
        aggkit.median,
        lambda v: aggkit.trimmed_mean(v, f=2),
        lambda v: aggkit.multi_krum(v, f=2, m=3),
    ):
        tracemalloc.start()
        out = rule(x)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert out.dtype == dtype
        assert peak < x.nbytes / 4, f"peak {peak} bytes for a {x.nbytes}-byte input"
    np.testing.assert_array_equal(bits(x), bits(before))


def test_rounding_of_outputs_is_to_nearest_even():
    """A mean that lands between two float16 values rounds to the even one, as numpy does."""
    lo = np.float16(1.0)
    hi = np.nextafter(lo, np.float16(2))
    x = np.array([[lo], [hi]], np.float16)
    assert aggkit.mean(x).view(np.uint16)[0] == np.float16((float(lo) + float(hi)) / 2).view(np.uint16)
    # overflow after rounding: the mean of 65504 and inf-bound values
    top = np.array([[65504.0], [65504.0]], np.float16)
    assert aggkit.mean(top)[0] == np.float16(65504.0)

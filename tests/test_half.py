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
    # non-native byte order: the result keeps the caller's dtype and has the same values
    big = x.astype(dtype.newbyteorder(">"))
    for rule in (aggkit.mean, aggkit.median, lambda v: aggkit.krum(v, f=1)):
        got = rule(big)
        assert got.dtype == big.dtype
        np.testing.assert_array_equal(bits(got.astype(dtype)), bits(rule(x)))
        np.testing.assert_array_equal(bits(rule(list(big)).astype(dtype)), bits(rule(x)))


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
    # the largest finite float16 averages to itself; a float32 result beyond 65520 rounds to inf
    top = np.array([[65504.0], [65504.0]], np.float16)
    assert aggkit.mean(top)[0] == np.float16(65504.0)
    lo, hi = np.float16(65504.0), np.float16(-65504.0)
    x = np.array([[lo, hi], [lo, hi], [lo, hi]], np.float16)
    w = np.array([1.0, 1.0, 1.0])
    np.testing.assert_array_equal(aggkit.mean(x, weights=w), np.array([lo, hi], np.float16))


@pytest.mark.parametrize("dtype", FORMATS, ids=str)
def test_nan_outputs_are_the_formats_quiet_nan(dtype):
    """A NaN reaching the output is quiet and keeps its sign, with the payload numpy (float16) or
    ml_dtypes (bfloat16) give when converting the float32 result."""
    pats = np.arange(65536, dtype=np.uint16).view(dtype)
    nans = pats[np.isnan(pats.astype(np.float32))]
    x = np.stack([nans, np.ones_like(nans)])
    got = aggkit.mean(x, nonfinite="propagate")
    want = aggkit.mean(x.astype(np.float32), nonfinite="propagate").astype(dtype)
    np.testing.assert_array_equal(bits(got), bits(want))


@pytest.mark.parametrize("name", ["float16", "bfloat16"])
def test_torch_cpu_half_tensors_are_read_in_place(name):
    """torch's CPU float16 / bfloat16 tensors (one tensor or a list) take the same kernels: the
    float32 call's bits, rounded, in the input's dtype; with autograd they take the float32
    custom ops and get the same values."""
    torch = pytest.importorskip("torch")
    import aggkit.torch as at

    dtype = getattr(torch, name)
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(11, 4, 33, generator=g) * 20).to(dtype)
    x[2, 0, 1] = float("nan")
    x[5, 3, 7] = float("inf")
    w = torch.rand(11, generator=g) + 0.1
    calls = [
        lambda v: at.mean(v),
        lambda v: at.median(v),
        lambda v: at.trimmed_mean(v, f=3),
        lambda v: at.krum(v, f=2),
        lambda v: at.multi_krum(v, f=2, m=4),
        lambda v: at.multi_krum(v, f=2, m=4, weights=w),
    ]
    for call in calls:
        want = call(x.float()).to(dtype)
        for inp in (x, list(x)):
            got = call(inp)
            assert got.dtype == dtype
            assert torch.equal(got.view(torch.int16), want.view(torch.int16))
    # with autograd: the float32 path, same values, and a gradient in the input's dtype
    xg = x.clone().requires_grad_(True)
    out = at.median(xg)
    assert torch.equal(out.detach().view(torch.int16), at.median(x).view(torch.int16))
    out.float().nan_to_num().sum().backward()
    assert xg.grad is not None
    assert xg.grad.dtype == dtype


@pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")
def test_torch_wrapped_half_tensors_take_the_custom_ops():
    """Tensors without host storage to view (vmap's batched tensors) are not read in place:
    the custom ops serve them, in half precision as in float32."""
    torch = pytest.importorskip("torch")
    import aggkit.torch as at

    x = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(1)).bfloat16()
    got = torch.vmap(at.median)(x)
    want = torch.stack([at.median(v) for v in x])
    assert got.dtype == torch.bfloat16
    assert torch.equal(got.view(torch.int16), want.view(torch.int16))

"""The Triton pairwise-distance kernel (aggkit.torch._triton_dist), run by Triton's interpreter.

Checked against the Rust core bit for bit (float64 input; float32 input against the core on the
widened input, and to float32 rounding against the core's float32 lanes), against a numpy model
of the summation order for schedules other than the core's, against exact rational arithmetic
within the proven bound, and against the torch-native kernel to rounding. The memory test
counts every byte the torch allocator hands out during a call.
"""

from __future__ import annotations

import importlib.util
import sys
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from interpreted import import_kernels, interpreted, torch_allocations  # noqa: F401 (fixtures)
from strategies import DTYPES, TIES, finite_elements, junk

torch = pytest.importorskip("torch")

_paths, _switch, _triton, D = import_kernels("_paths", "_switch", "_triton", "_triton_dist")

import aggkit  # noqa: E402
from aggkit import _core, _plans  # noqa: E402
from aggkit.torch import _kernels as K  # noqa: E402

U = 2.0**-53


pytestmark = pytest.mark.usefixtures("interpreted")


def gamma(k: int, u: float = U) -> float:
    return k * u / (1 - k * u)


def bits(a) -> np.ndarray:
    """float64 bits as integers, every NaN made the canonical one."""
    a = np.array(a, dtype=np.float64)
    a[np.isnan(a)] = np.nan
    return a.view(np.int64)


def same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and np.array_equal(bits(a), bits(b))


def dist(x, config=D.CONFIG) -> np.ndarray:
    out = D.pairwise_sq_distances(torch.as_tensor(x), config=config)
    assert out.dtype == torch.float64
    assert out.shape == (x.shape[0],) * 2
    assert out.device == torch.device("cpu")
    return out.numpy()


def check_shape(out: np.ndarray) -> None:
    """Bitwise symmetric with a ``+0.0`` diagonal."""
    assert np.array_equal(bits(out), bits(out.T))
    assert np.array_equal(bits(np.diag(out)), bits(np.zeros(out.shape[0])))


def model(x: np.ndarray, width: int, parts: int) -> np.ndarray:
    """The kernel's order in numpy: 16 lanes a chunk, the core's lane tree, chunks by parts."""
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    tot = np.zeros((n, n))
    if n < 2 or d == 0:
        return tot
    nchunks = -(-d // width)
    parts = max(1, min(parts, nchunks))
    t = x[:, None, :] - x[None, :, :]
    sq = t * t
    for p in range(parts):
        acc = np.zeros((n, n))
        for c in range(p * nchunks // parts, (p + 1) * nchunks // parts):
            c0, c1 = c * width, min(c * width + width, d)
            lanes = np.zeros((n, n, 16))
            for k in range(c0, c1):
                lanes[:, :, (k - c0) % 16] += sq[:, :, k]
            w = 16
            while w > 1:
                w //= 2
                lanes[:, :, :w] += lanes[:, :, w : 2 * w]
            acc += lanes[:, :, 0]
        tot += acc
    np.fill_diagonal(tot, 0.0)
    return tot


def exact(x: np.ndarray) -> list[list[Fraction]]:
    """Exact squared distances of finite rows (rationals)."""
    rows = [[Fraction(float(v)) for v in r] for r in np.asarray(x)]
    return [
        [sum(((a - b) ** 2 for a, b in zip(ri, rj, strict=True)), Fraction(0)) for rj in rows] for ri in rows
    ]


def assert_within(out: np.ndarray, ref: list[list[Fraction]], rel: float, slack: float = 0.0) -> float:
    """``|out - ref| <= rel * ref + slack`` exactly, for every entry; the largest relative error."""
    worst = 0.0
    for i, row in enumerate(ref):
        for j, e in enumerate(row):
            err = abs(Fraction(float(out[i, j])) - e)
            assert err <= Fraction(rel) * e + Fraction(slack), (i, j, float(out[i, j]), float(e))
            if e:
                worst = max(worst, float(err / e))
    return worst


SPECIALS = {
    np.float32: [np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-45, -1e-45, 1e-40, 3e38, -3e38],
    np.float64: [np.nan, np.inf, -np.inf, -0.0, 0.0, 5e-324, -5e-324, 1e-310, 1e154, 1e200, -1e308],
}


@st.composite
def wild(draw, max_n=20, max_d=300, finite=False, dtype=None):
    """Matrices of ordinary values, exact ties, ±0, subnormals, values whose squares overflow
    (float64), NaN and ±inf, and whole junk rows; ``n`` in ``1..max_n``, ``d`` in ``1..max_d``."""
    dt = draw(DTYPES) if dtype is None else dtype
    n = draw(st.integers(1, max_n))
    d = draw(st.integers(1, max_d))
    ordinary = st.one_of(finite_elements(dt), TIES)
    elements = ordinary if finite else st.one_of(ordinary, st.sampled_from(SPECIALS[dt]))
    x = draw(hnp.arrays(dt, (n, d), elements=elements))
    if not finite and draw(st.booleans()) and n > 1:  # whole junk rows, as an attacker sends them
        k = draw(st.integers(1, n - 1))
        x[:k] = draw(junk(x[k:], k))
    return x


# ---------------------------------------------------------------------------------------------
# Bitwise: the core's order


@settings(max_examples=40)
@given(x=wild())
def test_matches_core_bitwise(x):
    out = dist(x)
    check_shape(out)
    # float64: the core's bits at every SIMD level; float32: the core's float64 kernel on the
    # widened input (the kernel's lanes are float64).
    before = aggkit.simd_level()
    try:
        for level in ("scalar", "avx2", "avx512", "neon"):
            _core._set_simd_level(level)
            assert same(out, _core.pairwise_sq_distances(x.astype(np.float64))), level
    finally:
        _core._set_simd_level(before)


@pytest.mark.parametrize(
    ("n", "d"),
    [
        (3, 2049),  # two chunks of 2048: two parts
        (40, 900),  # chunks of 816: two parts of the partial-sum path at a larger n
        (128, 300),  # the core's last summed-by-parts n (chunks of 256: two parts)
        (129, 520),  # the first tiled n: chunks of 512, one part (one window of 2), 9 x 9 blocks
    ],
)
def test_core_schedule_boundaries(n, d):
    rng = np.random.default_rng(n * d)
    x = rng.standard_normal((n, d)) * rng.uniform(0.1, 10.0, (n, 1))
    x[1, 7] = np.nan
    x[2, :4] = np.inf
    _, parts, nchunks = D.schedule(n, d)
    assert nchunks >= 2
    assert (parts == 1) == (n > 128)
    out = dist(x)
    check_shape(out)
    assert same(out, _core.pairwise_sq_distances(x))
    # (Large blocks only to keep the interpreter quick: the block size changes no bit.)
    wide = D.Config(block=64)
    x32 = x.astype(np.float32)
    assert same(dist(x32, wide), _core.pairwise_sq_distances(x32.astype(np.float64)))
    if n > 128:  # one direct launch: the same bits
        assert same(dist(x, D.Config(block=64, window_bytes=0)), out)


@settings(max_examples=25)
@given(
    x=wild(max_n=12, max_d=120),
    width=st.sampled_from([16, 32, 48]),
    parts=st.integers(1, 5),
    block=st.sampled_from([1, 2, 4, 8]),
    window=st.integers(0, 4),
)
def test_other_schedules_match_the_model(x, width, parts, block, window):
    # Several chunks a part, several parts, pairs split across many small tiles; one part:
    # windows of `window` chunks folded in order, or one direct launch.
    n = x.shape[0]
    config = D.Config(block=block, width=width, parts=parts, window_bytes=window * 8 * n * n)
    out = dist(x, config)
    check_shape(out)
    assert same(out, model(x, width, parts))


def test_block_size_and_row_order_change_no_bit():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((13, 70)) + 1e3
    x[4, 5] = np.nan
    ref = dist(x)
    for block in (1, 2, 4, 8, 32):
        assert same(dist(x, D.Config(block=block)), ref)
    perm = rng.permutation(13)
    assert same(dist(x[perm]), ref[np.ix_(perm, perm)])
    assert same(dist(x), ref)  # and again: the same bits


# ---------------------------------------------------------------------------------------------
# Rounding: the proven bound against exact arithmetic, and agreement with the other kernels


@settings(max_examples=15)
@given(x=wild(max_n=6, max_d=80, finite=True), width=st.sampled_from([16, 64, 2048]))
def test_within_the_bound_of_exact(x, width):
    config = D.Config(width=width, parts=3)
    out = dist(x, config)
    if not np.isfinite(out).all():  # float64 squares past the range: +inf, as IEEE gives
        assert x.dtype == np.float64
        return
    # A float64 square below the normal range is off by at most 2**-1075 (absolute; additions
    # there are exact): d such terms add at most d 2**-1074. float32 squares never underflow.
    slack = x.shape[1] * 2.0**-1074 if x.dtype == np.float64 else 0.0
    assert_within(out, exact(x), D.rounding_bound(*x.shape, config), slack)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_near_identical_rows_are_exact(dtype):
    # Honest gradients: rows 1e4 + tiny noise. The Gram identity cancels all significant bits.
    rng = np.random.default_rng(1)
    n, d = 6, 257
    if dtype == np.float64:
        x = 1e4 + rng.standard_normal((n, d)) * 1e-8
    else:  # a few float32 ulps (1e4 has an ulp of ~1e-3) apart
        x = (np.float32(1e4) + rng.integers(-3, 4, (n, d)).astype(np.float32) * np.float32(2.0**-10)).astype(
            dtype
        )
    out = dist(x)
    ref = exact(x)
    worst = assert_within(out, ref, D.rounding_bound(n, d))
    assert worst < 1e-14
    # The control: |a|² + |b|² - 2ab in float64 is wrong in its leading digits (or negative).
    x64 = x.astype(np.float64)
    sq = (x64 * x64).sum(axis=1)
    gram = sq[:, None] + sq[None, :] - 2.0 * (x64 @ x64.T)
    off = ~np.eye(n, dtype=bool)
    rel = np.abs(gram[off] - out[off]) / out[off]
    assert rel.max() > 1e-3 or (gram[off] < 0).any()


@settings(max_examples=25)
@given(x=wild())
def test_agrees_with_torch_native_and_float32_core(x):
    out = dist(x)
    n, d = x.shape
    with _paths.force_native():
        native = K.pairwise_sq_distances(torch.from_numpy(x)).numpy()
    off = ~np.eye(n, dtype=bool)
    # Non-finite inputs: the same NaN / inf pairs (the native kernel's diagonal is NaN for a
    # non-finite row, the core's and this kernel's 0.0).
    assert np.array_equal(np.isnan(out), np.isnan(native) & off)
    assert np.array_equal(np.isinf(out), np.isinf(native))
    fin = np.isfinite(out) & off
    a, b = out[fin], native[fin]
    # Both within their bound of the exact value: the native one sums d terms in some order.
    ra, rb = D.rounding_bound(n, d), gamma(d + 3 + 1)
    assert (np.abs(a - b) <= (ra + rb) * np.maximum(a, b) / (1 - max(ra, rb))).all()
    if x.dtype == np.float32:  # the core's float32 lanes: float32 rounding (128-term lanes)
        core = _core.pairwise_sq_distances(x)
        assert np.array_equal(np.isnan(out), np.isnan(core))
        assert np.array_equal(np.isinf(out), np.isinf(core))
        c = core[fin]
        r32 = gamma(131, 2.0**-24) + ra
        assert (np.abs(a - c) <= r32 * np.maximum(a, c) / (1 - r32) + d * 2.0**-149).all()


# ---------------------------------------------------------------------------------------------
# Non-finite values, overflow, edges


def test_nonfinite_and_overflow_as_the_core():
    x = np.array(
        [
            [0.0, 1.0, 2.0],
            [np.nan, 1.0, 2.0],
            [np.inf, 1.0, 2.0],
            [np.inf, 1.0, 2.0],
            [-np.inf, 1.0, 2.0],
            [1e200, 1.0, 2.0],  # (1e200)² overflows float64: +inf, no wide path
            [-1e154, 1.0, 2.0],  # (1e154)² = 1e308 fits
            [1e-170, 1.0, 2.0],  # (1e-170)² underflows to 0.0 in float64, as in the core
        ]
    )
    out = dist(x)
    check_shape(out)
    assert same(out, _core.pairwise_sq_distances(x))
    assert np.isnan(out[1, [0, 2, 3, 4, 5, 6, 7]]).all()  # NaN with everyone
    assert np.isnan(out[2, 3])  # inf - inf
    assert out[2, 4] == out[2, 0] == np.inf
    assert out[0, 5] == np.inf
    assert out[0, 6] == 1e154**2
    assert out[0, 7] == 0.0
    # What the callers apply next: +inf becomes float64's largest value, NaN stays.
    fin = _plans.finite_distances(out)
    assert fin[0, 5] == np.finfo(np.float64).max
    assert np.isnan(fin[1, 0])
    # float32 cannot overflow in float64: ±3e38 rows are 3.6e77 apart (the core's float32 lanes
    # overflow and it sums such pairs again in float64).
    y = np.array([[3e38, -3e38], [-3e38, 3e38]], dtype=np.float32)
    out = dist(y)
    assert np.isfinite(out).all()
    assert same(out, _core.pairwise_sq_distances(y.astype(np.float64)))
    assert np.allclose(out, _core.pairwise_sq_distances(y), rtol=1e-15)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_edges(dtype):
    for n, d in [(0, 3), (1, 4), (3, 0), (0, 0), (2, 1)]:
        x = torch.ones(n, d, dtype=dtype)
        out = D.pairwise_sq_distances(x)
        assert out.dtype == torch.float64
        assert out.shape == (n, n)
        if n:  # the core refuses n = 0 (callers have validated their input by then)
            assert same(out.numpy(), _core.pairwise_sq_distances(x.numpy()))
    with pytest.raises(TypeError, match="2-D"):
        D.pairwise_sq_distances(torch.ones(3, dtype=dtype))
    with pytest.raises(TypeError, match="2-D"):
        D.pairwise_sq_distances(torch.ones(3, 2, dtype=torch.int64))


def test_non_contiguous_input():
    rng = np.random.default_rng(3)
    big = torch.from_numpy(rng.standard_normal((40, 30)))
    for x in (big.T[:, ::3], big[::2, 1::2], big[5:6].expand(4, 30), big.T.float()[3:20]):
        assert same(dist(x), dist(x.contiguous()))
        assert same(dist(x), _core.pairwise_sq_distances(x.contiguous().double().numpy()))


def test_config_and_availability():
    bad_configs = (
        {"block": 3},
        {"block": 0},
        {"num_warps": 3},
        {"width": 24},
        {"width": 0},
        {"parts": 0},
        {"window_bytes": -1},
    )
    for bad in bad_configs:
        with pytest.raises(ValueError, match="Config"):
            D.Config(**bad)
    with pytest.raises(ValueError, match=r"Config\.parts"):
        D.Config(parts=65)
    x = torch.ones(2, 2)
    assert D.available(x)
    assert D.available(x.double())
    for other in (x.half(), x.long(), x.to("meta")):
        assert not D.available(other)
    prev = getattr(_switch._local, "triton", False)
    _switch._local.triton = False
    try:
        assert not D.available(x)
    finally:
        _switch._local.triton = prev
    # The core's schedule: widths a multiple of 16, parts bounded by 64 (and by 1 beyond n = 128).
    for n in (2, 16, 17, 100, 128, 129, 1000):
        for d in (1, 2048, 10**6):
            width, parts, nchunks = D.schedule(n, d)
            assert width % 16 == 0
            assert 64 <= width <= 2048
            assert nchunks == -(-d // width)
            assert 1 <= parts <= min(nchunks, 64)
            assert n <= 128 or parts == 1
    assert D.rounding_bound(100, 10**6) < 2.5e-13
    # One-part schedules: windows of consecutive chunks covering d, each at most 64 planes and
    # window_bytes; none (one direct launch) where two planes do not fit.
    for n, d in ((129, 10**6), (500, 10**5), (2048, 10**4), (129, 512)):
        width, plan = D.launches(n, d)
        firsts = [0] + [f + c for f, c, _ in plan]
        assert [f for f, _, _ in plan] == firsts[:-1]
        assert firsts[-1] == -(-d // width) or not plan
        assert all(p == c and p <= 64 and p * 8 * n * n <= D.WINDOW_BYTES for _, c, p in plan)
    assert D.launches(129, 512)[1] == []  # a single chunk
    assert D.launches(2049, 10**4)[1] == []


def test_module_imports_without_triton(monkeypatch):
    # A fresh copy of the module with `import triton` failing: it imports, and refuses to run.
    monkeypatch.setitem(sys.modules, "triton", None)
    monkeypatch.setitem(sys.modules, "triton.language", None)
    spec = importlib.util.spec_from_file_location("_triton_dist_without", D.__file__)
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "_triton_dist_without", mod)
    spec.loader.exec_module(mod)
    x = torch.randn(3, 2)
    assert mod.triton is None
    assert not mod.INTERPRETED
    with mod.force_interpreter():
        assert not mod.available(x)
    with pytest.raises(RuntimeError, match="needs triton"):
        mod.pairwise_sq_distances(x)


# ---------------------------------------------------------------------------------------------
# Memory: O(n²) extra, no (n, d) copy, no (n, n, block) temporary


class Spy:
    """Records the launches of a kernel (grid and arguments), then launches it."""

    def __init__(self, kernel):
        self.kernel, self.calls = kernel, []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.calls.append((grid, args, kwargs))
            return self.kernel[grid](*args, **kwargs)

        return launch


def test_memory_is_n_squared(monkeypatch):
    rng = np.random.default_rng(5)
    n, d = 6, 5000
    big = torch.from_numpy(rng.standard_normal((n, 2 * d)))
    plane = 8 * n * n
    cases = [
        (big[:, :d].contiguous(), D.CONFIG, 3),  # 3 chunks of 2048: 3 parts
        (big[:, ::2], D.CONFIG, 3),  # a strided view, read in place
        (big[:, ::2].float(), D.Config(width=512, parts=64), 10),  # 10 chunks: 10 parts
        (big[:, :d].contiguous(), D.Config(parts=1), 3),  # one part: a window of 3 chunks
        (big[:, 1::2], D.Config(parts=1, width=512, window_bytes=4 * plane), 4),  # windows 4, 4, 2
        (big[:, :d].contiguous(), D.Config(parts=1, window_bytes=0), 0),  # direct: the result alone
    ]
    for x, config, planes in cases:
        width, plan = D.launches(n, d, config)
        assert max((p for _, _, p in plan), default=0) == planes
        expected = [plane] + ([planes * plane] if planes else [])
        # Every byte the torch allocator handed out during the call (launches included): the
        # result and the planes, at most 65 n² float64 values in all, less than n d.
        tile, fold = Spy(D._tile_kernel), Spy(D._fold_kernel)
        got = []
        with monkeypatch.context() as m:
            m.setattr(D, "_tile_kernel", tile)
            m.setattr(D, "_fold_kernel", fold)
            sizes = torch_allocations(
                lambda x=x, c=config, g=got: g.append(D.pairwise_sq_distances(x, config=c))
            )
        assert sorted(sizes) == sorted(expected)
        assert sum(expected) <= 65 * plane < 8 * n * d
        # The kernel reads x itself: the caller's storage, offset and strides.
        assert [grid for grid, _, _ in tile.calls] == ([(1, 1, p) for _, _, p in plan] or [(1, 1, 1)])
        for _, args, _ in tile.calls:
            assert args[0].data_ptr() == x.data_ptr()
            assert args[0].stride() == x.stride()
        assert len(fold.calls) == len(plan)
        assert same(got[0].numpy(), model(x.numpy(), width, D.schedule(n, d, config)[1]))
    # The control: the torch-native kernel, under the same count, makes the (n, d) float64
    # copy and the (n, n, block) float64 differences this kernel avoids.
    with _paths.force_native():
        sizes = torch_allocations(lambda: K.pairwise_sq_distances(big[:, :d].float()))
    assert 8 * n * d in sizes
    assert 8 * n * n * d in sizes

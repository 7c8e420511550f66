"""The Triton kernels (aggkit.torch._triton), run by Triton's interpreter on CPU tensors.

Every result is compared bit for bit with the Rust core and with the torch-native kernels:
values (NaN payloads made canonical), the rows the backward needs, the errors. ``n`` spans the
register kernel and the streaming fallback (forced at small ``n`` with small blocks, so the
interpreter stays fast, and once at the real bound).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import aggkit
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from interpreted import (  # noqa: F401 (fixtures)
    bits,
    import_kernels,
    interpretable_triton_library,
    interpreted,
    largest_block,
    same,
    torch_allocations,
)
from strategies import DTYPES, TIES, finite_elements, junk

torch = pytest.importorskip("torch")

T, _paths, _switch = import_kernels("_triton", "_paths", "_switch")

from aggkit import _core  # noqa: E402
from aggkit.torch.mean import native as mean_native  # noqa: E402
from aggkit.torch.median import native as median_native  # noqa: E402
from aggkit.torch.trimmed_mean import native as trimmed_native  # noqa: E402

#: The streaming kernels at every n, with blocks small enough for several tiles and batches.
FALLBACK = T.Config(max_register_n=0, block_d=8, tile=8, batch=4)
PATHS = {"registers": T.CONFIG, "fallback": FALLBACK}
POLICIES = ("robust", "propagate")
EVENS = ("mean", "lower", "upper")


pytestmark = pytest.mark.usefixtures("interpretable_triton_library", "interpreted")


def core_rows(r) -> torch.Tensor:
    return torch.from_numpy(np.asarray(r).view(np.int32))


def check_order_statistic(name, x, arg, nonfinite, config, rowless=False):
    """``name`` (median / trimmed_mean) by the kernels against the core and the native one."""
    kernel = {"median": T.median, "trimmed_mean": T.trimmed_mean}[name]
    native = {"median": median_native, "trimmed_mean": trimmed_native}[name]
    out, lo, hi = kernel(x, arg, nonfinite, True, config=config)
    c_out, c_lo, c_hi = getattr(_core, name)(np.ascontiguousarray(x.numpy()), arg, nonfinite, True)
    assert same(out, torch.from_numpy(c_out)), (out, c_out)
    assert torch.equal(lo, core_rows(c_lo)), (lo, c_lo)
    assert torch.equal(hi, core_rows(c_hi)), (hi, c_hi)
    n_out, n_lo, n_hi = native(x, arg, nonfinite, True)
    assert same(out, n_out)
    assert torch.equal(lo, n_lo)
    assert torch.equal(hi, n_hi)
    if not rowless:
        return
    # Without rows: the same values and empty row tensors, as the native function gives.
    v, e_lo, e_hi = kernel(x, arg, nonfinite, False, config=config)
    assert same(v, out)
    assert e_lo.shape == e_hi.shape == (0,)
    assert e_lo.dtype == e_hi.dtype == torch.int32


def check_mean(x, nonfinite):
    """The mean by the kernel against the core and the native one (values, coefficients, errors)."""
    if nonfinite == "robust" and not torch.isfinite(x).all(dim=1).any() and x.shape[1] > 0:
        for fn in (T.mean, lambda x, p: mean_native(x, None, p)):
            with pytest.raises(aggkit.NonFiniteError) as e:
                fn(x, nonfinite)
            assert e.value.rows == list(range(x.shape[0]))
        return
    out, coef = T.mean(x, nonfinite)
    c_out, _ = _core.mean(np.ascontiguousarray(x.numpy()), None, nonfinite)
    assert same(out, torch.from_numpy(c_out)), (out, c_out)
    n_out, n_coef = mean_native(x, None, nonfinite)
    assert same(out, n_out)
    assert same(coef, n_coef), (coef, n_coef)


SPECIALS = {
    np.float32: [np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-45, -1e-45, 1e-40, 3e38, -3e38],
    np.float64: [
        *(np.nan, np.inf, -np.inf, -0.0, 0.0, 5e-324, -5e-324, 1e-310, 1e308, -1e308, 9e307),
        *(2.0**1023, -(2.0**1023), 8.988465674311579e307, 2.0**-1021, 2.0**-1022),  # midpoint's bounds
    ],
}


@st.composite
def wild(draw, max_n=12, max_d=4):
    """Matrices mixing ordinary values, exact ties, ±0, ±inf, NaN, subnormals and values whose
    float64 sums overflow (the wide sum)."""
    dt = draw(DTYPES)
    n = draw(st.integers(1, max_n))
    d = draw(st.integers(1, max_d))
    elements = st.one_of(finite_elements(dt), TIES, st.sampled_from(SPECIALS[dt]))
    x = draw(hnp.arrays(dt, (n, d), elements=elements))
    if draw(st.booleans()) and n > 1:  # whole junk rows, as an attacker sends them
        k = draw(st.integers(1, n - 1))
        x[:k] = draw(junk(x[k:], k))
    return torch.from_numpy(x)


# ---------------------------------------------------------------------------------------------
# Bitwise agreement, every policy and every `even`, both kernels


@pytest.mark.parametrize("path", PATHS)
@settings(max_examples=25)
@given(x=wild(), even=st.sampled_from(EVENS), nonfinite=st.sampled_from(POLICIES))
def test_median_matches_core_and_native(path, x, even, nonfinite):
    check_order_statistic("median", x, even, nonfinite, PATHS[path], rowless=path == "registers")


#: Above the register bound, trimmed means keeping many values sort chunks of a few columns.
SORTED = T.Config(max_register_n=0, sort_kept=0, sort_bytes=48 * 12 * 2)


@pytest.mark.parametrize("path", [*PATHS, "sorted"])
@settings(max_examples=25)
@given(x=wild(), data=st.data())
def test_trimmed_mean_matches_core_and_native(path, x, data):
    f = data.draw(st.integers(0, (x.shape[0] - 1) // 2))
    nonfinite = data.draw(st.sampled_from(POLICIES))
    config = SORTED if path == "sorted" else PATHS[path]
    check_order_statistic("trimmed_mean", x, f, nonfinite, config, rowless=path != "fallback")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_stored_nans_are_canonical(dtype):
    # inf - inf is x86's negative default NaN in the core; a GPU makes its own. The kernels
    # store the canonical NaN whatever the arithmetic made.
    x = torch.tensor([[float("inf")] * 3, [float("-inf")] * 3, [1.0] * 3], dtype=dtype)
    canonical = torch.tensor([float("nan")], dtype=dtype).view(bits(torch.zeros(1, dtype=dtype)).dtype)
    for out in (
        T.mean(x, "propagate")[0],
        T.trimmed_mean(x, 0, "propagate", False)[0],
        T.trimmed_mean(x, 0, "propagate", False, config=SORTED)[0],
        T.meamed(x, 3, "propagate", False)[0],
    ):
        raw = out.view(canonical.dtype)
        assert torch.isnan(out).all()
        assert torch.equal(raw, canonical.expand_as(raw)), raw


def test_row_count_is_bounded_below_int32_wrap():
    with pytest.raises(ValueError, match="2\\*\\*31 - 2\\*\\*16"):
        T.median(torch.empty(2**31 - 2**16 + 1, 1, device="meta"), "mean", "robust", False)


def test_sorted_trimmed_mean_is_chosen_by_kept_count_and_bounded(monkeypatch):
    # Streamed while it keeps at most sort_kept values a column, sorted above; the sort path's
    # buffers are one chunk of columns (sort_bytes), whatever d.
    sorted_calls = []
    real = T._sorted_trimmed_mean
    monkeypatch.setattr(T, "_sorted_trimmed_mean", lambda *a: (sorted_calls.append(a[1:3]), real(*a))[1])
    n, d = 64, 48
    x = torch.randn(n, d, dtype=torch.float64)
    cfg = T.Config(max_register_n=0, sort_kept=40, sort_bytes=48 * n * 4)  # 4 columns a chunk
    T.trimmed_mean(x, 12, "robust", False, config=cfg)  # keeps 40: streamed
    assert sorted_calls == []
    sizes = torch_allocations(lambda: T.trimmed_mean(x, 11, "propagate", True, config=cfg))
    assert sorted_calls == [(11, 52)]
    assert max(sizes) <= cfg.sort_bytes < 8 * n * d
    # Columns-first input: the chunks are sorted row-major for the kernel.
    xt = x.t().contiguous().t()
    got = T.trimmed_mean(xt, 11, "robust", True, config=cfg)
    want = _core.trimmed_mean(x.numpy(), 11, "robust", True)
    assert same(got[0], torch.from_numpy(want[0]))
    assert torch.equal(got[1], core_rows(want[1]))


@settings(max_examples=40)
@given(x=wild(max_n=16), nonfinite=st.sampled_from(POLICIES))
def test_mean_matches_core_and_native(x, nonfinite):
    check_mean(x, nonfinite)


@settings(max_examples=40)
@given(x=wild(), data=st.data())
def test_meamed_matches_core_and_native(x, data):
    from aggkit.torch.meamed import native as meamed_native

    n = x.shape[0]
    keep = data.draw(st.integers(1, n))
    nonfinite = data.draw(st.sampled_from(POLICIES))
    out, lo, hi = T.meamed(x, keep, nonfinite, True)
    c_out, c_lo, c_hi = _core.meamed(np.ascontiguousarray(x.numpy()), 0, keep, nonfinite, True)
    assert same(out, torch.from_numpy(c_out)), (out, c_out)
    assert torch.equal(lo, core_rows(c_lo)), (lo, c_lo)
    assert torch.equal(hi, core_rows(c_hi)), (hi, c_hi)
    n_out, n_lo, n_hi = meamed_native(x, keep, nonfinite, True)
    assert same(out, n_out)
    assert torch.equal(lo, n_lo)
    assert torch.equal(hi, n_hi)
    v, e_lo, e_hi = T.meamed(x, keep, nonfinite, False)
    assert same(v, out)
    assert e_lo.shape == e_hi.shape == (0,)


@settings(max_examples=40)
@given(x=wild(), data=st.data())
def test_weighted_median_matches_core_and_native(x, data):
    # Rows from the kernel (sequential running sums of the weights in (value, row) order), the
    # value taken in torch ops: the core's bits for every `even` and policy.
    import aggkit.torch as at

    n = x.shape[0]
    w = np.asarray(
        data.draw(
            st.lists(
                st.sampled_from([0.0, 0.1, 0.2, 0.3, 1.0, 2.0, 3.0, 1e-300, 7e300]), min_size=n, max_size=n
            )
        )
    )
    if not w.sum() > 0:
        w[0] = 1.0
    even = data.draw(st.sampled_from(EVENS))
    nonfinite = data.draw(st.sampled_from(POLICIES))
    got = at.median(x, weights=w, even=even, nonfinite=nonfinite)
    want = aggkit.median(x.numpy(), weights=w, even=even, nonfinite=nonfinite)
    assert same(got, torch.from_numpy(np.asarray(want))), (got, want)
    with _paths.force_native():
        assert same(got, at.median(x, weights=w, even=even, nonfinite=nonfinite))


def test_weighted_median_runs_the_kernel_with_gradients(monkeypatch):
    import aggkit.torch as at

    calls = []
    real = T.weighted_median_rows
    monkeypatch.setattr(T, "weighted_median_rows", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    g = torch.Generator().manual_seed(8)
    x = torch.randn(10, 17, dtype=torch.float64, generator=g).round()
    w = [1.0, 0.0, 2.0, 3.0, 1.0, 1.0, 0.5, 0.5, 2.0, 1.0]
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(at.median(xr, weights=w, even="mean").sum(), xr)
    assert calls == [1]
    with _paths.force_native():
        (want,) = torch.autograd.grad(at.median(xr, weights=w, even="mean").sum(), xr)
    assert same(grad, want)
    big = torch.randn(T.CONFIG.max_register_n + 1, 2, dtype=torch.float64, generator=g)
    at.median(big, weights=np.ones(big.shape[0]))
    assert calls == [1]  # above the register bound: the torch-native rule


@settings(max_examples=40)
@given(x=wild(max_n=10), data=st.data())
def test_weighted_mean_matches_core_and_native(x, data):
    # Weights whose products with the values overflow float64 (the wide sum), zeros (left out
    # of the clamp), every policy; the public op, so the host plan is the one the op uses.
    import aggkit.torch as at

    n = x.shape[0]
    weights = data.draw(
        st.lists(st.sampled_from([0.0, 0.3, 1.0, 2.5, 1e100, 3e-200]), min_size=n, max_size=n)
    )
    if sum(weights) == 0:
        weights[0] = 1.0
    nonfinite = data.draw(st.sampled_from(POLICIES))
    try:
        want = aggkit.mean(x.numpy(), weights=weights, nonfinite=nonfinite)
    except aggkit.AggkitError as e:
        with pytest.raises(type(e)):
            at.mean(x, weights=weights, nonfinite=nonfinite)
        return
    got = at.mean(x, weights=weights, nonfinite=nonfinite)
    assert same(got, torch.from_numpy(np.asarray(want))), (got, want)
    with _paths.force_native():
        assert same(got, at.mean(x, weights=weights, nonfinite=nonfinite))


@settings(max_examples=40)
@given(x=wild(max_n=10), data=st.data())
def test_weighted_trimmed_mean_matches_core_and_native(x, data):
    import aggkit.torch as at

    n = x.shape[0]
    weights = data.draw(
        st.lists(st.sampled_from([0.0, 0.3, 1.0, 2.5, 1e100, 3e-200]), min_size=n, max_size=n)
    )
    if sum(weights) == 0:
        weights[0] = 1.0
    f = data.draw(st.integers(0, (n - 1) // 2))
    nonfinite = data.draw(st.sampled_from(POLICIES))
    got = at.trimmed_mean(x, f=f, weights=weights, nonfinite=nonfinite)
    want = aggkit.trimmed_mean(x.numpy(), f=f, weights=weights, nonfinite=nonfinite)
    assert same(got, torch.from_numpy(np.asarray(want))), (got, want)
    with _paths.force_native():
        assert same(got, at.trimmed_mean(x, f=f, weights=weights, nonfinite=nonfinite))


def test_weighted_trimmed_mean_kernel_serves_values_and_torch_serves_gradients(monkeypatch):
    import aggkit.torch as at

    calls = []
    real = T.weighted_trimmed_mean
    monkeypatch.setattr(T, "weighted_trimmed_mean", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    g = torch.Generator().manual_seed(6)
    x = torch.randn(9, 13, dtype=torch.float64, generator=g).round()
    w = [1.0, 0.5, 2.0, 0.0, 1.0, 3.0, 1.0, 0.25, 1.0]
    y = at.trimmed_mean(x, f=2, weights=w)
    assert calls == [1]
    xr = x.clone().requires_grad_(True)
    yr = at.trimmed_mean(xr, f=2, weights=w)
    assert calls == [1]  # a recorded gradient: the torch-native rule
    assert same(yr.detach(), y)
    (grad,) = torch.autograd.grad(yr.sum(), xr)
    assert torch.isclose(grad.sum(dim=0), torch.ones(13, dtype=torch.float64)).all()


def test_weighted_mean_is_kept_within_the_values_of_positive_weight():
    # Equal values of positive weight average to themselves although the sums round; a value
    # of zero weight (here 5.0) must not widen the clamp.
    import aggkit.torch as at

    for v in (0.7, 1 / 3, 0.3):
        for w in (0.3, 0.1, 0.7, 0.35):
            x = torch.tensor([[v, -v], [v, -v], [v, -v], [5.0, -5.0]], dtype=torch.float64)
            got = at.mean(x, weights=[w, w, w, 0.0])
            assert got.tolist() == [v, -v], (v, w, got)


def test_weighted_mean_runs_the_kernel_with_gradients(monkeypatch):
    import aggkit.torch as at

    calls = []
    real = T.weighted_mean
    monkeypatch.setattr(T, "weighted_mean", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    g = torch.Generator().manual_seed(2)
    x = torch.randn(6, 9, dtype=torch.float64, generator=g)
    x[4, 2] = float("nan")  # dropped under "robust": its coefficient is 0
    w = [1.0, 2.0, 0.0, 0.5, 3.0, 1.0]
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(at.mean(xr, weights=w).sum(), xr)
    assert calls == [1]
    with _paths.force_native():
        (want,) = torch.autograd.grad(at.mean(xr, weights=w).sum(), xr)
    assert same(grad, want)
    assert torch.all(grad[4] == 0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_backward_follows_the_forward_path_not_the_switch_at_backward_time(dtype):
    # The forward took the Triton path (a strided or half tensor, passed uncopied); the backward
    # runs where the switch is off (on CUDA: autograd's own thread). It must still run the
    # Triton path's backward, not hand that tensor to the Rust core.
    import aggkit.torch as at

    g = torch.Generator().manual_seed(12)
    base = torch.randn(9, 11, generator=g).to(dtype)
    xr = base.t().contiguous().t().requires_grad_(True)  # columns-first strides
    y = at.trimmed_mean(xr, f=2)
    prev, _switch._local.triton = getattr(_switch._local, "triton", False), False
    try:
        (got,) = torch.autograd.grad(y.sum(), xr)
        (want,) = torch.autograd.grad(at.trimmed_mean(xr, f=2).sum(), xr)
    finally:
        _switch._local.triton = prev
    assert same(got, want)


def test_meamed_in_public_ops_and_bulyan(monkeypatch):
    # aggkit.torch.meamed and Bulyan's second stage take the kernel under force_triton (n up to
    # the register bound; the torch-native kernel above), with the core's values and gradients.
    import aggkit.torch as at

    calls = []
    real = T.meamed
    monkeypatch.setattr(T, "meamed", lambda x, *a, **k: (calls.append(x.shape[0]), real(x, *a, **k))[1])
    g = torch.Generator().manual_seed(4)
    x = torch.randn(13, 21, dtype=torch.float64, generator=g).round()
    x[2, 3] = float("-inf")
    xn = x.numpy()
    w = torch.arange(21.0, dtype=torch.float64)
    xr = x.clone().requires_grad_(True)
    y = at.meamed(xr, f=4)
    (grad,) = torch.autograd.grad((y * w).sum(), xr)
    assert same(y.detach(), torch.from_numpy(aggkit.meamed(xn, f=4)))
    assert same(at.bulyan(x, f=2), torch.from_numpy(aggkit.bulyan(xn, f=2)))
    assert calls == [13, 9]  # Bulyan: the closest-to-median mean of its n - 2f selection
    prev, _switch._local.triton = getattr(_switch._local, "triton", False), False
    try:
        (want,) = torch.autograd.grad((at.meamed(xr, f=4) * w).sum(), xr)
    finally:
        _switch._local.triton = prev
    assert same(grad, want)
    calls.clear()
    big = torch.randn(T.CONFIG.max_register_n + 1, 3, dtype=torch.float64, generator=g)
    assert same(at.meamed(big, f=5), torch.from_numpy(aggkit.meamed(big.numpy(), f=5)))
    assert calls == []


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [128, 129])  # the last n held in registers, the first streamed
def test_at_the_register_bound(n, dtype):
    g = torch.Generator().manual_seed(n)
    x = torch.randint(-4, 5, (n, 3), generator=g).to(dtype)  # many ties
    x[5, 0] = x[77, 1] = float("nan")
    x[:, 2] = torch.randn(n, generator=g, dtype=dtype)
    x[n - 1, 2] = -0.0
    x[3, 2] = 0.0
    assert T.CONFIG.max_register_n == 128
    check_order_statistic("median", x, "mean", "robust", T.CONFIG)
    check_order_statistic("trimmed_mean", x, 56, "propagate", T.CONFIG)


@pytest.mark.parametrize(("radix", "dtype"), [(2, np.float32), (8, np.float32), (8, np.float64)])
def test_other_radix_widths(radix, dtype):
    rng = np.random.default_rng(radix)
    x = rng.integers(-3, 4, size=(11, 5)).astype(dtype)
    x[2, 1] = x[7, 3] = np.nan
    x[:, 4] = rng.standard_normal(11)
    x[0, 4] = -np.inf
    cfg = T.Config(max_register_n=0, block_d=8, tile=4, batch=4, radix=radix)
    for even in EVENS:  # (and the streaming kernels asked for no rows)
        check_order_statistic("median", torch.from_numpy(x), even, "robust", cfg, rowless=True)
    check_order_statistic("trimmed_mean", torch.from_numpy(x), 2, "propagate", cfg, rowless=True)


@pytest.mark.parametrize(("batch", "dtype"), [(2, np.float64), (4, np.float32)])
def test_runs_of_equal_keys_across_batches(batch, dtype):
    # The streaming trimmed mean orders its kept values by batches; runs of one key longer
    # than a batch, at its ends and inside, and ±0 runs, must still be added in rank order.
    rng = np.random.default_rng(batch)
    runs = np.array([-1.0] * 3 + [0.25] * 9 + [-0.0] * 3 + [0.0] * 4 + [1e-3] * 2 + [7.0] * 5 + [np.nan] * 2)
    x = np.stack([rng.permutation(runs) for _ in range(4)], axis=1)
    x[:, 3] = np.sort(x[:, 3])[::-1]  # rows in descending order: ties broken by row still
    cfg = T.Config(max_register_n=0, block_d=8, tile=8, batch=batch)
    for f in (0, 3, 13):
        check_order_statistic("trimmed_mean", torch.from_numpy(x.astype(dtype)), f, "robust", cfg)


# ---------------------------------------------------------------------------------------------
# Edge cases, each on both kernels


def edge_matrix(dtype) -> np.ndarray:
    """Columns: midpoints at their bounds; all NaN; ±inf; sums beyond the float64 range;
    subnormals; ±0 ties; a NaN row."""
    top = float(np.finfo(dtype).max)
    tiny = float(np.finfo(dtype).smallest_subnormal)
    normal = float(np.finfo(dtype).smallest_normal)
    half = 2.0 ** (np.finfo(dtype).maxexp - 1)  # midpoint's bounds: |v| <= top / 2, |v| < 2 normal
    cols = [
        [half, half, top / 2, half, -half, 2 * normal],
        [np.nan] * 6,
        [np.inf, -np.inf, np.inf, 1.0, -np.inf, np.inf],
        [top, top, top / 2, top, 0.0, top],
        [top, 1e-300 if dtype == np.float64 else 1e-30, top, -top / 4, tiny, top],
        [tiny, -tiny, 3 * tiny, tiny, 0.0, -0.0],
        [-0.0, 0.0, -0.0, 0.0, 0.0, -0.0],
        [1.0, np.nan, 2.0, np.nan, 3.0, 0.5],
    ]
    return np.array(cols, dtype=dtype).T.copy()


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_edge_columns(path, dtype):
    full = edge_matrix(dtype)
    for n in (1, 2, 3, 6) if path == "registers" else (1, 2, 6):
        x = torch.from_numpy(full[:n].copy())
        for nonfinite in POLICIES:
            for even in EVENS if n % 2 == 0 else EVENS[:1]:  # `even` matters for even n only
                check_order_statistic("median", x, even, nonfinite, PATHS[path])
            for f in range((n - 1) // 2 + 1):
                check_order_statistic("trimmed_mean", x, f, nonfinite, PATHS[path])
            check_mean(x, nonfinite)


@pytest.mark.parametrize("path", PATHS)
def test_wide_sums(path):
    top = np.finfo(np.float64).max
    x = torch.tensor([[top, 1e300, top], [top / 2, 0.0, top], [0.0, 0.0, 1e-300]], dtype=torch.float64)
    out, _, _ = T.trimmed_mean(x, 0, "robust", False, config=PATHS[path])
    assert out[:2].tolist() == [top / 2, 1e300 / 3]
    check_order_statistic("trimmed_mean", x, 0, "robust", PATHS[path])
    assert T.mean(x, "robust")[0][:2].tolist() == [top / 2, 1e300 / 3]
    check_mean(x, "propagate")
    # Only adding the compensation overflows; then an infinity after the overflow.
    x = torch.tensor([[top, top, -top], [9e291, top, -top], [9e291, -np.inf, np.inf]], dtype=torch.float64)
    check_mean(x, "propagate")
    check_order_statistic("trimmed_mean", x, 0, "propagate", PATHS[path])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_no_columns(dtype):
    x = torch.empty(5, 0, dtype=dtype)
    for config in PATHS.values():
        check_order_statistic("median", x, "mean", "robust", config)
        check_order_statistic("trimmed_mean", x, 1, "raise", config)
    for nonfinite in ("robust", "raise", "propagate"):
        check_mean(x, nonfinite)


def test_non_contiguous_input():
    base = torch.randn(9, 13, dtype=torch.float64)
    base[4, 2] = float("nan")
    x = base.t()  # (13, 9) with strides (1, 13)
    for config in PATHS.values():
        out, lo, hi = T.median(x, "mean", "robust", True, config=config)
        want = T.median(x.contiguous(), "mean", "robust", True, config=config)
        assert same(out, want[0])
        assert torch.equal(lo, want[1])
        assert torch.equal(hi, want[2])
        check_order_statistic("trimmed_mean", x, 3, "propagate", config)
    check_mean(x, "robust")
    step = torch.randn(7, 20, dtype=torch.float32)[:, ::3]  # a column stride of 3
    check_order_statistic("median", step, "lower", "robust", FALLBACK)
    check_mean(step, "propagate")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_the_float32_call(dtype):
    # Widened in registers as read: the float32 results on the widened values (the caller
    # rounds them once), which for float16 rounded are the core's half-precision results.
    x = (torch.randn(9, 6, generator=torch.Generator().manual_seed(3)) * 100).to(dtype)
    x[2, 1] = float("nan")
    x[4, 3] = float("inf")
    x[0, 0], x[1, 0] = -0.0, 0.0
    wide = x.float()
    for config in PATHS.values():
        for fn, arg in ((T.median, "mean"), (T.trimmed_mean, 2)):
            got, want = (
                fn(x, arg, "robust", True, config=config),
                fn(wide, arg, "robust", True, config=config),
            )
            assert got[0].dtype == torch.float32
            assert same(got[0], want[0])
            assert torch.equal(got[1], want[1])
            assert torch.equal(got[2], want[2])
    assert same(T.mean(x, "robust")[0], T.mean(wide, "robust")[0])
    if dtype == torch.float16:
        y = x.numpy()
        assert same(T.median(x, "mean", "robust", False)[0].half(), torch.from_numpy(aggkit.median(y)))
        assert same(T.mean(x, "propagate")[0].half(), torch.from_numpy(aggkit.mean(y, nonfinite="propagate")))


# ---------------------------------------------------------------------------------------------
# nonfinite="raise", parameters, availability


@pytest.mark.parametrize("path", PATHS)
def test_raise_names_the_rows(path):
    x = torch.ones(7, 300, dtype=torch.float32)  # several blocks of the row-flag kernel
    x[2, 299] = float("inf")
    x[5, 1] = float("nan")
    v = x.numpy()
    calls = [
        (
            lambda: T.median(x, "mean", "raise", True, config=PATHS[path]),
            lambda: _core.median(v, "mean", "raise", True),
        ),
        (
            lambda: T.trimmed_mean(x, 2, "raise", True, config=PATHS[path]),
            lambda: _core.trimmed_mean(v, 2, "raise", True),
        ),
        (lambda: T.mean(x, "raise"), lambda: _core.mean(v, None, "raise")),
    ]
    for kernel, core in calls:
        with pytest.raises(aggkit.NonFiniteError) as e:
            kernel()
        with pytest.raises(aggkit.NonFiniteError) as c:
            core()
        assert e.value.rows == c.value.rows == [2, 5]
        assert str(e.value) == str(c.value)
    x = x[:, ::37]  # finite now: "raise" computes as "robust"
    check_order_statistic("median", x, "upper", "raise", PATHS[path])
    check_mean(x, "raise")


def test_parameters_and_availability():
    x = torch.randn(4, 3)
    with pytest.raises(aggkit.TooFewInputsError, match=r"needs n >= 2f \+ 1, got n=4, f=2"):
        T.trimmed_mean(x, 2, "robust", False)
    with pytest.raises(aggkit.EmptyInputError):
        T.median(torch.empty(0, 3), "mean", "robust", False)
    with pytest.raises(TypeError):
        T.median(x.long(), "mean", "robust", False)
    with pytest.raises(ValueError, match="power of two"):
        T.Config(tile=12)
    assert T.available(x)
    assert T.available(x.double())
    assert T.available(x.half())
    assert not T.available(x.long())
    with T.force_interpreter():
        pass
    assert T.available(x)  # the enclosing (fixture's) context is still in force


def test_cpu_tensors_need_the_forcing_context():
    x = torch.randn(3, 2)
    prev = getattr(_switch._local, "triton", False)
    _switch._local.triton = False
    try:
        assert not T.available(x)
        with T.force_interpreter():
            assert T.available(x)
        assert not T.available(x)
    finally:
        _switch._local.triton = prev


def test_module_imports_without_triton(monkeypatch):
    # A fresh copy of the module with `import triton` failing: it imports, and refuses to run.
    monkeypatch.setitem(sys.modules, "triton", None)
    monkeypatch.setitem(sys.modules, "triton.language", None)
    spec = importlib.util.spec_from_file_location("_triton_without", T.__file__)
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "_triton_without", mod)
    spec.loader.exec_module(mod)
    x = torch.randn(3, 2)
    assert mod.triton is None
    assert not mod.INTERPRETED
    assert not mod.available(x)
    with pytest.raises(RuntimeError, match="needs triton"):
        mod.median(x, "mean", "robust", False)


# ---------------------------------------------------------------------------------------------
# The gradient of the trimmed mean (and meamed): the kept values, without an (n, d) mask


@settings(max_examples=40)
@given(x=wild(), data=st.data())
def test_kept_gradient_matches_the_mask(x, data):
    from aggkit.torch import _kernels as K

    n = x.shape[0]
    f = data.draw(st.integers(0, (n - 1) // 2))
    half = data.draw(st.sampled_from([None, torch.float16, torch.bfloat16]))
    if half is not None:
        x = x.float().to(half)
    if data.draw(st.booleans()):
        x = x.t().contiguous().t()  # columns-first strides
    _, lo, hi = T.trimmed_mean(x, f, data.draw(st.sampled_from(POLICIES)), True)
    q = torch.from_numpy(data.draw(hnp.arrays(np.float32, x.shape[1], elements=st.floats(width=32))))
    q = q.to(x.dtype)
    got = T.kept_grad(x, lo, hi, q)
    want = torch.where(K.kept_mask(x, lo, hi), q[None], q.new_zeros(()))
    assert same(got, want), (got, want)


def test_trimmed_mean_and_meamed_backwards_run_the_kernel(monkeypatch):
    import aggkit.torch as at

    calls = []
    real = T.kept_grad
    monkeypatch.setattr(T, "kept_grad", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    g = torch.Generator().manual_seed(9)
    x = torch.randn(11, 19, dtype=torch.float64, generator=g).round()  # ties across rows
    x[3, 4] = float("nan")
    w = torch.arange(19.0, dtype=torch.float64)
    for op in (lambda v: at.trimmed_mean(v, f=3), lambda v: at.meamed(v, f=3)):
        xr = x.clone().requires_grad_(True)
        (got,) = torch.autograd.grad((op(xr) * w).sum(), xr)
        prev, _switch._local.triton = getattr(_switch._local, "triton", False), False
        try:
            (want,) = torch.autograd.grad((op(xr) * w).sum(), xr)
        finally:
            _switch._local.triton = prev
        assert same(got, want)
    assert len(calls) == 2
    # A higher-order graph needs differentiable torch ops: no kernel then.
    xr = x.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(at.trimmed_mean(xr, f=3).sum(), xr, create_graph=True)
    assert len(calls) == 2
    assert gx.shape == x.shape


# ---------------------------------------------------------------------------------------------
# Memory: no (n, d)-sized temporary


def test_no_n_by_d_temporaries():
    small = T.Config(max_register_n=0, block_d=64, tile=16, batch=4)
    n, d = 64, 48
    for dtype in (torch.float64,):  # the same host code for both dtypes, float64's rows are wider
        x = torch.randn(n, d, dtype=dtype)
        x[7, 3] = float("nan")  # the robust mean drops row 7 in a second pass
        calls = {
            "median": lambda x=x: T.median(x, "mean", "propagate", True, config=small),
            "median in registers": lambda x=x: T.median(x, "lower", "robust", True),
            "trimmed_mean": lambda x=x: T.trimmed_mean(x, 28, "robust", True, config=small),
            "mean": lambda x=x: T.mean(x, "robust"),
            "meamed": lambda x=x: T.meamed(x, 40, "propagate", True),
            "raise": lambda x=x: T.check_policy(x[8:], "median", "raise"),
        }
        _, lo, hi = T.trimmed_mean(x, 28, "robust", True)
        q = torch.randn(d, dtype=dtype)
        # The gradient kernel: its (n, d) result and nothing else of that order.
        sizes = torch_allocations(lambda x=x, lo=lo, hi=hi, q=q: T.kept_grad(x, lo, hi, q))
        assert sorted(sizes)[-1] == n * d * 8
        assert sum(sorted(sizes)[:-1]) <= 256, sizes
        # Host side: every torch allocation is an output (d values, 2 d rows) or per-row flags
        # and coefficients: each at most 8 max(n, d) bytes and together at most 16 d + 24 n (+
        # a few scalars), where one (n, d) boolean mask alone takes n d bytes.
        for name, fn in calls.items():
            sizes = torch_allocations(fn)
            assert max(sizes, default=0) <= 8 * max(n, d), (name, sizes)
            assert sum(sizes) <= 16 * d + 24 * n + 256 < n * d, (name, sizes)
    # Device side: Triton allocates no memory, so what a kernel holds are register values of
    # the constant block shapes of its Config: the largest (the radix pass's block x tile x
    # 2**radix comparison, the batch merge's block x (2 batch)**2, the register kernel's
    # next_pow2(n) x block keys) is the same whatever n and d, and below n d.
    blocks = T.Config(max_register_n=0, block_d=8, tile=8, batch=4)
    bound = blocks.block_d * max(blocks.tile << blocks.radix, (2 * blocks.batch) ** 2)
    for n, d in ((16, 8), (48, 24)):
        x = torch.randn(n, d)
        assert largest_block(lambda x=x: T.median(x, "lower", "robust", True, config=blocks)) == bound
        f = n // 2 - 2
        assert largest_block(lambda x=x, f=f: T.trimmed_mean(x, f, "robust", True, config=blocks)) == bound
        assert largest_block(lambda x=x: T.mean(x, "robust")) <= T.CONFIG.max_block_d
    assert 48 * 24 > bound
    for d in (64, 256):
        size = largest_block(lambda d=d: T.median(torch.randn(64, d), "mean", "robust", True))
        assert size == T.CONFIG.register_elems < 64 * 256


# ---------------------------------------------------------------------------------------------
# The compiled (GPU) kernels: built offline for sm_90, no device needed

COMPILE = r"""
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from aggkit.torch import _triton as T

assert not T.INTERPRETED
target = GPUTarget("cuda", 90, 32)


def build(kernel, pointers, ints, constexprs, ones=False):
    # Then again with every int argument 1: Triton's launcher makes such an argument a
    # constexpr (which has no .to), something the interpreter never does.
    kind = "constexpr" if ones else "i32"
    signature = {**pointers, **dict.fromkeys(ints, kind), **dict.fromkeys(constexprs, "constexpr")}
    names = list(signature)
    values = {**constexprs, **dict.fromkeys(ints if ones else [], 1)}
    consts = {(names.index(k),): v for k, v in values.items()}
    compiled = triton.compile(
        ASTSource(fn=kernel, signature=signature, constexprs=consts),
        target=target,
        options={"enable_fp_fusion": False},
    )
    if not ones:
        build(kernel, pointers, ints, constexprs, ones=True)
    ptx = compiled.asm["ptx"]
    # No fused multiply-add, no approximate division, no flush-to-zero.
    for word in ("fma.", "div.full", "div.approx", ".ftz"):
        assert word not in ptx, (kernel.fn.__name__, constexprs, word)
    return ptx


for f in ("fp32", "fp64", "fp16", "bf16"):  # half precision is read as it is, computed in fp32
    is64 = f == "fp64"
    o = "fp64" if is64 else "fp32"
    pointers = {"x_ptr": "*" + f, "out_ptr": "*" + o, "lo_ptr": "*i32", "hi_ptr": "*i32"}
    ints = ["n", "d", "stride_n", "stride_d", "r_lo", "r_hi"]
    # Every flag of the trimmed mean; the median's midpoint (without rows) for float64 only.
    for trimmed, two, rows in ((True, True, True), (False, True, False))[: 1 + is64]:
        flags = dict(TRIMMED=trimmed, MIDPOINT=two and not trimmed, TWO=two, PROPAGATE=rows, ROWS=rows)
        flags["IS64"] = is64
        build(T._rank_kernel, pointers, ints, {**flags, "BLOCK_N": 128, "BLOCK_D": 32})
        c = T.CONFIG
        blocks = {"BLOCK_D": c.block_d, "TILE": c.tile, "BATCH": c.batch, "RADIX": c.radix}
        build(T._select_kernel, pointers, ints, {**flags, **blocks})
    if f in ("fp32", "fp64"):  # the sorted values are float32 or float64
        build(T._sorted_sum_kernel, {"v_ptr": "*" + f, "out_ptr": "*" + f}, ["w", "r_lo", "r_hi"],
              dict(IS64=is64, BLOCK_D=128))
    build(T._weighted_trimmed_kernel, {"x_ptr": "*" + f, "w_ptr": "*fp64", "out_ptr": "*" + o},
          [*ints[:4], "f"], dict(PROPAGATE=True, IS64=is64, BLOCK_N=64, BLOCK_D=32))
    build(T._weighted_median_kernel, {"x_ptr": "*" + f, "w_ptr": "*fp64", "r_ptr": "*i32", "s_ptr": "*i32",
          "exact_ptr": "*i8"}, ints[:4], dict(IS64=is64, BLOCK_N=64, BLOCK_D=32))
    build(T._meamed_kernel, pointers, [*ints[:4], "keep"],
          dict(PROPAGATE=True, ROWS=True, IS64=is64, BLOCK_N=64, BLOCK_D=32))
    pointers = {"x_ptr": "*" + f, "keep_ptr": "*i8", "w_ptr": "*fp64", "out_ptr": "*" + o, "bad_ptr": "*i32"}
    for weighted in (False, True):
        ptx = build(T._mean_kernel, pointers, ["n", "d", "stride_n", "stride_d", "count"],
                    dict(KEEP=True, WEIGHTED=weighted, FLAG=not weighted, IS64=is64, BLOCK_D=128))
        assert "div.rn.f64" in ptx
    build(T._kept_grad_kernel, {"x_ptr": "*" + f, "lo_ptr": "*i32", "hi_ptr": "*i32", "q_ptr": "*" + f,
          "out_ptr": "*" + f}, ["n", "d", "stride_n", "stride_d"], dict(IS64=is64, BLOCK_D=128))
    build(T._row_flags_kernel, {"x_ptr": "*" + f, "bad_ptr": "*i32"},
          ["n", "d", "stride_n", "stride_d", "col_blocks"], dict(BLOCK_R=16, BLOCK_C=128))
print("compiled")
"""


def test_kernels_compile_for_the_gpu(tmp_path):
    # In a fresh process (the kernels here are interpreted), into a private cache directory.
    import triton.backends

    if "nvidia" not in triton.backends.backends:
        pytest.skip("this triton has no CUDA backend")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)
    run = subprocess.run(
        [sys.executable, "-c", COMPILE], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "compiled" in run.stdout


# ---------------------------------------------------------------------------------------------
# On a CUDA device (a machine with a GPU): the compiled kernels against the core, and their
# device memory

GPU = r"""
import sys

import numpy as np
import torch

from aggkit import _core
from aggkit.torch import _kernels as K
from aggkit.torch import _triton as T
from aggkit.torch.mean import plan

device = sys.argv[1]
sizes = [int(v) for v in sys.argv[2].split(",")]
d = int(sys.argv[3])
forced = T.force_interpreter() if device == "cpu" else torch.no_grad()
rng = np.random.default_rng(7)
SPECIAL = [np.nan, np.inf, -np.inf, -0.0, 0.0, 1.0, 2.0, -1.0]


def bits(a):
    a = np.array(a, dtype=np.float64 if a.dtype == np.float64 else np.float32)
    a[np.isnan(a)] = np.nan
    return a.view(np.int64 if a.dtype == np.float64 else np.int32)


def matrix(n, dtype):
    x = rng.standard_normal((n, d)).astype(dtype)
    ties = rng.random((n, d)) < 0.4
    x[ties] = rng.choice(SPECIAL, size=int(ties.sum()))
    x[:, 0] = np.finfo(dtype).max  # a sum beyond the float64 range (float64)
    x[:, 1] = np.nan
    return x


def check(name, got, want):
    assert np.array_equal(bits(got[0].cpu().numpy()), bits(want[0])), name
    if len(want) == 3 and want[1] is not None:
        assert np.array_equal(got[1].cpu().numpy().view(np.uint32), want[1]), name
        assert np.array_equal(got[2].cpu().numpy().view(np.uint32), want[2]), name


with forced:
    for n in sizes:
        for dtype in (np.float32, np.float64):
            x = matrix(n, dtype)
            t = torch.from_numpy(x).to(device)
            for policy in ("robust", "propagate"):
                for even in ("mean", "lower", "upper"):
                    want = _core.median(x, even, policy, True)
                    check(f"median {n} {dtype} {policy} {even}", T.median(t, even, policy, True), want)
                for f in sorted({0, n // 5, (n - 1) // 2}):
                    want = _core.trimmed_mean(x, f, policy, True)
                    check(f"trimmed {n} {dtype} {policy} {f}", T.trimmed_mean(t, f, policy, True), want)
                if policy == "propagate":
                    check(f"mean {n} {dtype}", T.mean(t, policy), _core.mean(x, None, policy))
                # The sorted-chunk trimmed mean, and the trimmed mean's backward kernel.
                f = n // 5
                chunks = T.Config(max_register_n=0, sort_kept=0, sort_bytes=24 * n * 1000)
                want = _core.trimmed_mean(x, f, policy, True)
                got = T.trimmed_mean(t, f, policy, True, config=chunks)
                check(f"sorted trimmed {n} {dtype} {policy}", got, want)
                _, lo, hi = T.trimmed_mean(t, f, policy, True)
                q = torch.from_numpy(rng.standard_normal(d).astype(dtype)).to(device)
                mask = K.kept_mask(torch.from_numpy(x), lo.cpu(), hi.cpu())
                grad = torch.where(mask, q.cpu()[None], q.new_zeros(()).cpu())
                assert torch.equal(T.kept_grad(t, lo, hi, q).cpu(), grad), ("kept_grad", n, dtype, policy)
                if n > T.CONFIG.max_register_n:
                    continue
                for keep in sorted({1, (n + 1) // 2, n}):
                    want = _core.meamed(x, 0, keep, policy, True)
                    check(f"meamed {n} {dtype} {policy} {keep}", T.meamed(t, keep, policy, True), want)
                w = rng.choice([0.0, 0.5, 1.0, 2.0, 3.0], n)
                w[0] = 1.0
                wn = np.asarray(K.normalise_weights(w.tolist()))
                wt = torch.from_numpy(wn)
                want = _core.weighted_trimmed_mean(x, wn, f, policy, False)
                got = (T.weighted_trimmed_mean(t, wt, f, policy),)
                check(f"weighted trimmed {n} {dtype} {policy}", got, want)
                if policy == "propagate":
                    items, total = plan(n, w.tolist(), [])
                    want = _core.mean(x, w, policy)
                    check(f"weighted mean {n} {dtype}", (T.weighted_mean(t, items, total),), want)
                else:
                    r, s, exact = T.weighted_median_rows(t, wt)
                    _, lo, hi = _core.weighted_median(x, wn, "upper", policy, True)
                    lower = _core.weighted_median(x, wn, "lower", policy, True)[1]
                    assert np.array_equal(r.cpu().numpy(), lower), ("weighted median", n)
                    assert np.array_equal(torch.where(exact, s, r).cpu().numpy(), hi), ("weighted median", n)
            if device == "cuda":
                # Extra device memory of a call: the outputs and O(n) flags, never O(n d).
                torch.cuda.synchronize()
                base = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
                T.trimmed_mean(t, n // 5, "robust", True)
                T.median(t, "mean", "propagate", True)
                T.mean(t[:, 2:], "robust")
                extra = torch.cuda.max_memory_allocated() - base
                assert extra <= 4 * (16 * d + 24 * n) + (1 << 16), (n, dtype, extra)
print("gpu ok")
"""


def run_gpu_check(device, sizes, d, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if device == "cpu":
        env["TRITON_INTERPRET"] = "1"
    env["TRITON_CACHE_DIR"] = str(tmp_path)
    args = [sys.executable, "-c", GPU, device, ",".join(map(str, sizes)), str(d)]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=600, check=False)


def test_the_gpu_check_runs_under_the_interpreter(tmp_path):
    # The GPU subprocess check itself, on CPU tensors in the interpreter (small sizes): it is
    # run for real only where a GPU is lent, so it must not fail for its own reasons there.
    run = run_gpu_check("cpu", [1, 6], 16, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "gpu ok" in run.stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_kernels_match_the_core(tmp_path):
    # Both kernels (n <= 128 in registers, above streamed), every policy, many blocks.
    run = run_gpu_check("cuda", [1, 2, 7, 64, 128, 129, 300], 5000, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "gpu ok" in run.stdout


def test_public_ops_run_the_kernels_under_force_triton(monkeypatch):
    # aggkit.torch's ops on CPU tensors under force_triton take the CUDA path: the Triton
    # kernels (spied on here), with the Rust core's values and the same gradients.
    import aggkit.torch as at
    from aggkit.torch import _triton_dist as D

    calls = []

    def spy(module, name):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, **k: (calls.append(name), real(*a, **k))[1])

    for name in ("median", "trimmed_mean", "mean"):
        spy(T, name)
    spy(D, "pairwise_sq_distances")
    g = torch.Generator().manual_seed(3)
    x = torch.randn(9, 33, dtype=torch.float64, generator=g)
    x[2, 5], x[4, 7] = float("inf"), -0.0
    xn = x.numpy()
    assert same(at.median(x), torch.from_numpy(aggkit.median(xn)))
    assert same(at.trimmed_mean(x, f=2), torch.from_numpy(aggkit.trimmed_mean(xn, f=2)))
    assert same(at.mean(x), torch.from_numpy(aggkit.mean(xn)))
    assert same(at.krum(x, f=2), torch.from_numpy(aggkit.krum(xn, f=2)))
    assert calls == ["median", "trimmed_mean", "mean", "pairwise_sq_distances"]
    # The backward of each op on the Triton path equals the Rust path's.
    for op in (at.median, lambda v: at.trimmed_mean(v, f=2), at.mean):
        xr = x.clone().requires_grad_(True)
        (got,) = torch.autograd.grad((op(xr) * torch.arange(33.0, dtype=torch.float64)).sum(), xr)
        prev, _switch._local.triton = getattr(_switch._local, "triton", False), False
        try:
            assert _paths.rust(xr)
            (want,) = torch.autograd.grad((op(xr) * torch.arange(33.0, dtype=torch.float64)).sum(), xr)
        finally:
            _switch._local.triton = prev
        assert same(got, want)
    # force_native wins over force_triton.
    calls.clear()
    with _paths.force_native():
        at.median(x)
    assert calls == []


def test_force_triton_refuses_without_the_interpreter(monkeypatch):
    monkeypatch.setattr(T, "INTERPRETED", False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"), _paths.force_triton():
        pass
    monkeypatch.setenv("AGGKIT_TRITON", "0")
    monkeypatch.setattr(T, "INTERPRETED", True)
    assert not _paths.use_triton(torch.ones(3, 2))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_and_strided_inputs_reach_the_kernels_without_a_copy(monkeypatch, dtype):
    # The kernels widen half precision in registers and take strides: aggkit.torch passes the
    # caller's tensor itself (no (n, d) float32 copy), with the Rust path's values and gradients.
    import aggkit.torch as at

    seen = []
    for name in ("median", "trimmed_mean", "mean"):
        real = getattr(T, name)
        monkeypatch.setattr(T, name, lambda x, *a, _r=real, **k: (seen.append(x), _r(x, *a, **k))[1])
    g = torch.Generator().manual_seed(5)
    base = torch.randn(12, 7, generator=g).to(dtype)
    w = torch.arange(1.0, 8.0).to(dtype)
    for x in (base, base.t().contiguous().t()):  # contiguous, and columns-first strides
        for op in (at.median, lambda v: at.trimmed_mean(v, f=3), at.mean):
            seen.clear()
            xr = (
                x.detach().clone().requires_grad_(True)
                if x.is_contiguous()
                else x.detach().requires_grad_(True)
            )
            y = op(xr)
            (grad,) = torch.autograd.grad((y * w).sum(), xr)
            assert len(seen) == 1
            assert seen[0].dtype == dtype
            assert seen[0].data_ptr() == xr.data_ptr()
            prev, _switch._local.triton = getattr(_switch._local, "triton", False), False
            try:
                y_cpu = op(xr)
                (want,) = torch.autograd.grad((y_cpu * w).sum(), xr)
            finally:
                _switch._local.triton = prev
            assert same(y, y_cpu)
            assert same(grad, want)


def test_a_device_where_the_kernels_fail_keeps_the_native_kernels(monkeypatch):
    # A GPU Triton cannot compile for: the first tensor's probe fails, one warning, and the
    # device's ops take the torch-native kernels from then on.
    monkeypatch.setattr(_paths, "_probed", set())
    monkeypatch.setattr(_paths, "_broken", set())
    monkeypatch.setattr(T, "available", lambda x: True)

    def fail(*a, **k):
        raise RuntimeError("no C compiler")

    monkeypatch.setattr(T, "median", fail)
    x = torch.zeros(3, 2, device="meta")
    with pytest.warns(RuntimeWarning, match="no C compiler"):
        assert not _paths.use_triton(x)
    assert not _paths.use_triton(x)  # no second probe, no second warning
    assert _paths._broken == {"meta"}


def test_aggkit_triton_values_are_checked(monkeypatch):
    monkeypatch.setenv("AGGKIT_TRITON", "off")
    with pytest.raises(RuntimeError, match="AGGKIT_TRITON must be 0 or interpret"):
        _paths.use_triton(torch.ones(2, 2))
    monkeypatch.setenv("AGGKIT_TRITON", "interpret")
    monkeypatch.setattr(T, "INTERPRETED", False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        _paths.use_triton(torch.ones(2, 2))

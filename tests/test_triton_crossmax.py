"""The Triton CrossMax kernels (aggkit.torch._triton_crossmax), run by Triton's interpreter on CPU tensors.

Every result is compared bit for bit with the Rust core (scores, NaN payloads made canonical, and
every index the backward reads) and with the torch-native function (scores and argmax classes;
its ``top`` / ``kth`` indices where the score is finite: where an ``a`` is NaN the core's
insertion and torch's sort place NaN differently, and no gradient flows there). Shapes span
several blocks of predictors and classes and the register bound ``N = 128``.
"""

from __future__ import annotations

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
from strategies import DTYPES, TIES, finite_elements

torch = pytest.importorskip("torch")

_paths, _switch, T, X = import_kernels("_paths", "_switch", "_triton", "_triton_crossmax")

from aggkit import _core  # noqa: E402
from aggkit.torch.crossmax import native  # noqa: E402

#: Blocks small enough for several of them in every dimension at hypothesis's sizes.
SMALL = X.Config(max_block_c=2, block_c=2, block_p=2)
POLICIES = ("robust", "propagate", "raise")
EVENS = ("lower", "upper", "mean")


pytestmark = pytest.mark.usefixtures("interpretable_triton_library", "interpreted")


def core(z, k, reducer, even, nonfinite, need_indices):
    """``aggkit._core.crossmax`` as ``crossmax_op`` calls it, its results as tensors."""
    b, n, c = z.shape
    zc = np.ascontiguousarray(z.numpy()).reshape(b * n, c)
    y, *ix = _core.crossmax(zc, n, k, reducer, even, nonfinite, need_indices)
    y = torch.from_numpy(y).reshape(b, c)
    if not need_indices:
        return (y,)
    top, kth, kth2, am = (torch.from_numpy(v.view(np.int32)) for v in ix)
    return y, top.reshape(b, c), kth.reshape(b, c), kth2.reshape(b, c), am.reshape(b, n)


def check(z, k, reducer, even, nonfinite, need_indices, config=X.CONFIG):
    """The kernels against the core (every output, bit for bit) and ``native()``."""
    args = (k, reducer, even, nonfinite, need_indices)
    refused = nonfinite == "raise" and bool((z.isnan() | (z == np.inf)).any())
    if refused:
        with pytest.raises(aggkit.NonFiniteError) as c:
            core(z, *args)
        for fn in (lambda: X.crossmax(z, *args, config=config), lambda: native(z, *args)):
            with pytest.raises(aggkit.NonFiniteError) as e:
                fn()
            assert e.value.rows == c.value.rows
            assert str(e.value) == str(c.value)
        return
    want = core(z, *args)
    got = X.crossmax(z, *args, config=config)
    nat = native(z, *args)
    assert same(got[0], want[0]), (got[0], want[0])
    assert same(got[0], nat[0]), (got[0], nat[0])
    if not need_indices:
        for t, u in zip(got[1:], nat[1:], strict=True):
            assert t.dtype == u.dtype == torch.int32
            assert t.shape == u.shape == (0,)
        return
    for t, w in zip(got[1:], want[1:], strict=True):
        assert t.dtype == torch.int32
        assert torch.equal(t, w), (t, w)
    fin = torch.isfinite(want[0])  # the outputs the backward reads
    for t, u in zip(got[1:4], nat[1:4], strict=True):
        assert torch.equal(t[fin], u[fin].to(torch.int32))
    assert torch.equal(got[4], nat[4])


def specials(dt) -> list[float]:
    """Non-finite values, signed zeros, the largest values (whose differences overflow), the
    midpoint's bounds and subnormals."""
    info = np.finfo(dt)
    top, tiny = float(info.max), float(info.smallest_subnormal)
    half = 2.0 ** (info.maxexp - 1)
    return [np.nan, np.inf, -np.inf, -0.0, 0.0, top, -top, half, -half, tiny, -tiny]


@st.composite
def logits(draw, max_b=3, max_n=9, max_c=7):
    """``(B, N, C)`` logits with ties, ±0, ±inf, NaN, huge values, masked classes (a ``-inf``
    column) and predictors that are all NaN or all ``-inf``; sometimes not contiguous."""
    dt = draw(DTYPES)
    b, n, c = draw(st.integers(1, max_b)), draw(st.integers(2, max_n)), draw(st.integers(1, max_c))
    elements = st.one_of(finite_elements(dt, 1e4), TIES)
    if draw(st.booleans()):
        elements = st.one_of(elements, st.sampled_from(specials(dt)))
    z = draw(hnp.arrays(dt, (b, n, c), elements=elements))
    if draw(st.booleans()):
        z[:, :, draw(st.integers(0, c - 1))] = -np.inf
    if draw(st.booleans()):
        z[draw(st.integers(0, b - 1)), draw(st.integers(0, n - 1))] = draw(st.sampled_from([np.nan, -np.inf]))
    t = torch.from_numpy(z)
    if draw(st.booleans()):
        t = t.transpose(1, 2).contiguous().transpose(1, 2)  # classes-first strides
    return t


@st.composite
def parameters(draw, n):
    """``(k, reducer, even)`` as ``crossmax_op`` takes them."""
    if draw(st.booleans()):
        return draw(st.integers(2, n)), "kth", "lower"
    return 0, "median", draw(st.sampled_from(EVENS))


# ---------------------------------------------------------------------------------------------
# Bitwise agreement


@settings(max_examples=90, deadline=None)
@given(z=logits(), data=st.data())
def test_matches_core_and_native(z, data):
    k, reducer, even = data.draw(parameters(z.shape[1]))
    nonfinite = data.draw(st.sampled_from(POLICIES))
    config = data.draw(st.sampled_from([X.CONFIG, SMALL]))
    check(z, k, reducer, even, nonfinite, data.draw(st.booleans()), config)


@pytest.mark.parametrize("nonfinite", POLICIES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_parameter(dtype, nonfinite):
    # Every reducer, rank and `even` on the same random logits: small integers (ties), specials,
    # a masked class, an all-NaN predictor (none under "raise": it would refuse them all).
    rng = np.random.default_rng(len(nonfinite))
    values = [-2.0, -1.0, -0.0, 0.0, 0.5, 1.0, 3.0, *([] if nonfinite == "raise" else [np.nan, np.inf])]
    for n in (4, 5):
        z = rng.choice([*values, -np.inf], size=(2, n, 6)).astype(dtype)
        z[:, :, 4] = -np.inf
        z[1, n - 2] = np.nan if nonfinite != "raise" else -np.inf
        z[0, :, 5] = rng.standard_normal(n)
        t = torch.from_numpy(z)
        ranks = [(2, "kth", "lower"), (n, "kth", "lower")] + [(0, "median", e) for e in EVENS]
        for k, reducer, even in ranks if n == 4 else ranks[2:3]:
            check(t, k, reducer, even, nonfinite, True)
        check(t, 3, "kth", "lower", nonfinite, False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_at_the_register_bound(dtype):
    # N = 128 (the last N held in registers): a (128, 32) tile, two blocks of classes.
    g = torch.Generator().manual_seed(0)
    z = torch.randint(-3, 4, (1, 128, 40), generator=g).to(dtype)  # many ties
    z[0, :, 7] = -np.inf  # masked
    z[0, 5, 9] = z[0, 77, 33] = float("nan")
    z[0, 100] = -np.inf  # abstains under "robust"
    z[0, 3, 2], z[0, 4, 2] = -0.0, 0.0
    assert X.CONFIG.max_n == 128
    assert X.supported(z)
    if dtype == torch.float32:
        check(z, 3, "kth", "lower", "robust", True)
    else:
        check(z, 0, "median", "mean", "propagate", True)
    assert not X.supported(torch.zeros(1, 129, 3, dtype=dtype))
    with pytest.raises(ValueError, match="N <= 128"):
        X.crossmax(torch.zeros(1, 129, 3, dtype=dtype), 3, "kth", "lower", "robust", False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_signed_zeros(dtype):
    # Class 1: predictor 1's maximum is the +0.0 of class 0, so its `a` is (-0.0 - 0.0) + 0.0:
    # +0.0, as the core makes it; it ties with predictor 0's 0.0 and ranks second.
    z = torch.tensor([[[-5.0, 0.0], [0.0, -0.0], [0.0, -7.0]]], dtype=dtype)
    for config in (X.CONFIG, X.Config(block_c=1)):  # (a block per class: the core's maxima, ±0 too)
        for k in (2, 3):
            check(z, k, "kth", "lower", "robust", True, config)
    y = X.crossmax(z, 2, "kth", "lower", "robust", False, config=X.Config(block_c=1))[0]
    assert bits(y).tolist() == [[0, 0]]


def test_several_blocks_of_predictors_and_classes():
    g = torch.Generator().manual_seed(1)
    z = torch.randint(-2, 3, (2, 37, 200), generator=g).double()
    z[1, :, 150] = -np.inf
    z[0, 20, 199] = float("inf")
    config = X.Config(max_block_c=64, block_c=64, block_p=8)  # 5 blocks of predictors, 4 of classes
    for nonfinite, need in (("robust", True), ("propagate", False)):
        check(z, 0, "median", "upper", nonfinite, need, config)


def test_no_examples_no_classes():
    for shape in ((0, 4, 3), (2, 3, 0)):
        z = torch.zeros(shape)
        got = X.crossmax(z, 2, "kth", "lower", "robust", True)
        want = core(z, 2, "kth", "lower", "robust", True)
        for t, w in zip(got, want, strict=True):
            assert t.shape == w.shape
            assert torch.equal(t, w)


def test_raise_names_the_predictors():
    z = torch.zeros(3, 40, 300)  # three blocks of predictors, three of classes
    z[0, 2, 299] = float("inf")
    z[2, 33, 1] = float("nan")
    z[1, 17, 0] = -np.inf  # allowed
    z[1, 18] = -np.inf  # allowed
    config = X.Config(block_p=16, block_c=128)
    with pytest.raises(aggkit.NonFiniteError) as e:
        X.crossmax(z, 3, "kth", "lower", "raise", False, config=config)
    assert e.value.rows == [2, 33]
    check(z, 3, "kth", "lower", "raise", True, config)  # the core's and native's errors
    z[0, 2, 299] = z[2, 33, 1] = 0.0
    check(z, 3, "kth", "lower", "raise", True, config)  # accepted: computed without substitutions


def test_parameters():
    z = torch.randn(2, 4, 3)
    with pytest.raises(ValueError, match="out of range"):
        X.crossmax(z, 5, "kth", "lower", "robust", False)
    with pytest.raises(ValueError, match="float32/float64"):
        X.crossmax(z.half(), 2, "kth", "lower", "robust", False)
    assert not X.supported(z[0])
    with pytest.raises(ValueError, match="power of two"):
        X.Config(block_c=48)


def test_needs_triton(monkeypatch):
    monkeypatch.setattr(X, "triton", None)
    with pytest.raises(RuntimeError, match="needs triton"):
        X.crossmax(torch.zeros(1, 2, 2), 2, "kth", "lower", "robust", False)


# ---------------------------------------------------------------------------------------------
# The public op takes the kernel


def test_public_op_runs_the_kernel_under_force_triton(monkeypatch):
    import aggkit.torch as at

    calls = []
    real = X.crossmax
    monkeypatch.setattr(X, "crossmax", lambda *a, **k: (calls.append(a[0].shape), real(*a, **k))[1])
    g = torch.Generator().manual_seed(2)
    z = torch.randn(5, 6, 11, dtype=torch.float64, generator=g)
    z[1, 2, 3], z[3, :, 4] = float("inf"), -np.inf
    w = torch.randn(5, 11, dtype=torch.float64, generator=g)
    for kw in ({"k": 3}, {"reducer": "median", "even": "mean"}):
        zr = z.clone().requires_grad_(True)
        y = at.crossmax(zr, **kw)
        (grad,) = torch.autograd.grad((torch.where(y.isfinite(), y, 0) * w).sum(), zr)
        prev, _switch._local.triton = getattr(_switch._local, "triton", False), False
        try:
            assert _paths.rust(zr)
            y_cpu = at.crossmax(zr, **kw)
            (want,) = torch.autograd.grad((torch.where(y_cpu.isfinite(), y_cpu, 0) * w).sum(), zr)
        finally:
            _switch._local.triton = prev
        assert same(y, y_cpu)
        assert same(grad, want)
    assert calls == [(5, 6, 11)] * 2
    # float32, and the inputs' batch dimensions and layout
    z32 = torch.randn(2, 3, 11, 4, generator=g)  # (..., C, N) with predictor_dim=-1
    assert same(
        at.crossmax(z32, k=2, predictor_dim=-1, class_dim=-2),
        torch.from_numpy(aggkit.crossmax(z32.numpy(), k=2, predictor_dim=-1, class_dim=-2)),
    )
    assert calls[-1] == (6, 4, 11)
    # Above the register bound: torch ops. Under force_native: never the kernel.
    calls.clear()
    big = torch.randn(1, 129, 3)
    assert same(at.crossmax(big), torch.from_numpy(aggkit.crossmax(big.numpy())))
    with _paths.force_native():
        at.crossmax(z)
    assert calls == []


# ---------------------------------------------------------------------------------------------
# Memory: no (B, N, C)-sized temporary


def test_no_b_by_n_by_c_temporaries():
    b, n, c = 4, 32, 64
    z = torch.randn(b, n, c, dtype=torch.float64)
    z[1, 3, 5] = float("nan")
    for nonfinite in ("propagate", "raise"):
        z[1, 3, 5] = float("nan") if nonfinite == "propagate" else 0.0
        sizes = torch_allocations(lambda nf=nonfinite: X.crossmax(z, 0, "median", "mean", nf, True))
        # The outputs (B C values, 3 B C + B N int32), the B N maxima, N flags, a few scalars;
        # a (B, N, C) boolean mask alone would take B N C bytes.
        assert max(sizes) <= 8 * max(b * c, b * n), (nonfinite, sizes)
        assert sum(sizes) <= 8 * b * c + 12 * b * c + 12 * b * n + 4 * n + 256 < b * n * c, sizes
    # (The torch ops allocate (B, N, C) temporaries: what the kernel avoids.)
    assert max(torch_allocations(lambda: native(z, 0, "median", "mean", "propagate", True))) >= b * n * c * 8
    # Device side: a program holds register tiles of its Config's constant shapes.
    size = largest_block(lambda: X.crossmax(torch.randn(1, 64, 256), 3, "kth", "lower", "robust", True))
    assert size == X.CONFIG.register_elems < 64 * 256


# ---------------------------------------------------------------------------------------------
# The compiled (GPU) kernels: built offline for sm_90, no device needed

COMPILE = r"""
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from aggkit.torch import _triton as T
from aggkit.torch import _triton_crossmax as X

assert not T.INTERPRETED
target = GPUTarget("cuda", 90, 32)


def build(kernel, pointers, ints, constexprs, ones=False):
    # Then again with every int argument 1 (Triton's launcher makes it a constexpr).
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


for f in ("fp32", "fp64"):
    is64 = f == "fp64"
    pointers = {"z_ptr": "*" + f, "m_ptr": "*" + f, "am_ptr": "*i32", "bad_ptr": "*i32"}
    ints = ["n", "c", "stride_b", "stride_n", "stride_c", "pred_blocks"]
    # Flags combined so that two builds hold every code path: the NaN tracking and the "raise"
    # flags here, the substitutions, the NaN slots and the midpoint in the rank kernel.
    build(X._maxima_kernel, pointers, ints, dict(ROBUST=False, RAISE=True, ARGMAX=True, IS64=is64,
                                                 BLOCK_P=16, BLOCK_C=128))
    pointers = {"z_ptr": "*" + f, "m_ptr": "*" + f, "y_ptr": "*" + f}
    pointers.update({"top_ptr": "*i32", "kth_ptr": "*i32", "kth2_ptr": "*i32"})
    ints = ["n", "c", "stride_b", "stride_n", "stride_c", "col_blocks", "ra", "rb"]
    flags = dict(ROBUST=True, ABSTAIN=True, NANS=True, MIDPOINT=True, INDICES=True, IS64=is64)
    build(X._rank_kernel, pointers, ints, {**flags, "BLOCK_N": 128, "BLOCK_C": 32})
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
# On a CUDA device: the compiled kernels against the core, and their device memory

GPU = r"""
import sys

import numpy as np
import torch

from aggkit import _core
from aggkit.torch import _triton_crossmax as X

rng = np.random.default_rng(7)
SPECIAL = [np.nan, np.inf, -np.inf, -0.0, 0.0, 1.0, 2.0, -1.0]


def bits(a):
    a = np.array(a)
    a[np.isnan(a)] = np.nan
    return a.view(np.int64 if a.dtype == np.float64 else np.int32)


for b, n, c in ((3, 2, 5), (64, 8, 1000), (5, 37, 3000), (2, 128, 700)):
    for dtype in (np.float32, np.float64):
        z = rng.standard_normal((b, n, c)).astype(dtype)
        ties = rng.random(z.shape) < 0.3
        z[ties] = rng.choice(SPECIAL, size=int(ties.sum()))
        z[:, :, 1] = -np.inf
        z[0, 1] = np.nan
        z[-1, 0] = -np.inf
        t = torch.from_numpy(z).cuda()
        zc = z.reshape(b * n, c)
        for policy in ("robust", "propagate"):
            for k, reducer, even in ((2, "kth", "lower"), (n, "kth", "lower"), (0, "median", "mean")):
                want = _core.crossmax(zc, n, k, reducer, even, policy, True)
                got = X.crossmax(t, k, reducer, even, policy, True)
                name = (b, n, c, dtype.__name__, policy, k, reducer)
                assert np.array_equal(bits(got[0].cpu().numpy().ravel()), bits(want[0])), name
                for g, w in zip(got[1:], want[1:]):
                    assert np.array_equal(g.cpu().numpy().ravel().view(np.uint32), w), name
        # Extra device memory of a call: the outputs and the O(B N) maxima, never O(B N C).
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        X.crossmax(t, 0, "median", "mean", "propagate", True)
        extra = torch.cuda.max_memory_allocated() - base
        assert extra <= 4 * (20 * b * c + 12 * b * n) + (1 << 16), (b, n, c, extra)
print("gpu ok")
"""


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_kernels_match_the_core(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)
    run = subprocess.run(
        [sys.executable, "-c", GPU], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "gpu ok" in run.stdout

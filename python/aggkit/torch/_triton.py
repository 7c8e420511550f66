"""Triton kernels for the coordinate-wise median, trimmed mean, meamed and (unweighted) mean.

They compute, on the tensor's device, exactly what the Rust core computes (``rust/order.rs``,
``rust/rules/``) and what the torch-native kernels (:mod:`aggkit.torch._kernels`) compute, bit
for bit, for ``(n, d)`` float32 and float64 tensors (rows are inputs, every column is reduced
on its own). float16 / bfloat16 are widened to float32 in registers as they are read, and the
float32 results returned: the core's half-precision path (``rust/half.rs``) is the float32 call
on the widened values, rounded once to the input's format, which the caller does
(``Prepared.finish``); no widened copy of the input is made:

* values are ranked by ``(value, row)`` over ``order.rs``'s unsigned keys (``ord32`` /
  ``ord64``: IEEE total order, every NaN made the canonical NaN first, so ``-0.0 < +0.0 <
  ... < +inf < NaN``; equal keys rank by row). The selected values are taken back from their
  keys, so a NaN comes back as the canonical NaN, as the core returns it;
* the trimmed mean adds its kept values in ascending rank order, the mean its rows in row
  order, with the core's accumulator: plain float64 from ``-0.0`` for float32 input,
  Neumaier-compensated float64 for float64 input, plus the core's "wide" sum (terms scaled by
  ``2**-560`` from the first one that overflows) for the float64 columns whose sum of finite
  values overflowed; float64 averages are kept within the smallest and largest value averaged
  (``order::average``), medians of two values are Rust's ``f32::midpoint`` /
  ``f64::midpoint``. The kernels are launched with ``enable_fp_fusion=False`` (no ``a * b + c``
  contracted into an FMA), add and divide in float64 (``div.rn.f64``) and do no float32
  arithmetic at all (only conversions), so no flush-to-zero or approximate division applies.

The algorithms, chosen by ``n`` (and the trimmed mean's kept count):

* **Register bound** ``n <= Config.max_register_n`` (default :data:`MAX_REGISTER_N` ``= 128``):
  one program owns ``Config.register_elems // next_pow2(n)`` columns (4096 keys a program) and
  keeps all their ``n`` keys in registers (a ``(next_pow2(n), block)`` tile; padding rows get the
  all-ones key, above every real key). Ranks are counted, ``rank_i = #{j : key_j < key_i or
  (key_j == key_i and j < i)}``, one row ``j`` at a time (``O(n^2)`` integer compares per
  column, exact); the keys of given ranks are read off the tile by masked reductions, the
  trimmed mean's kept ones in ascending rank order.
* **Fallback**, larger ``n``: nothing of a column is held; each program streams its block of
  ``Config.block_d`` columns from global memory in tiles of ``Config.tile`` rows, several times.
  A radix select on the keys (``Config.radix`` bits a pass: 8 passes for float32, 16 for
  float64 at 4 bits; each counts, per column, the keys below the ``2**radix`` candidate
  prefixes) finds the keys of the wanted ranks; one more pass finds their rows (the ``k``-th
  row of equal key, with a prefix sum) and the first NaN row. The trimmed mean then adds its
  kept values in ascending order without sorting the column: the copies of the lowest kept
  key (counted), then the keys strictly between the two boundary keys by batches (each pass
  keeps the ``Config.batch`` smallest keys above the last one added, merged tile by tile by
  counting ranks in registers; where a full batch may have cut through a run of equal keys,
  that key's copies, counted, start the next pass), then the copies of the highest kept key.
  Equal keys are equal bits, so adding copies is the core's ascending sum. Cost per column:
  ``(bits / radix) * n * 2**radix`` compares to select, ``n * (n - 2f) / (batch - 1)`` reads and
  ``~ 8 batch`` compares per read to add the kept values.
* **Sorted chunks**, a trimmed mean above the register bound that keeps more than
  ``Config.sort_kept`` values a column (the streamed sum's cost grows as ``n (n - 2f)``):
  chunks of columns, at most ``Config.sort_bytes`` of sort buffers each, are sorted by
  ``(key, row)`` with torch's stable sort, and a kernel adds each column's kept ranks in
  ascending order (:func:`_sorted_trimmed_mean`): the same additions, the same bits.

**Memory bound**: besides the outputs (``d`` values, ``2d`` int32 rows when asked) the host
allocates ``n`` int32 row flags (the mean under ``"robust"`` / ``"raise"``, the median and
trimmed mean under ``"raise"``) and, where the robust mean drops rows, ``n`` keep flags and the
``n`` coefficients. Kernels allocate no memory at all: a program's working set is registers of
constant block shapes (at most ``register_elems`` keys, or ``block_d * max(tile * 2**radix,
(2 batch)**2)`` comparisons in the fallback), whatever ``n`` and ``d``. No ``(n, d)``-sized
temporary is ever made: extra device memory is ``O(n + d)``, plus ``sort_bytes`` for sorted
chunks. Rows are ``int32`` (``n <= 2**31 - 2**16``, so a tile's rows cannot wrap). Every NaN a
kernel stores is the canonical NaN, whatever NaN the device's arithmetic made (the core, on
x86, can return another NaN payload: values and NaN-ness agree, payloads need not).
The trimmed mean's backward (:func:`kept_grad`) allocates its ``(n, d)`` result only.

**Meamed** (the mean of the values closest to the median; Bulyan's second stage) has the
register kernel only (:func:`meamed`, ``n <= max_register_n``): the ranked block gives the
median, the kept range grows outward from it by the core's rule, and the kept ranks are added in
ascending order.

Triton is optional: the module imports without it (:func:`available` is then ``False``).
``TRITON_INTERPRET=1`` set before the first import runs the kernels in Triton's interpreter,
which also serves CPU tensors inside :func:`aggkit.torch._paths.force_triton` (the tests).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from aggkit.errors import InvalidParameterError, empty_input_error, nonfinite_error, too_few_inputs_error
from aggkit.torch import _switch
from aggkit.torch._keys import first_nan, key_values, total_order_keys

try:
    import triton  # type: ignore[import-untyped]
    import triton.language as tl  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - triton is an optional dependency
    triton = None
    tl = None

#: Whether the kernels run in Triton's interpreter (``TRITON_INTERPRET=1`` at import).
INTERPRETED = triton is not None and os.environ.get("TRITON_INTERPRET", "0") == "1"

#: The largest ``n`` whose columns are held in registers by default (then a streaming select).
MAX_REGISTER_N = 128

#: The largest ``n``: rows are int32, and a tile's rows ``r0 + arange(TILE)`` must not wrap.
_MAX_N = 2**31 - 2**16

#: The input dtypes the kernels read (half precision widened to float32 as it is loaded).
_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class Config:
    """Block sizes of the kernels (powers of two; the defaults are untuned first choices).

    ``max_register_n``: the largest ``n`` ranked in registers. ``register_elems``: keys one
    program of the register kernel holds (its column block is ``register_elems // next_pow2(n)``,
    clamped to ``[1, max_block_d]``). ``block_d``: columns of a program of the streaming
    kernels; ``tile``: rows they read at a time; ``batch``: kept values the streaming trimmed
    mean orders per pass; ``radix``: key bits a pass of the radix select decides (1, 2, 4 or 8).
    ``register_warps`` / ``num_warps``: warps of a program of the register kernel / the others.
    ``sort_kept``: above the register bound, a trimmed mean that keeps more values a column than
    this sorts chunks of columns instead of streaming them (:func:`_sorted_trimmed_mean`), in
    chunks of at most about ``sort_bytes`` of sort buffers.

    Offline builds for sm_90 (``triton.compile``, ``cuobjdump -res-usage``) of the defaults: the
    register kernel uses at most 156 registers a thread with 8 warps (247 with 4), the streaming
    ones 126, the mean 40, none spills.
    """

    max_register_n: int = MAX_REGISTER_N
    register_elems: int = 4096
    max_block_d: int = 128
    block_d: int = 16
    tile: int = 16
    batch: int = 8
    radix: int = 4
    register_warps: int = 8
    num_warps: int = 4
    sort_kept: int = 256
    sort_bytes: int = 1 << 28

    def __post_init__(self) -> None:
        for name in (
            "register_elems",
            "max_block_d",
            "block_d",
            "tile",
            "batch",
            "register_warps",
            "num_warps",
        ):
            v = getattr(self, name)
            if v < 1 or v & (v - 1):
                raise ValueError(f"Config.{name} must be a power of two, got {v}")
        if self.radix not in (1, 2, 4, 8):
            raise ValueError(f"Config.radix must be 1, 2, 4 or 8, got {self.radix}")
        if self.sort_kept < 0 or self.sort_bytes < 1:
            raise ValueError(
                f"Config.sort_kept must be >= 0 and sort_bytes >= 1, got {self.sort_kept}, {self.sort_bytes}"
            )
        if not 0 <= self.max_register_n <= self.register_elems:
            raise ValueError(
                f"Config.max_register_n must lie in [0, register_elems={self.register_elems}], "
                f"got {self.max_register_n}"
            )


#: The block sizes used unless a caller passes others.
CONFIG = Config()


#: The switch that sends CPU tensors here (:func:`aggkit.torch._paths.force_triton`).
force_interpreter = _switch.forced


def available(x: Tensor) -> bool:
    """Whether these kernels can reduce ``x``: a floating-point tensor Triton can reach.

    A CUDA (or ROCm) tensor when Triton imports; a CPU tensor only in the interpreter, inside
    :func:`aggkit.torch._paths.force_triton`.
    """
    if triton is None or x.dtype not in _DTYPES:
        return False
    if x.device.type == "cuda":
        return True
    return INTERPRETED and x.device.type == "cpu" and _switch.triton_forced()


# ---------------------------------------------------------------------------------------------
# Device helpers. Literals stand for the core's constants: 2.6497349136889905e-169 is SHRINK
# (2**-560), 3.7739624248215414e+168 its inverse, 1.7976931348623157e+308 f64::MAX,
# 8.988465674311579e+307 f64::MAX / 2 and 4.450147717014403e-308 2 * f64::MIN_POSITIVE.
# ---------------------------------------------------------------------------------------------


def _jit(fn: Callable[..., Any]) -> Any:
    """``triton.jit`` (the plain function where Triton is missing: never launched then)."""
    return fn if triton is None else triton.jit(fn)


@_jit
def _keys(v: tl.tensor, IS64: tl.constexpr) -> Any:
    """``order.rs``'s ``ord32`` / ``ord64``: unsigned keys ordered like ``v`` (canonical NaN).

    Half precision is widened to float32 first (exact): its keys are those of the float32 call.
    """
    if IS64:
        bits = v.to(tl.int64, bitcast=True)
        bits = tl.where(v != v, 0x7FF8000000000000, bits)
        bits = bits ^ ((bits >> 63) & 0x7FFFFFFFFFFFFFFF)
        key = bits.to(tl.uint64, bitcast=True) ^ 0x8000000000000000
    else:
        w = v.to(tl.float32)
        bits32 = w.to(tl.int32, bitcast=True)
        bits32 = tl.where(w != w, 0x7FC00000, bits32)
        bits32 = bits32 ^ ((bits32 >> 31) & 0x7FFFFFFF)
        key = bits32.to(tl.uint32, bitcast=True) ^ 0x80000000
    return key


@_jit
def _value(key: tl.tensor, IS64: tl.constexpr) -> Any:
    """The value a key was made from (``Float::key_value``; NaN comes back canonical)."""
    if IS64:
        bits = tl.where(key >= 0x8000000000000000, key ^ 0x8000000000000000, ~key)
        v = bits.to(tl.float64, bitcast=True)
    else:
        bits32 = tl.where(key >= 0x80000000, key ^ 0x80000000, ~key)
        v = bits32.to(tl.float32, bitcast=True)
    return v


@_jit
def _top(key: tl.tensor, keep: tl.tensor, IS64: tl.constexpr) -> Any:
    """``key`` where ``keep``, else the all-ones key (above every real key, NaN's included)."""
    if IS64:
        r = tl.where(keep, key, 0xFFFFFFFFFFFFFFFF)
    else:
        r = tl.where(keep, key, 0xFFFFFFFF)
    return r


@_jit
def _finite(x: tl.tensor) -> Any:
    """Whether float64 ``x`` is finite (NaN compares false)."""
    return tl.abs(x) <= 1.7976931348623157e308


@_jit
def _infinite(x: tl.tensor) -> Any:
    """Whether float64 ``x`` is ``±inf``."""
    return tl.abs(x) > 1.7976931348623157e308


@_jit
def _step(s: tl.tensor, c: tl.tensor, v: tl.tensor) -> Any:
    """Neumaier's step (``CompensatedSum::step``)."""
    t = s + v
    c = c + tl.where(tl.abs(s) >= tl.abs(v), (s - t) + v, (v - t) + s)
    return t, c


@_jit
def _add(
    s: tl.tensor,
    c: tl.tensor,
    ws: tl.tensor,
    wc: tl.tensor,
    k: tl.tensor,
    x: tl.tensor,
    m: tl.tensor,
    IS64: tl.constexpr,
) -> Any:
    """Add the float64 term ``x`` where ``m`` to the core's accumulator of the element type.

    float32: ``s += x``. float64: ``(s, c)`` is the ``CompensatedSum``; ``(ws, wc, k)`` the
    ``wide_mean`` sum and its scale (1, or SHRINK from the first term that would overflow it).
    """
    return _add_weighted(s, c, ws, wc, k, x, 1.0, m, IS64)


@_jit
def _add_weighted(
    s: tl.tensor,
    c: tl.tensor,
    ws: tl.tensor,
    wc: tl.tensor,
    k: tl.tensor,
    x: tl.tensor,
    w: tl.tensor,
    m: tl.tensor,
    IS64: tl.constexpr,
) -> Any:
    """:func:`_add` of ``w x`` (``w`` finite): the wide sum adds ``w (x k)``, as the core's.

    ``w = 1`` is :func:`_add` itself: multiplying by one is exact.
    """
    if IS64:
        t, c2 = _step(s, c, w * x)
        s = tl.where(m, t, s)
        c = tl.where(m, c2, c)
        over = m & (k == 1.0) & _finite(ws) & _finite(x) & ~_finite(ws + w * (x * k))
        k = tl.where(over, 2.6497349136889905e-169, k)
        ws = tl.where(over, ws * 2.6497349136889905e-169, ws)
        wc = tl.where(over, wc * 2.6497349136889905e-169, wc)
        wt, wc2 = _step(ws, wc, w * (x * k))
        ws = tl.where(m, wt, ws)
        wc = tl.where(m, wc2, wc)
    else:
        s = tl.where(m, s + w * x, s)
    return s, c, ws, wc, k


@_jit
def _value_of(s: tl.tensor, c: tl.tensor) -> Any:
    """``CompensatedSum::value``: ``s + c``, but ``s`` where it is not finite or ``c == 0``."""
    return tl.where(_finite(s) & (c != 0.0), s + c, s)


@_jit
def _average(
    s: tl.tensor,
    c: tl.tensor,
    ws: tl.tensor,
    wc: tl.tensor,
    k: tl.tensor,
    count: tl.tensor,
    lo: tl.tensor,
    hi: tl.tensor,
    IS64: tl.constexpr,
) -> Any:
    """``order::average`` of the accumulated values over ``count`` (float64), within ``[lo, hi]``.

    ``lo`` / ``hi``: the smallest and largest value averaged, in the element type.
    """
    if IS64:
        q = _value_of(s, c) / count
        late = (k == 1.0) & _finite(ws) & _infinite(_value_of(ws, wc))
        ws = tl.where(late, ws * 2.6497349136889905e-169, ws)
        wc = tl.where(late, wc * 2.6497349136889905e-169, wc)
        k = tl.where(late, 2.6497349136889905e-169, k)
        wide = _value_of(ws, wc) / count
        wide = tl.where(k == 1.0, wide, wide * 3.7739624248215414e168)
        q = tl.where(_infinite(q) & _finite(lo) & _finite(hi), wide, q)
        q = tl.where(q < lo, lo, q)
        y = tl.where(q > hi, hi, q)
    else:
        # A float32 mean needs no clamp (order::mean_within): rounding cannot cross lo or hi.
        y = (s / count).to(tl.float32)
    return y


@_jit
def _midpoint(a: tl.tensor, b: tl.tensor, IS64: tl.constexpr) -> Any:
    """Rust's ``f32::midpoint`` / ``f64::midpoint`` (``* 0.5`` rounds the same quotient as ``/ 2``)."""
    if IS64:
        aa = tl.abs(a)
        ab = tl.abs(b)
        small = (aa <= 8.988465674311579e307) & (ab <= 8.988465674311579e307)
        y = tl.where(
            small,
            (a + b) * 0.5,
            tl.where(
                aa < 4.450147717014403e-308,
                a + b * 0.5,
                tl.where(ab < 4.450147717014403e-308, a * 0.5 + b, a * 0.5 + b * 0.5),
            ),
        )
    else:
        y = ((a.to(tl.float64) + b.to(tl.float64)) * 0.5).to(tl.float32)
    return y


@_jit
def _real(key: tl.tensor, IS64: tl.constexpr) -> Any:
    """Whether ``key`` is a real key (not the all-ones padding of :func:`_top`)."""
    if IS64:
        r = key != 0xFFFFFFFFFFFFFFFF
    else:
        r = key != 0xFFFFFFFF
    return r


@_jit
def _inf_like(v: tl.tensor) -> Any:
    """``+inf`` in float64 ``v``'s shape."""
    return (tl.zeros(v.shape, tl.int64) + 0x7FF0000000000000).to(tl.float64, bitcast=True)


@_jit
def _nan_like(v: tl.tensor, IS64: tl.constexpr) -> Any:
    """The canonical NaN (``f32::NAN`` / ``f64::NAN``) in ``v``'s shape."""
    if IS64:
        r = (tl.zeros(v.shape, tl.int64) + 0x7FF8000000000000).to(tl.float64, bitcast=True)
    else:
        r = (tl.zeros(v.shape, tl.int32) + 0x7FC00000).to(tl.float32, bitcast=True)
    return r


@_jit
def _sum_start(BLOCK_D: tl.constexpr) -> Any:
    """An empty accumulator of :func:`_add`: ``s = -0.0``, ``c = 0``, the wide sum, scale 1."""
    s = -tl.zeros([BLOCK_D], tl.float64)
    c = tl.zeros([BLOCK_D], tl.float64)
    return s, c, s, c, c + 1.0


@_jit
def _at_rank(rank: tl.tensor, t: tl.tensor, r: tl.tensor) -> Any:
    """Per column, the entry of the ``(BLOCK_N, BLOCK_D)`` tile ``t`` at rank ``r``.

    Exactly one row holds each rank, so the masked maximum over the others' zeros (keys,
    non-negative weights) is that entry.
    """
    return tl.max(tl.where(rank == r, t, 0), axis=0)


@_jit
def _canonical(v: tl.tensor, IS64: tl.constexpr) -> Any:
    """``v`` with every NaN made the canonical one.

    What a GPU's arithmetic makes of a NaN differs by vendor (and from x86's); a stored result
    must not.
    """
    return tl.where(v != v, _nan_like(v, IS64), v)


# ---------------------------------------------------------------------------------------------
# n <= max_register_n: the block's keys in registers, ranks counted.
# ---------------------------------------------------------------------------------------------


@_jit
def _ranked_block(
    x_ptr: tl.tensor,
    n: tl.tensor,
    d: tl.tensor,
    stride_n: tl.tensor,
    stride_d: tl.tensor,
    IS64: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
) -> Any:
    """A program's block of columns in registers, ranked.

    Returns the columns, their mask, the rows, the tile's mask, values and keys (padding rows:
    the all-ones key) and each value's rank ``#{j : key_j < key_i or (key_j == key_i and j <
    i)}``, counted one row ``j`` at a time.
    """
    cols = tl.program_id(0).to(tl.int64) * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = cols < d
    col_off = cols * stride_d
    rows = tl.arange(0, BLOCK_N)
    m = (rows < n)[:, None] & cmask[None, :]
    v = tl.load(x_ptr + rows.to(tl.int64)[:, None] * stride_n + col_off[None, :], mask=m, other=0.0)
    u = _top(_keys(v, IS64), m, IS64)
    rank = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.int32)
    row_j = x_ptr + col_off  # row j's block: a pointer stepped by stride_n (64-bit addresses)
    for j in range(0, n):
        uj = _keys(tl.load(row_j, mask=cmask, other=0.0), IS64)[None, :]
        rank += ((uj < u) | ((uj == u) & (j < rows[:, None]))).to(tl.int32)
        row_j += stride_n
    return cols, cmask, rows, m, v, u, rank


@_jit
def _propagate(
    out: tl.tensor,
    row_lo: tl.tensor,
    row_hi: tl.tensor,
    v: tl.tensor,
    m: tl.tensor,
    rows: tl.tensor,
    IS64: tl.constexpr,
    BLOCK_N: tl.constexpr,
) -> Any:
    """``nonfinite="propagate"``: a column holding a NaN gives NaN and its first NaN row twice."""
    nan = (v != v) & m
    has = tl.max(nan.to(tl.int32), axis=0) > 0
    first = tl.min(tl.where(nan, rows[:, None], BLOCK_N), axis=0)
    out = tl.where(has, _nan_like(out, IS64), out)
    row_lo = tl.where(has, first, row_lo)
    row_hi = tl.where(has, first, row_hi)
    return out, row_lo, row_hi


@_jit
def _weighted_median_kernel(
    x_ptr: tl.tensor,
    w_ptr: tl.tensor,
    r_ptr: tl.tensor,
    s_ptr: tl.tensor,
    exact_ptr: tl.tensor,
    n: tl.tensor,
    d: tl.tensor,
    stride_n: tl.tensor,
    stride_d: tl.tensor,
    IS64: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
) -> None:
    """The rows of the weighted median of each column (``median.weighted``'s rule).

    In ``(value, row)`` order the weights are summed one rank at a time in float64: ``r`` is
    the first rank of positive weight whose running sum reaches half the total, ``exact``
    whether it is exactly half, ``s`` the next rank of positive weight (``r`` if none). The
    running sums are sequential, as the core's (a parallel scan would round differently).
    """
    block = _ranked_block(x_ptr, n, d, stride_n, stride_d, IS64, BLOCK_N, BLOCK_D)
    cols, cmask, rows, rank = block[0], block[1], block[2], block[6]
    w = tl.load(w_ptr + rows, mask=rows < n, other=0.0)
    wt = w[:, None] + tl.zeros([BLOCK_N, BLOCK_D], tl.float64)
    total = tl.zeros([BLOCK_D], tl.float64)
    for r in range(0, n):
        total = total + _at_rank(rank, wt, r)
    c = tl.zeros([BLOCK_D], tl.float64)
    found = c != c
    has_s = found
    exact = found
    r_sel = tl.zeros([BLOCK_D], tl.int32)
    s_sel = r_sel
    for r in range(0, n):
        w_r = _at_rank(rank, wt, r)
        c = c + w_r
        nxt = found & ~has_s & (w_r > 0.0)
        s_sel = tl.where(nxt, r, s_sel)
        has_s = has_s | nxt
        hit = ~found & (2.0 * c >= total) & (w_r > 0.0)
        r_sel = tl.where(hit, r, r_sel)
        exact = tl.where(hit, 2.0 * c == total, exact)
        found = found | hit
    s_sel = tl.where(has_s, s_sel, r_sel)
    row_r = _at_rank(rank, rows[:, None], r_sel[None, :])
    row_s = _at_rank(rank, rows[:, None], s_sel[None, :])
    tl.store(r_ptr + cols, row_r, mask=cmask)
    tl.store(s_ptr + cols, row_s, mask=cmask)
    tl.store(exact_ptr + cols, exact.to(tl.int8), mask=cmask)


@_jit
def _weighted_trimmed_kernel(
    x_ptr: tl.tensor,
    w_ptr: tl.tensor,
    out_ptr: tl.tensor,
    n: tl.tensor,
    d: tl.tensor,
    stride_n: tl.tensor,
    stride_d: tl.tensor,
    f: tl.tensor,
    PROPAGATE: tl.constexpr,
    IS64: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
) -> None:
    """The weighted trimmed mean of each column (``trimmed_mean.weighted``'s rule).

    In ``(value, row)`` order, each value weighs the part of its weight inside the kept mass
    ``[t, total - t]``, ``t = total f / n`` (running sums from zero, rank by rank); the values of
    positive part are added in that order with the core's accumulator and averaged over the
    kept mass, kept within the first and last of them (NaN where none has a positive part).
    """
    cols, cmask, rows, m, v, u, rank = _ranked_block(x_ptr, n, d, stride_n, stride_d, IS64, BLOCK_N, BLOCK_D)
    w = tl.load(w_ptr + rows, mask=rows < n, other=0.0)
    wt = w[:, None] + tl.zeros([BLOCK_N, BLOCK_D], tl.float64)
    total = -tl.zeros([BLOCK_D], tl.float64)
    for r in range(0, n):
        total = total + _at_rank(rank, wt, r)
    # tl.cast, not .to: an int argument equal to 1 arrives as a constexpr, which has no .to.
    lo_mass = total * tl.cast(f, tl.float64) / tl.cast(n, tl.float64)
    hi_mass = total - lo_mass
    s, c, ws, wc, k = _sum_start(BLOCK_D)
    kept = tl.zeros([BLOCK_D], tl.float64)
    c0 = tl.zeros([BLOCK_D], tl.float64)
    first = tl.zeros([BLOCK_D], tl.int32) - 1
    last = first
    for r in range(0, n):
        w_r = _at_rank(rank, wt, r)
        c1 = c0 + w_r
        part = tl.minimum(c1, hi_mass) - tl.maximum(c0, lo_mass)
        c0 = c1
        pos = part > 0.0
        val = _value(_at_rank(rank, u, r), IS64).to(tl.float64)
        s, c, ws, wc, k = _add_weighted(s, c, ws, wc, k, val, part, cmask & pos, IS64)
        kept = kept + tl.where(pos, part, 0.0)
        first = tl.where(pos & (first < 0), r, first)
        last = tl.where(pos, r, last)
    a = _value(_at_rank(rank, u, first[None, :]), IS64)
    b = _value(_at_rank(rank, u, last[None, :]), IS64)
    out = _average(s, c, ws, wc, k, kept, a, b, IS64)
    out = tl.where(first < 0, _nan_like(out, IS64), out)
    if PROPAGATE:
        has = tl.max(((v != v) & m).to(tl.int32), axis=0) > 0
        out = tl.where(has, _nan_like(out, IS64), out)
    tl.store(out_ptr + cols, _canonical(out, IS64), mask=cmask)


@_jit
def _meamed_kernel(
    x_ptr: tl.tensor,
    out_ptr: tl.tensor,
    lo_ptr: tl.tensor,
    hi_ptr: tl.tensor,
    n: tl.tensor,
    d: tl.tensor,
    stride_n: tl.tensor,
    stride_d: tl.tensor,
    keep: tl.tensor,
    PROPAGATE: tl.constexpr,
    ROWS: tl.constexpr,
    IS64: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
) -> None:
    """The mean of the ``keep`` values closest to the median (``rust/rules/meamed.rs``).

    From the median's rank the kept range grows outward one rank at a time: the next value
    below is taken when it is strictly closer to the median (float64 distance, NaN read as
    ``+inf``) than the next above, or as close and from a lower row. The kept ranks are then
    added in ascending order, as the trimmed mean adds its own.
    """
    cols, cmask, rows, m, v, u, rank = _ranked_block(x_ptr, n, d, stride_n, stride_d, IS64, BLOCK_N, BLOCK_D)
    p = n // 2
    a = _value(_at_rank(rank, u, p - 1), IS64)
    b = _value(_at_rank(rank, u, p), IS64)
    if n % 2 == 1:
        med = b.to(tl.float64)
    else:
        med = _midpoint(a, b, IS64).to(tl.float64)
    dist = tl.abs(_value(u, IS64).to(tl.float64) - med[None, :])
    dist = tl.where(dist != dist, _inf_like(dist), dist)
    inf = _inf_like(med)
    lo = tl.zeros([BLOCK_D], tl.int32) + p
    hi = lo
    for _ in range(0, keep):
        has_low = lo > 0
        has_high = hi < n
        below = rank == (lo - 1)[None, :]
        above = rank == hi[None, :]
        dl = tl.where(has_low, tl.max(tl.where(below, dist, -1.0), axis=0), inf)
        dh = tl.where(has_high, tl.max(tl.where(above, dist, -1.0), axis=0), inf)
        rl = tl.max(tl.where(below, rows[:, None], -1), axis=0)
        rh = tl.max(tl.where(above, rows[:, None], -1), axis=0)
        take_low = has_low & (~has_high | (dl < dh) | ((dl == dh) & (rl < rh)))
        lo = tl.where(take_low, lo - 1, lo)
        hi = tl.where(take_low, hi, hi + 1)
    s, c, ws, wc, k = _sum_start(BLOCK_D)
    for r in range(0, n):
        kr = _at_rank(rank, u, r)
        inside = cmask & (r >= lo) & (r < hi)
        s, c, ws, wc, k = _add(s, c, ws, wc, k, _value(kr, IS64).to(tl.float64), inside, IS64)
    first = rank == lo[None, :]
    last = rank == (hi - 1)[None, :]
    a = _value(tl.max(tl.where(first, u, 0), axis=0), IS64)
    b = _value(tl.max(tl.where(last, u, 0), axis=0), IS64)
    out = _average(s, c, ws, wc, k, tl.zeros([BLOCK_D], tl.float64) + keep, a, b, IS64)
    if ROWS or PROPAGATE:
        row_lo = tl.max(tl.where(first, rows[:, None], -1), axis=0)
        row_hi = tl.max(tl.where(last, rows[:, None], -1), axis=0)
        if PROPAGATE:
            out, row_lo, row_hi = _propagate(out, row_lo, row_hi, v, m, rows, IS64, BLOCK_N)
        if ROWS:
            tl.store(lo_ptr + cols, row_lo, mask=cmask)
            tl.store(hi_ptr + cols, row_hi, mask=cmask)
    tl.store(out_ptr + cols, _canonical(out, IS64), mask=cmask)


@_jit
def _rank_kernel(
    x_ptr: tl.tensor,
    out_ptr: tl.tensor,
    lo_ptr: tl.tensor,
    hi_ptr: tl.tensor,
    n: tl.tensor,
    d: tl.tensor,
    stride_n: tl.tensor,
    stride_d: tl.tensor,
    r_lo: tl.tensor,
    r_hi: tl.tensor,
    TRIMMED: tl.constexpr,
    MIDPOINT: tl.constexpr,
    TWO: tl.constexpr,
    PROPAGATE: tl.constexpr,
    ROWS: tl.constexpr,
    IS64: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
) -> None:
    """Median (values of ranks ``r_lo``, ``r_hi``) or trimmed mean (ranks ``r_lo..=r_hi``)."""
    cols, cmask, rows, m, v, u, rank = _ranked_block(x_ptr, n, d, stride_n, stride_d, IS64, BLOCK_N, BLOCK_D)
    k_lo = _at_rank(rank, u, r_lo)
    k_hi = _at_rank(rank, u, r_hi)
    a = _value(k_lo, IS64)
    b = _value(k_hi, IS64)
    if TRIMMED:
        s, c, ws, wc, k = _sum_start(BLOCK_D)
        for r in range(r_lo, r_hi + 1):
            kr = _at_rank(rank, u, r)
            s, c, ws, wc, k = _add(s, c, ws, wc, k, _value(kr, IS64).to(tl.float64), cmask, IS64)
        out = _average(s, c, ws, wc, k, tl.zeros([BLOCK_D], tl.float64) + (r_hi - r_lo + 1), a, b, IS64)
    elif MIDPOINT:
        out = _midpoint(a, b, IS64)
    else:
        out = b
    if ROWS or PROPAGATE:
        row_lo = _at_rank(rank, rows[:, None], r_lo)
        row_hi = _at_rank(rank, rows[:, None], r_hi)
        if PROPAGATE:
            out, row_lo, row_hi = _propagate(out, row_lo, row_hi, v, m, rows, IS64, BLOCK_N)
        if ROWS:
            tl.store(lo_ptr + cols, row_lo, mask=cmask)
            tl.store(hi_ptr + cols, row_hi, mask=cmask)
    tl.store(out_ptr + cols, _canonical(out, IS64), mask=cmask)


# ---------------------------------------------------------------------------------------------
# n > max_register_n: streaming radix select, then (trimmed mean) the kept values in order.
# ---------------------------------------------------------------------------------------------


@_jit
def _tile(
    x_ptr: tl.tensor,
    r0: tl.tensor,
    n: tl.tensor,
    stride_n: tl.tensor,
    col_off: tl.tensor,
    cmask: tl.tensor,
    TILE: tl.constexpr,
) -> Any:
    """Rows ``r0 .. r0 + TILE`` of the block as a ``(BLOCK_D, TILE)`` tile, its mask, its rows."""
    rows = r0 + tl.arange(0, TILE)
    m = cmask[:, None] & (rows < n)[None, :]
    v = tl.load(x_ptr + col_off[:, None] + rows.to(tl.int64)[None, :] * stride_n, mask=m, other=0.0)
    return v, m, rows


@_jit
def _radix_pass(
    x_ptr: tl.tensor,
    n: tl.tensor,
    stride_n: tl.tensor,
    col_off: tl.tensor,
    cmask: tl.tensor,
    prefix: tl.tensor,
    r: tl.tensor,
    shift: tl.tensor,
    IS64: tl.constexpr,
    TILE: tl.constexpr,
    RADIX: tl.constexpr,
) -> Any:
    """One radix pass: the next ``RADIX`` bits of the key of rank ``r``, below the ``prefix``.

    With ``cnt[b] = #{key < prefix | b << shift}`` (non-decreasing in ``b``), the digit is the
    largest ``b`` with ``cnt[b] <= r``; returns the new prefix and ``#{key < prefix}``.
    """
    digits = tl.arange(0, 1 << RADIX).to(prefix.dtype)
    cand = prefix[:, None] | (digits[None, :] << shift)
    cnt = tl.zeros(cand.shape, tl.int32)
    for r0 in range(0, n, TILE):
        v, m, _ = _tile(x_ptr, r0, n, stride_n, col_off, cmask, TILE)
        u = _top(_keys(v, IS64), m, IS64)
        cnt += tl.sum((u[:, :, None] < cand[:, None, :]).to(tl.int32), axis=1)
    ok = cnt <= r
    digit = tl.max(tl.where(ok, digits[None, :], 0), axis=1)
    below = tl.max(tl.where(ok, cnt, 0), axis=1)
    return prefix | (digit << shift), below


@_jit
def _smallest(best: tl.tensor, more: tl.tensor, BATCH: tl.constexpr) -> Any:
    """The ``BATCH`` smallest of the keys ``best`` (ascending) and ``more``, ascending, per row.

    Merged by counting: each of the ``2 * BATCH`` keys is ranked among them (ties by position;
    equal keys are equal values) and the keys of ranks ``0 .. BATCH - 1`` are gathered in order.
    """
    both = tl.reshape(tl.join(best, more), [best.shape[0], 2 * BATCH])
    at = tl.arange(0, 2 * BATCH)
    ki = both[:, :, None]
    kj = both[:, None, :]
    before = (kj < ki) | ((kj == ki) & (at[None, None, :] < at[None, :, None]))
    rank = tl.sum(before.to(tl.int32), axis=2)
    slot = tl.arange(0, BATCH)
    return tl.max(tl.where(rank[:, :, None] == slot[None, None, :], ki, 0), axis=1)


@_jit
def _repeat(
    s: tl.tensor,
    c: tl.tensor,
    ws: tl.tensor,
    wc: tl.tensor,
    k: tl.tensor,
    x: tl.tensor,
    times: tl.tensor,
    m: tl.tensor,
    IS64: tl.constexpr,
) -> Any:
    """Add ``x`` ``times`` times (per column) where ``m``: copies of one key, in a row."""
    most = tl.max(tl.where(m, times, 0), axis=0)
    for i in range(0, most):
        s, c, ws, wc, k = _add(s, c, ws, wc, k, x, m & (i < times), IS64)
    return s, c, ws, wc, k


@_jit
def _select_kernel(
    x_ptr: tl.tensor,
    out_ptr: tl.tensor,
    lo_ptr: tl.tensor,
    hi_ptr: tl.tensor,
    n: tl.tensor,
    d: tl.tensor,
    stride_n: tl.tensor,
    stride_d: tl.tensor,
    r_lo: tl.tensor,
    r_hi: tl.tensor,
    TRIMMED: tl.constexpr,
    MIDPOINT: tl.constexpr,
    TWO: tl.constexpr,
    PROPAGATE: tl.constexpr,
    ROWS: tl.constexpr,
    IS64: tl.constexpr,
    BLOCK_D: tl.constexpr,
    TILE: tl.constexpr,
    BATCH: tl.constexpr,
    RADIX: tl.constexpr,
) -> None:
    """:func:`_rank_kernel`'s results without holding the columns: several streaming passes."""
    cols = tl.program_id(0).to(tl.int64) * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = cols < d
    col_off = cols * stride_d
    bits: tl.constexpr = 64 if IS64 else 32
    a_lo = tl.zeros([BLOCK_D], tl.uint64 if IS64 else tl.uint32)
    a_hi = a_lo
    below_lo = tl.zeros([BLOCK_D], tl.int32)
    below_hi = below_lo
    for p in range(0, bits // RADIX):
        shift = bits - RADIX * (p + 1)
        a_lo, below_lo = _radix_pass(x_ptr, n, stride_n, col_off, cmask, a_lo, r_lo, shift, IS64, TILE, RADIX)
        if TWO:
            a_hi, below_hi = _radix_pass(
                x_ptr, n, stride_n, col_off, cmask, a_hi, r_hi, shift, IS64, TILE, RADIX
            )
    if not TWO:
        a_hi = a_lo
        below_hi = below_lo
    # The rows of the two ranks (the (r - below)-th row of equal key), how many keys equal
    # each, and the first NaN row.
    seen_lo = tl.zeros([BLOCK_D], tl.int32)
    seen_hi = seen_lo
    row_lo = seen_lo - 1
    row_hi = row_lo
    first = seen_lo + n
    if ROWS or PROPAGATE or TRIMMED:  # (the plain median needs only the keys)
        for r0 in range(0, n, TILE):
            v, m, rows = _tile(x_ptr, r0, n, stride_n, col_off, cmask, TILE)
            u = _top(_keys(v, IS64), m, IS64)
            eq = u == a_lo[:, None]
            run = tl.cumsum(eq.to(tl.int32), axis=1) + seen_lo[:, None]
            hit = eq & (run == (r_lo - below_lo + 1)[:, None])
            row_lo = tl.maximum(row_lo, tl.max(tl.where(hit, rows[None, :], -1), axis=1))
            seen_lo += tl.sum(eq.to(tl.int32), axis=1)
            eq = u == a_hi[:, None]
            run = tl.cumsum(eq.to(tl.int32), axis=1) + seen_hi[:, None]
            hit = eq & (run == (r_hi - below_hi + 1)[:, None])
            row_hi = tl.maximum(row_hi, tl.max(tl.where(hit, rows[None, :], -1), axis=1))
            seen_hi += tl.sum(eq.to(tl.int32), axis=1)
            if PROPAGATE:
                first = tl.minimum(first, tl.min(tl.where((v != v) & m, rows[None, :], n), axis=1))
    a = _value(a_lo, IS64)
    b = _value(a_hi, IS64)
    if TRIMMED:
        s, c, ws, wc, k = _sum_start(BLOCK_D)
        # Ranks below_lo .. below_lo + seen_lo - 1 hold the lowest kept key; those from r_lo
        # are kept. Where both ends hold one key, every kept value is a copy of it.
        same = a_lo == a_hi
        pending = tl.where(same, r_hi - r_lo + 1, below_lo + seen_lo - r_lo)
        last = a_lo
        active = cmask
        slot = tl.arange(0, BATCH)
        while tl.max(active.to(tl.int32), axis=0) > 0:
            # The BATCH smallest keys strictly between `last` and the highest kept key, and
            # how many keys equal `last`.
            best = _top(tl.zeros([BLOCK_D, BATCH], a_lo.dtype), slot[None, :] < 0, IS64)  # all above
            equal = tl.zeros([BLOCK_D], tl.int32)
            for r0 in range(0, n, BATCH):
                v, m, _ = _tile(x_ptr, r0, n, stride_n, col_off, cmask, BATCH)
                u = _top(_keys(v, IS64), m, IS64)
                equal += tl.sum((u == last[:, None]).to(tl.int32), axis=1)
                inside = active[:, None] & (u > last[:, None]) & (u < a_hi[:, None])
                best = _smallest(best, _top(u, inside, IS64), BATCH)
            # First the copies of `last` not added yet: those kept on the first pass (`pending`),
            # all of them on later ones.
            times = tl.where(pending >= 0, pending, equal)
            pending = pending * 0 - 1
            s, c, ws, wc, k = _repeat(s, c, ws, wc, k, _value(last, IS64).to(tl.float64), times, active, IS64)
            top = tl.max(tl.where(slot[None, :] == BATCH - 1, best, 0), axis=1)
            full = _real(top, IS64)
            for q in range(0, BATCH):
                e = tl.max(tl.where(slot[None, :] == q, best, 0), axis=1)
                take = active & _real(e, IS64) & (~full | (e < top))
                s, c, ws, wc, k = _add(s, c, ws, wc, k, _value(e, IS64).to(tl.float64), take, IS64)
            # A full batch may have cut a run of equal keys: its top key goes first next pass.
            last = tl.where(full, top, last)
            active = active & full
        # Then the copies of the highest kept key, up to rank r_hi (none where both ends met).
        times = tl.where(same, 0, r_hi - below_hi + 1)
        s, c, ws, wc, k = _repeat(s, c, ws, wc, k, b.to(tl.float64), times, cmask, IS64)
        out = _average(s, c, ws, wc, k, tl.zeros([BLOCK_D], tl.float64) + (r_hi - r_lo + 1), a, b, IS64)
    elif MIDPOINT:
        out = _midpoint(a, b, IS64)
    else:
        out = b
    if PROPAGATE:
        has = first < n
        out = tl.where(has, _nan_like(out, IS64), out)
        row_lo = tl.where(has, first, row_lo)
        row_hi = tl.where(has, first, row_hi)
    if ROWS:
        tl.store(lo_ptr + cols, row_lo, mask=cmask)
        tl.store(hi_ptr + cols, row_hi, mask=cmask)
    tl.store(out_ptr + cols, _canonical(out, IS64), mask=cmask)


# ---------------------------------------------------------------------------------------------
# The mean, and the rows that hold NaN or ±inf.
# ---------------------------------------------------------------------------------------------


@_jit
def _mean_kernel(
    x_ptr: tl.tensor,
    keep_ptr: tl.tensor,
    w_ptr: tl.tensor,
    out_ptr: tl.tensor,
    bad_ptr: tl.tensor,
    n: tl.tensor,
    d: tl.tensor,
    stride_n: tl.tensor,
    stride_d: tl.tensor,
    count: tl.tensor,
    KEEP: tl.constexpr,
    WEIGHTED: tl.constexpr,
    FLAG: tl.constexpr,
    IS64: tl.constexpr,
    BLOCK_D: tl.constexpr,
) -> None:
    """``Σ x_i / count`` over the rows (those with ``keep_i != 0`` under ``KEEP``) in row order.

    Under ``WEIGHTED`` the terms are ``w_i x_i`` (float64 weights ``w[:n]``), ``count`` is
    unused and the total ``w[n]`` divides (a float64: a float argument would be float32), and
    the float64 result is kept within the values of positive weight. Under ``FLAG`` it also
    sets ``bad_i = 1`` for every row with a NaN or ``±inf`` in the block.
    """
    cols = tl.program_id(0).to(tl.int64) * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = cols < d
    col_off = cols * stride_d
    s, c, ws, wc, k = _sum_start(BLOCK_D)
    # The smallest and largest value averaged, as the core tracks them (NaN never replaces).
    hi = -_inf_like(c)
    lo = -hi
    row_i = x_ptr + col_off  # row i's block: a pointer stepped by stride_n (64-bit addresses)
    for i in range(0, n):
        x = tl.load(row_i, mask=cmask, other=0.0).to(tl.float64)
        row_i += stride_n
        m = cmask
        if KEEP:
            m = m & (tl.load(keep_ptr + i) != 0)
        if WEIGHTED:
            wi = tl.zeros([BLOCK_D], tl.float64) + tl.load(w_ptr + i)
            s, c, ws, wc, k = _add_weighted(s, c, ws, wc, k, x, wi, m, IS64)
            used = m & (wi > 0.0)
        else:
            s, c, ws, wc, k = _add(s, c, ws, wc, k, x, m, IS64)
            used = m
        if IS64:
            lo = tl.where(used & (x < lo), x, lo)
            hi = tl.where(used & (x > hi), x, hi)
        if FLAG:
            if tl.max((cmask & ~_finite(x)).to(tl.int32), axis=0) > 0:
                tl.atomic_max(bad_ptr + i, 1)
    if WEIGHTED:
        total = tl.zeros([BLOCK_D], tl.float64) + tl.load(w_ptr + n)
    else:
        total = tl.zeros([BLOCK_D], tl.float64) + count
    out = _average(s, c, ws, wc, k, total, lo, hi, IS64)
    tl.store(out_ptr + cols, _canonical(out, IS64), mask=cmask)


@_jit
def _row_flags_kernel(
    x_ptr: tl.tensor,
    bad_ptr: tl.tensor,
    n: tl.tensor,
    d: tl.tensor,
    stride_n: tl.tensor,
    stride_d: tl.tensor,
    col_blocks: tl.tensor,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
) -> None:
    """``bad_i = 1`` for every row ``i`` with a NaN or ``±inf`` in this program's block.

    A one-dimensional grid of ``row_blocks * col_blocks`` programs (CUDA's second and third grid
    dimensions stop at 65535).
    """
    pid = tl.program_id(0).to(tl.int64)
    rows = (pid // col_blocks) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = (pid % col_blocks) * BLOCK_C + tl.arange(0, BLOCK_C)
    m = (rows < n)[:, None] & (cols < d)[None, :]
    v = tl.load(x_ptr + rows[:, None] * stride_n + cols[None, :] * stride_d, mask=m, other=0.0)
    bad = tl.max((m & ~_finite(v.to(tl.float64))).to(tl.int32), axis=1)
    tl.atomic_max(bad_ptr + rows, bad, mask=(rows < n) & (bad > 0))


@_jit
def _sorted_sum_kernel(
    v_ptr: tl.tensor,
    out_ptr: tl.tensor,
    w: tl.tensor,
    r_lo: tl.tensor,
    r_hi: tl.tensor,
    IS64: tl.constexpr,
    BLOCK_D: tl.constexpr,
) -> None:
    """The mean of ranks ``r_lo..=r_hi`` of columns already sorted.

    ``v`` is ``(n, w)`` contiguous, ascending down each column; the kept ranks are added in that
    order with the core's accumulator.
    """
    cols = tl.program_id(0).to(tl.int64) * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = cols < w
    s, c, ws, wc, k = _sum_start(BLOCK_D)
    row = v_ptr + tl.cast(r_lo, tl.int64) * w + cols
    for _ in range(r_lo, r_hi + 1):
        val = tl.load(row, mask=cmask, other=0.0).to(tl.float64)
        s, c, ws, wc, k = _add(s, c, ws, wc, k, val, cmask, IS64)
        row += w
    a = tl.load(v_ptr + tl.cast(r_lo, tl.int64) * w + cols, mask=cmask, other=0.0)
    b = tl.load(v_ptr + tl.cast(r_hi, tl.int64) * w + cols, mask=cmask, other=0.0)
    out = _average(s, c, ws, wc, k, tl.zeros([BLOCK_D], tl.float64) + (r_hi - r_lo + 1), a, b, IS64)
    tl.store(out_ptr + cols, _canonical(out, IS64), mask=cmask)


@_jit
def _kept_grad_kernel(
    x_ptr: tl.tensor,
    lo_ptr: tl.tensor,
    hi_ptr: tl.tensor,
    q_ptr: tl.tensor,
    out_ptr: tl.tensor,
    n: tl.tensor,
    d: tl.tensor,
    stride_n: tl.tensor,
    stride_d: tl.tensor,
    IS64: tl.constexpr,
    BLOCK_D: tl.constexpr,
) -> None:
    """The trimmed mean's (and meamed's) gradient, row by row in one read of ``x``.

    ``out[j, c] = q[c]`` where row ``j``'s ``(key, row)`` lies between rows ``lo[c]`` and
    ``hi[c]``'s (inclusive), else ``+0.0`` (``_kernels.kept_mask``'s rule, no mask made).
    """
    cols = tl.program_id(0).to(tl.int64) * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = cols < d
    col_off = cols * stride_d
    lo = tl.load(lo_ptr + cols, mask=cmask, other=0)
    hi = tl.load(hi_ptr + cols, mask=cmask, other=0)
    k_lo = _keys(tl.load(x_ptr + lo.to(tl.int64) * stride_n + col_off, mask=cmask, other=0.0), IS64)
    k_hi = _keys(tl.load(x_ptr + hi.to(tl.int64) * stride_n + col_off, mask=cmask, other=0.0), IS64)
    q = tl.load(q_ptr + cols, mask=cmask, other=0.0)
    zero = tl.zeros_like(q)
    row_j = x_ptr + col_off
    out_j = out_ptr + cols
    for j in range(0, n):
        u = _keys(tl.load(row_j, mask=cmask, other=0.0), IS64)
        above = (u > k_lo) | ((u == k_lo) & (j >= lo))
        below = (u < k_hi) | ((u == k_hi) & (j <= hi))
        tl.store(out_j, tl.where(above & below, q, zero), mask=cmask)
        row_j += stride_n
        out_j += d


# ---------------------------------------------------------------------------------------------
# Host side.
# ---------------------------------------------------------------------------------------------


def _pow2(v: int) -> int:
    return 1 << max(0, v - 1).bit_length()


def _out_dtype(x: Tensor) -> torch.dtype:
    """float64 for float64 input, else float32 (half precision is computed in float32)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _device(x: Tensor) -> contextlib.AbstractContextManager[Any]:
    """Make ``x``'s GPU the current one while launching (Triton launches on the current device)."""
    return torch.cuda.device(x.device) if x.device.type == "cuda" else contextlib.nullcontext()


def _check(x: Tensor) -> None:
    if triton is None:
        raise RuntimeError("aggkit.torch._triton needs triton (pip install triton)")
    if x.dim() != 2 or x.dtype not in _DTYPES:
        raise TypeError(
            f"expected a 2-D float16/bfloat16/float32/float64 tensor, got {x.dtype} of shape {tuple(x.shape)}"
        )
    if x.shape[0] > _MAX_N:
        raise ValueError(
            f"the Triton kernels index rows in int32: n must be <= 2**31 - 2**16, got n={x.shape[0]}"
        )


def nonfinite_rows(x: Tensor) -> list[int]:
    """The rows of ``(n, d)`` ``x`` that hold a NaN or ``±inf``, in increasing order.

    One pass over ``x`` into ``n`` int32 flags (no ``(n, d)`` mask), read back to the host.
    """
    _check(x)
    n, d = x.shape
    if n == 0 or d == 0:
        return []
    bad = torch.zeros(n, dtype=torch.int32, device=x.device)
    block_r, block_c = 16, 128
    col_blocks = triton.cdiv(d, block_c)
    grid = (triton.cdiv(n, block_r) * col_blocks,)
    with _device(x):
        _row_flags_kernel[grid](
            x, bad, n, d, x.stride(0), x.stride(1), col_blocks, BLOCK_R=block_r, BLOCK_C=block_c
        )
    return [int(i) for i in torch.nonzero(bad).flatten().tolist()]


def check_policy(x: Tensor, rule: str, nonfinite: str) -> None:
    """Under ``"raise"``, refuse non-finite inputs (``_kernels.check_policy``'s error)."""
    if nonfinite == "raise":
        bad = nonfinite_rows(x)
        if bad:
            raise nonfinite_error(rule, bad, "nonfinite='raise' refuses NaN and infinite values")


def _order_statistic(
    x: Tensor,
    r_lo: int,
    r_hi: int,
    trimmed: bool,
    nonfinite: str,
    need_rows: bool,
    config: Config,
) -> tuple[Tensor, Tensor, Tensor]:
    """Launch the kernel for ranks ``r_lo <= r_hi``: the median of them or the kept mean."""
    n, d = x.shape
    if trimmed and n > config.max_register_n and r_hi - r_lo + 1 > config.sort_kept:
        return _sorted_trimmed_mean(x, r_lo, r_hi, nonfinite, need_rows, config)
    out = torch.empty(d, dtype=_out_dtype(x), device=x.device)
    rows = d if need_rows else 0
    lo = torch.empty(rows, dtype=torch.int32, device=x.device)
    hi = torch.empty(rows, dtype=torch.int32, device=x.device)
    if d == 0:
        return out, lo, hi
    # Unused row pointers (need_rows=False) point at the output; nothing is stored there.
    lo_arg, hi_arg = (lo, hi) if need_rows else (out, out)
    flags = {
        "TRIMMED": trimmed,
        "MIDPOINT": (not trimmed) and r_lo != r_hi,
        "TWO": r_lo != r_hi,
        "PROPAGATE": nonfinite == "propagate",
        "ROWS": need_rows,
        "IS64": x.dtype == torch.float64,
    }
    args = (x, out, lo_arg, hi_arg, n, d, x.stride(0), x.stride(1), r_lo, r_hi)
    if n <= config.max_register_n:
        block_n = _pow2(n)
        block_d = min(config.max_block_d, max(1, config.register_elems // block_n), _pow2(d))
        kernel = _rank_kernel
        blocks = {"BLOCK_N": block_n, "BLOCK_D": block_d, "num_warps": config.register_warps}
    else:
        block_d = min(config.block_d, _pow2(d))
        kernel = _select_kernel
        blocks = {"BLOCK_D": block_d, "TILE": config.tile, "BATCH": config.batch, "RADIX": config.radix}
        blocks["num_warps"] = config.num_warps
    with _device(x):
        kernel[(triton.cdiv(d, block_d),)](*args, **flags, **blocks, enable_fp_fusion=False)
    return out, lo, hi


def _sorted_trimmed_mean(
    x: Tensor, r_lo: int, r_hi: int, nonfinite: str, need_rows: bool, config: Config
) -> tuple[Tensor, Tensor, Tensor]:
    """The trimmed mean of ranks ``r_lo..=r_hi`` by sorting chunks of columns (many kept values).

    The streaming kernel's ordered sum re-reads a column ``~ kept / batch`` times; here each
    chunk of columns is sorted once by ``(key, row)`` (torch's stable sort on integer keys
    ordered like the values, NaN canonical), and :func:`_sorted_sum_kernel` adds the kept ranks
    in ascending order, the same additions in the same order, so the same bits. The chunk is
    at most ``config.sort_bytes`` of sort buffers (about 48 bytes a value: keys, sorted keys,
    indices, values, masks), so extra memory is
    ``O(d + sort_bytes)`` whatever ``n`` and ``d``.
    """
    n, d = x.shape
    out = torch.empty(d, dtype=_out_dtype(x), device=x.device)
    rows = d if need_rows else 0
    lo = torch.empty(rows, dtype=torch.int32, device=x.device)
    hi = torch.empty(rows, dtype=torch.int32, device=x.device)
    width = max(1, min(d, config.sort_bytes // (48 * n)))
    is64 = x.dtype == torch.float64
    for c0 in range(0, d, width):
        part = x[:, c0 : c0 + width]
        # Row-major for the kernel: a sort keeps its input's layout (x may be columns-first).
        keys, order = torch.sort(total_order_keys(part).contiguous(), dim=0, stable=True)
        values = key_values(keys).contiguous()  # NaN comes back canonical
        del keys
        w = part.shape[1]
        block_d = min(config.max_block_d, _pow2(w))
        with _device(x):
            _sorted_sum_kernel[(triton.cdiv(w, block_d),)](
                values,
                out[c0 : c0 + w],
                w,
                r_lo,
                r_hi,
                IS64=is64,
                BLOCK_D=block_d,
                num_warps=config.num_warps,
                enable_fp_fusion=False,
            )
        if need_rows or nonfinite == "propagate":
            row_lo, row_hi = order[r_lo], order[r_hi]
            if nonfinite == "propagate":
                has, first = first_nan(part)
                part_out = out[c0 : c0 + w]
                part_out.copy_(torch.where(has, torch.full_like(part_out, float("nan")), part_out))
                row_lo, row_hi = torch.where(has, first, row_lo), torch.where(has, first, row_hi)
            if need_rows:
                lo[c0 : c0 + w] = row_lo
                hi[c0 : c0 + w] = row_hi
    return out, lo, hi


def median(
    x: Tensor, even: str, nonfinite: str, need_rows: bool, *, config: Config = CONFIG
) -> tuple[Tensor, Tensor, Tensor]:
    """Coordinate-wise median of ``(n, d)`` ``x``: values, rows of the lower and upper middle.

    The results of ``median.native`` (and ``_core.median``), bit for bit; the rows are
    ``(d,)`` int32 where ``need_rows``, else empty.
    """
    _check(x)
    n = x.shape[0]
    if n == 0:
        raise empty_input_error("median")
    check_policy(x, "median", nonfinite)
    if n % 2 == 1:
        r_lo = r_hi = n // 2
    else:
        r_lo, r_hi = {"mean": (n // 2 - 1, n // 2), "lower": (n // 2 - 1,) * 2, "upper": (n // 2,) * 2}[even]
    return _order_statistic(x, r_lo, r_hi, False, nonfinite, need_rows, config)


def trimmed_mean(
    x: Tensor, f: int, nonfinite: str, need_rows: bool, *, config: Config = CONFIG
) -> tuple[Tensor, Tensor, Tensor]:
    """Coordinate-wise ``f``-trimmed mean: values, rows of the lowest and highest kept value.

    The results of ``trimmed_mean.native`` (and ``_core.trimmed_mean``), bit for bit.
    """
    _check(x)
    n = x.shape[0]
    if n == 0:
        raise empty_input_error("trimmed_mean")
    if not 0 <= 2 * f < n:
        raise too_few_inputs_error("trimmed mean", "n >= 2f + 1", n, f)
    check_policy(x, "trimmed_mean", nonfinite)
    return _order_statistic(x, f, n - f - 1, True, nonfinite, need_rows, config)


def meamed(
    x: Tensor, keep: int, nonfinite: str, need_rows: bool, *, config: Config = CONFIG
) -> tuple[Tensor, Tensor, Tensor]:
    """Each column's mean of the ``keep`` values closest to its median, and its kept range's ends.

    The results of ``meamed.native`` and ``_core.meamed``, bit for bit.

    Register kernel only: ``n <= config.max_register_n`` (callers take the torch-native kernel
    above it).
    """
    _check(x)
    n, d = x.shape
    if n == 0:
        raise empty_input_error("meamed")
    if not 1 <= keep <= n:
        raise InvalidParameterError(
            f"meamed: the number of values kept must be in 1..=n, got {keep} for n={n}"
        )
    if n > config.max_register_n:
        raise ValueError(f"meamed's kernel holds n <= {config.max_register_n} values a column, got n={n}")
    check_policy(x, "meamed", nonfinite)
    out = torch.empty(d, dtype=_out_dtype(x), device=x.device)
    rows = d if need_rows else 0
    lo = torch.empty(rows, dtype=torch.int32, device=x.device)
    hi = torch.empty(rows, dtype=torch.int32, device=x.device)
    if d == 0:
        return out, lo, hi
    lo_arg, hi_arg = (lo, hi) if need_rows else (out, out)
    block_n = _pow2(n)
    block_d = min(config.max_block_d, max(1, config.register_elems // block_n), _pow2(d))
    with _device(x):
        _meamed_kernel[(triton.cdiv(d, block_d),)](
            x,
            out,
            lo_arg,
            hi_arg,
            n,
            d,
            x.stride(0),
            x.stride(1),
            keep,
            PROPAGATE=nonfinite == "propagate",
            ROWS=need_rows,
            IS64=x.dtype == torch.float64,
            BLOCK_N=block_n,
            BLOCK_D=block_d,
            num_warps=config.register_warps,
            enable_fp_fusion=False,
        )
    return out, lo, hi


def weighted_median_rows(x: Tensor, w: Tensor, *, config: Config = CONFIG) -> tuple[Tensor, Tensor, Tensor]:
    """Per column of ``(n, d)`` ``x``, the rows of the weighted median, for ``median.weighted``.

    Returns ``r``, ``s`` (int64) and whether the weight up to ``r`` is exactly half (bool).
    ``w``: ``(n,)`` float64 weights, already normalised. Register kernel only (``n <=
    config.max_register_n``).
    """
    _check(x)
    n, d = x.shape
    if not 1 <= n <= config.max_register_n:
        raise ValueError(f"the weighted median's kernel holds 1 <= n <= {config.max_register_n}, got n={n}")
    r = torch.empty(d, dtype=torch.int32, device=x.device)
    s = torch.empty(d, dtype=torch.int32, device=x.device)
    exact = torch.empty(d, dtype=torch.int8, device=x.device)
    if d > 0:
        block_n = _pow2(n)
        block_d = min(config.max_block_d, max(1, config.register_elems // block_n), _pow2(d))
        with _device(x):
            _weighted_median_kernel[(triton.cdiv(d, block_d),)](
                x,
                w.to(device=x.device, dtype=torch.float64).contiguous(),
                r,
                s,
                exact,
                n,
                d,
                x.stride(0),
                x.stride(1),
                IS64=x.dtype == torch.float64,
                BLOCK_N=block_n,
                BLOCK_D=block_d,
                num_warps=config.register_warps,
                enable_fp_fusion=False,
            )
    return r.long(), s.long(), exact.bool()


def weighted_mean(
    x: Tensor, items: list[tuple[int, float]], total: float, *, config: Config = CONFIG
) -> Tensor:
    """``Σ w_i x_i / total`` over ``items`` (row, weight; rows ascending) of ``(n, d)`` ``x``.

    ``mean.native``'s weighted mean (``_kernels.weighted_mean``), bit for bit: the rows in row
    order, the core's accumulator over ``w_i x_i``, a float64 result kept within the values of
    positive weight. The rows left out and the weights are ``n`` flags and ``n`` float64s.
    """
    _check(x)
    n, d = x.shape
    out = torch.empty(d, dtype=_out_dtype(x), device=x.device)
    if d == 0:
        return out
    rows = [i for i, _ in items]
    if rows != sorted(rows):
        raise ValueError("weighted_mean: the rows of items must be in increasing order")
    keep = torch.zeros(n, dtype=torch.int8)
    w = torch.zeros(n + 1, dtype=torch.float64)  # the weights, then the total
    keep[rows] = 1
    w[rows] = torch.tensor([v for _, v in items], dtype=torch.float64)
    w[n] = total
    block_d = min(config.max_block_d, _pow2(d))
    with _device(x):
        _mean_kernel[(triton.cdiv(d, block_d),)](
            x,
            keep.to(x.device),
            w.to(x.device),
            out,
            out,
            n,
            d,
            x.stride(0),
            x.stride(1),
            0,
            KEEP=True,
            WEIGHTED=True,
            FLAG=False,
            IS64=x.dtype == torch.float64,
            BLOCK_D=block_d,
            num_warps=config.num_warps,
            enable_fp_fusion=False,
        )
    return out


def weighted_trimmed_mean(x: Tensor, w: Tensor, f: int, nonfinite: str, *, config: Config = CONFIG) -> Tensor:
    """The weighted trimmed mean of each column of ``(n, d)`` ``x`` (values only, no rows).

    ``trimmed_mean.weighted``'s results, bit for bit; ``w``: ``(n,)`` float64 weights, already
    normalised. Register kernel only (``n <= config.max_register_n``); not differentiable (the
    torch-native rule serves gradients).
    """
    _check(x)
    n, d = x.shape
    if not 1 <= n <= config.max_register_n:
        raise ValueError(
            f"the weighted trimmed mean's kernel holds 1 <= n <= {config.max_register_n}, got n={n}"
        )
    check_policy(x, "trimmed_mean", nonfinite)
    out = torch.empty(d, dtype=_out_dtype(x), device=x.device)
    if d == 0:
        return out
    block_n = _pow2(n)
    block_d = min(config.max_block_d, max(1, config.register_elems // block_n), _pow2(d))
    with _device(x):
        _weighted_trimmed_kernel[(triton.cdiv(d, block_d),)](
            x,
            w.to(device=x.device, dtype=torch.float64).contiguous(),
            out,
            n,
            d,
            x.stride(0),
            x.stride(1),
            f,
            PROPAGATE=nonfinite == "propagate",
            IS64=x.dtype == torch.float64,
            BLOCK_N=block_n,
            BLOCK_D=block_d,
            num_warps=config.register_warps,
            enable_fp_fusion=False,
        )
    return out


def kept_grad(x: Tensor, lo: Tensor, hi: Tensor, q: Tensor, *, config: Config = CONFIG) -> Tensor:
    """The gradient of a mean over a range of ranks: ``(n, d)``, ``q[c]`` at the kept values.

    Column ``c`` kept the rows whose ``(value, row)`` lies between those of rows ``lo[c]`` and
    ``hi[c]`` (the lowest and highest kept, as :func:`trimmed_mean` returns them); they get
    ``q[c]`` (``(d,)``, already in the gradient's dtype), every other value ``+0.0``. Equal to
    ``torch.where(_kernels.kept_mask(x, lo, hi), q, 0)`` without its ``(n, d)`` keys and masks:
    the only allocation is the ``(n, d)`` result.
    """
    _check(x)
    n, d = x.shape
    out = torch.empty((n, d), dtype=q.dtype, device=x.device)
    if n == 0 or d == 0:
        return out
    block_d = min(config.max_block_d, _pow2(d))
    with _device(x):
        _kept_grad_kernel[(triton.cdiv(d, block_d),)](
            x,
            lo.contiguous(),
            hi.contiguous(),
            q.contiguous(),
            out,
            n,
            d,
            x.stride(0),
            x.stride(1),
            IS64=x.dtype == torch.float64,
            BLOCK_D=block_d,
            num_warps=config.num_warps,
        )
    return out


def mean(x: Tensor, nonfinite: str, *, config: Config = CONFIG) -> tuple[Tensor, Tensor]:
    """The unweighted mean of the rows of ``(n, d)`` ``x``, and each row's coefficient.

    The results of ``mean.native(x, None, nonfinite)`` (and ``_core.mean``), bit for bit: the
    rows are added in row order; under ``"robust"`` the rows that hold NaN or ``±inf`` are left
    out (found in the same pass, which runs again without them only where there are some).
    """
    _check(x)
    n, d = x.shape
    if n == 0:
        raise empty_input_error("mean")
    out = torch.empty(d, dtype=_out_dtype(x), device=x.device)
    flag = nonfinite in ("robust", "raise") and d > 0
    bad = torch.zeros(n if flag else 0, dtype=torch.int32, device=x.device)
    block_d = min(config.max_block_d, _pow2(d))

    def run(keep: Tensor | None, count: int, flag_rows: bool) -> None:
        if d == 0:
            return
        args = (x, out if keep is None else keep, out, out, bad if flag_rows else out, n, d)
        with _device(x):
            _mean_kernel[(triton.cdiv(d, block_d),)](
                *args,
                x.stride(0),
                x.stride(1),
                count,
                KEEP=keep is not None,
                WEIGHTED=False,
                FLAG=flag_rows,
                IS64=x.dtype == torch.float64,
                BLOCK_D=block_d,
                num_warps=config.num_warps,
                enable_fp_fusion=False,
            )

    run(None, n, flag)
    dropped = [int(i) for i in torch.nonzero(bad).flatten().tolist()] if flag else []
    if nonfinite == "raise" and dropped:
        raise nonfinite_error("mean", dropped, "nonfinite='raise' refuses NaN and infinite values")
    if nonfinite != "robust" or not dropped:
        return out, torch.full((n,), 1.0 / n, dtype=torch.float64, device=x.device)
    if len(dropped) == n:
        raise nonfinite_error(
            "mean", dropped, "every input holds NaN or infinite values, nothing is left to average"
        )
    keep = bad == 0
    kept = n - len(dropped)
    run(keep.to(torch.int8), kept, False)
    return out, keep.to(torch.float64) * (1.0 / kept)

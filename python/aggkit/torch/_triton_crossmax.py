"""Triton kernels for CrossMax (``rust/rules/crossmax.rs``) on the logits' device.

For ``(B, N, C)`` float32 / float64 logits ``z`` they compute, bit for bit, what
``aggkit._core.crossmax`` computes (and :func:`aggkit.torch.crossmax.native`): the scores
``y`` ``(B, C)`` and, when asked, the int32 indices the backward reads: per ``(b, c)`` the top
predictor, the ``k``-th and the second middle one (``top``, ``kth``, ``kth2``), per ``(b, n)`` the
predictor's argmax class (``am``):

* per predictor, its maximum over the ``C`` classes after the policy's substitution (``"robust"``:
  NaN read as ``-inf``, ``+inf`` as the dtype's largest finite value), NaN if it holds a NaN
  (``"propagate"``), and the lowest class equal to it (the first NaN where there is one);
* ``a = (z - m) + 0.0`` (``-inf`` for a predictor that abstains, except under ``"propagate"``: no logit
  above ``-inf``), a class's score is its ``a`` of descending rank ``k`` (the midpoint, Rust's
  ``midpoint``, of two for an averaged median) minus its top ``a``; ``-inf`` where every
  predictor has ``-inf`` (masked), NaN where an ``a`` is NaN;
* predictors are ranked per class by counting: ``rank_i = #{j : a_j > a_i or (a_j == a_i and j
  < i)}``, descending with ties to the lower predictor (no ``-0.0`` is left to tie with
  ``+0.0``). In a column with NaNs the core's insertion leaves each NaN predictor ``p`` at slot
  ``p`` (where ``p`` is within the ranks read) and the other predictors, ranked so (a NaN
  compares with nothing), in the slots left: the indices reproduce that, slot for slot.

float32 values are widened to float64 for each subtraction and the midpoint and rounded back
once: a single operation rounded through float64 rounds as in float32 (the compiler may narrow
one back to ``sub.rn.f32``, the same bits), with no flush-to-zero. The kernels are launched with
``enable_fp_fusion=False`` and divide nothing.

**Two launches.** :func:`_maxima_kernel`, one program per example and block of
``Config.block_p`` predictors, streams their rows over ``C`` in blocks of classes and writes the
maxima (and the argmax classes; under ``"raise"`` it flags the predictors holding NaN or
``+inf``, read by the host, which raises before the second launch). :func:`_rank_kernel`, one
program per example and block of classes, holds the block's ``N`` values in registers (a
``(next_pow2(N), block)`` tile, ``block = Config.register_elems // next_pow2(N)`` clamped to
``[1, Config.max_block_c]``), ranks them by counting, one predictor row at a time (``O(N^2)``
comparisons per class), and reads the wanted ranks off the tile by masked reductions.

**Register bound**: ``N <= Config.max_n`` (default :data:`MAX_N` ``= 128``); the caller runs
the torch ops (:func:`aggkit.torch.crossmax.native`) above it (:func:`supported`).

**Memory bound**: besides the outputs (``B C`` values, ``3 B C`` + ``B N`` int32 indices when
asked) the host allocates the ``B N`` maxima (the logits' dtype) and, under ``"raise"``, ``N``
int32 flags; the kernels allocate nothing, a program's working set being registers of constant
block shapes. Extra device memory is ``O(B N + B C)``; no ``(B, N, C)``-sized temporary exists.

Triton is optional (:func:`aggkit.torch._triton.available`); ``TRITON_INTERPRET=1`` set before
the first import runs the kernels in Triton's interpreter, which also serves CPU tensors inside
:func:`aggkit.torch._paths.force_triton` (the tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from aggkit.errors import nonfinite_error
from aggkit.rules.crossmax import RAISE_DETAIL

# triton and tl are None where Triton is missing (_triton does not re-export them: the ignore).
from aggkit.torch._triton import _device, _jit, _midpoint, _nan_like, _pow2, tl, triton  # type: ignore[attr-defined]

#: The largest ``N`` whose predictors a program holds in registers (above it: torch ops).
MAX_N = 128

_DTYPES = (torch.float32, torch.float64)


@dataclass(frozen=True)
class Config:
    """Block sizes (powers of two; untuned first choices, none changes a bit of the result).

    ``max_n``: the largest ``N`` ranked in registers. ``register_elems``: values one program of
    the rank kernel holds (its class block is ``register_elems // next_pow2(N)``, clamped to
    ``[1, max_block_c]``). ``block_p`` / ``block_c``: predictors and classes of a tile of the
    maxima kernel. ``register_warps`` / ``num_warps``: warps of a program of the rank kernel / the
    maxima kernel.
    """

    max_n: int = MAX_N
    register_elems: int = 4096
    max_block_c: int = 128
    block_p: int = 16
    block_c: int = 128
    register_warps: int = 8
    num_warps: int = 4

    def __post_init__(self) -> None:
        for name in ("register_elems", "max_block_c", "block_p", "block_c", "register_warps", "num_warps"):
            v = getattr(self, name)
            if v < 1 or v & (v - 1):
                raise ValueError(f"Config.{name} must be a power of two, got {v}")
        if not 2 <= self.max_n <= self.register_elems:
            raise ValueError(
                f"Config.max_n must lie in [2, register_elems={self.register_elems}], got {self.max_n}"
            )


#: The block sizes used unless a caller passes others.
CONFIG = Config()


# ---------------------------------------------------------------------------------------------
# Device helpers: constants made from their bits (no float literal's type to argue about).
# ---------------------------------------------------------------------------------------------


@_jit
def _neg_inf_like(v: tl.tensor, IS64: tl.constexpr) -> Any:
    """``-inf`` of the element type in ``v``'s shape."""
    if IS64:
        r = (tl.zeros(v.shape, tl.int64) - 4503599627370496).to(tl.float64, bitcast=True)
    else:
        r = (tl.zeros(v.shape, tl.int32) - 8388608).to(tl.float32, bitcast=True)
    return r


@_jit
def _inf_like(v: tl.tensor, IS64: tl.constexpr) -> Any:
    """``+inf`` of the element type in ``v``'s shape."""
    if IS64:
        r = (tl.zeros(v.shape, tl.int64) + 0x7FF0000000000000).to(tl.float64, bitcast=True)
    else:
        r = (tl.zeros(v.shape, tl.int32) + 0x7F800000).to(tl.float32, bitcast=True)
    return r


@_jit
def _clean(v: tl.tensor, ROBUST: tl.constexpr, IS64: tl.constexpr) -> Any:
    """The core's ``clean``: under ``"robust"`` NaN is ``-inf`` and ``+inf`` the largest finite."""
    if ROBUST:
        if IS64:
            big = (tl.zeros(v.shape, tl.int64) + 0x7FEFFFFFFFFFFFFF).to(tl.float64, bitcast=True)
        else:
            big = (tl.zeros(v.shape, tl.int32) + 0x7F7FFFFF).to(tl.float32, bitcast=True)
        v = tl.where(v != v, _neg_inf_like(v, IS64), tl.where(v == _inf_like(v, IS64), big, v))
    return v


@_jit
def _sub(a: tl.tensor, b: tl.tensor, IS64: tl.constexpr) -> Any:
    """``a - b`` rounded to the element type (float32: in float64, rounded once)."""
    if IS64:
        r = a - b
    else:
        r = (a.to(tl.float64) - b.to(tl.float64)).to(tl.float32)
    return r


@_jit
def _shift(v: tl.tensor, m: tl.tensor, ABSTAIN: tl.constexpr, IS64: tl.constexpr) -> Any:
    """``a = (v - m) + 0.0`` of cleaned logits ``v`` and their predictors' maxima ``m``.

    ``-inf`` where a predictor abstains (``ABSTAIN``: every policy but ``"propagate"``; ``m ==
    -inf``).
    """
    if IS64:
        a = (v - m) + 0.0
    else:
        a = ((v.to(tl.float64) - m.to(tl.float64)) + 0.0).to(tl.float32)
    if ABSTAIN:
        ninf = _neg_inf_like(a, IS64)
        a = tl.where(m == ninf, ninf, a)
    return a


# ---------------------------------------------------------------------------------------------
# Per predictor: its maximum over the classes, its argmax, the "raise" flags.
# ---------------------------------------------------------------------------------------------


@_jit
def _maxima_kernel(
    z_ptr: tl.tensor,
    m_ptr: tl.tensor,
    am_ptr: tl.tensor,
    bad_ptr: tl.tensor,
    n: tl.tensor,
    c: tl.tensor,
    stride_b: tl.tensor,
    stride_n: tl.tensor,
    stride_c: tl.tensor,
    pred_blocks: tl.tensor,
    ROBUST: tl.constexpr,
    RAISE: tl.constexpr,
    ARGMAX: tl.constexpr,
    IS64: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
) -> None:
    """Per predictor ``p`` of example ``b``: its maximum, argmax and ``"raise"`` flag.

    ``m[b, p]``: the maximum of the cleaned logits (NaN if one is NaN); ``am[b, p]``: the first
    class equal to it (the first NaN's); under ``RAISE``, ``bad[p] = 1`` for a predictor with a
    NaN or ``+inf`` logit. One program per ``(b, block of predictors)``, over ``C`` in blocks.
    """
    pid = tl.program_id(0).to(tl.int64)
    b = pid // pred_blocks
    preds = (pid % pred_blocks) * BLOCK_P + tl.arange(0, BLOCK_P)
    pmask = preds < n
    row = z_ptr + b * stride_b + preds * stride_n  # each predictor's row: 64-bit addresses
    m = _neg_inf_like(tl.zeros([BLOCK_P], tl.int32), IS64)
    ninf = _neg_inf_like(tl.zeros([BLOCK_P, BLOCK_C], tl.int32), IS64)
    first = tl.zeros([BLOCK_P], tl.int32)  # the class of the maximum so far (0 for all -inf)
    nan_at = tl.zeros([BLOCK_P], tl.int32) + c  # the first NaN's class (c: none)
    bad = tl.zeros([BLOCK_P], tl.int32)
    for c0 in range(0, c, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        msk = pmask[:, None] & (cols < c)[None, :]
        v = tl.load(row[:, None] + cols.to(tl.int64)[None, :] * stride_c, mask=msk, other=0.0)
        if RAISE:
            bad = bad | tl.max((msk & ((v != v) | (v == _inf_like(v, IS64)))).to(tl.int32), axis=1)
        v = _clean(v, ROBUST, IS64)
        if not ROBUST:
            nan = msk & (v != v)
            nan_at = tl.minimum(nan_at, tl.min(tl.where(nan, cols[None, :], c), axis=1))
        w = tl.where(msk & (v == v), v, ninf)
        bm = tl.max(w, axis=1)
        # The block's first class equal to its maximum; an earlier block's wins a tie (±0 too).
        at = tl.min(tl.where(msk & (v == bm[:, None]), cols[None, :], c), axis=1)
        up = bm > m
        first = tl.where(up, at, first)
        m = tl.where(up, bm, m)
    has = nan_at < c
    tl.store(m_ptr + b * n + preds, tl.where(has, _nan_like(m, IS64), m), mask=pmask)
    if ARGMAX:
        tl.store(am_ptr + b * n + preds, tl.where(has, nan_at, first), mask=pmask)
    if RAISE:
        tl.atomic_max(bad_ptr + preds, bad, mask=pmask & (bad > 0))


# ---------------------------------------------------------------------------------------------
# Per (example, block of classes): the N values in registers, ranked by counting.
# ---------------------------------------------------------------------------------------------


@_jit
def _slot(
    a: tl.tensor,
    rank: tl.tensor,
    nan: tl.tensor,
    rows: tl.tensor,
    real: tl.tensor,
    s: tl.tensor,
    NANS: tl.constexpr,
    IS64: tl.constexpr,
) -> Any:
    """The predictor at slot ``s`` (0-based) of each class, and the value of rank ``s``.

    The slot is where the core's insertion leaves a predictor; the value that of the non-NaN
    predictor of rank ``s`` (what the score reads, where no ``a`` is NaN). A NaN predictor
    ``s`` sits at slot ``s``; otherwise the slot holds the non-NaN predictor of rank ``s -
    #{NaN predictors below s}`` (NaN rows have no rank: every comparison with them is false).
    """
    pick = real[:, None] & (rank == s)
    if NANS:
        pick = pick & ~nan
    value = tl.max(tl.where(pick, a, _neg_inf_like(a, IS64)), axis=0)
    if NANS:
        below = tl.sum((nan & (rows[:, None] < s)).to(tl.int32), axis=0)
        pick = real[:, None] & ~nan & (rank == (s - below)[None, :])
        at_s = tl.max((nan & (rows[:, None] == s)).to(tl.int32), axis=0) > 0
        index = tl.where(at_s, s, tl.max(tl.where(pick, rows[:, None], -1), axis=0))
    else:
        index = tl.max(tl.where(pick, rows[:, None], -1), axis=0)
    return index, value


@_jit
def _rank_kernel(
    z_ptr: tl.tensor,
    m_ptr: tl.tensor,
    y_ptr: tl.tensor,
    top_ptr: tl.tensor,
    kth_ptr: tl.tensor,
    kth2_ptr: tl.tensor,
    n: tl.tensor,
    c: tl.tensor,
    stride_b: tl.tensor,
    stride_n: tl.tensor,
    stride_c: tl.tensor,
    col_blocks: tl.tensor,
    ra: tl.tensor,
    rb: tl.tensor,
    ROBUST: tl.constexpr,
    ABSTAIN: tl.constexpr,
    NANS: tl.constexpr,
    MIDPOINT: tl.constexpr,
    INDICES: tl.constexpr,
    IS64: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
) -> None:
    """Scores (and indices) of one example's block of classes.

    The values of descending ranks ``ra``, ``rb`` (1-based; their midpoint under ``MIDPOINT``)
    minus the top. ``NANS``: an ``a`` may be NaN (every policy but ``"robust"``).
    """
    pid = tl.program_id(0).to(tl.int64)
    b = pid // col_blocks
    cols = (pid % col_blocks) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < c
    col_off = b * stride_b + cols * stride_c
    rows = tl.arange(0, BLOCK_N)
    real = rows < n
    msk = real[:, None] & cmask[None, :]
    v = tl.load(z_ptr + col_off[None, :] + rows.to(tl.int64)[:, None] * stride_n, mask=msk, other=0.0)
    v = _clean(v, ROBUST, IS64)
    m = tl.load(m_ptr + b * n + rows, mask=real, other=0.0)
    a = _shift(v, m[:, None], ABSTAIN, IS64)
    masked = tl.min(((v == _neg_inf_like(v, IS64)) | ~real[:, None]).to(tl.int32), axis=0) > 0
    rank = tl.zeros([BLOCK_N, BLOCK_C], dtype=tl.int32)
    row_j = z_ptr + col_off  # predictor j's block: a pointer stepped by stride_n
    for j in range(0, n):
        vj = _clean(tl.load(row_j, mask=cmask, other=0.0), ROBUST, IS64)
        aj = _shift(vj, tl.load(m_ptr + b * n + j), ABSTAIN, IS64)[None, :]
        rank += ((aj > a) | ((aj == a) & (j < rows[:, None]))).to(tl.int32)
        row_j += stride_n
    nan = real[:, None] & (a != a)
    top, t = _slot(a, rank, nan, rows, real, 0, NANS, IS64)
    kth, ka = _slot(a, rank, nan, rows, real, ra - 1, NANS, IS64)
    if MIDPOINT:
        kth2, kb = _slot(a, rank, nan, rows, real, rb - 1, NANS, IS64)
        y = _sub(_midpoint(ka, kb, IS64), t, IS64)
    else:
        kth2 = kth
        y = _sub(ka, t, IS64)
    if NANS:
        y = tl.where(tl.max(nan.to(tl.int32), axis=0) > 0, _nan_like(y, IS64), y)
    y = tl.where(masked, _neg_inf_like(y, IS64), y)
    out = b * c + cols
    tl.store(y_ptr + out, y, mask=cmask)
    if INDICES:
        tl.store(top_ptr + out, top, mask=cmask)
        tl.store(kth_ptr + out, kth, mask=cmask)
        tl.store(kth2_ptr + out, kth2, mask=cmask)


# ---------------------------------------------------------------------------------------------
# Host side.
# ---------------------------------------------------------------------------------------------


def supported(z: Tensor, *, config: Config = CONFIG) -> bool:
    """Whether :func:`crossmax` takes ``z``: ``(B, N, C)`` float32/float64 with ``N <= max_n``."""
    return z.dim() == 3 and z.dtype in _DTYPES and z.shape[1] <= config.max_n


def _ranks(n: int, k: int, reducer: str, even: str) -> tuple[int, int]:
    """The descending ranks (1-based) read: ``(ra, rb)``, equal unless a median averages two."""
    if reducer == "kth":
        return k, k
    upper, lower = (n + 1) // 2, n // 2 + 1
    return {"lower": (lower, lower), "upper": (upper, upper), "mean": (upper, lower)}[even]


def crossmax(
    z: Tensor,
    k: int,
    reducer: str,
    even: str,
    nonfinite: str,
    need_indices: bool,
    *,
    config: Config = CONFIG,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """CrossMax of ``z`` ``(B, N, C)``: :func:`aggkit.torch.crossmax.native`'s results, bit for bit.

    Scores ``(B, C)``; int32 ``top``, ``kth``, ``kth2`` ``(B, C)`` and ``am`` ``(B, N)`` where
    ``need_indices``, else empty. ``N`` at most ``config.max_n`` (:func:`supported`).
    """
    if triton is None:
        raise RuntimeError("aggkit.torch._triton_crossmax needs triton (pip install triton)")
    if not supported(z, config=config):
        raise ValueError(
            f"expected (B, N, C) float32/float64 logits with N <= {config.max_n}, "
            f"got {z.dtype} of shape {tuple(z.shape)}"
        )
    b, n, c = z.shape
    dev = z.device
    is64 = z.dtype == torch.float64
    i32 = torch.int32
    y = torch.empty((b, c), dtype=z.dtype, device=dev)
    bc, bn = ((b, c), (b, n)) if need_indices else ((0,), (0,))
    top, kth, kth2 = (torch.empty(bc, dtype=i32, device=dev) for _ in range(3))
    am = torch.empty(bn, dtype=i32, device=dev)
    if b == 0 or c == 0 or n == 0:
        return y, top, kth, kth2, am.zero_()  # the core's argmax is 0 where there is no class
    ra, rb = _ranks(n, k, reducer, even)
    if not 1 <= ra <= rb <= n:
        raise ValueError(f"crossmax: rank k={ra} is out of range for N={n} predictors")
    raising = nonfinite == "raise"
    maxima = torch.empty((b, n), dtype=z.dtype, device=dev)
    bad = torch.zeros(n if raising else 0, dtype=i32, device=dev)
    strides = (z.stride(0), z.stride(1), z.stride(2))
    robust = nonfinite == "robust"
    block_p = min(config.block_p, _pow2(n))
    block_c = min(config.block_c, _pow2(c))
    pred_blocks = triton.cdiv(n, block_p)
    with _device(z):
        _maxima_kernel[(b * pred_blocks,)](
            z,
            maxima,
            am if need_indices else maxima,  # unused pointers point at the maxima: no store
            bad if raising else maxima,
            n,
            c,
            *strides,
            pred_blocks,
            ROBUST=robust,
            RAISE=raising,
            ARGMAX=need_indices,
            IS64=is64,
            BLOCK_P=block_p,
            BLOCK_C=block_c,
            num_warps=config.num_warps,
            enable_fp_fusion=False,
        )
        if raising and bool(bad.any()):
            raise nonfinite_error("crossmax", torch.nonzero(bad).flatten().tolist(), RAISE_DETAIL)
        block_n = _pow2(n)
        block = min(config.max_block_c, max(1, config.register_elems // block_n), _pow2(c))
        col_blocks = triton.cdiv(c, block)
        _rank_kernel[(b * col_blocks,)](
            z,
            maxima,
            y,
            *((top, kth, kth2) if need_indices else (y, y, y)),
            n,
            c,
            *strides,
            col_blocks,
            ra,
            rb,
            ROBUST=robust,
            ABSTAIN=nonfinite != "propagate",
            NANS=not robust,
            MIDPOINT=ra != rb,
            INDICES=need_indices,
            IS64=is64,
            BLOCK_N=block_n,
            BLOCK_C=block,
            num_warps=config.register_warps,
            enable_fp_fusion=False,
        )
    return y, top, kth, kth2, am

"""A Triton kernel for the ``(n, n)`` float64 pairwise squared distances of the rows of a tensor.

``D_ij = Σ_k (x_ik - x_jk)²`` for an ``(n, d)`` float32/float64 tensor, on its device: what
Krum, Multi-Krum, NNM, Bulyan and DETOX decide on. The kernel follows the Rust core's
arithmetic (``rust/distance.rs``: ``sq_dists`` / ``tiled_sq_dists`` with float64 lanes):

* **Exact by construction.** Every difference is taken directly, ``x_ik - x_jk``, never through
  the Gram identity ``|a|² + |b|² - 2ab`` (which cancels catastrophically on near-identical
  rows and can return negative "squared distances"). Values are widened to float64 before the
  subtraction (exact), the difference, its square and every sum are float64 operations
  (launched with ``enable_fp_fusion=False``: no ``t * t + s`` contracted into an FMA). All terms
  are non-negative, so the only error is ordinary rounding: a term is within ``gamma(3)`` of
  ``(x_ik - x_jk)²`` and a sum whose longest chain of additions is ``h`` long within
  ``gamma(h)``, so ``|D - D_exact| <= gamma(h + 3) D_exact`` with ``gamma(k) = k u / (1 - k u)``,
  ``u = 2**-53`` and ``h <= 197 + ceil(d / 512)`` (:func:`rounding_bound`; ``2.4e-13`` relative
  at ``d = 10**6``), as long as no square overflows; squares below float64's normal range
  (float64 differences under ``~1.5e-154``; float32 input never) add at most ``d 2**-1074``
  absolute.
* **Deterministic, in the core's order.** The summation order is fixed by ``(n, d)`` alone, the
  core's: ``d`` is cut into chunks of ``width`` coordinates (``chunk_width`` of the core for
  ``n <= 128``, ``512`` beyond); within a chunk coordinate ``k`` goes to lane
  ``(k - c0) mod 16`` of 16 float64 lanes, each lane summed in coordinate order from ``0.0``;
  the lanes are combined by the core's fixed tree (``v[l] + v[l + 8]``, then ``+ 4``, ``+ 2``,
  ``+ 1``); the chunks are grouped into at most 64 ``parts`` of consecutive chunks (``n <=
  128``; one part beyond), each part sums its chunks in order from ``0.0`` and the parts are
  then added in order from ``0.0``. Every step is an explicit operation of the kernels (the lane
  tree is written out with ``reshape``/``split``, not left to ``tl.sum``), with no atomics, so
  neither the tile a pair falls in, nor the launch, nor the row order changes a bit; ``(x_i -
  x_j)² == (x_j - x_i)²`` exactly, so ``D`` is bitwise symmetric (each value is stored at both
  places anyway) and its diagonal is ``0.0``. For float64 input the result is, bit for bit,
  ``aggkit._core.pairwise_sq_distances(x)`` (the core sums float64 lanes in this order); for
  float32 input it is the core's float64 result on the (exactly) widened input, i.e. more
  accurate than the core's float32 lanes.
* **Non-finite values** propagate as IEEE gives: a pair with a NaN gets NaN; with ``±inf`` (and
  no NaN, no ``inf - inf`` of equal signs) ``+inf``; float64 rows whose differences square past
  float64's range (``|x_ik - x_jk| > ~1.34e154``) get ``+inf``, as in the core (whose
  ``pairwise_sq_dists`` has no wide path; callers map ``inf`` to float64's largest value with
  ``_plans.finite_distances``). float32 input cannot overflow (or underflow) in float64. The
  diagonal is ``0.0`` even for a non-finite row, as in the core.

**Memory.** Besides the ``(n, n)`` float64 result the launcher allocates at most one
``(planes, n, n)`` float64 buffer, ``planes <= 64``: the core's parts (``n <= 128``: at most
``64 * 128² * 8`` bytes = 8 MiB), or, for one-part schedules (``n > 128``), a window of per-chunk
sums of at most ``Config.window_bytes`` (64 MiB; none where fewer than two planes fit, ``n >
2048``). Extra device memory is ``O(n²)`` and bounded by ``max(8 MiB, window_bytes)`` beyond the
result; no ``(n, d)`` copy is made (``x`` is read in place through its strides, widened in
registers) and no ``(n, n, block)`` temporary exists: a ``16 x 16`` pair tile's ``16`` lanes
live in registers (the kernels themselves allocate no device memory).

**Launches** (:func:`launches`): :func:`_tile_kernel` over the grid ``(row blocks, row blocks,
planes)`` (programs below the block diagonal exit at once) writes each plane's sums, then
:func:`_fold_kernel` adds the planes in order to the ``(n, n)`` result. The core's parts are one
such launch pair; a one-part schedule runs windows of up to 64 consecutive chunks, one chunk per
plane, each window folded into the running sums in chunk order: the core's sequential chunk sum,
bit for bit, with 64 times the programs to fill the device. Where no window fits, one direct
launch writes the result.

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

from aggkit.torch import _switch

try:
    import triton  # type: ignore[import-untyped]
    import triton.language as tl  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - triton is an optional dependency
    triton = None
    tl = None

#: Whether the kernels run in Triton's interpreter (``TRITON_INTERPRET=1`` at import).
INTERPRETED = triton is not None and os.environ.get("TRITON_INTERPRET", "0") == "1"

#: The core's float lanes per pair (``distance.rs``: ``LANES``); the lane tree below is for 16.
LANES = 16
#: The core's largest ``n`` summed by parts (``2 * PAIR_BLOCK``); larger ``n`` is tiled.
MAX_PARTS_N = 128
#: The core's bound on the number of parts (and the most planes of a window).
MAX_PARTS = 64
#: Device memory for the planes of the windows of one-part schedules (``n > 128``).
WINDOW_BYTES = 64 << 20


@dataclass(frozen=True)
class Config:
    """Launch parameters. None of them changes a bit of the result except ``width`` / ``parts``.

    ``block``: rows per side of a program's pair tile (a power of two; ``block² * 16`` float64
    lane accumulators per program); ``num_warps``: warps per program. ``width`` and ``parts``
    override the core's schedule (``None``: the core's, which the bitwise agreement with
    ``aggkit._core`` needs): ``width`` coordinates per chunk (a positive multiple of 16), at most
    ``parts`` groups of chunks (``1 <= parts <= 64``) summed apart, for any ``n`` (``parts * n²``
    float64 planes). ``window_bytes``: device memory for the planes of a one-part schedule's
    windows (``0``: one direct launch; the result is the same).
    """

    block: int = 16
    num_warps: int = 4
    width: int | None = None
    parts: int | None = None
    window_bytes: int = WINDOW_BYTES

    def __post_init__(self) -> None:
        if self.block < 1 or self.block & (self.block - 1):
            raise ValueError(f"Config.block must be a power of two, got {self.block}")
        if self.num_warps < 1 or self.num_warps & (self.num_warps - 1):
            raise ValueError(f"Config.num_warps must be a power of two, got {self.num_warps}")
        if self.width is not None and (self.width < LANES or self.width % LANES):
            raise ValueError(f"Config.width must be a positive multiple of {LANES}, got {self.width}")
        if self.parts is not None and not 1 <= self.parts <= MAX_PARTS:
            raise ValueError(f"Config.parts must lie in [1, {MAX_PARTS}], got {self.parts}")
        if self.window_bytes < 0:
            raise ValueError(f"Config.window_bytes must be >= 0, got {self.window_bytes}")


#: The launch parameters used unless a caller passes others.
CONFIG = Config()


#: The switch that sends CPU tensors here (:func:`aggkit.torch._paths.force_triton`).
force_interpreter = _switch.forced


def available(x: Tensor) -> bool:
    """Whether :func:`pairwise_sq_distances` can serve ``x``: a float32/float64 tensor Triton reaches.

    A CUDA (or ROCm) tensor when Triton imports; a CPU tensor only in the interpreter, inside
    :func:`aggkit.torch._paths.force_triton`.
    """
    if triton is None or x.dtype not in (torch.float32, torch.float64):
        return False
    if x.device.type == "cuda":
        return True
    return INTERPRETED and x.device.type == "cpu" and _switch.triton_forced()


def _jit(fn: Callable[..., Any]) -> Any:
    """``triton.jit`` (the plain function where Triton is missing: never launched then)."""
    return fn if triton is None else triton.jit(fn)


@_jit
def _halve(v: tl.tensor, BLOCK: tl.constexpr, H: tl.constexpr) -> tl.tensor:
    """``w[l] = v[l] + v[l + H]`` for ``l < H`` along the last axis (``2H`` long) of ``v``."""
    w = tl.permute(tl.reshape(v, [BLOCK, BLOCK, 2, H]), (0, 1, 3, 2))  # w[.., l, h] = v[.., h H + l]
    lo, hi = tl.split(w)
    return lo + hi


@_jit
def _tile_kernel(
    x_ptr: tl.tensor,
    out_ptr: tl.tensor,
    n: tl.tensor,
    d: tl.tensor,
    stride_n: tl.tensor,
    stride_d: tl.tensor,
    width: tl.tensor,
    first: tl.tensor,
    count: tl.tensor,
    parts: tl.tensor,
    DIRECT: tl.constexpr,
    BLOCK: tl.constexpr,
) -> None:
    """Part ``p`` (program 2) of the sums of the pairs of row blocks ``a <= b`` (programs 0, 1).

    The chunks ``first + p * count // parts`` up to ``first + (p + 1) * count // parts`` of
    ``width`` coordinates each: every chunk in 16 float64 lanes combined by the core's tree, the
    chunks added in order from ``0.0``. ``DIRECT``: ``D_ij`` and ``D_ji`` for ``i < j`` and
    ``0.0`` for ``i == j`` go straight to the ``(n, n)`` result; else the sums of the pairs
    ``i < j`` go to plane ``p`` of the ``(parts, n, n)`` buffer.
    """
    a = tl.program_id(0)
    b = tl.program_id(1)
    if a > b:
        return
    p = tl.program_id(2).to(tl.int64)
    ri = a.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    rj = b.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mi = ri < n
    mj = rj < n
    lane = tl.arange(0, 16)
    base_i = x_ptr + ri[:, None] * stride_n
    base_j = x_ptr + rj[:, None] * stride_n
    c_lo = first + p * count // parts
    c_hi = first + (p + 1) * count // parts
    total = tl.full([BLOCK, BLOCK], 0.0, tl.float64)
    for c in range(c_lo, c_hi):
        c0 = c * width
        c1 = tl.minimum(c0 + width, d)
        acc = tl.full([BLOCK, BLOCK, 16], 0.0, tl.float64)
        for k0 in range(c0, c1, 16):
            cols = k0 + lane
            cm = cols < c1
            off = cols[None, :] * stride_d
            xi = tl.load(base_i + off, mask=mi[:, None] & cm[None, :], other=0.0).to(tl.float64)
            xj = tl.load(base_j + off, mask=mj[:, None] & cm[None, :], other=0.0).to(tl.float64)
            t = xi[:, None, :] - xj[None, :, :]
            acc = acc + t * t  # padding lanes add (0 - 0)² = +0.0: no change (sums are never -0.0)
        v = _halve(acc, BLOCK, 8)
        v = _halve(v, BLOCK, 4)
        v = _halve(v, BLOCK, 2)
        lo, hi = tl.split(v)
        total = total + (lo + hi)
    upper = mi[:, None] & mj[None, :] & (ri[:, None] < rj[None, :])
    if DIRECT:
        tl.store(out_ptr + ri[:, None] * n + rj[None, :], total, mask=upper)
        tl.store(out_ptr + rj[None, :] * n + ri[:, None], total, mask=upper)
        diag = mi[:, None] & mj[None, :] & (ri[:, None] == rj[None, :])
        tl.store(out_ptr + ri[:, None] * n + rj[None, :], tl.full([BLOCK, BLOCK], 0.0, tl.float64), mask=diag)
    else:
        tl.store(out_ptr + p * n * n + ri[:, None] * n + rj[None, :], total, mask=upper)


@_jit
def _fold_kernel(
    plane_ptr: tl.tensor,
    out_ptr: tl.tensor,
    n: tl.tensor,
    plane: tl.tensor,
    planes: tl.tensor,
    ACCUMULATE: tl.constexpr,
    BLOCK: tl.constexpr,
) -> None:
    """``D_ij = ((s + P_0) + P_1) + ...`` over the planes' sums of the pair ``(min(i, j), max(i, j))``.

    ``s`` is ``0.0``, or ``D_ij`` itself under ``ACCUMULATE`` (each program reads and writes only
    its own entries); ``D_ii = 0.0``.
    """
    e = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = e < plane  # n², 64-bit where it needs to be
    i = e // n
    j = e % n
    pm = m & (i != j)
    ptrs = plane_ptr + (tl.minimum(i, j) * n + tl.maximum(i, j))  # stepped a plane (n² values) at a time
    if ACCUMULATE:
        s = tl.load(out_ptr + e, mask=pm, other=0.0)
    else:
        s = tl.full([BLOCK], 0.0, tl.float64)
    for _ in range(0, planes):
        s = s + tl.load(ptrs, mask=pm, other=0.0)
        ptrs += plane
    tl.store(out_ptr + e, s, mask=m)


def schedule(n: int, d: int, config: Config = CONFIG) -> tuple[int, int, int]:
    """``(width, parts, nchunks)``: the core's chunking of ``d`` for ``n`` float64 rows.

    ``n <= 128``: ``width = clamp(256 KiB / (8 n), 64, 2048)`` rounded down to 16, at most 64
    parts (fewer where ``n (n - 1) / 2 * 8 * parts`` would pass 32 MiB); larger ``n``: ``width =
    512`` (the core's tiled path), one part. ``config.width`` / ``config.parts`` override.
    """
    if n > MAX_PARTS_N:
        width = min(max((512 * 1024) // (2 * 64 * 8) // LANES * LANES, 64), 2048)
        parts = 1
    else:
        width = min(max((256 * 1024) // (max(n, 1) * 8) // LANES * LANES, 64), 2048)
        npairs = max(n * (n - 1) // 2, 1)
        parts = min(max((32 << 20) // (npairs * 8), 1), MAX_PARTS)
    if config.width is not None:
        width = config.width
    if config.parts is not None:
        parts = config.parts
    nchunks = -(-d // width)
    return width, max(1, min(parts, nchunks)), nchunks


def launches(n: int, d: int, config: Config = CONFIG) -> tuple[int, list[tuple[int, int, int]]]:
    """``(width, [(first, count, planes), ...])``: the launches of :func:`pairwise_sq_distances`.

    Each launch sums chunks ``first .. first + count`` in ``planes`` parts; an empty list means
    one direct launch (no planes). With several parts (the core's parts): one launch of all the
    chunks. With one part: windows of ``planes`` chunks, one chunk per plane, folded in chunk
    order into the running sums (the core's sequential chunk order, with ``planes`` times the
    programs), as many planes as ``config.window_bytes`` holds (at most 64); one direct launch
    where that is fewer than two.
    """
    width, parts, nchunks = schedule(n, d, config)
    if parts > 1:
        return width, [(0, nchunks, parts)]
    window = min(MAX_PARTS, nchunks, config.window_bytes // max(8 * n * n, 1))
    if window < 2:
        return width, []
    return width, [(c, min(window, nchunks - c), min(window, nchunks - c)) for c in range(0, nchunks, window)]


def rounding_bound(n: int, d: int, config: Config = CONFIG) -> float:
    """A bound on the relative error of every distance: ``gamma(h + 3)``, ``h`` the longest chain.

    ``h = ceil(width / 16)`` (a lane) ``+ 4`` (the lane tree) ``+ ceil(nchunks / parts)`` (the
    chunks of a part) ``+ parts``; ``+ 3`` for the difference and the square. Holds for every
    finite input whose squares do not overflow, plus ``d * 2**-1074`` absolute where squares
    fall below float64's normal range (float64 input only).
    """
    width, parts, nchunks = schedule(n, d, config)
    h = -(-width // LANES) + 4 + -(-nchunks // parts) + parts + 3
    u = 2.0**-53
    return h * u / (1 - h * u)


def _check(x: Tensor) -> None:
    if triton is None:
        raise RuntimeError("aggkit.torch._triton_dist needs triton (pip install triton)")
    if x.dim() != 2 or x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"expected a 2-D float32/float64 tensor, got {x.dtype} of shape {tuple(x.shape)}")


def pairwise_sq_distances(x: Tensor, *, config: Config = CONFIG) -> Tensor:
    """``(n, n)`` float64 squared Euclidean distances of the rows of ``(n, d)`` ``x``, on its device.

    Exact by construction (direct float64 differences, float64 sums: rounding only), in the
    Rust core's fixed order (float64 input: ``aggkit._core.pairwise_sq_distances`` bit for bit;
    float32 input: the same on the widened input), bitwise symmetric with a zero diagonal, NaN
    and ``inf`` as IEEE gives them; not differentiable (the distances only decide). Extra
    device memory ``O(n²)``: the result and at most 64 partial ``(n, n)`` planes (at most
    ``max(8 MiB, config.window_bytes)``); ``x`` is read in place, never copied. See the
    module's documentation.
    """
    _check(x)
    x = x.detach()
    n, d = x.shape
    if n < 2 or d == 0:
        return torch.zeros(n, n, dtype=torch.float64, device=x.device)
    # Triton launches on the current CUDA device: make it x's.
    with torch.cuda.device(x.device) if x.device.type == "cuda" else contextlib.nullcontext():
        return _launch(x, n, d, config)


def _launch(x: Tensor, n: int, d: int, config: Config) -> Tensor:
    width, plan = launches(n, d, config)
    out = torch.empty(n, n, dtype=torch.float64, device=x.device)
    nb = triton.cdiv(n, config.block)
    args = (n, d, x.stride(0), x.stride(1), width)
    opts = {"BLOCK": config.block, "num_warps": config.num_warps, "enable_fp_fusion": False}
    if not plan:
        _tile_kernel[(nb, nb, 1)](x, out, *args, 0, -(-d // width), 1, DIRECT=True, **opts)
        return out
    planes = torch.empty(max(p for _, _, p in plan), n, n, dtype=torch.float64, device=x.device)
    fold = (triton.cdiv(n * n, 256),)
    for w, (first, count, parts) in enumerate(plan):
        _tile_kernel[(nb, nb, parts)](x, planes, *args, first, count, parts, DIRECT=False, **opts)
        _fold_kernel[fold](planes, out, n, n * n, parts, ACCUMULATE=w > 0, BLOCK=256, enable_fp_fusion=False)
    return out

"""Torch-native kernels shared by the families: the core's order, sums and distances in torch ops.

They serve tensors the Rust core cannot read (CUDA and other devices: the data never leaves the
device) and, forced on CPU, they are compared with the Rust kernels by the tests. Semantics are
identical to the core's (``rust/order.rs``, ``rust/rules/``):

* values are ranked by ``(value, row)`` in IEEE total order: ``-0.0`` below ``+0.0``, every NaN
  above ``+inf`` (canonical NaN, so NaNs tie and the lower row ranks first);
* the order statistics are exact, so median and trimmed-mean *selections* match the core
  bitwise; sums run in the core's order with the core's accumulator (float64 for float32
  input, Neumaier-compensated float64 for float64 input), so means and trimmed means match
  bitwise too;
* Krum's distances are computed in float64 from direct differences (never the Gram trick), so
  scores agree with the core to rounding (the core sums in a different order); selections
  agree except between scores equal to rounding.

Inputs here are already validated 2-D ``(n, d)`` float32/float64 tensors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from aggkit import _core, _plans
from aggkit.errors import nonfinite_error
from aggkit.torch._keys import HALF as HALF
from aggkit.torch._keys import first_nan as first_nan
from aggkit.torch._keys import total_order_keys as total_order_keys
from aggkit.torch._paths import rust, use_triton


def rank_order(x: torch.Tensor) -> torch.Tensor:
    """Row indices that sort every column of ``x`` by ``(value, row)``."""
    return torch.sort(total_order_keys(x), dim=0, stable=True).indices


def nonfinite_rows(x: torch.Tensor) -> list[int]:
    """The rows that hold at least one NaN or infinite value, in increasing order."""
    if x.shape[1] == 0:
        return []
    return torch.nonzero(~torch.isfinite(x).all(dim=1)).flatten().tolist()


def check_policy(x: torch.Tensor, rule: str, nonfinite: str) -> None:
    """Under ``"raise"``, refuse non-finite inputs."""
    if nonfinite == "raise":
        bad = nonfinite_rows(x)
        if bad:
            raise nonfinite_error(rule, bad, "nonfinite='raise' refuses NaN and infinite values")


#: The core's ``order::SHRINK`` (the wide sum scales its terms by it once a float64 sum of
#: finite terms leaves the float64 range) and its inverse.
SHRINK, GROW = 2.0**-560, 2.0**560


class Sum(NamedTuple):
    """A sum as the core computes it (``order.rs``).

    ``fast`` is the sum of the core's accumulator (plain float64, or Neumaier-compensated for
    float64 input). For the compensated one, ``wide / scale`` is also the sum of the core's
    ``wide_mean`` (per column ``scale`` is ``1.0``, or :data:`SHRINK` where finite terms
    overflowed the float64 range); ``None`` for the plain sum.
    """

    fast: torch.Tensor
    wide: torch.Tensor | None = None
    scale: torch.Tensor | None = None

    def value(self) -> torch.Tensor:
        """The accumulator's sum (infinite where finite terms overflow it)."""
        return self.fast


def _weight(weights: Sequence[float | torch.Tensor] | None, i: int) -> float | torch.Tensor:
    return 1.0 if weights is None else weights[i]


def plain_sum(values: list[torch.Tensor], weights: Sequence[float | torch.Tensor] | None = None) -> Sum:
    """``((-0.0 + w0 x0) + w1 x1) + ...`` in float64: the core's plain float64 sum.

    ``-0.0`` is the identity of addition, so a sum of ``-0.0`` keeps its sign.
    """
    s = torch.full_like(values[0], -0.0)
    for i, x in enumerate(values):
        s = s + _weight(weights, i) * x
    return Sum(s)


def _neumaier_step(s: torch.Tensor, c: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    t = s + v
    return t, c + torch.where(s.abs() >= v.abs(), (s - t) + v, (v - t) + s)


def _finish(s: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    # With infinities the compensation is NaN: the plain sum is the IEEE answer.
    return torch.where(torch.isfinite(s) & (c != 0.0), s + c, s)


def compensated_sum(values: list[torch.Tensor], weights: Sequence[float | torch.Tensor] | None = None) -> Sum:
    """Neumaier-compensated float64 sum of ``w_i x_i`` in the given order.

    Both the core's ``CompensatedSum`` (``fast``) and ``wide_mean``'s scaled sum (``wide``,
    ``scale``).
    """
    s = torch.full_like(values[0], -0.0)
    c = torch.zeros_like(values[0])
    ws, wc, k = s.clone(), c.clone(), torch.ones_like(values[0])
    for i, x in enumerate(values):
        w = _weight(weights, i)
        s, c = _neumaier_step(s, c, w * x)
        v = w * (x * k)
        w_finite = torch.isfinite(w) if isinstance(w, torch.Tensor) else math.isfinite(w)
        over = ~torch.isfinite(ws + v) & torch.isfinite(ws) & torch.isfinite(x) & w_finite & (k == 1.0)
        # Branch-free (no host read of ``over``): where nothing overflows these are identities.
        k = torch.where(over, SHRINK, k)
        ws, wc = torch.where(over, ws * SHRINK, ws), torch.where(over, wc * SHRINK, wc)
        v = w * (x * k)
        ws, wc = _neumaier_step(ws, wc, v)
    # Where only adding the compensation overflows, that too goes scaled.
    late = (k == 1.0) & torch.isfinite(ws) & torch.isinf(ws + wc)
    k = torch.where(late, SHRINK, k)
    ws, wc = torch.where(late, ws * SHRINK, ws), torch.where(late, wc * SHRINK, wc)
    return Sum(_finish(s, c), _finish(ws, wc), k)


def accumulate(
    values: list[torch.Tensor], dtype: torch.dtype, weights: Sequence[float | torch.Tensor] | None = None
) -> Sum:
    """The core's accumulator for element type ``dtype`` over float64 ``w_i x_i``."""
    return compensated_sum(values, weights) if dtype == torch.float64 else plain_sum(values, weights)


def average(s: Sum, count: float | torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """The core's ``order::average``: ``s / count`` in the dtype of ``lo`` and ``hi``, within them.

    ``lo`` and ``hi`` are the smallest and largest value averaged (NaN stays NaN). Where the
    accumulator's quotient is infinite although ``lo`` and ``hi`` are finite (the sum of finite
    values overflowed), the wide sum's quotient instead.
    """
    q = s.fast / count
    if s.wide is not None and s.scale is not None:
        wide = s.wide / count
        wide = torch.where(s.scale == 1.0, wide, wide * GROW)
        q = torch.where(torch.isinf(q) & torch.isfinite(lo) & torch.isfinite(hi), wide, q)
    y = q.to(lo.dtype)
    return torch.where(y < lo, lo, torch.where(y > hi, hi, y))


def midpoint(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Rust's ``f32::midpoint`` / ``f64::midpoint``: the average, correctly rounded, no overflow."""
    if a.dtype == torch.float32:
        return ((a.double() + b.double()) / 2.0).float()
    lo, hi = 2.0 * torch.finfo(torch.float64).tiny, torch.finfo(torch.float64).max / 2.0
    aa, ab = a.abs(), b.abs()
    return torch.where(
        (aa <= hi) & (ab <= hi),
        (a + b) / 2.0,
        torch.where(aa < lo, a + b / 2.0, torch.where(ab < lo, a / 2.0 + b, a / 2.0 + b / 2.0)),
    )


def empty_rows(x: torch.Tensor) -> torch.Tensor:
    return torch.empty(0, dtype=torch.int32, device=x.device)


def propagate(
    x: torch.Tensor, nonfinite: str, out: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, need_rows: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if nonfinite == "propagate":
        has, first = first_nan(x)
        out = torch.where(has, torch.full_like(out, float("nan")), out)
        lo, hi = torch.where(has, first, lo), torch.where(has, first, hi)
    if not need_rows:
        return out, empty_rows(x), empty_rows(x)
    return out, lo.to(torch.int32), hi.to(torch.int32)


def weighted_mean(x: torch.Tensor, items: list[tuple[int, float]], total: float) -> torch.Tensor:
    """``Σ w_i x_i / total`` over ``items`` in their order, with the core's accumulator."""
    s = accumulate([x[i].double() for i, _ in items], x.dtype, [w for _, w in items])
    if x.dtype != torch.float64:  # a float32 quotient cannot leave the values' range
        return (s.fast / total).to(x.dtype)
    used = x[[i for i, w in items if w > 0]]
    return average(s, total, used.amin(dim=0), used.amax(dim=0))


def normalise_weights(w: list[float]) -> list[float]:
    """The weights scaled by the power of two that brings the largest into ``[1/2, 1)``.

    As the core's ``normalise_weights`` does before a rule averages with them (only ratios
    matter), and only where the largest lies outside ``[1/2, 1]``.
    """
    top = max(w, default=0.0)
    if top == 0.0 or 0.5 <= top <= 1.0:
        return w
    e = math.frexp(top)[1]  # top = m 2^e, m in [1/2, 1)
    return [math.ldexp(v, -e) for v in w]


def weight_total(w: list[float]) -> float:
    """The sum of the weights, Neumaier-compensated like the core's."""
    s = c = 0.0
    for v in w:
        t = s + v
        c += (s - t) + v if abs(s) >= abs(v) else (v - t) + s
        s = t
    return s + c if abs(s) != float("inf") and s == s else s


def pairwise_sq_distances(x: torch.Tensor) -> torch.Tensor:
    """``(n, n)`` float64 squared distances from direct differences.

    The Triton kernel where :func:`~aggkit.torch._paths.use_triton` says so (the core's bits
    for float64, ``O(n^2)`` extra memory; detached: callers only select with it); otherwise
    torch ops, column block by block.
    """
    if use_triton(x):
        from aggkit.torch import _triton_dist

        xd = x.detach()
        return _triton_dist.pairwise_sq_distances(xd.float() if xd.dtype in HALF else xd)
    n, d = x.shape
    dist = torch.zeros(n, n, dtype=torch.float64, device=x.device)
    block = max(1, (1 << 22) // max(n * n, 1))
    for j0 in range(0, d, block):
        xb = x[:, j0 : j0 + block].double()
        dist += (xb[:, None, :] - xb[None, :, :]).square().sum(dim=2)
    return dist


def kept_mask(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Which ``(row, coordinate)`` a trimmed mean kept, rebuilt from the two boundary rows.

    The kept set of a coordinate is every row whose ``(value, row)`` key lies between the keys
    of its lowest and highest kept rows, inclusive (the tie rule of ``docs/conventions.md``).
    """
    keys = total_order_keys(x.detach())
    lo, hi = lo.long()[None], hi.long()[None]
    klo, khi = keys.gather(0, lo), keys.gather(0, hi)
    row = torch.arange(x.shape[0], device=x.device)[:, None]
    above = (keys > klo) | ((keys == klo) & (row >= lo))
    below = (keys < khi) | ((keys == khi) & (row <= hi))
    return above & below


def distances(x: torch.Tensor) -> np.ndarray:
    """``(n, n)`` float64 squared distances of the rows of ``x`` on the host (Rust on CPU).

    The subset rules decide on these: only ``n^2`` numbers leave the device.
    """
    xd = x.detach()

    def host(t: torch.Tensor) -> np.ndarray:
        return _core.pairwise_sq_distances(t.numpy()) if rust(t) else pairwise_sq_distances(t).cpu().numpy()

    return _plans.finite_distances(host(xd))


def sqrt0(s: torch.Tensor) -> torch.Tensor:
    """``sqrt(s)`` for ``s >= 0`` whose gradient at ``s = 0`` is 0, not NaN (``inf * 0``).

    A norm of a zero row (or a row at the centre) that later gets a constant scale: its
    gradient must be finite.
    """
    pos = s > 0
    return torch.where(pos, torch.where(pos, s, 1.0).sqrt(), s)


def ldexp(v: torch.Tensor, k: torch.Tensor | int) -> torch.Tensor:
    """``v * 2**k`` in four exact steps of at most ``2**550`` each (``2**k`` alone can overflow)."""
    k = torch.as_tensor(k, dtype=torch.int64, device=v.device).clamp(-2200, 2200)
    for part in range(4, 0, -1):
        q = torch.div(k, part, rounding_mode="floor")
        v = v * torch.pow(2.0, q.double())
        k = k - q
    return v

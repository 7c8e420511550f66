"""Torch-native kernels: the same rules as the Rust core, written with torch ops.

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

Inputs here are already validated 2-D ``(n, d)`` float32/float64 tensors; parameters are
checked by the callers (``aggkit.torch``).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from aggkit.errors import NonFiniteError

# Canonical quiet NaN bit patterns (Rust's f32::NAN / f64::NAN) and the masks that turn IEEE
# bits into integers ordered like the floats (sign-magnitude -> two's complement).
_INT = {torch.float32: (torch.int32, 0x7FC00000, 0x7FFFFFFF, 31)}
_INT[torch.float64] = (torch.int64, 0x7FF8000000000000, 0x7FFFFFFFFFFFFFFF, 63)


def total_order_keys(x: torch.Tensor) -> torch.Tensor:
    """Integer keys ordered like ``x`` in IEEE total order, with every NaN mapped to one key."""
    it, nan_bits, mask, shift = _INT[x.dtype]
    bits = torch.where(torch.isnan(x), torch.tensor(nan_bits, dtype=it, device=x.device), x.view(it))
    return bits ^ ((bits >> shift) & mask)


def rank_order(x: torch.Tensor) -> torch.Tensor:
    """Row indices that sort every column of ``x`` by ``(value, row)``."""
    return torch.sort(total_order_keys(x), dim=0, stable=True).indices


def nonfinite_rows(x: torch.Tensor) -> list[int]:
    """The rows that hold at least one NaN or infinite value, in increasing order."""
    if x.shape[1] == 0:
        return []
    return torch.nonzero(~torch.isfinite(x).all(dim=1)).flatten().tolist()


def nonfinite_error(rule: str, rows: list[int], detail: str) -> NonFiniteError:
    """The core's ``NonFiniteError`` (same message format, ``.rows`` set)."""
    shown = ", ".join(str(r) for r in rows[:10])
    more = f" and {len(rows) - 10} more" if len(rows) > 10 else ""
    e = NonFiniteError(f"{rule}: {detail}; non-finite inputs (row indices): [{shown}]{more}")
    e.rows = rows  # type: ignore[attr-defined]
    return e


def check_policy(x: torch.Tensor, rule: str, nonfinite: str) -> None:
    """Under ``"raise"``, refuse non-finite inputs."""
    if nonfinite == "raise":
        bad = nonfinite_rows(x)
        if bad:
            raise nonfinite_error(rule, bad, "nonfinite='raise' refuses NaN and infinite values")


def plain_sum(terms: list[torch.Tensor]) -> torch.Tensor:
    """``((t0 + t1) + t2) + ...`` in float64, starting from zero (the core's ``PlainSum``)."""
    s = torch.zeros_like(terms[0])
    for t in terms:
        s = s + t
    return s


def compensated_sum(terms: list[torch.Tensor]) -> torch.Tensor:
    """Neumaier-compensated float64 sum in the given order (the core's ``CompensatedSum``)."""
    s = torch.zeros_like(terms[0])
    c = torch.zeros_like(terms[0])
    for v in terms:
        t = s + v
        c = c + torch.where(s.abs() >= v.abs(), (s - t) + v, (v - t) + s)
        s = t
    return torch.where(torch.isfinite(s), s + c, s)


def accumulate(terms: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """The core's accumulator for element type ``dtype`` over float64 ``terms``."""
    return compensated_sum(terms) if dtype == torch.float64 else plain_sum(terms)


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


def _first_nan(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per column: whether it holds a NaN, and the first NaN row (``propagate``)."""
    nan = torch.isnan(x)
    return nan.any(dim=0), nan.to(torch.uint8).argmax(dim=0)


def _empty_rows(x: torch.Tensor) -> torch.Tensor:
    return torch.empty(0, dtype=torch.int32, device=x.device)


def median(
    x: torch.Tensor, even: str, nonfinite: str, need_rows: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Coordinate-wise median; rows of the lower and upper middle values if asked for."""
    check_policy(x, "median", nonfinite)
    n = x.shape[0]
    if n % 2 == 1:
        r_lo = r_hi = n // 2
    else:
        r_lo, r_hi = {"mean": (n // 2 - 1, n // 2), "lower": (n // 2 - 1,) * 2, "upper": (n // 2,) * 2}[even]
    order = rank_order(x)
    lo, hi = order[r_lo], order[r_hi]
    b = x.gather(0, hi[None])[0]
    out = b if r_lo == r_hi else midpoint(x.gather(0, lo[None])[0], b)
    return _propagate(x, nonfinite, out, lo, hi, need_rows)


def _propagate(
    x: torch.Tensor, nonfinite: str, out: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, need_rows: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if nonfinite == "propagate":
        has, first = _first_nan(x)
        out = torch.where(has, torch.full_like(out, float("nan")), out)
        lo, hi = torch.where(has, first, lo), torch.where(has, first, hi)
    if not need_rows:
        return out, _empty_rows(x), _empty_rows(x)
    return out, lo.to(torch.int32), hi.to(torch.int32)


def trimmed_mean(
    x: torch.Tensor, f: int, nonfinite: str, need_rows: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Coordinate-wise ``f``-trimmed mean; rows of the lowest and highest kept values if asked."""
    check_policy(x, "trimmed_mean", nonfinite)
    n = x.shape[0]
    order = rank_order(x)
    kept = [x.gather(0, order[r][None])[0].double() for r in range(f, n - f)]
    out = (accumulate(kept, x.dtype) / float(n - 2 * f)).to(x.dtype)
    return _propagate(x, nonfinite, out, order[f], order[n - f - 1], need_rows)


def weighted_mean(x: torch.Tensor, items: list[tuple[int, float]], total: float) -> torch.Tensor:
    """``Σ w_i x_i / total`` over ``items`` in their order, with the core's accumulator."""
    terms = [w * x[i].double() for i, w in items]
    return (accumulate(terms, x.dtype) / total).to(x.dtype)


def weight_total(w: list[float]) -> float:
    """The sum of the weights, Neumaier-compensated like the core's."""
    s = c = 0.0
    for v in w:
        t = s + v
        c += (s - t) + v if abs(s) >= abs(v) else (v - t) + s
        s = t
    return s + c if abs(s) != float("inf") and s == s else s


def mean(x: torch.Tensor, weights: list[float] | None, nonfinite: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The (weighted) mean; also each input's coefficient ``w_i / Σ w`` (0 for dropped inputs)."""
    from aggkit.errors import InvalidParameterError

    n = x.shape[0]
    w = [1.0] * n if weights is None else weights
    check_policy(x, "mean", nonfinite)
    dropped: list[int] = nonfinite_rows(x) if nonfinite == "robust" else []
    if len(dropped) == n:
        raise nonfinite_error(
            "mean", dropped, "every input holds NaN or infinite values, nothing is left to average"
        )
    keep = [i for i in range(n) if i not in set(dropped)]
    items = [(i, w[i]) for i in keep]
    total = weight_total([v for _, v in items])
    for total_, ndropped in ((weight_total(w), 0), (total, len(dropped))):
        if total_ <= 0.0:
            raise InvalidParameterError(
                f"mean: the weights of the inputs averaged sum to 0 ({ndropped} non-finite inputs dropped)"
            )
    out = weighted_mean(x, items, total)
    coef = torch.zeros(n, dtype=torch.float64, device=x.device)
    coef[keep] = torch.tensor([v / total for _, v in items], dtype=torch.float64, device=x.device)
    return out, coef


def pairwise_sq_distances(x: torch.Tensor) -> torch.Tensor:
    """``(n, n)`` float64 squared distances from direct differences, column block by block."""
    n, d = x.shape
    dist = torch.zeros(n, n, dtype=torch.float64, device=x.device)
    block = max(1, (1 << 22) // max(n * n, 1))
    for j0 in range(0, d, block):
        xb = x[:, j0 : j0 + block].double()
        dist += (xb[:, None, :] - xb[None, :, :]).square().sum(dim=2)
    return dist


def krum_select(
    dist: torch.Tensor, f: int, m: int, nonfinite: str, rule: str
) -> tuple[list[int], torch.Tensor]:
    """Scores from squared distances, then the ``m`` best rows (best first), as the core does."""
    n = dist.shape[0]
    k = n - f - 2
    off = ~torch.eye(n, dtype=torch.bool, device=dist.device)
    others = dist[off].reshape(n, n - 1)
    if nonfinite != "propagate":
        others = torch.where(torch.isfinite(others), others, torch.full_like(others, float("inf")))
    nearest = torch.sort(others, dim=1).values[:, :k]  # NaN sorts last, like the core's keys
    scores = compensated_sum(list(nearest.T))  # k = n - f - 2 >= 1
    order = torch.sort(scores, stable=True).indices
    if nonfinite == "propagate":  # NaN scores first (np.argmin picks NaN)
        order = order[torch.sort((~torch.isnan(scores[order])).to(torch.uint8), stable=True).indices]
    idx = order[:m].tolist()
    if nonfinite != "propagate" and not bool(torch.isfinite(scores[idx]).all()):
        finite = int(torch.isfinite(scores).sum())
        detail = (
            "every score is infinite (more than f inputs are non-finite or their distances overflow)"
            if finite == 0
            else "fewer than m inputs have a finite score"
        )
        raise nonfinite_error(rule, torch.nonzero(~torch.isfinite(scores)).flatten().tolist(), detail)
    return idx, scores


def multi_krum(
    x: torch.Tensor, f: int, m: int, nonfinite: str, rule: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Multi-Krum (Krum for ``m = 1``): mean of the ``m`` best-scored rows, indices, scores."""
    check_policy(x, rule, nonfinite)
    try:
        idx, scores = krum_select(pairwise_sq_distances(x), f, m, nonfinite, rule)
    except NonFiniteError as e:
        rows = nonfinite_rows(x)
        if rows:  # name the inputs themselves, like the core
            raise nonfinite_error(rule, rows, str(e).split(";")[0].split(": ", 1)[1]) from None
        raise
    out = weighted_mean(x, [(i, 1.0) for i in idx], float(m))
    return out, torch.tensor(idx, dtype=torch.int64, device=x.device), scores


def crossmax(
    z: torch.Tensor, k: int, reducer: str, even: str, nonfinite: str, need_indices: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """CrossMax of ``z`` ``(B, N, C)`` with the core's semantics (rust/rules/crossmax.rs).

    Predictors are ranked per class by a stable descending sort (ties: lower index first),
    after ``+ 0.0`` turns ``-0.0`` into ``+0.0``, exactly as the core ranks them.
    """
    n = z.shape[1]
    if nonfinite == "raise":
        bad = (torch.isnan(z) | (z == math.inf)).any(dim=2).any(dim=0)
        if bool(bad.any()):
            raise nonfinite_error(
                "crossmax",
                torch.nonzero(bad).flatten().tolist(),
                "NaN or +inf logits under nonfinite='raise' (-inf marks a masked class and is allowed)",
            )
    neg_inf = torch.tensor(-math.inf, dtype=z.dtype, device=z.device)
    if nonfinite == "robust":
        z = torch.where(torch.isnan(z), neg_inf, z)
        z = torch.where(
            z == math.inf, torch.tensor(torch.finfo(z.dtype).max, dtype=z.dtype, device=z.device), z
        )
    m = z.amax(dim=2, keepdim=True)
    a = (z - m) + 0.0
    if nonfinite == "robust":
        a = torch.where(m == -math.inf, neg_inf, a)  # a predictor with no finite logit abstains
    vals, order = torch.sort(a, dim=1, descending=True, stable=True)
    if reducer == "kth":
        ra = rb = k
    else:
        upper, lower = (n + 1) // 2, n // 2 + 1
        ra, rb = {"lower": (lower, lower), "upper": (upper, upper), "mean": (upper, lower)}[even]
    top = vals[:, 0, :]
    y = vals[:, ra - 1, :] - top if ra == rb else midpoint(vals[:, ra - 1, :], vals[:, rb - 1, :]) - top
    y = torch.where(torch.isnan(a).any(dim=1), torch.tensor(math.nan, dtype=z.dtype, device=z.device), y)
    y = torch.where((z == -math.inf).all(dim=1), neg_inf, y)
    if not need_indices:
        return (y, *(torch.empty(0, dtype=torch.int32, device=z.device) for _ in range(4)))
    i32 = torch.int32
    return (
        y,
        order[:, 0, :].to(i32),
        order[:, ra - 1, :].to(i32),
        order[:, rb - 1, :].to(i32),
        z.argmax(dim=2).to(i32),
    )


def detox_vote(
    data: torch.Tensor, groups: np.ndarray, segs: list[int], mode: str, atol: float, rtol: float
) -> tuple[np.ndarray, np.ndarray]:
    """DETOX's vote with torch ops on the tensor's device (rust/rules/detox.rs semantics).

    ``data`` is ``(n, d)``; returns winners ``(g, s)`` (-1: none) and agreement ``(g, r)``.
    """
    g, r = groups.shape
    need = r // 2 + 1
    winners = np.full((g, len(segs) - 1), -1, dtype=np.int64)
    agree = np.ones((g, r), dtype=bool)
    for gi, members in enumerate(groups.tolist()):
        for s, (lo, hi) in enumerate(itertools.pairwise(segs)):
            seg = data[members, lo:hi]
            if mode == "approx":
                diff = (seg[:, None, :] - seg[None, :, :]).abs()
                tol = atol + rtol * seg.abs()[None, :, :]
                eq = (diff <= tol).all(dim=2)  # eq[j, m]: member j is close to candidate m
            else:
                eq = (seg[:, None, :] == seg[None, :, :]).all(dim=2)
            eq = eq.cpu().numpy()
            if mode == "reference":
                cand, count = 0, 0
                for m in range(r):
                    if count == 0:
                        cand, count = m, 1
                    elif eq[m, cand]:
                        count += 1
                    else:
                        count -= 1
                w = cand
            else:
                counts = eq.sum(axis=0) - (np.diag(eq) if mode == "approx" else 0)
                target = need - 1 if mode == "approx" else need
                ok = np.nonzero(counts >= target)[0]
                w = int(ok[0]) if ok.size else None
            if w is not None:
                winners[gi, s] = members[w]
                same = eq[:, w].copy()
                same[w] = True
                agree[gi] &= same
    return winners, agree


def geometric_median(
    x: torch.Tensor, alpha: list[float], nu: float, maxiter: int, ftol: float, init: str, nonfinite: str
):
    """Weiszfeld iterations with torch ops in float64 on ``x``'s device."""
    n = x.shape[0]
    if nonfinite == "raise":
        check_policy(x, "geometric_median", "raise")
    keep = (
        torch.isfinite(x).all(dim=1)
        if nonfinite == "robust"
        else torch.ones(n, dtype=torch.bool, device=x.device)
    )
    if not bool(keep.any()):
        raise nonfinite_error(
            "geometric_median", list(range(n)), "every input holds NaN or infinite values, nothing is left"
        )
    xs = x[keep].double()
    a = (
        torch.ones(n, dtype=torch.float64, device=x.device)
        if not alpha
        else torch.tensor(alpha, dtype=torch.float64, device=x.device)
    )
    a = a[keep]
    if init == "mean":
        z = (a[:, None] * xs).sum(0) / a.sum()
    elif init == "median":
        z = torch.quantile(xs, 0.5, dim=0)
    else:
        z = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    d = (xs - z).norm(dim=1)
    obj = float((a * d).sum())
    w, it, conv = a, 0, False
    while it < maxiter:
        w = a / d.clamp(min=nu)
        z = (w[:, None] * xs).sum(0) / w.sum()
        it += 1
        d = (xs - z).norm(dim=1)
        new = float((a * d).sum())
        change, obj = abs(obj - new), new
        if change <= ftol * new:
            conv = True
            break
    full = np.zeros(n)
    full[keep.cpu().numpy()] = w.cpu().numpy()
    return it, conv, obj, full


def meamed(
    x: torch.Tensor, keep: int, nonfinite: str, need_rows: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The mean of the ``keep`` values closest to the median (the core's outward growth and tie rule)."""
    check_policy(x, "meamed", nonfinite)
    n, d = x.shape
    order = rank_order(x)
    s = x.gather(0, order)  # values in rank order
    p = n // 2
    med = s[p].double() if n % 2 == 1 else midpoint(s[p - 1], s[p]).double()
    dist = (s.double() - med[None]).abs()
    dist = torch.where(torch.isnan(dist), torch.full_like(dist, float("inf")), dist)
    lo = torch.full((d,), p, dtype=torch.long, device=x.device)
    hi = lo.clone()
    cols = torch.arange(d, device=x.device)
    inf = torch.tensor(float("inf"), dtype=torch.float64, device=x.device)
    for _ in range(keep):
        has_low, has_high = lo > 0, hi < n
        dl = torch.where(has_low, dist[(lo - 1).clamp(min=0), cols], inf)
        dh = torch.where(has_high, dist[hi.clamp(max=n - 1), cols], inf)
        rl = order[(lo - 1).clamp(min=0), cols]
        rh = order[hi.clamp(max=n - 1), cols]
        take_low = has_low & (~has_high | (dl < dh) | ((dl == dh) & (rl < rh)))
        lo = torch.where(take_low, lo - 1, lo)
        hi = torch.where(take_low, hi, hi + 1)
    rank = torch.arange(n, device=x.device)[:, None]
    kept = (rank >= lo[None]) & (rank < hi[None])
    terms = [
        torch.where(kept[r], s[r].double(), torch.zeros((), dtype=torch.float64, device=x.device))
        for r in range(n)
    ]
    out = (accumulate(terms, x.dtype) / float(keep)).to(x.dtype)
    return _propagate(x, nonfinite, out, order[lo, cols], order[hi - 1, cols], need_rows)

"""Slow, obvious reference implementations: the oracle the fast paths are compared against.

Pure Python loops over coordinates and rows, written for reading, not speed. They follow the
conventions of docs/conventions.md to the bit where the core promises bits: ranks by
``(value, row)`` in IEEE total order (NaN above +inf, -0.0 below +0.0), sums in float64 in a
fixed order (Neumaier-compensated for float64 input), the overflow-free midpoint.
"""

from __future__ import annotations

import math

import numpy as np


def rank_key(v: float, i: int) -> tuple:
    """Sort key of value ``v`` of row ``i``."""
    if math.isnan(v):
        return (1, 0.0, 0, i)
    return (0, v, 0 if math.copysign(1.0, v) < 0 else 1, i)


class Neumaier:
    """Neumaier's compensated sum of terms ``w x``. With ``wide``, where finite terms overflow it,
    it goes on with every term scaled by ``2**-560`` (docs/conventions.md, "Arithmetic")."""

    SHRINK = 2.0**-560

    def __init__(self, wide: bool = False) -> None:
        self.s = -0.0  # the identity of addition: a sum of -0.0s keeps its sign
        self.c = 0.0
        self.k = 1.0  # the sum is s / k
        self.wide = wide

    def add(self, x: float, w: float = 1.0) -> None:
        v = w * (x * self.k)
        finite = all(map(math.isfinite, (self.s, w, x)))
        if self.wide and self.k == 1.0 and finite and not math.isfinite(self.s + v):
            self.k = self.SHRINK
            self.s, self.c = self.s * self.k, self.c * self.k
            v = w * (x * self.k)
        t = self.s + v
        if abs(self.s) >= abs(v):
            self.c += (self.s - t) + v
        else:
            self.c += (v - t) + self.s
        self.s = t

    def held(self) -> float:
        if self.wide and self.k == 1.0 and math.isfinite(self.s) and math.isinf(self.s + self.c):
            # only adding the compensation overflows: that too goes scaled
            self.k = self.SHRINK
            self.s, self.c = self.s * self.k, self.c * self.k
        return self.s + self.c if math.isfinite(self.s) and self.c != 0.0 else self.s

    def value(self) -> float:
        return self.held() / self.k  # exact (k is a power of two), or inf

    def quotient(self, count: float) -> float:
        return self.held() / count / self.k


def normalise_weights(w) -> list[float]:
    """The weights as the core averages with them: where the largest lies outside ``[1/2, 1]``,
    scaled by the power of two that brings it into ``[1/2, 1)`` (only their ratios matter)."""
    w = [float(v) for v in w]
    top = max(w, default=0.0)
    if top == 0.0 or 0.5 <= top <= 1.0:
        return w
    e = math.frexp(top)[1]
    return [math.ldexp(v, -e) for v in w]


def mean_in_order(values, dtype, weights=None, total=None) -> float:
    """The core's float64 mean of ``w x`` over ``values`` in order, divided by ``total`` (by
    default the count, or the weights' compensated sum): a plain float64 sum for float32 input,
    compensated for float64, and where that overflows although the values of positive weight
    are finite, the wide sum (``order::average``)."""
    values = [float(v) for v in values]
    ws = [1.0] * len(values) if weights is None else [float(w) for w in weights]
    if total is None:
        total = float(len(values)) if weights is None else fsum_in_order(ws, np.float64)
    if np.dtype(dtype) == np.float32:
        s = -0.0
        for w, v in zip(ws, values, strict=True):
            s += w * v
        return s / total
    q = _compensated(values, ws).quotient(total)
    used = [v for w, v in zip(ws, values, strict=True) if w > 0]
    if math.isinf(q) and all(map(math.isfinite, used)):  # a sum of finite values overflowed
        q = _compensated(values, ws, wide=True).quotient(total)
    return q


def _compensated(values: list[float], ws: list[float], wide: bool = False) -> Neumaier:
    acc = Neumaier(wide)
    for w, v in zip(ws, values, strict=True):
        acc.add(v, w)
    return acc


def fsum_in_order(values, dtype) -> float:
    """Sum like the core: plain float64 for float32 input, compensated for float64."""
    if np.dtype(dtype) == np.float32:
        s = -0.0
        for v in values:
            s += float(v)
        return s
    acc = Neumaier()
    for v in values:
        acc.add(float(v))
    return acc.value()


def average(values, dtype, weights=None) -> float:
    """The core's average: the sum in order divided by the count (or the weights' total), rounded
    to ``dtype`` and kept within the smallest and largest value averaged (positive weight)."""
    values = [float(v) for v in values]
    used = values if weights is None else [v for w, v in zip(weights, values, strict=True) if w > 0]
    weights = None if weights is None else normalise_weights(weights)
    y = float(np.dtype(dtype).type(mean_in_order(values, dtype, weights)))
    lo, hi = min(used, default=y), max(used, default=y)
    return lo if y < lo else hi if y > hi else y


def midpoint(a: float, b: float, dtype) -> float:
    if np.dtype(dtype) == np.float32:
        return float(np.float32((float(a) + float(b)) / 2.0))
    lo, hi = 2.2250738585072014e-308 * 2, 1.7976931348623157e308 / 2
    if abs(a) <= hi and abs(b) <= hi:
        return (a + b) / 2
    if abs(a) < lo:
        return a + b / 2
    if abs(b) < lo:
        return a / 2 + b
    return a / 2 + b / 2


def _columns(x: np.ndarray):
    n = x.shape[0]
    m = x.reshape(n, -1)
    for j in range(m.shape[1]):
        yield j, [(float(m[i, j]), i) for i in range(n)]


def _finish(out: list[float], x: np.ndarray) -> np.ndarray:
    return np.array(out, dtype=x.dtype).reshape(x.shape[1:])


def median(x: np.ndarray, even: str = "mean", nonfinite: str = "robust") -> np.ndarray:
    n = x.shape[0]
    out = []
    for _, col in _columns(x):
        if nonfinite == "propagate" and any(math.isnan(v) for v, _ in col):
            out.append(math.nan)
            continue
        s = sorted(col, key=lambda p: rank_key(*p))
        if n % 2:
            out.append(s[n // 2][0])
        elif even == "lower":
            out.append(s[n // 2 - 1][0])
        elif even == "upper":
            out.append(s[n // 2][0])
        else:
            out.append(midpoint(s[n // 2 - 1][0], s[n // 2][0], x.dtype))
    return _finish(out, x)


def trimmed_mean(x: np.ndarray, f: int, nonfinite: str = "robust") -> np.ndarray:
    n = x.shape[0]
    out = []
    for _, col in _columns(x):
        if nonfinite == "propagate" and any(math.isnan(v) for v, _ in col):
            out.append(math.nan)
            continue
        s = sorted(col, key=lambda p: rank_key(*p))
        kept = [v for v, _ in s[f : n - f]]
        out.append(average(kept, x.dtype))
    return _finish(out, x)


def mean(x: np.ndarray, weights=None, nonfinite: str = "robust") -> np.ndarray:
    n = x.shape[0]
    m = x.reshape(n, -1)
    w = [1.0] * n if weights is None else [float(v) for v in weights]
    rows = list(range(n))
    if nonfinite == "robust":
        rows = [i for i in rows if all(math.isfinite(float(v)) for v in m[i])]
    out = [average([m[i, j] for i in rows], x.dtype, [w[i] for i in rows]) for j in range(m.shape[1])]
    return _finish(out, x)


def sq_distance(a: np.ndarray, b: np.ndarray) -> float:
    return sum((float(p) - float(q)) ** 2 for p, q in zip(a.ravel(), b.ravel(), strict=True))


def krum_scores(x: np.ndarray, f: int) -> list[float]:
    """Robust-policy scores: non-finite distances count as +inf."""
    n = x.shape[0]
    k = n - f - 2
    scores = []
    for i in range(n):
        ds = []
        for j in range(n):
            if j != i:
                d = sq_distance(x[i], x[j])
                ds.append(d if math.isfinite(d) else math.inf)
        scores.append(sum(sorted(ds)[:k]))
    return scores


def multi_krum(x: np.ndarray, f: int, m: int) -> tuple[np.ndarray, list[int]]:
    scores = krum_scores(x, f)
    order = sorted(range(x.shape[0]), key=lambda i: (scores[i], i))[:m]
    rows = x.reshape(x.shape[0], -1)
    out = [average([rows[i, j] for i in order], x.dtype) for j in range(rows.shape[1])]
    return _finish(out, x), order


def crossmax(z: np.ndarray, k: int | None = None, reducer: str = "kth", even: str = "lower",
             nonfinite: str = "robust") -> np.ndarray:  # fmt: skip
    """The definition step by step (docs/algorithms.md, CrossMax) on ``(B, N, C)`` logits, no closed form.

    A = Z - max_c Z; Bm = A - max_n A; Y = k-th largest over n of Bm (or the median).
    """
    with np.errstate(invalid="ignore", over="ignore"):
        return _crossmax(z, k, reducer, even, nonfinite)


def _crossmax(z, k, reducer, even, nonfinite):
    b, n, c = z.shape
    dt = z.dtype.type
    out = np.empty((b, c), dtype=z.dtype)
    big = float(np.finfo(z.dtype).max)
    for e in range(b):
        zz = [[float(v) for v in z[e, p]] for p in range(n)]
        if nonfinite == "robust":
            zz = [[-math.inf if math.isnan(v) else (big if v == math.inf else v) for v in row] for row in zz]
        maxima = [max(row) if not any(math.isnan(v) for v in row) else math.nan for row in zz]
        for j in range(c):
            if all(zz[p][j] == -math.inf for p in range(n)):
                out[e, j] = -math.inf
                continue
            a = []
            for p in range(n):
                if nonfinite == "robust" and maxima[p] == -math.inf:
                    a.append(-math.inf)  # the predictor abstains
                else:
                    a.append(float(dt(dt(zz[p][j]) - dt(maxima[p]))))
            if any(math.isnan(v) for v in a):
                out[e, j] = math.nan
                continue
            best = max(a)
            bm = sorted((float(dt(dt(v) - dt(best))) for v in a), reverse=True)
            if reducer == "kth":
                out[e, j] = bm[(3 if k is None else k) - 1]
            else:
                lower, upper = bm[n // 2], bm[(n + 1) // 2 - 1]  # descending: lower median is further down
                mid = lower if lower == upper else lower / 2 + upper / 2  # no overflow near the max
                out[e, j] = {"lower": lower, "upper": upper, "mean": mid}[even]
    return out


# ---------------------------------------------------------------------------------------------
# The other rule families: obvious loops, float64


def closest_to_median(x: np.ndarray, keep: int) -> np.ndarray:
    """Per coordinate: grow outward from the median over (value, row) ranks; ties to the lower row."""
    out = []
    n = x.shape[0]
    for _, col in _columns(x):
        ranked = sorted(col, key=lambda t: rank_key(*t))
        vals = [v for v, _ in ranked]
        rows = [i for _, i in ranked]
        p = n // 2
        med = vals[p] if n % 2 else midpoint(vals[p - 1], vals[p], x.dtype)

        def dist(r, vals=vals, med=med):
            d = abs(vals[r] - med)
            return math.inf if math.isnan(d) else d

        lo = hi = p
        for _ in range(keep):
            if lo == 0:
                take_low = False
            elif hi == n:
                take_low = True
            else:
                a, b = dist(lo - 1), dist(hi)
                take_low = a < b or (a == b and rows[lo - 1] < rows[hi])
            if take_low:
                lo -= 1
            else:
                hi += 1
        out.append(average(vals[lo:hi], x.dtype))
    return _finish(out, x)


def weighted_median(x: np.ndarray, w, even: str = "mean") -> np.ndarray:
    """Expand integer weights into repeated inputs and take the plain median."""
    reps = np.repeat(x, [int(v) for v in w], axis=0)
    return median(reps, even=even)


def weighted_trimmed_mean(x: np.ndarray, w, f: int) -> np.ndarray:
    """Mass-based trimming: each value covers an interval of cumulative weight."""
    n = x.shape[0]
    w = normalise_weights(w)
    out = []
    for _, col in _columns(x):
        ranked = sorted(col, key=lambda t: rank_key(*t))
        total = float(sum(w))
        t = total * f / n
        c0, kept, parts, used = 0.0, 0.0, [], []
        for v, i in ranked:
            c1 = c0 + w[i]
            part = min(c1, total - t) - max(c0, t)
            if part > 0:
                kept += part
                parts.append(part)
                used.append(v)
            c0 = c1
        y = float(np.dtype(x.dtype).type(mean_in_order(used, x.dtype, parts, kept)))
        out.append(min(max(y, used[0]), used[-1]) if not math.isnan(y) else y)
    return _finish(out, x)


def centered_clipping(x: np.ndarray, tau: float, iters: int, center=None) -> np.ndarray:
    v = np.zeros(x.shape[1]) if center is None else np.asarray(center, np.float64).copy()
    xd = x.astype(np.float64)
    for _ in range(iters):
        acc = np.zeros_like(v)
        for r in xd:
            dist = math.sqrt(sum((a - b) ** 2 for a, b in zip(r, v, strict=True)))
            acc += (r - v) * (1.0 if dist <= tau else tau / dist)  # dist = 0: r - v = 0 anyway
        v = v + acc / len(xd)
    return v


def mda(x: np.ndarray, f: int) -> tuple[np.ndarray, tuple]:
    """byzfl's enumeration: kept tuples in lexicographic order, strict improvements."""
    import itertools

    xd = x.astype(np.float64)
    n = len(xd)
    best, best_s = math.inf, None
    for s in itertools.combinations(range(n), n - f):
        diam = max((sq_distance(xd[i], xd[j]) for i, j in itertools.combinations(s, 2)), default=0.0)
        if diam < best:
            best, best_s = diam, s
    return xd[list(best_s)].mean(axis=0), best_s


def smea(x: np.ndarray, f: int) -> tuple[np.ndarray, tuple]:
    """Top eigenvalue of each subset's covariance (d x d, numpy), the smallest wins."""
    import itertools

    xd = x.astype(np.float64)
    n = len(xd)
    best, best_s = math.inf, None
    for s in itertools.combinations(range(n), n - f):
        sub = xd[list(s)]
        c = sub - sub.mean(axis=0)
        lam = np.linalg.eigvalsh(c.T @ c / len(s))[-1]
        if lam < best * (1 - 1e-9):
            best, best_s = lam, s
    return xd[list(best_s)].mean(axis=0), best_s


def caf(x: np.ndarray, f: int) -> np.ndarray:
    """CAF with the weighted covariance in d x d and an exact eigendecomposition."""
    xd = x.astype(np.float64)
    n = len(xd)
    c = np.ones(n)
    best, best_mu = math.inf, xd.mean(axis=0)  # f = 0: nothing to filter
    for _ in range(n + 1):
        if not c.sum() > (n - 2 * f) * (1 + 1e-9):  # the core's tolerance (_plans.CAF_TOTAL_RTOL)
            break
        w = c / c.sum()
        mu = (w[:, None] * xd).sum(axis=0)
        diff = xd - mu
        cov = (w[:, None] * diff).T @ diff
        vals, vecs = np.linalg.eigh(cov)
        lam, v = vals[-1], vecs[:, -1]
        if lam < best:
            best, best_mu = lam, mu
        if not lam > 0:
            break
        tau = (diff @ v) ** 2
        sup = c > 0
        if not tau[sup].max() > 0:
            break
        c = np.where(sup, c * (1 - tau / tau[sup].max()), 0.0)
    return best_mu


def nnm(x: np.ndarray, f: int) -> np.ndarray:
    xd = x.astype(np.float64)
    n = len(xd)
    out = []
    for i in range(n):
        order = sorted(range(n), key=lambda j, i=i: (sq_distance(xd[i], xd[j]), j))[: n - f]
        out.append(xd[order].mean(axis=0))
    return np.array(out)


def arc(x: np.ndarray, f: int) -> np.ndarray:
    xd = x.astype(np.float64)
    n = len(xd)
    norms = [math.sqrt(sum(v * v for v in r)) for r in xd]
    k = int(2 * f * (n - f) // n)
    out = xd.copy()
    if k == 0:
        return out
    order = sorted(range(n), key=lambda i: (norms[i], i))
    tau = norms[order[n - k - 1]]
    for i in order[n - k :]:
        if norms[i] > tau:
            out[i] = xd[i] * (tau / norms[i])
    return out


def bulyan(x: np.ndarray, f: int, clamp: bool = True) -> tuple[np.ndarray, list[int]]:
    """The paper's Bulyan, written out: iterated Krum then closest-to-median."""
    xd = x.astype(np.float64)
    n = len(xd)
    theta, remaining, chosen = n - 2 * f, list(range(n)), []
    for _ in range(theta):
        r = len(remaining)
        k = max(r - f - 2, 0)
        k = min(max(k, 1) if clamp else k, r - 1)
        scores = []
        for i in remaining:
            ds = sorted(sq_distance(xd[i], xd[j]) for j in remaining if j != i)
            scores.append((sum(ds[:k]), i))
        _, best = min(scores)
        chosen.append(best)
        remaining.remove(best)
    return closest_to_median(x[chosen], theta - 2 * f), chosen


# ---------------------------------------------------------------------------------------------
# monoid tree reductions (docs/algorithms.md)


def carry_tree(items, combine):
    """Reduce a list with the carry tree, one pair at a time: pair neighbours level by level,
    carry an odd last item up unchanged. ``combine(a, b)`` is called with a the left item."""
    cur = list(items)
    while len(cur) > 1:
        nxt = [combine(cur[i], cur[i + 1]) for i in range(0, len(cur) - 1, 2)]
        if len(cur) % 2:
            nxt.append(cur[-1])
        cur = nxt
    return cur[0]


def _np_max(a, b):
    with np.errstate(invalid="ignore"):
        return np.where((a == b) & (a == 0), a + b, np.maximum(a, b))


def _np_min(a, b):
    with np.errstate(invalid="ignore"):
        return np.where((a == b) & (a == 0), -((-a) + (-b)), np.minimum(a, b))


def _np_logaddexp(a, b):
    m = _np_max(a, b)
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(np.isinf(m), m, m + np.log1p(np.exp(-np.abs(a - b))))


MONOID_COMBINE = {
    "sum": np.add,
    "mean": np.add,
    "prod": np.multiply,
    "max": _np_max,
    "min": _np_min,
    "logsumexp": _np_logaddexp,
}
MONOID_IDENTITY = {"sum": 0.0, "mean": 0.0, "prod": 1.0, "max": -np.inf, "min": np.inf, "logsumexp": -np.inf}


def segment_reduce(x, ptr, op, empty=None):
    """Each set ``x[ptr[s]:ptr[s+1]]`` (rows) reduced over its carry tree, in x's dtype."""
    x = np.asarray(x)
    out = np.empty((len(ptr) - 1, x.shape[1]), dtype=x.dtype)
    for s in range(len(ptr) - 1):
        rows = [x[i] for i in range(ptr[s], ptr[s + 1])]
        if not rows:
            out[s] = MONOID_IDENTITY[op] if empty is None else empty
            continue
        with np.errstate(all="ignore"):
            v = carry_tree(rows, MONOID_COMBINE[op])
        out[s] = v / x.dtype.type(len(rows)) if op == "mean" and len(rows) > 1 else v
    return out


def _scaled_row(row) -> tuple[list[float], int]:
    """A finite row as Python floats divided by the power of two of its largest value (exact),
    and that exponent: products of scaled values never overflow."""
    vals = [float(v) for v in row]
    top = max((abs(v) for v in vals), default=0.0)
    e = math.frexp(top)[1] if top > 0 else 0
    return [math.ldexp(v, -e) for v in vals], e


def _dot(a, b) -> float:
    return math.fsum(u * v for u, v in zip(a, b, strict=True))


def fltrust(x: np.ndarray, g0) -> np.ndarray:
    """FLTrust with per-row loops: ``TS_i = max(0, cos(x_i, g0))``, each input rescaled to
    ``||g0||``, ``y = Σ TS_i ||g0|| / ||x_i|| x_i / Σ TS_j``; zero when no trust is positive.
    Rows holding NaN or ±inf get no trust (``nonfinite="robust"``)."""
    g = [float(v) for v in np.asarray(g0, dtype=np.float64).reshape(-1)]
    g_norm = math.sqrt(_dot(g, g))
    rows = [np.asarray(r, dtype=np.float64).reshape(-1) for r in x]
    d = len(g)
    trust, factor, scaled = [], [], []
    for r in rows:
        if not all(math.isfinite(float(v)) for v in r):
            trust.append(0.0)
            factor.append(0.0)
            scaled.append([0.0] * d)
            continue
        s, _ = _scaled_row(r)  # cos and x / ||x|| do not depend on the row's scale
        s_norm = math.sqrt(_dot(s, s))
        if s_norm == 0.0 or g_norm == 0.0:
            ts = 0.0
        else:
            ts = max(0.0, min(1.0, _dot(s, g) / (s_norm * g_norm)))
        trust.append(ts)
        factor.append(0.0 if ts == 0.0 else g_norm / s_norm)
        scaled.append(s)
    total = math.fsum(trust)
    if total == 0.0:
        return np.zeros(d)
    return np.array(
        [math.fsum(trust[i] * factor[i] * scaled[i][j] for i in range(len(rows))) / total for j in range(d)]
    )


FOOLSGOLD_EPS = 1e-5


def history_cosine(a, b) -> float:
    """The cosine of two histories: 1 for identical ones (zero ones included, aggkit's choice),
    0 where one is zero (sklearn's), clipped to [-1, 1]."""
    a = [float(v) for v in a]
    b = [float(v) for v in b]
    if a == b:
        return 1.0
    sa, _ = _scaled_row(a)
    sb, _ = _scaled_row(b)
    na, nb = math.sqrt(_dot(sa, sa)), math.sqrt(_dot(sb, sb))
    if na == 0.0 or nb == 0.0:
        return 0.0
    return max(-1.0, min(1.0, _dot(sa, sb) / (na * nb)))


def foolsgold_weights(histories, kappa: float = 1.0) -> list[float]:
    """The authors' ``foolsgold()`` (DistributedML/FoolsGold, ML/code/model_aggregator.py) loop by
    loop, with kappa, and all-zero weights where the authors' code divides 0 by 0."""
    n = len(histories)
    cs = [[0.0 if i == j else history_cosine(histories[i], histories[j]) for j in range(n)] for i in range(n)]
    maxcs = [max(cs[i]) + FOOLSGOLD_EPS for i in range(n)]
    for i in range(n):  # pardoning
        for j in range(n):
            if i == j:
                continue
            if maxcs[i] < maxcs[j]:
                cs[i][j] = cs[i][j] * maxcs[i] / maxcs[j]
    wv = [1.0 - max(cs[i]) for i in range(n)]
    wv = [min(1.0, max(0.0, w)) for w in wv]
    top = max(wv)
    if top == 0.0:
        return [0.0] * n
    wv = [w / top for w in wv]
    wv = [0.99 if w == 1.0 else w for w in wv]
    wv = [kappa * (math.log(w / (1.0 - w) + FOOLSGOLD_EPS) + 0.5) for w in wv]
    return [min(1.0, max(0.0, w)) for w in wv]


def foolsgold(x: np.ndarray, history=None, kappa: float = 1.0, clip=None) -> tuple[np.ndarray, list[float]]:
    """FoolsGold round: each finite update (clipped to norm ``clip`` if given) is added to its
    history; weights from the histories of the finite inputs; ``Σ w_i x_i / Σ w_i`` (zero if no
    weight). Returns the output (float64) and the weights."""
    n = len(x)
    rows = [[float(v) for v in np.asarray(r, dtype=np.float64).reshape(-1)] for r in x]
    d = len(rows[0]) if n else 0
    hist = [[0.0] * d for _ in range(n)]
    if history is not None:
        hist = [[float(v) for v in np.asarray(h, dtype=np.float64).reshape(-1)] for h in history]
    finite = [all(map(math.isfinite, r)) for r in rows]
    upd = []
    for r in rows:
        scale = 1.0
        if clip is not None and all(map(math.isfinite, r)):
            s, e = _scaled_row(r)
            norm = math.ldexp(math.sqrt(_dot(s, s)), e)
            if norm > clip:
                scale = clip / norm
        upd.append([scale * v for v in r])
    active = [i for i in range(n) if finite[i]]
    for i in active:
        hist[i] = [h + u for h, u in zip(hist[i], upd[i], strict=True)]
    active = [i for i in active if all(map(math.isfinite, hist[i]))]
    w = [0.0] * n
    for i, wi in zip(active, foolsgold_weights([hist[i] for i in active], kappa), strict=True):
        w[i] = wi
    total = math.fsum(w)
    if total == 0.0:
        return np.zeros(d), w
    out = np.array([math.fsum(w[i] * upd[i][j] for i in range(n) if w[i] > 0) / total for j in range(d)])
    return out, w


def dnc(x: np.ndarray, f: int, subsets, c: float = 1.0) -> tuple[np.ndarray, list[int], list[int]]:
    """DnC as the paper writes it, on finite float64 rows: per coordinate subset (``None``: all),
    centre the sampled rows, top right singular vector ``v`` by ``np.linalg.svd``, scores
    ``((x_i - mu) . v)^2``, keep all but the ``floor(c f)`` largest (ties: lower index stays);
    the mean of the rows kept every time (or, if none is, of those kept most often).
    Returns the output, the kept rows and how many subsets kept each row."""
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    removed = math.floor(c * f)
    votes = [0] * n
    for cols in subsets:
        sub = x if cols is None else x[:, list(cols)]
        centred = sub - sub.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        v = vt[0]
        scores = [float(np.dot(centred[i], v)) ** 2 for i in range(n)]
        order = sorted(range(n), key=lambda i: (scores[i], i))
        for i in order[: n - removed]:
            votes[i] += 1
    best = max(votes)
    kept = [i for i in range(n) if votes[i] == best]
    out = np.array([math.fsum(x[i, j] for i in kept) / len(kept) for j in range(d)])
    return out, kept, votes

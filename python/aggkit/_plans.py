"""Decision plans: which inputs a rule keeps, decided on small metadata.

The subset rules (Krum's selection, Bulyan, MDA, SMEA, CAF, MoNNA) and the pre-aggregators
(NNM, ARC, clipping) decide from the ``(n, n)`` matrix of squared distances or the ``n`` norms
of the inputs, never from the ``(n, d)`` data. The numpy and torch implementations compute that
metadata with their own kernels (Rust on the host, torch ops on a device), share these plans,
and then form the output from the chosen inputs; only ``O(n^2)`` numbers cross devices.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from aggkit import _core
from aggkit.errors import InvalidParameterError, nonfinite_error


def finite_part(bad: Sequence[int], n: int, f: int, nonfinite: str, rule: str) -> tuple[list[int], int]:
    """The finite inputs and the ``f`` left for them, given the non-finite ones (``bad``).

    Under ``"raise"`` any non-finite input is refused; under ``"robust"`` they are left out and
    count against ``f`` (more than ``f`` of them is refused).
    """
    if bad and nonfinite == "raise":
        raise nonfinite_error(rule, bad, "nonfinite='raise' refuses NaN and infinite values")
    if len(bad) > f:
        raise nonfinite_error(rule, bad, f"more than f={f} inputs are non-finite")
    drop = set(bad)
    return [i for i in range(n) if i not in drop], f - len(bad)


def _square(dist: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(dist, dtype=np.float64)


def krum_select(dist: np.ndarray, f: int, m: int, nonfinite: str) -> tuple[list[int], np.ndarray]:
    """Krum / Multi-Krum's ``m`` best inputs (best first) and every score, from distances."""
    idx, scores = _core.krum_select(_square(dist), f, m, nonfinite)
    return list(idx), scores


def bulyan_plan(dist: np.ndarray, f: int, variant: str, clamp: bool) -> tuple[list[int], np.ndarray, int]:
    """Bulyan's selected inputs (in the order chosen), every score, and stage 2's count.

    The count is how many values the second stage keeps per coordinate.

    ``paper``: ``theta = n - 2f`` inputs by iterated Krum, stage 2 keeps ``beta = theta - 2f``
    values closest to the median. ``detox``: the ``n - f - 2`` best Krum scores, stage 2 trims
    ``f`` per side (keeps ``n - 3f - 2``).
    """
    n = dist.shape[0]
    if variant == "paper":
        sel, sc = _core.bulyan_select(_square(dist), f, clamp)
        scores = np.full(n, np.inf)
        scores[sel] = sc
        return list(sel), scores, len(sel) - 2 * f
    idx, scores = krum_select(dist, f, n - f - 2, "robust")
    return idx, scores, n - 3 * f - 2


def centered_gram(dist: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """Inner products ``(x_i - mu) . (x_j - mu)`` from squared distances, ``mu = Σ w x``.

    ``-P D P^T / 2`` with ``P = I - 1 w^T`` (``w`` uniform by default).

    Built from the exact pairwise distances, never from the raw coordinates, so a large common
    offset cancels exactly; and an input of weight 0 contributes nothing to the other entries
    (a far outlier does not swamp the small distances between the others).
    """
    n = dist.shape[0]
    w = np.full(n, 1.0 / n) if w is None else w
    dw = dist @ w  # Σ_k w_k D_ik
    out: np.ndarray = -0.5 * (dist - dw[:, None] - dw[None, :] + w @ dw)
    return out


def mda_indices(dist: np.ndarray, f: int, max_subsets: int) -> list[int]:
    """MDA's kept inputs from a squared-distance matrix (the Rust subset scan)."""
    # Beyond 2**63 subsets no scan finishes: the core's bound saturates there.
    return list(_core.mda_select(_square(dist), f, min(max_subsets, 2**63 - 1)))


def finite_distances(dist: np.ndarray) -> np.ndarray:
    """Squared distances of finite inputs with those beyond float64 (+inf) set to its largest value.

    Such an input stays the farthest from every other, and the small distances keep every bit
    (scaling the inputs down to fit the large ones would flush them to zero).
    """
    out: np.ndarray = np.where(np.isinf(dist), np.finfo(np.float64).max, dist)
    return out


#: Distance matrices whose largest entry lies outside this range are rescaled by a power of two
#: before an eigenproblem (squares of their entries would overflow or underflow).
SCALE_RANGE = (2.0**-400, 2.0**400)


def well_scaled(dist: np.ndarray, among: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """``(dist * 2**-e, e)`` with the largest entry (of the ``among`` rows and columns) near 1.

    ``e = 0`` and ``dist`` itself when that entry already lies in :data:`SCALE_RANGE`, so
    ordinary inputs are used bit for bit. The decisions of SMEA and CAF depend only on ratios
    of distances, and scaling by a power of two is exact.
    """
    sub = dist if among is None else dist[np.ix_(among, among)]
    top = float(sub.max()) if sub.size else 0.0
    e = 0
    if top > 0.0 and math.isfinite(top) and not SCALE_RANGE[0] <= top <= SCALE_RANGE[1]:
        e = math.frexp(top)[1]
        sub = np.ldexp(sub, -e)
    if among is None:
        return sub, e
    # Rows and columns outside ``among`` carry weight 0: zero them rather than let their
    # distances (up to float64's largest) overflow the centering (0 * inf would be NaN).
    out = np.zeros_like(dist)
    out[np.ix_(among, among)] = sub
    return out, e


def smea_indices(dist: np.ndarray, f: int, max_subsets: int, batch: int = 2048) -> list[int]:
    """SMEA's kept inputs: the ``n - f`` whose covariance has the smallest top eigenvalue."""
    n = dist.shape[0]
    k = n - f
    count = math.comb(n, f)
    if count > max_subsets:
        raise InvalidParameterError(
            f"smea: C(n, f) = C({n}, {f}) = {count} subsets exceed max_subsets={max_subsets}; "
            "raise max_subsets to accept the cost (it grows exponentially with f)"
        )
    # Each subset holds a k x k matrix in the batch and its copies: keep a batch near 128 MiB.
    batch = max(1, min(batch, 2**24 // max(k * k, 1)))
    best_val, best = math.inf, None
    combos = itertools.combinations(range(n), k)
    while True:
        chunk = list(itertools.islice(combos, batch))
        if not chunk:
            break
        idx = np.array(chunk, dtype=np.intp)
        dd = dist[idx[:, :, None], idx[:, None, :]]  # each subset's own distances
        # Each subset scaled by the power of two of its largest distance (exact): neither the
        # eigenproblem's squares overflow nor a subset's small distances underflow.
        e = np.frexp(dd.max(axis=(1, 2)))[1]
        dd = np.ldexp(dd, -e[:, None, None])
        rm = dd.mean(axis=2, keepdims=True)
        s = -0.5 * (dd - rm - rm.transpose(0, 2, 1) + rm.mean(axis=1, keepdims=True))
        with np.errstate(over="ignore"):
            top = np.ldexp(np.linalg.eigvalsh(s)[:, -1] / k, e)
        # Strict improvement in enumeration order (byzfl); values within rounding of the best
        # count as equal, so the first of two equal subsets wins whatever the LAPACK rounding.
        for b in range(len(chunk)):
            if best is None or top[b] < best_val - 1e-12 * abs(best_val):
                best_val, best = float(top[b]), chunk[b]
    assert best is not None
    return list(best)


#: CAF filters while the total weight exceeds ``n - 2f`` by more than this relative margin.
CAF_TOTAL_RTOL = 1e-9


def caf_weights(dist: np.ndarray, n_total: int, f: int) -> np.ndarray:
    """CAF's final weights ``c`` (the iterate whose covariance had the smallest top eigenvalue).

    ``dist``: squared distances of the (finite) inputs; ``n_total``/``f``: the threshold
    ``n - 2f`` the total weight is filtered down to (dropped inputs already weigh 0).
    """
    n = dist.shape[0]
    c = np.ones(n)
    best_val, best_c = math.inf, c.copy()
    for _ in range(n + 1):  # each round zeroes at least one input of the support
        total = c.sum()
        # The weights come through an eigenvector: a total that is n - 2f exactly can round
        # just above it, and one more round would filter an honest input (found by fuzzing).
        if not total > (n_total - 2 * f) * (1 + CAF_TOTAL_RTOL):
            break
        w = c / total
        # Scaled to this round's support: a far input dropped in an earlier round no longer
        # sets the scale of the ones left.
        dist_e, e = well_scaled(dist, c > 0)
        cm = centered_gram(dist_e, w)  # (x_i - mu) . (x_j - mu), mu = Σ w x
        sw = np.sqrt(w)
        vals, vecs = np.linalg.eigh(sw[:, None] * cm * sw[None, :])
        lam, u = vals[-1], vecs[:, -1]
        if math.ldexp(lam, e) < best_val:
            best_val, best_c = math.ldexp(lam, e), c.copy()
        if not lam > 0:  # every weighted input is the weighted mean: nothing left to filter
            break
        support = c > 0
        # Squared projections on the top eigenvector, of the inputs still weighted (a dropped
        # input's row may hold distances far outside this round's scale).
        tau = np.zeros(n)
        tau[support] = (cm[support] @ (sw * u)) ** 2 / lam
        top = tau[support].max()
        if not (np.isfinite(top) and top > 0):  # spread below float range: nothing to filter
            break
        c = np.where(support, c * (1.0 - tau / top), 0.0)
    return best_c


def monna_indices(dists: np.ndarray, f: int) -> list[int]:
    """The ``n - f`` inputs nearest to the trusted one (itself included), ties by index."""
    d = np.where(np.isfinite(dists), dists, np.inf)
    return sorted(np.argsort(d, kind="stable")[: len(d) - f].tolist())


def nnm_neighbours(dist: np.ndarray, f: int) -> np.ndarray:
    """Per input, its ``n - f`` nearest inputs (itself included), ties by index: ``(n, n - f)``."""
    d = np.where(np.isfinite(dist), dist, np.inf)
    out: np.ndarray = np.argsort(d, axis=1, kind="stable")[:, : dist.shape[0] - f]
    return out


def wide_norms(norms: np.ndarray, row: Callable[[int], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean norms as ``(m, e)``, ``||x_i|| = m_i * 2**e_i``, given their float64 values.

    A finite float64 input can have a norm above float64's largest value (a client sending
    1e200). Such a row (float64 norm +inf, every value finite) is measured again scaled by the
    power of two of its largest value, ``e_i``; every other row keeps its float64 norm with
    ``e_i = 0``, bit for bit.
    """
    m = np.array(norms, dtype=np.float64)
    e = np.zeros(len(m), dtype=np.int64)
    for i in np.flatnonzero(np.isinf(m)).tolist():
        r = np.asarray(row(i), dtype=np.float64)
        if not np.isfinite(r).all():
            continue
        e[i] = math.frexp(float(np.max(np.abs(r))))[1]
        m[i] = math.sqrt(float(np.sum(np.square(np.ldexp(r, -int(e[i]))))))
    return m, e


def _normalised(m: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(M, E)`` with ``m * 2**e = M * 2**E`` and ``M`` in ``[0.5, 1)`` (0, inf, NaN as they are)."""
    mant, ex = np.frexp(m)
    return mant, ex.astype(np.int64) + e


def _ldexp(v: np.ndarray, k: np.ndarray) -> np.ndarray:
    """``v * 2**k`` for exponents beyond float64's range (in two exact steps where it can be)."""
    k = np.clip(k, -2200, 2200)
    out: np.ndarray = np.ldexp(np.ldexp(v, k // 2), k - k // 2)
    return out


def clip_scales(m: np.ndarray, e: np.ndarray, c: tuple[float, int]) -> np.ndarray:
    """``min(1, c / ||x_i||)`` per input, norms and ``c`` as ``(m, e)`` pairs (:func:`wide_norms`).

    1 for zero and non-finite norms (passed through). Where no exponent is needed, the scale is
    ``c / norm`` in float64, as it would be without them.
    """
    mant, ex = _normalised(m, e)
    (cm,), (ce,) = _normalised(np.array([c[0]]), np.array([c[1]]))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        ratio = _ldexp(cm / mant, ce - ex)
    ok = np.isfinite(m) & (m > 0) & (ratio < 1.0)
    out: np.ndarray = np.where(ok, ratio, 1.0)
    return out


def arc_count(n: int, f: int) -> int:
    """How many inputs ARC clips: ``floor(2 f (n - f) / n)``, in integers."""
    return 2 * f * (n - f) // n


def arc_threshold(m: np.ndarray, e: np.ndarray, f: int) -> int | None:
    """The input whose norm is ARC's threshold (the largest unclipped one); None: nothing clipped.

    Norms as ``(m, e)`` pairs (:func:`wide_norms`), ordered by value, NaN as +inf, ties by index.
    """
    n = len(m)
    k = arc_count(n, f)
    if k == 0:
        return None
    mant, ex = _normalised(m, e)
    top = np.iinfo(np.int64).max
    ex = np.where(np.isfinite(m), np.where(m > 0, ex, -top), top)
    mant = np.where(np.isfinite(m), mant, 0.0)
    order = np.lexsort((np.arange(n), mant, ex))
    return int(order[n - k - 1])


def scaled_row(row: np.ndarray) -> tuple[np.ndarray, int]:
    """A row as float64 divided by the power of two of its largest magnitude, and that exponent.

    The scaling is exact, and the scaled row's squares neither overflow nor all underflow, so
    its norm and dot products are accurate for any finite input (``1e-300`` and ``1e300``
    alike). A zero row has exponent 0.
    """
    r = np.asarray(row, dtype=np.float64).reshape(-1)
    top = float(np.max(np.abs(r))) if r.size else 0.0
    e = math.frexp(top)[1] if top > 0 else 0
    out: np.ndarray = np.ldexp(r, -e)
    return out, e


def fltrust_scales(
    dots: np.ndarray, norms: np.ndarray, exps: np.ndarray, ref_scaled_norm: float, ref_norm: float
) -> tuple[np.ndarray, np.ndarray]:
    r"""FLTrust's trust scores and each input's factor in the output, ``TS_i ||g0|| / (||x_i|| Σ TS)``.

    From each input and the reference scaled by powers of two (:func:`scaled_row`:
    ``x_i = s_i 2^{e_i}``, ``g_0 = r 2^{e_0}``): the dot products :math:`s_i \cdot r`, the norms
    :math:`\|s_i\|`, the exponents :math:`e_i`, :math:`\|r\|` and :math:`\|g_0\|`. The cosine is
    the dot product over the norms, computed directly (an orthogonal input has trust exactly 0);
    zero inputs have trust 0. Factors are 0 for every input when no trust is positive; a factor
    beyond float64's range is ``inf`` (the caller then sums the scaled rows instead).
    """
    n = len(dots)
    if ref_norm == 0.0:
        return np.zeros(n), np.zeros(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where(norms > 0, dots / (np.where(norms > 0, norms, 1.0) * ref_scaled_norm), 0.0)
    trust = np.maximum(np.clip(np.nan_to_num(cos, nan=0.0), -1.0, 1.0), 0.0)
    total = float(trust.sum())
    if total == 0.0:
        return trust, np.zeros(n)
    mant, ex = _normalised(norms, exps)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        scales = _ldexp(trust * (ref_norm / total) / np.where(trust > 0, mant, 1.0), -ex)
    out: np.ndarray = np.where(trust > 0, scales, 0.0)
    return trust, out


def cosines(dist: np.ndarray, norms: np.ndarray) -> np.ndarray:
    r"""Pairwise cosine similarities from exact squared distances and norms (0 for a zero norm).

    :math:`\cos_{ij} = (\|a\|^2 + \|b\|^2 - \|a - b\|^2) / (2 \|a\| \|b\|)`, clipped to
    ``[-1, 1]``. Identical rows (distance 0) have similarity exactly 1, zero rows included;
    a zero row has similarity 0 to any other.
    """
    sq = norms * norms
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        cos = (sq[:, None] + sq[None, :] - dist) / (2.0 * norms[:, None] * norms[None, :])
    ok = (norms > 0)[:, None] & (norms > 0)[None, :] & np.isfinite(cos)
    out: np.ndarray = np.where(ok, np.clip(cos, -1.0, 1.0), 0.0)
    out[dist == 0.0] = 1.0
    return out


#: FoolsGold's epsilon (the authors' code): keeps the pardoning ratio and the logit finite.
FOOLSGOLD_EPS = 1e-5


def _foolsgold_logits(cos: np.ndarray, active: np.ndarray) -> np.ndarray:
    """FoolsGold's scores before the confidence: ``ln(w / (1 - w) + eps) + 0.5`` (``-inf``: none)."""
    idx = np.flatnonzero(active)
    out = np.full(len(active), -np.inf)
    if len(idx) == 0:
        return out
    cs = np.array(cos[np.ix_(idx, idx)], dtype=np.float64)
    np.fill_diagonal(cs, 0.0)
    m = cs.max(axis=1) + FOOLSGOLD_EPS if len(idx) > 1 else np.full(1, FOOLSGOLD_EPS)
    pardon = m[:, None] < m[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        cs = np.where(pardon, cs * (m[:, None] / m[None, :]), cs)
    np.fill_diagonal(cs, 0.0)
    wv = np.clip(1.0 - cs.max(axis=1) if len(idx) > 1 else np.ones(1), 0.0, 1.0)
    top = float(wv.max())
    if top == 0.0:
        return out
    wv = wv / top
    wv[wv == 1.0] = 0.99
    with np.errstate(divide="ignore"):
        out[idx] = np.nan_to_num(np.log(wv / (1.0 - wv) + FOOLSGOLD_EPS) + 0.5, nan=-np.inf)
    return out


def foolsgold_weights(cos: np.ndarray, kappa: float, active: np.ndarray) -> np.ndarray:
    r"""FoolsGold's per-client weights in ``[0, 1]`` from the cosines of the clients' histories.

    ``active`` marks the clients that take part (non-finite ones do not: weight 0, and they
    are left out of the others' similarities). The authors' code, step by step: the diagonal
    is 0; clients less similar to anyone than another is pardon their similarity to it
    (:math:`cs_{ij} \cdot m_i / m_j` when :math:`m_i < m_j`, :math:`m_i` the largest
    similarity of :math:`i` plus epsilon); :math:`w = 1 - \max_j cs_{ij}` clipped to
    ``[0, 1]`` and divided by its largest value (all 0 if that is 0); 1 becomes 0.99; then
    :math:`\kappa (\ln(w / (1 - w) + \epsilon) + 0.5)` clipped to ``[0, 1]``.
    """
    logit = _foolsgold_logits(cos, active)
    with np.errstate(invalid="ignore", over="ignore"):
        out: np.ndarray = np.clip(np.nan_to_num(kappa * logit, nan=0.0, neginf=0.0), 0.0, 1.0)
    return out


def foolsgold_shares(cos: np.ndarray, kappa: float, active: np.ndarray) -> np.ndarray:
    """Weights proportional to :func:`foolsgold_weights`, the largest 1, for the weighted mean.

    ``clip(kappa l, 0, 1)`` is proportional to ``clip(l, 0, 1 / kappa)``; the second keeps every
    bit of the ratios where a tiny ``kappa`` makes the first subnormal.
    """
    with np.errstate(over="ignore", divide="ignore"):
        cap = 1.0 / kappa
    rel = np.clip(_foolsgold_logits(cos, active), 0.0, cap)
    top = float(rel.max())
    out: np.ndarray = rel / top if top > 0 else rel
    return out


def foolsgold_from_history(
    h: np.ndarray, top: np.ndarray, kappa: float, active: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """FoolsGold's weights from the histories ``h`` (float64 rows) and their largest magnitudes.

    The cosines come from the Rust core's exact distances and norms of the rows scaled by the
    power of two of their largest value (exact; squares stay finite); a history that overflowed
    (``top`` NaN) gets no weight. Also the weights scaled to a largest of 1
    (:func:`foolsgold_shares`), for the mean.
    """
    active = active & np.isfinite(top)
    e = np.frexp(np.where(active, top, 0.0))[1].astype(np.int32)
    rows = [h[i] if a else None for i, a in enumerate(active.tolist())]
    dist, norms = _core.scaled_distances(rows, e.tolist(), h.shape[1])
    cos = cosines(dist, norms)
    return foolsgold_weights(cos, kappa, active), foolsgold_shares(cos, kappa, active)


def _finite_block(dist: np.ndarray) -> list[int]:
    """The inputs left once those too far for a float64 Gram matrix are removed, farthest first.

    A finite input whose squared distances overflow float64 (values near ``1e200``; ``inf``, or
    float64's largest value as :func:`finite_distances` writes it) is farther from the others
    than any finite score can say: inputs with the most such distances are taken out first
    (ties: the higher index), until the rest's centred Gram matrix cannot overflow (every
    distance at most float64's largest value over ``4 n``).
    """
    rest = list(range(dist.shape[0]))
    limit = np.finfo(np.float64).max / (4 * max(len(rest), 1))
    while rest:
        sub = dist[np.ix_(rest, rest)]
        bad = (~(sub <= limit)).sum(axis=1)
        if not bad.any():
            break
        worst = int(np.flatnonzero(bad == bad.max())[-1])
        del rest[worst]
    return rest


def dnc_keep(dists: Iterable[np.ndarray], removed: int) -> tuple[list[int], np.ndarray]:
    r"""DnC's kept inputs: per subsample, all but the ``removed`` with the largest outlier scores.

    Each ``(n, n)`` matrix holds the squared distances of the inputs on one random subset of
    coordinates. The score of input ``i`` is its squared projection on the top principal
    direction of the centred inputs, :math:`\lambda_1 u_i^2` with :math:`(\lambda_1, u)` the
    top eigenpair of the centred Gram matrix (:func:`centered_gram`): the same numbers as the
    paper's :math:`((x_i - \mu) \cdot v)^2`, from distances only. Inputs too far for a float64
    Gram matrix score ``inf`` (:func:`_finite_block`). Ties are broken by index (the lower
    index is kept). The result is the inputs kept by every subsample; when that
    set is empty, those kept by the most subsamples. Also returns how many subsamples kept each.
    """
    votes = np.zeros(0, dtype=np.int64)
    for dist in dists:  # one matrix at a time: memory O(n^2) whatever the number of subsamples
        n = dist.shape[0]
        if len(votes) != n:
            votes = np.zeros(n, dtype=np.int64)
        scores = np.full(n, np.inf)
        rest = _finite_block(dist)
        if len(rest):
            vals, vecs = np.linalg.eigh(centered_gram(dist[np.ix_(rest, rest)]))
            scores[rest] = vals[-1] * vecs[:, -1] ** 2
        order = np.argsort(scores, kind="stable")
        votes[order[: n - removed]] += 1
    best = int(votes.max())
    return np.flatnonzero(votes == best).tolist(), votes

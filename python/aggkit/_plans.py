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
from collections.abc import Sequence

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


#: Inputs whose distances overflow are scaled so that their largest value is about
#: ``2**SAFE_EXPONENT``: its square, times up to ``2**40`` coordinates, stays finite.
SAFE_EXPONENT = 480

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
    if not (top > 0.0 and math.isfinite(top)) or SCALE_RANGE[0] <= top <= SCALE_RANGE[1]:
        return dist, 0
    e = math.frexp(top)[1]
    if among is None:
        return np.ldexp(dist, -e), e
    # Rows and columns outside ``among`` carry weight 0: zero them rather than let them
    # overflow (0 * inf would be NaN in the weighted sums).
    out = np.zeros_like(dist)
    out[np.ix_(among, among)] = np.ldexp(sub, -e)
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
    dist, _ = well_scaled(dist)
    best_val, best = math.inf, None
    combos = itertools.combinations(range(n), k)
    while True:
        chunk = list(itertools.islice(combos, batch))
        if not chunk:
            break
        idx = np.array(chunk, dtype=np.intp)
        dd = dist[idx[:, :, None], idx[:, None, :]]  # each subset's own distances
        rm = dd.mean(axis=2, keepdims=True)
        s = -0.5 * (dd - rm - rm.transpose(0, 2, 1) + rm.mean(axis=1, keepdims=True))
        top = np.linalg.eigvalsh(s)[:, -1] / k
        # Strict improvement in enumeration order (byzfl); values within rounding of the best
        # count as equal, so the first of two equal subsets wins whatever the LAPACK rounding.
        for b in range(len(chunk)):
            if best is None or top[b] < best_val - 1e-12 * abs(best_val):
                best_val, best = float(top[b]), chunk[b]
    assert best is not None
    return list(best)


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
        if not total > n_total - 2 * f:
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


def clip_scales(norms: np.ndarray, c: float) -> np.ndarray:
    """``min(1, c / ||x_i||)`` per input; 1 for zero and non-finite norms (passed through)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(norms > c, c / norms, 1.0)
    out: np.ndarray = np.where(np.isfinite(norms), s, 1.0)
    return out


def arc_count(n: int, f: int) -> int:
    """How many inputs ARC clips: ``floor(2 f (n - f) / n)``, in integers."""
    return 2 * f * (n - f) // n


def arc_threshold(norms: np.ndarray, f: int) -> tuple[int, float]:
    """ARC's number of clipped inputs ``k`` and threshold (the largest unclipped norm)."""
    n = len(norms)
    k = arc_count(n, f)
    if k == 0:
        return 0, math.inf
    key = np.where(np.isnan(norms), np.inf, norms)
    order = np.argsort(key, kind="stable")
    return k, float(key[order[n - k - 1]])

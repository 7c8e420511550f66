"""Rules that average a well-chosen subset of the inputs: MDA, SMEA, CAF and MoNNA.

Each picks (or weights) inputs from their pairwise squared distances (aggkit's exact Rust
kernel), then averages them with aggkit's mean, so the torch versions route the gradient to the
chosen inputs. Non-finite inputs (``nonfinite="robust"``) are dropped first and count against
``f``; ``"raise"`` refuses them.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from aggkit import _core
from aggkit._validate import (
    _torch,
    check_choice,
    check_f,
    check_n,
    is_torch,
    nonfinite_error,
    nonfinite_rows,
    prepare,
)
from aggkit.errors import InvalidParameterError
from aggkit.registry import Rule, register

POLICIES_SUBSET = ("robust", "raise")


def check_max_subsets(v: Any, rule: str) -> int:
    """``max_subsets`` must be a positive int."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise InvalidParameterError(f"{rule}: max_subsets must be a positive int, got {v!r}")
    return int(v)


def finite_part(rows: Any, f: int, nonfinite: str, rule: str) -> tuple[list[int], int]:
    """The finite inputs and the ``f`` left for them; refuses non-finite inputs per policy."""
    bad = nonfinite_rows(rows)
    if bad and nonfinite == "raise":
        raise nonfinite_error(rule, bad, "nonfinite='raise' refuses NaN and infinite values")
    if len(bad) > f:
        raise nonfinite_error(rule, bad, f"more than f={f} inputs are non-finite")
    good = [i for i in range(len(rows)) if i not in set(bad)]
    return good, f - len(bad)


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
    return -0.5 * (dist - dw[:, None] - dw[None, :] + w @ dw)


def _subset_mean(p: Any, idx: list[int], weights: np.ndarray | None = None) -> np.ndarray:
    rows = [p.data[i] for i in idx]
    out, _ = _core.mean(rows, weights, "propagate")
    return p.finish(out)


# ---------------------------------------------------------------------------------------------
# MDA


def mda_indices(dist: np.ndarray, f: int, max_subsets: int) -> list[int]:
    """MDA's kept inputs from a squared-distance matrix (the Rust subset scan)."""
    return list(_core.mda_select(np.ascontiguousarray(dist, dtype=np.float64), f, max_subsets))


def mda(x: Any, *, f: int, max_subsets: int = 10**7, nonfinite: str = "robust") -> Any:
    r"""Minimum-diameter averaging: the mean of the ``n - f`` inputs of smallest diameter.

    Parameters
    ----------
    x : array_like, shape (n, \*shape), or sequence of n arrays of one shape
        The inputs (float16, float32 or float64).
    f : int
        Number of Byzantine inputs tolerated. Needs ``n >= 2f + 1``.
    max_subsets : int, default 10**7
        Refuse when :math:`\binom{n}{f}` exceeds it: the search is exponential in ``f``.
    nonfinite : {"robust", "raise"}, default "robust"
        ``"robust"`` leaves out inputs holding NaN or ±inf (at most ``f``).

    Returns
    -------
    numpy.ndarray

    Notes
    -----
    :math:`S^* = \arg\min_{|S| = n-f} \max_{i,j \in S} \|x_i - x_j\|`, output the mean of
    :math:`S^*`. aggkit enumerates the :math:`\binom{n}{f}` removed sets over the pairs sorted
    by distance (a subset's diameter is its first pair with both ends kept), in parallel;
    equal diameters go to the lexicographically smallest kept tuple, byzfl's order. Cost
    :math:`O(n^2 d)` for the distances plus :math:`O(\binom{n}{f} n^2)` worst case.

    References
    ----------
    E.-M. El Mhamdi, R. Guerraoui, A. Guirguis, L. N. Hoang, S. Rouault. Genuinely
    distributed Byzantine machine learning. PODC 2020, arXiv:1905.03853.

    Examples
    --------
    >>> import numpy as np, aggkit
    >>> aggkit.mda(np.array([[1.0], [2.0], [3.0], [10.0]]), f=1)
    array([2.])
    """
    f = check_f(f, "mda")
    max_subsets = check_max_subsets(max_subsets, "mda")
    check_choice(nonfinite, "nonfinite", POLICIES_SUBSET, "mda")
    if is_torch(x):
        return _torch().mda(x, f=f, max_subsets=max_subsets, nonfinite=nonfinite)
    p = prepare(x, "mda")
    check_n("mda", "n >= 2f + 1", p.n, f, 2 * f + 1)
    good, f2 = finite_part(p.data, f, nonfinite, "mda")
    sub = [p.data[i] for i in good]
    kept = mda_indices(_core.pairwise_sq_distances(sub), f2, max_subsets)
    return _subset_mean(p, [good[i] for i in kept])


@register
class MDA(Rule):
    """Rule object for :func:`aggkit.mda`."""

    name = "mda"
    params = ("f", "max_subsets", "nonfinite")

    def __init__(self, *, f: int, max_subsets: int = 10**7, nonfinite: str = "robust") -> None:
        self.f = check_f(f, "mda")
        self.max_subsets = check_max_subsets(max_subsets, "mda")
        self.nonfinite = check_choice(nonfinite, "nonfinite", POLICIES_SUBSET, "mda")
        self._freeze()

    def min_inputs(self) -> int:
        """``2f + 1``."""
        return 2 * self.f + 1

    def __call__(self, x: Any) -> Any:
        """Aggregate ``x``; see :func:`aggkit.mda`."""
        return mda(x, f=self.f, max_subsets=self.max_subsets, nonfinite=self.nonfinite)


# ---------------------------------------------------------------------------------------------
# SMEA


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


def smea(x: Any, *, f: int, max_subsets: int = 10**5, nonfinite: str = "robust") -> Any:
    r"""Smallest maximum eigenvalue averaging: the mean of the ``n - f`` inputs least spread out.

    Parameters
    ----------
    x : array_like, shape (n, \*shape), or sequence of n arrays of one shape
        The inputs (float16, float32 or float64).
    f : int
        Number of Byzantine inputs tolerated. Needs ``n >= 2f + 1``.
    max_subsets : int, default 10**5
        Refuse when :math:`\binom{n}{f}` exceeds it (one small eigenproblem per subset).
    nonfinite : {"robust", "raise"}, default "robust"

    Returns
    -------
    numpy.ndarray

    Notes
    -----
    Among all subsets :math:`S` of size :math:`n - f`, the one whose empirical covariance has
    the smallest largest eigenvalue; output its mean. aggkit computes each subset's top
    eigenvalue exactly (LAPACK on the subset's :math:`(n-f) \times (n-f)` centred Gram matrix,
    built once from the exact pairwise distances), where byzfl takes one power-iteration step
    from a random vector, so its choice is random. Ties (within rounding) go to the first subset
    in lexicographic order. Cost :math:`O(n^2 d + \binom{n}{f} (n-f)^3)`.

    References
    ----------
    Y. Allouah, S. Farhadkhani, R. Guerraoui, N. Gupta, R. Pinot, J. Stephan. Fixing by
    mixing: a recipe for optimal Byzantine ML under heterogeneity. AISTATS 2023.

    Examples
    --------
    >>> import numpy as np, aggkit
    >>> x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [50.0, 50.0]])
    >>> aggkit.smea(x, f=1).round(6)
    array([0.333333, 0.333333])
    """
    f = check_f(f, "smea")
    max_subsets = check_max_subsets(max_subsets, "smea")
    check_choice(nonfinite, "nonfinite", POLICIES_SUBSET, "smea")
    if is_torch(x):
        return _torch().smea(x, f=f, max_subsets=max_subsets, nonfinite=nonfinite)
    p = prepare(x, "smea")
    check_n("smea", "n >= 2f + 1", p.n, f, 2 * f + 1)
    good, f2 = finite_part(p.data, f, nonfinite, "smea")
    sub = [p.data[i] for i in good]
    kept = smea_indices(_core.pairwise_sq_distances(sub), f2, max_subsets)
    return _subset_mean(p, [good[i] for i in kept])


@register
class SMEA(Rule):
    """Rule object for :func:`aggkit.smea`."""

    name = "smea"
    params = ("f", "max_subsets", "nonfinite")

    def __init__(self, *, f: int, max_subsets: int = 10**5, nonfinite: str = "robust") -> None:
        self.f = check_f(f, "smea")
        self.max_subsets = check_max_subsets(max_subsets, "smea")
        self.nonfinite = check_choice(nonfinite, "nonfinite", POLICIES_SUBSET, "smea")
        self._freeze()

    def min_inputs(self) -> int:
        """``2f + 1``."""
        return 2 * self.f + 1

    def __call__(self, x: Any) -> Any:
        """Aggregate ``x``; see :func:`aggkit.smea`."""
        return smea(x, f=self.f, max_subsets=self.max_subsets, nonfinite=self.nonfinite)


# ---------------------------------------------------------------------------------------------
# CAF


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
        cm = centered_gram(dist, w)  # (x_i - mu) . (x_j - mu), mu = Σ w x
        sw = np.sqrt(w)
        vals, vecs = np.linalg.eigh(sw[:, None] * cm * sw[None, :])
        lam, u = vals[-1], vecs[:, -1]
        if lam < best_val:
            best_val, best_c = lam, c.copy()
        if not lam > 0:  # every weighted input is the weighted mean: nothing left to filter
            break
        tau = (cm @ (sw * u)) ** 2 / lam  # squared projections on the top eigenvector
        support = c > 0
        top = tau[support].max()
        if not (np.isfinite(top) and top > 0):  # spread below float range: nothing to filter
            break
        c = np.where(support, c * (1.0 - tau / top), 0.0)
    return best_c


def caf(x: Any, *, f: int, nonfinite: str = "robust") -> Any:
    r"""Covariance-bound agnostic filter: down-weight inputs along the top covariance direction.

    Parameters
    ----------
    x : array_like, shape (n, \*shape), or sequence of n arrays of one shape
        The inputs (float16, float32 or float64).
    f : int
        Number of Byzantine inputs tolerated. Needs ``n >= 2f + 1``.
    nonfinite : {"robust", "raise"}, default "robust"
        ``"robust"`` gives inputs holding NaN or ±inf weight 0 from the start (at most ``f``).

    Returns
    -------
    numpy.ndarray

    Notes
    -----
    Weights :math:`c_i = 1`; while :math:`\sum c > n - 2f`: the weighted mean :math:`\mu`, the
    top eigenpair :math:`(\lambda, v)` of the weighted covariance, :math:`\tau_i = ((x_i -
    \mu)^\top v)^2`, :math:`c_i \leftarrow c_i (1 - \tau_i / \max_{c_j > 0} \tau_j)`; return
    the :math:`\mu` of smallest :math:`\lambda` seen. aggkit solves each eigenproblem exactly in
    the :math:`n \times n` space of the inputs (from the exact pairwise distances), so the
    result is deterministic; byzfl takes one power-iteration step from a random vector (random
    results) and takes :math:`\max \tau` over all inputs, dropped ones included, which can
    stall the filter. Cost :math:`O(n^2 d + n^4)`.

    References
    ----------
    Y. Allouah, R. Guerraoui, J. Stephan. Towards trustworthy federated learning with untrusted
    participants. ICML 2025, arXiv:2505.01874.

    Examples
    --------
    >>> import numpy as np, aggkit
    >>> x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [40.0, -40.0]])
    >>> np.abs(aggkit.caf(x, f=1)).max() < 1.0
    np.True_
    """
    f = check_f(f, "caf")
    check_choice(nonfinite, "nonfinite", POLICIES_SUBSET, "caf")
    if is_torch(x):
        return _torch().caf(x, f=f, nonfinite=nonfinite)
    p = prepare(x, "caf")
    check_n("caf", "n >= 2f + 1", p.n, f, 2 * f + 1)
    good, _ = finite_part(p.data, f, nonfinite, "caf")
    sub = [p.data[i] for i in good]
    c = caf_weights(_core.pairwise_sq_distances(sub), p.n, f)
    keep = [k for k in range(len(good)) if c[k] > 0]
    return _subset_mean(p, [good[k] for k in keep], np.array([c[k] for k in keep]))


@register
class CAF(Rule):
    """Rule object for :func:`aggkit.caf`."""

    name = "caf"
    params = ("f", "nonfinite")

    def __init__(self, *, f: int, nonfinite: str = "robust") -> None:
        self.f = check_f(f, "caf")
        self.nonfinite = check_choice(nonfinite, "nonfinite", POLICIES_SUBSET, "caf")
        self._freeze()

    def min_inputs(self) -> int:
        """``2f + 1``."""
        return 2 * self.f + 1

    def __call__(self, x: Any) -> Any:
        """Aggregate ``x``; see :func:`aggkit.caf`."""
        return caf(x, f=self.f, nonfinite=self.nonfinite)


# ---------------------------------------------------------------------------------------------
# MoNNA


def monna_indices(dists: np.ndarray, f: int) -> list[int]:
    """The ``n - f`` inputs nearest to the trusted one (itself included), ties by index."""
    d = np.where(np.isfinite(dists), dists, np.inf)
    return sorted(np.argsort(d, kind="stable")[: len(d) - f].tolist())


def monna(x: Any, *, f: int, idx: int = 0, nonfinite: str = "robust") -> Any:
    r"""MoNNA: the mean of the ``n - f`` inputs nearest to a trusted input ``idx``.

    Parameters
    ----------
    x : array_like, shape (n, \*shape), or sequence of n arrays of one shape
        The inputs (float16, float32 or float64).
    f : int
        Number of Byzantine inputs tolerated. Needs ``n >= 2f + 1`` (byzfl: ``2f < n``).
    idx : int, default 0
        The trusted input (e.g. the server's own gradient); it must be finite.
    nonfinite : {"robust", "raise"}, default "robust"
        ``"robust"``: inputs holding NaN or ±inf are the farthest (left out, at most ``f``).

    Returns
    -------
    numpy.ndarray

    Notes
    -----
    Euclidean distances to :math:`x_{idx}` (float64, exact differences), the :math:`n - f`
    nearest kept with ties to the lower index (byzfl's ``argpartition`` leaves ties
    unspecified), averaged. Cost :math:`O(n d)`.

    References
    ----------
    S. Farhadkhani, R. Guerraoui, N. Gupta, L. N. Hoang, R. Pinot, J. Stephan. Robust
    collaborative learning with linear gradient overhead. ICML 2023, arXiv:2209.10931.

    Examples
    --------
    >>> import numpy as np, aggkit
    >>> aggkit.monna(np.array([[1.0], [2.0], [3.0], [10.0]]), f=1, idx=1)
    array([2.])
    """
    f = check_f(f, "monna")
    idx = check_index(idx)
    check_choice(nonfinite, "nonfinite", POLICIES_SUBSET, "monna")
    if is_torch(x):
        return _torch().monna(x, f=f, idx=idx, nonfinite=nonfinite)
    p = prepare(x, "monna")
    check_n("monna", "n >= 2f + 1", p.n, f, 2 * f + 1)
    if idx >= p.n:
        raise InvalidParameterError(f"monna: idx must be < n, got idx={idx}, n={p.n}")
    finite_part(p.data, f, nonfinite, "monna")
    trusted = np.asarray(p.data[idx], dtype=np.float64)
    if not np.isfinite(trusted).all():
        raise nonfinite_error("monna", [idx], "the trusted input must be finite")
    kept = monna_indices(_core.dists_to(p.data, np.ascontiguousarray(trusted)), f)
    return _subset_mean(p, kept)


def check_index(idx: Any) -> int:
    """``idx`` must be a non-negative int."""
    if isinstance(idx, bool) or not isinstance(idx, (int, np.integer)) or idx < 0:
        raise InvalidParameterError(f"monna: idx must be a non-negative int, got {idx!r}")
    return int(idx)


@register
class MoNNA(Rule):
    """Rule object for :func:`aggkit.monna`."""

    name = "monna"
    params = ("f", "idx", "nonfinite")

    def __init__(self, *, f: int, idx: int = 0, nonfinite: str = "robust") -> None:
        self.f = check_f(f, "monna")
        self.idx = check_index(idx)
        self.nonfinite = check_choice(nonfinite, "nonfinite", POLICIES_SUBSET, "monna")
        self._freeze()

    def min_inputs(self) -> int:
        """``2f + 1`` (and more than ``idx``)."""
        return max(2 * self.f + 1, self.idx + 1)

    def __call__(self, x: Any) -> Any:
        """Aggregate ``x``; see :func:`aggkit.monna`."""
        return monna(x, f=self.f, idx=self.idx, nonfinite=self.nonfinite)

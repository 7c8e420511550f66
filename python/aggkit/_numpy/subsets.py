"""MDA, SMEA, CAF and MoNNA on numpy arrays (and other host arrays).

Rust computes the distances and averages the chosen inputs; the choice is the shared plan
(``aggkit._plans``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from aggkit import _core, _plans
from aggkit._dispatch import implements
from aggkit._numpy._input import Prepared, nonfinite_rows, prepare
from aggkit.errors import nonfinite_error
from aggkit.rules.subsets import CAF, MDA, SMEA, MoNNA


def _finite(rule: MDA | SMEA | CAF | MoNNA, x: Any) -> tuple[Prepared, list[int], int]:
    p = prepare(x, rule.name)
    rule.check_input(p.n, p.d)
    good, f_left = _plans.finite_part(nonfinite_rows(p.data), p.n, rule.f, rule.nonfinite, rule.name)
    return p, good, f_left


def _subset_mean(p: Prepared, idx: list[int], weights: np.ndarray | None = None) -> Any:
    out, _ = _core.mean(p.take(idx), weights, "propagate")
    return p.finish(out)


def _distances(p: Prepared, idx: list[int]) -> np.ndarray:
    """Squared distances of the finite inputs ``idx`` (:func:`_plans.finite_distances`)."""
    return _plans.finite_distances(_core.pairwise_sq_distances(p.take(idx)))


@implements("mda", "numpy")
def mda(rule: MDA, x: Any) -> tuple[Any, None]:
    """:func:`aggkit.mda` on host arrays."""
    p, good, f_left = _finite(rule, x)
    kept = _plans.mda_indices(_distances(p, good), f_left, rule.max_subsets)
    return _subset_mean(p, [good[i] for i in kept]), None


@implements("smea", "numpy")
def smea(rule: SMEA, x: Any) -> tuple[Any, None]:
    """:func:`aggkit.smea` on host arrays."""
    p, good, f_left = _finite(rule, x)
    kept = _plans.smea_indices(_distances(p, good), f_left, rule.max_subsets)
    return _subset_mean(p, [good[i] for i in kept]), None


@implements("caf", "numpy")
def caf(rule: CAF, x: Any) -> tuple[Any, None]:
    """:func:`aggkit.caf` on host arrays."""
    p, good, _ = _finite(rule, x)
    c = _plans.caf_weights(_distances(p, good), p.n, rule.f)
    keep = [k for k in range(len(good)) if c[k] > 0]
    return _subset_mean(p, [good[k] for k in keep], np.array([c[k] for k in keep])), None


@implements("monna", "numpy")
def monna(rule: MoNNA, x: Any) -> tuple[Any, None]:
    """:func:`aggkit.monna` on host arrays."""
    p, _, _ = _finite(rule, x)
    trusted = np.asarray(p.data[rule.idx], dtype=np.float64)
    if not np.isfinite(trusted).all():
        raise nonfinite_error("monna", [rule.idx], "the trusted input must be finite")
    kept = _plans.monna_indices(_core.dists_to(p.data, np.ascontiguousarray(trusted)), rule.f)
    return _subset_mean(p, kept), None

"""Bulyan on numpy arrays (and other host arrays): Rust distances, selection and stage 2."""

from __future__ import annotations

from typing import Any

import numpy as np

from aggkit import _core, _plans
from aggkit._dispatch import implements
from aggkit._numpy._input import nonfinite_rows, prepare
from aggkit.registry import Selection
from aggkit.rules.bulyan import Bulyan


@implements("bulyan", "numpy")
def bulyan(rule: Bulyan, x: Any) -> tuple[Any, Selection]:
    """:func:`aggkit.bulyan` on host arrays."""
    p = prepare(x, "bulyan")
    rule.check_input(p.n, p.d)
    _plans.finite_part(nonfinite_rows(p.data), p.n, rule.f, rule.nonfinite, "bulyan")
    dist = _core.pairwise_sq_distances(p.data)
    sel, scores, keep = _plans.bulyan_plan(dist, rule.f, rule.variant, rule.clamp)
    rows = p.take(sel)
    if rule.variant == "paper":
        out, _, _ = _core.meamed(rows, 0, keep, "robust", False)
    else:
        out, _, _ = _core.trimmed_mean(rows, rule.f, "robust", False)
    return p.finish(out), Selection(np.asarray(sel, dtype=np.int64), scores)

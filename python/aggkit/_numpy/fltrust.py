"""FLTrust on numpy arrays (and other host arrays): exact cosines, the Rust weighted sum."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from aggkit import _core, _plans
from aggkit._dispatch import implements
from aggkit._numpy._input import nonfinite_rows, prepare
from aggkit.errors import nonfinite_error
from aggkit.rules.fltrust import FLTrust, parse_reference, reference_norm

#: Where the weighted mean times its total keeps every bit: weights' totals in this range.
_SAFE = (2.0**-60, 2.0**60)


@implements("fltrust", "numpy")
def fltrust(rule: FLTrust, x: Any, *, reference: Any = None) -> tuple[Any, None]:
    """:func:`aggkit.fltrust` on host arrays."""
    p = prepare(x, "fltrust")
    ref = parse_reference(reference, p.shape, "fltrust")
    bad = nonfinite_rows(p.data)
    if bad and rule.nonfinite == "raise":
        raise nonfinite_error("fltrust", bad, "nonfinite='raise' refuses NaN and infinite values")
    if bad and rule.nonfinite == "propagate":
        return p.finish(np.full(p.d, np.nan, dtype=np.float64)), None
    drop = set(bad)
    keep = [i for i in range(p.n) if i not in drop]
    ref_norm = reference_norm(ref)
    ref_s, _ = _plans.scaled_row(ref)
    ref_s_norm = math.sqrt(float(np.sum(ref_s * ref_s)))
    # Each row scaled by a power of two (exact): its norm and dot product with the scaled
    # reference are accurate whatever the magnitudes; numpy's pairwise sums, in a fixed order.
    scaled = [_plans.scaled_row(p.data[i]) for i in keep]
    dots = np.array([float(np.sum(r * ref_s)) for r, _ in scaled])
    norms = np.array([math.sqrt(float(np.sum(r * r))) for r, _ in scaled])
    exps = np.array([e for _, e in scaled], dtype=np.int64)
    trust, scales = _plans.fltrust_scales(dots, norms, exps, ref_s_norm, ref_norm)
    used = [k for k in range(len(keep)) if scales[k] > 0]
    if not used:
        return p.finish(np.zeros(p.d, dtype=np.float64)), None
    w = scales[used]
    total = float(w.sum())
    if np.isfinite(w).all() and _SAFE[0] <= total <= _SAFE[1]:
        mean, _ = _core.mean(p.take([keep[k] for k in used]), w, "propagate")
        return p.finish(np.asarray(mean, dtype=np.float64) * total), None
    # Factors far from 1 (rows of tiny or huge values): sum the unit rows in float64, each
    # times its share of the reference's norm, TS_k ||g0|| / Σ TS.
    share = trust * (ref_norm / float(trust.sum()))
    out = np.zeros(p.d, dtype=np.float64)
    for k in used:
        r, _ = scaled[k]
        out += (share[k] / norms[k]) * r
    return p.finish(out), None

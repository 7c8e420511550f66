"""FLTrust on numpy arrays (and other host arrays): exact cosines, the Rust weighted sum."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from aggkit import _core, _plans
from aggkit._dispatch import implements
from aggkit._numpy._input import prepare
from aggkit.errors import nonfinite_error
from aggkit.rules.fltrust import FLTrust, parse_reference, reference_norm

#: Where the weighted mean times its total keeps every bit: weights' totals in this range.
_SAFE = (2.0**-60, 2.0**60)


@implements("fltrust", "numpy")
def fltrust(rule: FLTrust, x: Any, *, reference: Any = None) -> tuple[Any, None]:
    """:func:`aggkit.fltrust` on host arrays."""
    p = prepare(x, "fltrust")
    ref = parse_reference(reference, p.shape, "fltrust")
    ref_norm = reference_norm(ref)
    ref_s, _ = _plans.scaled_row(ref)
    ref_s_norm = math.sqrt(float(np.sum(ref_s * ref_s)))
    # Each row scaled by a power of two (exact), in one Rust pass: its norm and dot product with
    # the scaled reference are accurate whatever the magnitudes (8 float64 lanes, fixed order);
    # a row holding NaN or ±inf comes back NaN.
    all_dots, all_norms, all_exps = _core.scaled_dots(p.data, ref_s)
    bad = np.flatnonzero(np.isnan(all_norms)).tolist()
    if bad and rule.nonfinite == "raise":
        raise nonfinite_error("fltrust", bad, "nonfinite='raise' refuses NaN and infinite values")
    if bad and rule.nonfinite == "propagate":
        return p.finish(np.full(p.d, np.nan, dtype=np.float64)), None
    drop = set(bad)
    keep = [i for i in range(p.n) if i not in drop]
    if not keep:  # every input non-finite: no trust anywhere
        return p.finish(np.zeros(p.d, dtype=np.float64)), None
    dots, norms = all_dots[keep], all_norms[keep]
    exps = np.array(all_exps, dtype=np.int64)[keep]
    trust, scales = _plans.fltrust_scales(dots, norms, exps, ref_s_norm, ref_norm)
    used = [k for k in range(len(keep)) if scales[k] > 0]
    if not used:
        return p.finish(np.zeros(p.d, dtype=np.float64)), None
    w = scales[used]
    with np.errstate(over="ignore"):  # factors near float64's largest: the fallback below
        total = float(w.sum())
    if np.isfinite(w).all() and _SAFE[0] <= total <= _SAFE[1]:
        mean, _ = _core.mean(p.take([keep[k] for k in used]), w, "propagate")
        with np.errstate(over="ignore"):  # a reference beyond the input dtype's range: inf values
            return p.finish(np.asarray(mean, dtype=np.float64) * total), None
    # Factors far from 1 (rows of tiny or huge values): sum the unit rows in float64, each
    # times its share of the reference's norm, TS_k ||g0|| / Σ TS.
    share = trust * (ref_norm / float(trust.sum()))
    out = np.zeros(p.d, dtype=np.float64)
    for k in used:
        r, _ = _plans.scaled_row(p.data[keep[k]])
        out += share[k] * (r / norms[k])  # a unit row times at most ||g0||: no overflow
    with np.errstate(over="ignore"):  # a reference beyond the input dtype's range: inf values
        return p.finish(out), None

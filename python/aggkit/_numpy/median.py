"""The median on numpy arrays (and other host arrays): the Rust column kernels."""

from __future__ import annotations

from typing import Any

from aggkit import _core, _params
from aggkit._dispatch import implements
from aggkit._numpy._input import prepare
from aggkit.rules.median import Median


@implements("median", "numpy")
def median(rule: Median, x: Any, *, weights: Any = None) -> tuple[Any, None]:
    """:func:`aggkit.median` on host arrays."""
    p = prepare(x, "median", half=True)
    if weights is None:
        out, _, _ = _core.median(p.core, rule.even, rule.nonfinite, False)
    else:
        w = _params.weights(weights, p.n, "median")
        out, _, _ = _core.weighted_median(p.core, w, rule.even, rule.nonfinite, False)
    return p.finish(out), None

"""The geometric median on numpy arrays (and other host arrays): Weiszfeld in Rust."""

from __future__ import annotations

from typing import Any

from aggkit import _core, _params
from aggkit._dispatch import implements
from aggkit._numpy._input import prepare
from aggkit.rules.geometric_median import GeometricMedian, GeometricMedianInfo


@implements("geometric_median", "numpy")
def geometric_median(
    rule: GeometricMedian, x: Any, *, weights: Any = None
) -> tuple[Any, GeometricMedianInfo]:
    """:func:`aggkit.geometric_median` on host arrays."""
    p = prepare(x, "geometric_median")
    rule.check_input(p.n, p.d)
    w = None if weights is None else _params.weights(weights, p.n, "geometric_median")
    out, it, conv, obj, wts = _core.geometric_median(
        p.data, w, rule.nu, rule.maxiter, rule.ftol, rule.init, rule.nonfinite
    )
    return p.finish(out), GeometricMedianInfo(it, conv, obj, wts)

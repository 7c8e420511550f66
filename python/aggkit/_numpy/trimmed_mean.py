"""The trimmed mean on numpy arrays (and other host arrays): the Rust column kernels."""

from __future__ import annotations

from typing import Any

from aggkit import _core, _params
from aggkit._dispatch import implements
from aggkit._numpy._input import prepare
from aggkit.rules.trimmed_mean import TrimmedMean


@implements("trimmed_mean", "numpy")
def trimmed_mean(rule: TrimmedMean, x: Any, *, weights: Any = None) -> tuple[Any, None]:
    """:func:`aggkit.trimmed_mean` on host arrays."""
    p = prepare(x, "trimmed_mean", half=True)
    rule.check_n(p.n)
    if weights is None:
        out, _, _ = _core.trimmed_mean(p.core, rule.f, rule.nonfinite, False)
    else:
        w = _params.weights(weights, p.n, "trimmed_mean")
        out, _, _ = _core.weighted_trimmed_mean(p.core, w, rule.f, rule.nonfinite, False)
    return p.finish(out), None

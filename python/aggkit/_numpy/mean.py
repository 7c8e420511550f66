"""The mean on numpy arrays (and other host arrays): one pass of the Rust kernel."""

from __future__ import annotations

from typing import Any

from aggkit import _core, _params
from aggkit._dispatch import implements
from aggkit._numpy._input import prepare
from aggkit.rules.mean import Mean


@implements("mean", "numpy")
def mean(rule: Mean, x: Any, *, weights: Any = None) -> tuple[Any, None]:
    """:func:`aggkit.mean` on host arrays."""
    p = prepare(x, "mean", half=True)
    w = None if weights is None else _params.weights(weights, p.n, "mean")
    out, _dropped = _core.mean(p.core, w, rule.nonfinite)
    return p.finish(out), None

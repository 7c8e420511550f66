"""Centered clipping on numpy arrays (and other host arrays): the Rust kernel."""

from __future__ import annotations

from typing import Any

from aggkit import _core
from aggkit._dispatch import implements
from aggkit._numpy._input import prepare
from aggkit.rules.centered_clipping import CenteredClipping, parse_center


@implements("centered_clipping", "numpy")
def centered_clipping(rule: CenteredClipping, x: Any, *, center: Any = None) -> tuple[Any, None]:
    """:func:`aggkit.centered_clipping` on host arrays."""
    p = prepare(x, "centered_clipping")
    rule.check_input(p.n, p.d)
    c = None
    if center is not None:
        c = parse_center(center)
    out, _, _ = _core.centered_clipping(p.data, c, rule.tau, rule.iters, rule.nonfinite)
    return p.finish(out), None

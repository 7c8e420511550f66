"""Meamed on numpy arrays (and other host arrays): the Rust column kernel."""

from __future__ import annotations

from typing import Any

from aggkit import _core
from aggkit._dispatch import implements
from aggkit._numpy._input import prepare
from aggkit.rules.meamed import Meamed


@implements("meamed", "numpy")
def meamed(rule: Meamed, x: Any) -> tuple[Any, None]:
    """:func:`aggkit.meamed` on host arrays."""
    p = prepare(x, "meamed")
    rule.check_n(p.n)
    out, _, _ = _core.meamed(p.data, rule.f, None, rule.nonfinite, False)
    return p.finish(out), None

"""Krum and Multi-Krum on numpy arrays (and other host arrays): the Rust distance kernel."""

from __future__ import annotations

from typing import Any

import numpy as np

from aggkit import _core, _params
from aggkit._dispatch import implements
from aggkit._numpy._input import prepare
from aggkit.errors import InvalidParameterError
from aggkit.registry import Selection
from aggkit.rules.krum import Krum, MultiKrum


def _selection(idx: list[int], scores: np.ndarray) -> Selection:
    return Selection(np.asarray(idx, dtype=np.int64), scores)


@implements("krum", "numpy")
def krum(rule: Krum, x: Any) -> tuple[Any, Selection]:
    """:func:`aggkit.krum` on host arrays."""
    p = prepare(x, "krum", half=True)
    rule.check_n(p.n)
    out, idx, scores = _core.krum(p.core, rule.f, rule.nonfinite)
    return p.finish(out), _selection(idx, scores)


@implements("multi_krum", "numpy")
def multi_krum(rule: MultiKrum, x: Any, *, weights: Any = None) -> tuple[Any, Selection]:
    """:func:`aggkit.multi_krum` on host arrays."""
    p = prepare(x, "multi_krum", half=True)
    rule.check_n(p.n)
    m = rule.count(p.n)
    w = None if weights is None else _params.weights(weights, p.n, "multi_krum")
    out, idx, scores = _core.multi_krum(p.core, rule.f, m, rule.nonfinite)
    if w is not None:
        # The weighted average of the selected rows, best score first (as without weights).
        if not (w[idx] > 0).any():
            raise InvalidParameterError(f"multi_krum: the selected inputs {list(idx)} all have weight 0")
        out, _ = _core.mean(p.take(idx), w[idx], "propagate")
    return p.finish(out), _selection(idx, scores)

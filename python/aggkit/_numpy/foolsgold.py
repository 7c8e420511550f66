"""FoolsGold on numpy arrays (and other host arrays): Rust norms, distances and weighted mean."""

from __future__ import annotations

from typing import Any

import numpy as np

from aggkit import _core, _plans
from aggkit._dispatch import implements
from aggkit._numpy._input import Prepared, nonfinite_rows, prepare
from aggkit.errors import InvalidParameterError, ShapeError, nonfinite_error
from aggkit.rules.foolsgold import FoolsGold, FoolsGoldInfo, history_rows


def parse_history(history: Any, n: int, d: int) -> list[np.ndarray | None]:
    """The clients' histories as contiguous float64 rows of ``d`` values (``None``: none yet)."""
    if history is None:
        return [None] * n
    out: list[np.ndarray | None] = []
    for i, h in enumerate(history_rows(history, n)):
        if h is None:
            out.append(None)
            continue
        try:
            v = np.asarray(h, dtype=np.float64)
        except (TypeError, ValueError, RuntimeError):
            raise InvalidParameterError(
                f"foolsgold: history rows must be arrays of numbers, got {type(h).__name__}"
            ) from None
        if v.size != d:
            raise ShapeError(f"foolsgold: history row {i} has {v.size} values, the inputs {d}")
        out.append(np.ascontiguousarray(v.reshape(-1)))
    return out


def weighted_output(p: Prepared, w: np.ndarray) -> Any:
    """``Σ w_i x_i / Σ w_i`` over the inputs of positive weight; zero when there are none."""
    used = np.flatnonzero(w > 0).tolist()
    if not used:
        return p.finish(np.zeros(p.d, dtype=np.float64))
    out, _ = _core.mean(p.take(used), w[used], "propagate")
    return p.finish(out)


@implements("foolsgold", "numpy")
def foolsgold(rule: FoolsGold, x: Any, *, history: Any = None) -> tuple[Any, FoolsGoldInfo]:
    """:func:`aggkit.foolsgold` on host arrays."""
    p = prepare(x, "foolsgold")
    history_list = parse_history(history, p.n, p.d)
    bad = nonfinite_rows(p.data)
    if bad and rule.nonfinite == "raise":
        raise nonfinite_error("foolsgold", bad, "nonfinite='raise' refuses NaN and infinite values")
    active = np.ones(p.n, dtype=bool)
    active[bad] = False
    scales = np.ones(p.n)
    if rule.clip is not None:
        m, e = _plans.wide_norms(_core.row_norms(p.data), lambda i: p.data[i])
        scales = _plans.clip_scales(m, e, (rule.clip, 0))
    scales[bad] = 0.0
    h, top = _core.foolsgold_history(p.data, scales.tolist(), active.tolist(), history_list)
    w, shares = _plans.foolsgold_from_history(h, top, rule.kappa, active)
    if rule.clip is None:
        return weighted_output(p, shares), FoolsGoldInfo(w, h)
    # clipped updates in the output too: weights w s / Σ w s, rescaled by Σ w s / Σ w
    w_out = shares
    ws = w_out * scales
    used = np.flatnonzero(ws > 0).tolist()
    if not used:
        return p.finish(np.zeros(p.d, dtype=np.float64)), FoolsGoldInfo(w, h)
    out, _ = _core.mean(p.take(used), ws[used], "propagate")
    factor = float(ws[used].sum()) / float(w_out[used].sum())
    return p.finish(out * np.asarray(factor, dtype=out.dtype)), FoolsGoldInfo(w, h)

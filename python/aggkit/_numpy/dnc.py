"""DnC on numpy arrays (and other host arrays): Rust distances per subsample, the Rust mean."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from aggkit import _core, _plans
from aggkit._dispatch import implements
from aggkit._numpy._input import nonfinite_rows, prepare
from aggkit.errors import too_few_inputs_error
from aggkit.registry import Selection
from aggkit.rules.dnc import DnC


@implements("dnc", "numpy")
def dnc(rule: DnC, x: Any) -> tuple[Any, Selection]:
    """:func:`aggkit.dnc` on host arrays."""
    p = prepare(x, "dnc")
    rule.check_input(p.n, p.d)
    keep, f = _plans.finite_part(nonfinite_rows(p.data), p.n, rule.f, rule.nonfinite, "dnc")
    if len(keep) <= rule.removed(f):
        raise too_few_inputs_error(
            "dnc", f"more finite inputs than floor(c f) = {rule.removed(f)}", p.n, rule.f
        )
    rows = [p.data[i] for i in keep]
    whole: list[np.ndarray] = []

    def distances() -> Iterator[np.ndarray]:
        for cols in rule.iter_subsets(p.d):
            if cols is None:  # every coordinate: the same matrix each iteration
                if not whole:
                    whole.append(_core.pairwise_sq_distances(p.take(keep)))
                yield whole[0]
            else:
                yield _core.pairwise_sq_distances(np.stack([r[cols] for r in rows]))

    kept, votes = _plans.dnc_keep(distances(), rule.removed(f))
    chosen = [keep[k] for k in kept]
    out, _ = _core.mean(p.take(chosen), None, "propagate")
    scores = np.full(p.n, np.inf)
    scores[keep] = rule.niters - votes
    return p.finish(out), Selection(np.asarray(chosen, dtype=np.int64), scores)

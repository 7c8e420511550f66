"""DETOX on numpy arrays (and other host arrays): the Rust vote, stage 2 on the winners."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from aggkit import _core
from aggkit._dispatch import implements
from aggkit._numpy._input import Prepared, prepare
from aggkit.rules.detox import DETOX, DetoxInfo, run


class _Host:
    """The DETOX backend for host arrays: rows are the prepared flat views."""

    def __init__(self, x: Any) -> None:
        self.p: Prepared = prepare(x, "detox")

    def rows(self) -> tuple[Sequence[Any], int]:
        d = int(np.prod(self.p.shape))
        return self.p.rows(), d

    def vote(
        self, groups: np.ndarray, r: int, segments: list[int], mode: str, atol: float, rtol: float
    ) -> tuple[np.ndarray, np.ndarray]:
        return _core.detox_vote(self.p.data, groups, r, segments, mode, atol, rtol)

    def concat(self, pieces: list[Any]) -> Any:
        return np.concatenate(pieces)

    def finish(self, out: Any) -> Any:
        return self.p.finish(np.asarray(out))


@implements("detox", "numpy")
def detox(rule: DETOX, x: Any, *, groups: Any = "contiguous", rng: Any = None) -> tuple[Any, DetoxInfo]:
    """:func:`aggkit.detox` on host arrays."""
    return run(rule, _Host(x), groups=groups, rng=rng)

"""Decisions the FL-framework integrations share (``aggkit.flower``, ``aggkit.nvflare``).

Each integration reads its framework's replies its own way; what they decide alike lives here,
so that a Flower server and an NVFlare server weight and merge a round in the same way.
"""

from __future__ import annotations

import numpy as np

from aggkit.registry import Rule

#: The rules weighted by client example counts by default: those Flower's and NVFlare's own
#: strategies weight (the mean, Multi-Krum) and the geometric median (RFA's weights). Order
#: statistics stay unweighted (Flower's FedMedian, FedTrimmedAvg): a Byzantine client can
#: report any count.
WEIGHTED_BY_DEFAULT = frozenset({"mean", "multi_krum", "geometric_median"})


def uses_weights(rule: Rule, weighted: bool | None) -> bool:
    """Whether a round passes the clients' counts to ``rule`` (``weighted=None``: the default)."""
    use = rule.name in WEIGHTED_BY_DEFAULT if weighted is None else weighted
    return use and rule.supports_weights


def lower_median(layers: list[np.ndarray]) -> np.ndarray:
    """Element-wise lower median of non-float arrays (counters, masks): one of the values."""
    stacked = np.stack(layers)
    k = (len(layers) - 1) // 2
    return np.asarray(np.partition(stacked, k, axis=0)[k])

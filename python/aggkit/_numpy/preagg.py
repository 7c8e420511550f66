"""The pre-aggregators on numpy arrays (and other host arrays): Rust passes over the rows."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from aggkit import _core, _plans
from aggkit._dispatch import implements
from aggkit._numpy._input import Prepared, prepare
from aggkit.rules.preagg import ARC, NNM, Bucketing, Clipping, Perturb


def _group_means(p: Prepared, groups: list[list[int]]) -> Any:
    offsets = [0]
    for g in groups:
        offsets.append(offsets[-1] + len(g))
    out = _core.group_means(p.data, offsets, [i for g in groups for i in g])
    return p.finish_rows(out)


def _scaled(p: Prepared, scales: np.ndarray) -> Any:
    # One parallel pass (Rust): read, scale in float64, round once, write.
    return p.finish_rows(_core.scale_rows(p.data, [float(v) for v in scales]))


def _norms(p: Prepared) -> tuple[np.ndarray, np.ndarray]:
    return _plans.wide_norms(_core.row_norms(p.data), lambda i: np.asarray(p.data[i]))


@implements("nnm", "numpy")
def nnm(pre: NNM, x: Any) -> tuple[Any, None]:
    """:class:`aggkit.NNM` on host arrays."""
    p = prepare(x, "nnm")
    pre.check_n(p.n)
    nb = _plans.nnm_neighbours(_core.pairwise_sq_distances(p.data), pre.f)
    return _group_means(p, nb.tolist()), None


@implements("bucketing", "numpy")
def bucketing(pre: Bucketing, x: Any) -> tuple[Any, None]:
    """:class:`aggkit.Bucketing` on host arrays."""
    p = prepare(x, "bucketing")
    return _group_means(p, pre.buckets(p.n)), None


@implements("clipping", "numpy")
def clipping(pre: Clipping, x: Any) -> tuple[Any, None]:
    """:class:`aggkit.Clipping` on host arrays."""
    p = prepare(x, "clipping")
    m, e = _norms(p)
    return _scaled(p, _plans.clip_scales(m, e, (pre.c, 0))), None


@implements("arc", "numpy")
def arc(pre: ARC, x: Any) -> tuple[Any, None]:
    """:class:`aggkit.ARC` on host arrays."""
    p = prepare(x, "arc")
    pre.check_n(p.n)
    m, e = _norms(p)
    t = _plans.arc_threshold(m, e, pre.f)
    tau = (math.inf, 0) if t is None else (float(m[t]), int(e[t]))
    return _scaled(p, _plans.clip_scales(m, e, tau)), None


@implements("perturb", "numpy")
def perturb(pre: Perturb, x: Any) -> tuple[Any, None]:
    """:class:`aggkit.Perturb` on host arrays."""
    p = prepare(x, "perturb")
    xs = p.stacked()
    xs += pre.draw(p.n, xs.shape[1]).astype(xs.dtype)
    return p.finish_rows(xs), None

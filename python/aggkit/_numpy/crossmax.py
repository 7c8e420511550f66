"""CrossMax on numpy arrays (and other host arrays): one pass of the Rust kernel."""

from __future__ import annotations

from typing import Any

import numpy as np

from aggkit import _core
from aggkit._dispatch import implements
from aggkit._numpy._input import _mirror, as_array, c_array, compute_dtype
from aggkit.rules.crossmax import CrossMax, normalize_dims


@implements("crossmax", "numpy")
def crossmax(spec: CrossMax, z: Any) -> tuple[Any, None]:
    """:func:`aggkit.crossmax` on host arrays."""
    a = as_array(z, "crossmax: z")
    dt = compute_dtype(a.dtype, "crossmax: z")
    pd, cd = normalize_dims(a.ndim, spec.predictor_dim, spec.class_dim)
    moved = np.moveaxis(a, (pd, cd), (-2, -1))
    n, c = moved.shape[-2], moved.shape[-1]
    batch = moved.shape[:-2]
    spec.check_predictors(n)
    flat = c_array(moved.reshape(-1, c) if moved.size else moved.reshape(0, c), dt)
    if flat.shape[0] == 0:
        out = np.zeros((*batch, c), dtype=dt)
    else:
        out = _core.crossmax(flat, n, spec.rank, spec.reducer, spec.even, spec.nonfinite, False)[0]
        out = out.reshape(*batch, c)
    if out.dtype != a.dtype:
        out = out.astype(a.dtype)
    wrap = _mirror(z)
    return (out if wrap is None else wrap(out)), None

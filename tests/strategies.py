"""hypothesis strategies for ``(n, d)`` inputs."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

DTYPES = st.sampled_from([np.float32, np.float64])


def finite_elements(dtype, bound: float = 1e6):
    return st.floats(
        -bound,
        bound,
        width=32 if dtype == np.float32 else 64,
        allow_nan=False,
        allow_infinity=False,
        allow_subnormal=False,
    )


# Small integers and signed zeros: many exact ties, the case the (value, row) rule is for.
TIES = st.sampled_from([-2.0, -1.0, -0.0, 0.0, 1.0, 2.0, 3.0])


@st.composite
def matrices(draw, min_n=1, max_n=12, max_d=6, dtype=None, ties=None):
    dt = draw(DTYPES) if dtype is None else dtype
    n = draw(st.integers(min_n, max_n))
    d = draw(st.integers(1, max_d))
    use_ties = draw(st.booleans()) if ties is None else ties
    elements = TIES if use_ties else finite_elements(dt)
    return draw(hnp.arrays(dt, (n, d), elements=elements))


FAR = ("huge", "max", "nan", "inf", "-inf", "mixed")  # junk far from every honest input
# plus a scaled sign flip of an honest input and subnormals (finite, can be close)
ANY = (*FAR, "flip", "subnormal")


@st.composite
def junk(draw, honest: np.ndarray, count: int, kinds=ANY):
    """``count`` arbitrary rows to add to ``honest``: huge values up to the dtype's largest,
    NaN, ±inf, sign flips, subnormals."""
    d = honest.shape[1]
    info = np.finfo(honest.dtype)
    big = float(info.max) / 4
    rows = np.zeros((count, d), honest.dtype)
    for r in range(count):
        kind = draw(st.sampled_from(kinds))
        if kind == "huge":
            rows[r] = draw(st.sampled_from([big, -big]))
        elif kind == "max":
            rows[r] = draw(hnp.arrays(honest.dtype, d, elements=st.sampled_from([info.max, -info.max])))
        elif kind == "subnormal":
            tiny = float(info.smallest_subnormal)
            rows[r] = draw(hnp.arrays(honest.dtype, d, elements=st.sampled_from([tiny, -tiny, 3 * tiny])))
        elif kind == "nan":
            rows[r] = np.nan
        elif kind == "inf":
            rows[r] = np.inf
        elif kind == "-inf":
            rows[r] = -np.inf
        elif kind == "flip":
            rows[r] = -1000 * honest[0]
        else:
            elems = st.sampled_from([np.nan, np.inf, -np.inf, big, -big, info.max, -info.max])
            rows[r] = draw(hnp.arrays(honest.dtype, d, elements=elems))
    return rows

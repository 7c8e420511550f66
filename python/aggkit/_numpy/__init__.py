"""The numpy implementations of the rules: host arrays in, the Rust core, host arrays out.

Importing this package registers every implementation with ``aggkit._dispatch``; it never
mentions another array framework. Other host arrays (anything with ``__array__`` or
``__dlpack__``) are read through numpy and returned in their own array type.
"""

from aggkit import _dispatch
from aggkit._numpy import (
    bulyan,
    centered_clipping,
    crossmax,
    detox,
    dnc,
    fltrust,
    foolsgold,
    geometric_median,
    krum,
    meamed,
    mean,
    median,
    preagg,
    sign_vote,
    subsets,
    trimmed_mean,
)
from aggkit._numpy._input import ArrayOps

_dispatch.provides("numpy", ArrayOps())

__all__ = [
    "bulyan",
    "centered_clipping",
    "crossmax",
    "detox",
    "dnc",
    "fltrust",
    "foolsgold",
    "geometric_median",
    "krum",
    "meamed",
    "mean",
    "median",
    "preagg",
    "sign_vote",
    "subsets",
    "trimmed_mean",
]

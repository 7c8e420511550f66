"""The presets on tensors: each stage's torch version, as :class:`aggkit.Pipeline` runs them."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from aggkit.rules.presets import NNMCC, BucketingCC, NNMTrimmedMean


def bucketing_cc(
    x: Any,
    *,
    s: int = BucketingCC.s,
    tau: float = BucketingCC.tau,
    iters: int = BucketingCC.iters,
    seed: int | None = BucketingCC.seed,
) -> Tensor:
    """Bucketing then centered clipping (from zero); see :class:`aggkit.BucketingCC`."""
    return BucketingCC(s=s, tau=tau, iters=iters, seed=seed)(x)  # type: ignore[no-any-return]


def nnm_cc(x: Any, *, f: int, tau: float = NNMCC.tau, iters: int = NNMCC.iters) -> Tensor:
    """Nearest-neighbour mixing then centered clipping (from zero); see :class:`aggkit.NNMCC`."""
    return NNMCC(f=f, tau=tau, iters=iters)(x)  # type: ignore[no-any-return]


def nnm_trimmed_mean(x: Any, *, f: int) -> Tensor:
    """Nearest-neighbour mixing then the trimmed mean; see :class:`aggkit.NNMTrimmedMean`."""
    return NNMTrimmedMean(f=f)(x)  # type: ignore[no-any-return]

"""Presets: the compositions the heterogeneity literature recommends, as rules of their own.

Each preset is a :class:`aggkit.Pipeline` with the papers' parameters behind one name, so it
works wherever rules do (``aggkit.rule("nnm_cc", f=2)``, Flower strategies, DDP hooks,
``aggkit simulate --rules nnm_cc``) and carries its state across rounds as the pipeline does:
centered clipping starts each round from the previous aggregate.

    >>> import numpy as np, aggkit
    >>> aggkit.rule("nnm_trimmed_mean", f=1).pipeline()
    Pipeline(stages=(NNM(f=1), TrimmedMean(f=1, nonfinite='robust')))
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from aggkit._params import Count, NonNegative, Positive, Seed
from aggkit.registry import Pipeline, Rounds, Rule, register
from aggkit.rules.centered_clipping import CenteredClipping
from aggkit.rules.preagg import NNM, Bucketing
from aggkit.rules.trimmed_mean import TrimmedMean


class Preset(Rule):
    """A named pipeline: :meth:`pipeline` builds it once, with the preset's parameters."""

    _built: Pipeline = dataclasses.field(init=False, repr=False, compare=False)

    def _check(self) -> None:
        object.__setattr__(self, "_built", self._make())

    def _make(self) -> Pipeline:
        raise NotImplementedError

    def pipeline(self) -> Pipeline:
        """The pipeline this preset runs (one object: a bucketing stage keeps drawing from one generator)."""
        return self._built

    def min_inputs(self) -> int:
        """The pipeline's smallest ``n``."""
        return self._built.min_inputs()

    def rounds(self) -> Rounds:
        """The pipeline round after round (its centered clipping keeps its centre)."""
        return self._built.rounds()

    def _run(self, x: Any, **data: Any) -> tuple[Any, Any]:
        return self._built._run(x, **data)


@register
class BucketingCC(Preset):
    r"""Bucketing, then centered clipping (Karimireddy, He, Jaggi, ICLR 2022).

    Parameters
    ----------
    s : int, default 2
        Bucket size: the ``n`` inputs are shuffled and averaged in ``ceil(n / s)`` buckets.
    tau : float, default 10.0
        Centered clipping's radius, in the units of the updates (the paper's code: 10).
    iters : int, default 3
        Clipping steps per call (the paper's code: 3).
    seed : int, optional
        Seeds the bucketing permutations.

    Notes
    -----
    Bucketing lowers the variance of heterogeneous honest inputs before clipping, at the price
    of spreading each Byzantine input into a bucket: ``f`` Byzantine inputs taint up to ``f`` of
    the ``ceil(n / s)`` buckets, so keep ``s f`` well below ``n / 2``. Meant for clients that send
    momentum (the paper's setting). Stateful: the centre is the previous round's aggregate.
    """

    name: ClassVar[str] = "bucketing_cc"
    s: Positive = 2
    tau: NonNegative = 10.0
    iters: Positive = 3
    seed: Seed = None

    def _make(self) -> Pipeline:
        return Pipeline(
            [Bucketing(s=self.s, seed=self.seed), CenteredClipping(tau=self.tau, iters=self.iters)]
        )


@register
class NNMCC(Preset):
    r"""Nearest-neighbour mixing, then centered clipping (Allouah et al., AISTATS 2023).

    Parameters
    ----------
    f : int
        Byzantine inputs tolerated by the mixing (each input is replaced by the mean of its
        ``n - f`` nearest inputs).
    tau : float, default 10.0
        Centered clipping's radius, in the units of the updates.
    iters : int, default 3
        Clipping steps per call.

    Notes
    -----
    Stateful: the centre is the previous round's aggregate.
    """

    name: ClassVar[str] = "nnm_cc"
    f: Count
    tau: NonNegative = 10.0
    iters: Positive = 3

    def _make(self) -> Pipeline:
        return Pipeline([NNM(f=self.f), CenteredClipping(tau=self.tau, iters=self.iters)])


@register
class NNMTrimmedMean(Preset):
    r"""Nearest-neighbour mixing, then the coordinate-wise trimmed mean (Allouah et al., AISTATS 2023).

    Parameters
    ----------
    f : int
        Byzantine inputs tolerated, by both stages (``n >= 2f + 1``).

    Notes
    -----
    The paper's recommended composition for heterogeneous data: mixing brings every honest
    input near the honest mean, so the trimmed mean's error no longer grows with the clients'
    heterogeneity beyond the optimal order.
    """

    name: ClassVar[str] = "nnm_trimmed_mean"
    f: Count

    def _make(self) -> Pipeline:
        return Pipeline([NNM(f=self.f), TrimmedMean(f=self.f)])


def bucketing_cc(
    x: Any,
    *,
    s: int = BucketingCC.s,
    tau: float = BucketingCC.tau,
    iters: int = BucketingCC.iters,
    seed: int | None = BucketingCC.seed,
) -> Any:
    """Bucketing, then centered clipping from zero; see :class:`BucketingCC`.

    Round after round, ``BucketingCC(...).rounds()`` clips around the previous aggregate.
    """
    return BucketingCC(s=s, tau=tau, iters=iters, seed=seed)(x)


def nnm_cc(x: Any, *, f: int, tau: float = NNMCC.tau, iters: int = NNMCC.iters) -> Any:
    """Nearest-neighbour mixing, then centered clipping from zero; see :class:`NNMCC`."""
    return NNMCC(f=f, tau=tau, iters=iters)(x)


def nnm_trimmed_mean(x: Any, *, f: int) -> Any:
    """Nearest-neighbour mixing, then the coordinate-wise trimmed mean; see :class:`NNMTrimmedMean`.

    >>> import aggkit
    >>> aggkit.nnm_trimmed_mean([[1.0], [2.0], [3.0], [100.0]], f=1)
    array([2.])
    """
    return NNMTrimmedMean(f=f)(x)

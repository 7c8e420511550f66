"""Pre-aggregators: transforms of the inputs applied before a rule, and pipelines of them.

A pre-aggregator maps ``n`` inputs to ``m`` inputs (``NNM``, ``Clipping``, ``ARC`` and ``Perturb``
keep ``m = n``; ``Bucketing`` returns ``ceil(n / s)`` bucket means). Compose them with any rule::

    >>> import numpy as np, aggkit
    >>> rule = aggkit.Pipeline([aggkit.NNM(f=1), aggkit.TrimmedMean(f=1)])
    >>> rule(np.array([[1.0], [2.0], [3.0], [100.0]])).round(6)
    array([2.])
    >>> aggkit.rule("nnm>trimmed_mean", f=1) == rule
    True

Pre-aggregators never modify their input (byzfl's ``Clipping`` and ``ARC`` rescale the caller's
array in place); they return a new array of the input's type and dtype (numpy, or torch on the
input's device, differentiable). Inputs holding NaN or ±inf pass through them (``NNM`` mixes a
finite input only with finite neighbours while there are ``n - f`` of them): the rule at the end
applies its own ``nonfinite`` policy.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

import numpy as np

from aggkit._params import Count, NonNegative, Positive, Seed
from aggkit.errors import InvalidParameterError
from aggkit.registry import PreAggregator, register

Noise = Literal["gaussian", "uniform"]
"""The distribution of :class:`Perturb`'s noise: standard normal or uniform on [-1, 1]."""


@register
class NNM(PreAggregator):
    r"""Nearest-neighbour mixing: each input becomes the mean of its ``n - f`` nearest inputs.

    Parameters
    ----------
    f : int
        Number of Byzantine inputs tolerated; ``f < n``.

    Notes
    -----
    :math:`\tilde x_i = \frac{1}{n-f}\sum_{j \in N_i} x_j`, :math:`N_i` the :math:`n - f`
    inputs closest to :math:`x_i` in Euclidean distance, itself included, ties to the lower
    index (oracle: ``[[1,2,3],[4,5,6],[7,8,9]]``, ``f=1`` gives
    ``[[2.5,3.5,4.5],[2.5,3.5,4.5],[5.5,6.5,7.5]]``). Exact distances (Rust), means in
    float64 in neighbour order. Composed with a robust rule it reaches the optimal error order
    under heterogeneity (Allouah et al., AISTATS 2023). Cost :math:`O(n^2 d)`. The torch
    gradient is ``1/(n - f)`` from each mixed input to each of its neighbours.
    """

    name: ClassVar[str] = "nnm"
    _mixes_inputs: ClassVar[bool] = True
    f: Count

    def min_inputs(self) -> int:
        """``f + 1``."""
        return self.f + 1

    def check_n(self, n: int) -> None:
        """``f < n``: each input is mixed with ``n - f >= 1`` inputs."""
        if not self.f < n:
            raise InvalidParameterError(f"nnm: needs f < n, got f={self.f}, n={n}")


@register
class Bucketing(PreAggregator):
    r"""Bucketing: shuffle the inputs and average them in buckets of ``s``.

    Parameters
    ----------
    s : int, default 2
        Bucket size (>= 1; ``1`` only shuffles). ``ceil(n / s)`` buckets come out, the last
        one smaller when ``s`` does not divide ``n`` (byzfl's layout).
    seed : int, optional
        Seeds this object's own random generator, which draws a new permutation at every call
        (the paper re-buckets every round): the sequence of calls is reproducible. ``None``
        draws from fresh OS entropy. byzfl uses the global numpy / torch generator.

    Notes
    -----
    Each Byzantine input taints at most one bucket, so the rule after it must tolerate ``f``
    of the ``ceil(n / s)`` bucket means (e.g. a trimmed mean needs ``2f < ceil(n/s)``).
    Karimireddy, He, Jaggi, ICLR 2022. Cost :math:`O(n d)`.
    """

    name: ClassVar[str] = "bucketing"
    _mixes_inputs: ClassVar[bool] = True
    s: Positive = 2
    seed: Seed = None
    _rng: np.random.Generator = dataclasses.field(init=False, repr=False, compare=False)

    def _check(self) -> None:
        object.__setattr__(self, "_rng", np.random.default_rng(self.seed))

    def out_count(self, n: int) -> int:
        """``ceil(n / s)``."""
        return -(-n // self.s)

    def buckets(self, n: int) -> list[list[int]]:
        """Draw the next permutation and cut it into buckets (what a call uses)."""
        perm = self._rng.permutation(n).tolist()
        return [perm[i : i + self.s] for i in range(0, n, self.s)]


@register
class Clipping(PreAggregator):
    r"""Static clipping: inputs longer than ``c`` (Euclidean norm) are scaled down to ``c``.

    Parameters
    ----------
    c : float, default 2.0
        The norm bound (byzfl's default), >= 0.

    Notes
    -----
    :math:`x_i \min(1, c / \|x_i\|)`, norms in float64. A new array is returned (byzfl's
    ``Clipping`` rescales the caller's array in place). Inputs with a non-finite norm pass
    through. Cost :math:`O(n d)`.
    """

    name: ClassVar[str] = "clipping"
    c: NonNegative = 2.0


@register
class ARC(PreAggregator):
    r"""Adaptive robust clipping: the ``k`` largest inputs are clipped to the next largest norm.

    Parameters
    ----------
    f : int
        Number of Byzantine inputs tolerated, ``0 <= f <= n``.

    Notes
    -----
    :math:`k = \lfloor 2 (f/n) (n - f) \rfloor` (computed in integers: byzfl's float expression
    can round an exact integer down), norms ranked ascending with ties to the lower index; the
    threshold :math:`\tau` is the norm at position :math:`n - k` (1-based): the largest norm
    left unclipped; the :math:`k` larger inputs are scaled to norm :math:`\tau`. Spec oracle:
    ``[[1,2,3],[4,5,6],[7,8,9]]``, ``f=1``: row 2 becomes ``[4.41004, 5.04005, 5.67005]``.
    Non-finite inputs rank largest and pass through unchanged. A new array is returned (byzfl
    rescales in place). The torch gradient includes the path through :math:`\tau`.
    Allouah et al., arXiv:2405.14432. Cost :math:`O(n d)`.
    """

    name: ClassVar[str] = "arc"
    f: Count

    def check_n(self, n: int) -> None:
        """``f <= n``."""
        if self.f > n:
            raise InvalidParameterError(f"arc: needs f <= n, got f={self.f}, n={n}")


@register
class Perturb(PreAggregator):
    r"""Add i.i.d. noise ``b · xi`` to every input (Chen et al. 2020's noisy sign / median).

    Parameters
    ----------
    b : float
        Noise scale (>= 0).
    noise : {"gaussian", "uniform"}, default "gaussian"
        :math:`\xi \sim N(0, 1)` or :math:`U[-1, 1]`.
    seed : int, optional
        Seeds this object's generator (new noise at every call, reproducible sequence).

    Notes
    -----
    With uniform noise and :math:`|g| \le b`, :math:`E[\mathrm{sign}(g + b\xi)] = g / b`: the
    vote of perturbed signs estimates the mean instead of the median, which restores
    convergence on heterogeneous data at the price of variance (X. Chen, T. Chen, H. Sun,
    Z. S. Wu, M. Hong, NeurIPS 2020). In a deployment the workers must add the noise (a
    Byzantine worker will not); server-side perturbation is for simulation. Noise is drawn in
    float64 and added in the input's dtype.
    """

    name: ClassVar[str] = "perturb"
    b: NonNegative
    noise: Noise = "gaussian"
    seed: Seed = None
    _rng: np.random.Generator = dataclasses.field(init=False, repr=False, compare=False)

    def _check(self) -> None:
        object.__setattr__(self, "_rng", np.random.default_rng(self.seed))

    def draw(self, n: int, d: int) -> np.ndarray:
        """The next ``(n, d)`` float64 noise, already scaled by ``b``."""
        rng = self._rng
        xi = rng.standard_normal((n, d)) if self.noise == "gaussian" else rng.uniform(-1.0, 1.0, (n, d))
        out: np.ndarray = self.b * xi
        return out

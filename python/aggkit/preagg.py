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

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from aggkit import _core
from aggkit._validate import _torch, check_choice, check_f, is_torch, prepare
from aggkit.errors import InvalidParameterError
from aggkit.registry import Hyper, Rule, register, rule_class
from aggkit.registry import rule as make_rule

_PREAGG: dict[str, type[PreAggregator]] = {}


class PreAggregator(Hyper):
    """Base class: ``pre(x)`` maps ``(n, *shape)`` inputs to ``(m, *shape)`` inputs."""

    name: ClassVar[str]

    def __call__(self, x: Any) -> Any:
        """Transform ``x`` (shape ``(n, *shape)`` or a sequence of ``n`` arrays)."""
        raise NotImplementedError

    def out_count(self, n: int) -> int:
        """How many inputs come out for ``n`` inputs."""
        return n

    def min_inputs(self) -> int:
        """The smallest ``n`` accepted."""
        return 1


def register_preagg(cls: type[PreAggregator]) -> type[PreAggregator]:
    """Class decorator: make ``cls`` resolvable by ``cls.name`` in pipelines."""
    _PREAGG[cls.name] = cls
    return cls


def list_preaggregators() -> list[str]:
    """The names of the pre-aggregators, sorted."""
    return sorted(_PREAGG)


def _rows_out(p: Any, out: np.ndarray) -> Any:
    """An ``(m, d)`` core result shaped ``(m, *shape)`` in the caller's dtype and array type."""
    out = out.reshape((out.shape[0], *p.shape))
    if out.dtype != p.dtype:
        out = out.astype(p.dtype)
    return out if p.wrap is None else p.wrap(out)


def _stack(p: Any) -> np.ndarray:
    """The prepared rows as one new ``(n, d)`` array in the compute dtype."""
    return np.array(p.data, copy=True) if isinstance(p.data, np.ndarray) else np.stack(p.data)


def nnm_neighbours(dist: np.ndarray, f: int) -> np.ndarray:
    """Per input, its ``n - f`` nearest inputs (itself included), ties by index: ``(n, n - f)``."""
    d = np.where(np.isfinite(dist), dist, np.inf)
    return np.argsort(d, axis=1, kind="stable")[:, : dist.shape[0] - f]


@register_preagg
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
    index (spec oracle: ``[[1,2,3],[4,5,6],[7,8,9]]``, ``f=1`` gives
    ``[[2.5,3.5,4.5],[2.5,3.5,4.5],[5.5,6.5,7.5]]``). Exact distances (Rust), means in
    float64 in neighbour order. Composed with a robust rule it reaches the optimal error order
    under heterogeneity (Allouah et al., AISTATS 2023). Cost :math:`O(n^2 d)`. The torch
    gradient is ``1/(n - f)`` from each mixed input to each of its neighbours.
    """

    name = "nnm"
    params = ("f",)

    def __init__(self, *, f: int) -> None:
        self.f = check_f(f, "nnm")
        self._freeze()

    def min_inputs(self) -> int:
        """``f + 1``."""
        return self.f + 1

    def __call__(self, x: Any) -> Any:
        """Mix ``x``; see the class docstring."""
        if is_torch(x):
            return _torch().nnm(x, f=self.f)
        p = prepare(x, "nnm")
        _check_less(self.f, p.n)
        nb = nnm_neighbours(_core.pairwise_sq_distances(p.data), self.f)
        k = nb.shape[1]
        out = _core.group_means(p.data, list(range(0, p.n * k + 1, k)), nb.ravel().tolist())
        return _rows_out(p, out)


def _check_less(f: int, n: int) -> None:
    if not f < n:
        raise InvalidParameterError(f"nnm: needs f < n, got f={f}, n={n}")


def check_seed(seed: Any, name: str) -> int | None:
    """``seed``: ``None`` or a non-negative int."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise InvalidParameterError(f"{name}: seed must be None or a non-negative int, got {seed!r}")
    return None if seed is None else int(seed)


@register_preagg
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

    name = "bucketing"
    params = ("s", "seed")

    def __init__(self, *, s: int = 2, seed: int | None = None) -> None:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1:
            raise InvalidParameterError(f"bucketing: s must be an int >= 1, got s={s!r}")
        self.s = int(s)
        self.seed = check_seed(seed, "bucketing")
        object.__setattr__(self, "_rng", np.random.default_rng(self.seed))
        self._freeze()

    def out_count(self, n: int) -> int:
        """``ceil(n / s)``."""
        return -(-n // self.s)

    def buckets(self, n: int) -> list[list[int]]:
        """Draw the next permutation and cut it into buckets (what a call uses)."""
        perm = self._rng.permutation(n).tolist()  # type: ignore[attr-defined]
        return [perm[i : i + self.s] for i in range(0, n, self.s)]

    def __call__(self, x: Any) -> Any:
        """Bucket ``x``; see the class docstring."""
        if is_torch(x):
            return _torch().bucketing(x, self)
        p = prepare(x, "bucketing")
        groups = self.buckets(p.n)
        offsets = [0]
        for g in groups:
            offsets.append(offsets[-1] + len(g))
        out = _core.group_means(p.data, offsets, [i for g in groups for i in g])
        return _rows_out(p, out)


def clip_scales(norms: np.ndarray, c: float) -> np.ndarray:
    """``min(1, c / ||x_i||)`` per input; 1 for zero and non-finite norms (passed through)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(norms > c, c / norms, 1.0)
    return np.where(np.isfinite(norms), s, 1.0)


def _check_c(c: Any) -> float:
    if isinstance(c, bool) or not isinstance(c, (int, float, np.integer, np.floating)):
        raise TypeError(f"clipping: c must be a number, got {type(c).__name__}")
    if not (math.isfinite(c) and c >= 0):
        raise InvalidParameterError(f"clipping: c must be finite and >= 0, got c={c}")
    return float(c)


def _scaled(p: Any, scales: np.ndarray) -> Any:
    # One parallel pass (Rust): read, scale in float64, round once, write.
    return _rows_out(p, _core.scale_rows(p.data, [float(v) for v in scales]))


@register_preagg
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

    name = "clipping"
    params = ("c",)

    def __init__(self, *, c: float = 2.0) -> None:
        self.c = _check_c(c)
        self._freeze()

    def __call__(self, x: Any) -> Any:
        """Clip ``x``; see the class docstring."""
        if is_torch(x):
            return _torch().clipping(x, c=self.c)
        p = prepare(x, "clipping")
        return _scaled(p, clip_scales(_core.row_norms(p.data), self.c))


def arc_threshold(norms: np.ndarray, f: int) -> tuple[int, float]:
    """ARC's number of clipped inputs ``k`` and threshold (the largest unclipped norm)."""
    n = len(norms)
    k = 2 * f * (n - f) // n
    if k == 0:
        return 0, math.inf
    key = np.where(np.isnan(norms), np.inf, norms)
    order = np.argsort(key, kind="stable")
    return k, float(key[order[n - k - 1]])


@register_preagg
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

    name = "arc"
    params = ("f",)

    def __init__(self, *, f: int) -> None:
        self.f = check_f(f, "arc")
        self._freeze()

    def __call__(self, x: Any) -> Any:
        """Clip ``x``; see the class docstring."""
        if is_torch(x):
            return _torch().arc(x, f=self.f)
        p = prepare(x, "arc")
        if self.f > p.n:
            raise InvalidParameterError(f"arc: needs f <= n, got f={self.f}, n={p.n}")
        norms = _core.row_norms(p.data)
        _, tau = arc_threshold(norms, self.f)
        return _scaled(p, clip_scales(norms, tau))


NOISES = ("gaussian", "uniform")


@register_preagg
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

    name = "perturb"
    params = ("b", "noise", "seed")

    def __init__(self, *, b: float, noise: str = "gaussian", seed: int | None = None) -> None:
        if isinstance(b, bool) or not isinstance(b, (int, float, np.integer, np.floating)):
            raise TypeError(f"perturb: b must be a number, got {type(b).__name__}")
        if not (math.isfinite(b) and b >= 0):
            raise InvalidParameterError(f"perturb: b must be finite and >= 0, got b={b}")
        self.b = float(b)
        self.noise = check_choice(noise, "noise", NOISES, "perturb")
        self.seed = check_seed(seed, "perturb")
        object.__setattr__(self, "_rng", np.random.default_rng(self.seed))
        self._freeze()

    def draw(self, n: int, d: int) -> np.ndarray:
        """The next ``(n, d)`` float64 noise, already scaled by ``b``."""
        rng = self._rng  # type: ignore[attr-defined]
        xi = rng.standard_normal((n, d)) if self.noise == "gaussian" else rng.uniform(-1.0, 1.0, (n, d))
        return self.b * xi

    def __call__(self, x: Any) -> Any:
        """Perturb ``x``; see the class docstring."""
        if is_torch(x):
            return _torch().perturb(x, self)
        p = prepare(x, "perturb")
        xs = _stack(p)
        xs += self.draw(p.n, xs.shape[1]).astype(xs.dtype)
        return _rows_out(p, xs)


# ---------------------------------------------------------------------------------------------
# Pipelines


def _resolve(stage: Any, shared: dict[str, Any], used: set[str]) -> Any:
    if isinstance(stage, (PreAggregator, Rule)):
        return stage
    if not isinstance(stage, str):
        raise TypeError(f"a pipeline stage is a pre-aggregator, a rule or a name, got {type(stage).__name__}")
    cls: Any = _PREAGG.get(stage) or rule_class(stage)
    if cls is None:
        raise InvalidParameterError(
            f"unknown pipeline stage {stage!r}; pre-aggregators: {', '.join(list_preaggregators())}; "
            "rules: see aggkit.list_rules()"
        )
    mine = {k: v for k, v in shared.items() if k in cls.params}
    used.update(mine)
    return cls(**mine) if stage in _PREAGG else make_rule(stage, **mine)


def pipeline(*stages: Any, **shared: Any) -> Pipeline:
    """Build a :class:`Pipeline` from names or objects.

    ``shared`` parameters go to every stage that takes them:
    ``aggkit.pipeline("nnm", "trimmed_mean", f=2)``.
    """
    used: set[str] = set()
    objs = [_resolve(s, shared, used) for s in stages]
    unused = sorted(set(shared) - used)
    if unused:
        raise InvalidParameterError(f"pipeline: no stage takes the parameters {unused}")
    return Pipeline(objs)


@register
class Pipeline(Rule):
    """Pre-aggregators followed by a rule: ``Pipeline([NNM(f=2), TrimmedMean(f=2)])``.

    Parameters
    ----------
    stages : sequence
        Zero or more :class:`PreAggregator` (or names), then one rule (object or name). By name:
        ``aggkit.rule("arc>nnm>trimmed_mean", f=2)`` or :func:`aggkit.pipeline`.

    Notes
    -----
    A pipeline is a rule: it works wherever rules do (Flower strategies, DDP hooks, torch).
    It is not coordinate-wise (mixing and clipping use whole inputs) and takes no weights.
    """

    name = "pipeline"
    params = ("stages",)

    def __init__(self, stages: Sequence[Any]) -> None:
        if isinstance(stages, (str, bytes)) or not isinstance(stages, Sequence) or len(stages) == 0:
            raise InvalidParameterError("pipeline: stages must be a non-empty sequence ending with a rule")
        used: set[str] = set()
        objs = tuple(_resolve(s, {}, used) for s in stages)
        *pre, last = objs
        if not isinstance(last, Rule):
            raise InvalidParameterError(f"pipeline: the last stage must be a rule, got {last!r}")
        for s in pre:
            if not isinstance(s, PreAggregator):
                raise InvalidParameterError(
                    f"pipeline: only the last stage may be a rule, got {s!r} before it"
                )
        self.stages = objs
        self._freeze()

    def min_inputs(self) -> int:
        """The smallest ``n`` every stage accepts."""
        *pre, last = self.stages
        n = 1
        while n < 10**6:
            m, ok = n, True
            for s in pre:
                ok = ok and m >= s.min_inputs()
                m = s.out_count(m)
            if ok and m >= last.min_inputs():
                return n
            n += 1
        return n

    def __call__(self, x: Any) -> Any:
        """Apply the pre-aggregators in order, then the rule."""
        *pre, last = self.stages
        for s in pre:
            x = s(x)
        return last(x)

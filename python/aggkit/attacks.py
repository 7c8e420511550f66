r"""Byzantine attacks, to test a defence with the tools we test ours with.

An attack is a small object that builds the updates of ``f`` Byzantine clients from the
honest clients' updates (the attacker is omniscient, as in the papers and in byzfl)::

    >>> import numpy as np, aggkit
    >>> from aggkit import attacks
    >>> honest = np.array([[1.0, 2.0], [3.0, 2.0], [2.0, 5.0]])
    >>> attacks.SignFlip()(honest, f=2)
    array([[-2., -3.],
           [-2., -3.]])
    >>> x = np.concatenate([honest, attacks.attack("large_values")(honest, f=2)])
    >>> aggkit.median(x), aggkit.mean(x)
    (array([3., 5.]), array([400001.2, 400001.8]))

``attack(honest, f=..., rng=...)`` takes ``honest`` of shape ``(h, *shape)`` (numpy or torch,
or a sequence of ``h`` arrays) and returns ``f`` updates of shape ``(f, *shape)`` in the same
array type, dtype and device; the input is never modified. Attacks that draw random numbers take
``rng`` (a seed or a ``numpy.random.Generator``; torch inputs get a ``torch.Generator`` seeded
from it), so a simulation is reproducible. :class:`LabelFlip` poisons data instead of updates:
a simulation trains the Byzantine clients on :meth:`LabelFlip.poison_labels`.

Names for :func:`attack` and the ``aggkit simulate`` command: see :func:`list_attacks`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np

from aggkit._dispatch import backend_of
from aggkit._params import as_float, count
from aggkit.errors import InvalidParameterError, ShapeError

__all__ = [
    "ALittleIsEnough",
    "Attack",
    "Gaussian",
    "InnerProductManipulation",
    "LabelFlip",
    "LargeValues",
    "Mimic",
    "MinMax",
    "MinSum",
    "NonFinite",
    "OptimizedALIE",
    "OptimizedIPM",
    "SignFlip",
    "attack",
    "line_maximize",
    "list_attacks",
]

_ATTACKS: dict[str, type[Attack]] = {}


A = TypeVar("A", bound="Attack")


def _register(cls: type[A]) -> type[A]:
    _ATTACKS[cls.name] = cls
    return cls


class _Backend:
    """The few array operations attacks need, for numpy arrays and torch tensors alike."""

    def __init__(self, honest: Any) -> None:
        if isinstance(honest, (list, tuple)) and backend_of(honest) == "torch":
            import torch

            honest = torch.stack(list(honest))
        elif isinstance(honest, Sequence) and not hasattr(honest, "__array__"):
            honest = np.stack([np.asarray(v) for v in honest]) if len(honest) else np.empty((0,))
        self.torch = backend_of(honest) == "torch"
        if not self.torch:
            honest = np.asarray(honest)
            kind = honest.dtype.kind
        else:
            kind = "f" if honest.dtype.is_floating_point else "i"
        if honest.ndim == 0:
            raise ShapeError("attack: honest updates must have shape (h, ...), got a 0-d array")
        if honest.shape[0] == 0:
            raise ShapeError("attack: needs at least one honest update, got h=0")
        if kind != "f":
            raise TypeError(f"attack: honest updates must be floating point, got dtype {honest.dtype}")
        self.x = honest
        self.h = int(honest.shape[0])

    def mean(self) -> Any:
        return self.x.mean(0) if self.torch else self.x.mean(axis=0, dtype=self.x.dtype)

    def std(self) -> Any:
        """Per-coordinate standard deviation with Bessel's correction (0 for one update)."""
        if self.h == 1:
            return self.x[0] * 0
        return self.x.std(0, correction=1) if self.torch else self.x.std(axis=0, ddof=1, dtype=self.x.dtype)

    def repeat(self, v: Any, f: int) -> Any:
        """``f`` fresh copies of ``v`` stacked, shape ``(f, *v.shape)``."""
        if self.torch:
            return v.unsqueeze(0).expand(f, *v.shape).clone()
        return np.broadcast_to(v, (f, *v.shape)).astype(self.x.dtype, copy=True)

    def full(self, f: int, value: float) -> Any:
        if self.torch:
            import torch

            return torch.full((f, *self.x.shape[1:]), value, dtype=self.x.dtype, device=self.x.device)
        return np.full((f, *self.x.shape[1:]), value, dtype=self.x.dtype)

    def sign(self, v: Any) -> Any:
        return v.sign() if self.torch else np.sign(v)

    def with_byzantine(self, v: Any, f: int) -> Any:
        """The honest updates with ``f`` copies of ``v`` after them: what the server receives."""
        if self.torch:
            import torch

            return torch.cat([self.x, self.repeat(v, f)])
        return np.concatenate([self.x, self.repeat(v, f)])

    def float64(self, v: Any) -> np.ndarray:
        """``v`` as a flat float64 numpy array (on the host)."""
        if self.torch:
            import torch

            v = v.detach().to("cpu", dtype=torch.float64).numpy()
        return np.asarray(v, dtype=np.float64).reshape(-1)

    def rows64(self) -> np.ndarray:
        """The honest updates as float64 rows ``(h, d)`` on the host."""
        return self.float64(self.x).reshape(self.h, -1)

    def normal(self, f: int, mu: float, sigma: float, rng: Any) -> Any:
        g = np.random.default_rng(rng)
        shape = (f, *self.x.shape[1:])
        if self.torch:
            import torch

            gen = torch.Generator(device=self.x.device).manual_seed(int(g.integers(2**63)))
            z = torch.randn(shape, generator=gen, dtype=self.x.dtype, device=self.x.device)
            return z * sigma + mu
        return (g.standard_normal(shape) * sigma + mu).astype(self.x.dtype)


class Attack:
    """Base class: ``attack(honest, f=..., rng=None)`` returns ``f`` Byzantine updates."""

    name: ClassVar[str]
    params: ClassVar[tuple[str, ...]] = ()
    #: The attack poisons the Byzantine clients' training data, not their updates.
    poisons_data: ClassVar[bool] = False
    #: The attack optimises against the aggregation rule in use: it needs ``rule=``.
    adaptive: ClassVar[bool] = False

    def __call__(self, honest: Any, *, f: int = 1, rng: Any = None, rule: Any = None) -> Any:
        """The ``f`` Byzantine updates built from ``honest`` (shape ``(h, *shape)``).

        ``rule`` is what the server aggregates with (a rule object or any callable that maps
        ``(h + f, *shape)`` inputs, the Byzantine ones last, to an output); adaptive attacks
        need it and the others ignore it.
        """
        f = count(f, "f", f"attack {self.name}")
        b = _Backend(honest)
        if self.adaptive and rule is None:
            raise InvalidParameterError(
                f"attack {self.name} optimises against the rule in use: pass rule=... (a rule object "
                "or a callable that aggregates the h + f inputs)"
            )
        if rule is not None and not callable(rule):
            raise TypeError(f"attack {self.name}: rule must be callable, got {type(rule).__name__}")
        if f == 0:
            return b.x[:0].clone() if b.torch else b.x[:0].copy()
        return self._against(b, f, rng, rule) if self.adaptive else self._craft(b, f, rng)

    def _craft(self, b: _Backend, f: int, rng: Any) -> Any:
        raise NotImplementedError

    def _against(self, b: _Backend, f: int, rng: Any, rule: Any) -> Any:
        """An adaptive attack's updates, built with the server's ``rule``."""
        raise NotImplementedError

    def get_params(self) -> dict[str, Any]:
        """The parameters, as keyword arguments that rebuild an equal attack."""
        return {p: getattr(self, p) for p in self.params}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_params().items())})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Attack)
            and type(self) is type(other)
            and self.get_params() == other.get_params()
        )

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(self.get_params().items())))


def _finite(value: Any, name: str, owner: str) -> float:
    v = as_float(value, name, owner)
    if not math.isfinite(v):
        raise InvalidParameterError(f"{owner}: {name} must be finite, got {name}={value}")
    return v


@_register
class SignFlip(Attack):
    r"""Send the honest mean, reversed and scaled: :math:`-s \cdot \bar{x}`.

    ``scale=1`` is byzfl's ``SignFlipping``; the DETOX reference code's ``rev_grad`` sends
    ``-100 g`` (``scale=100``).
    """

    name = "sign_flip"
    params = ("scale",)

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = _finite(scale, "scale", "SignFlip")
        if self.scale <= 0:
            raise InvalidParameterError(f"SignFlip: scale must be > 0, got scale={scale}")

    def _craft(self, b: _Backend, f: int, rng: Any) -> Any:
        return b.repeat(b.mean() * -self.scale, f)


@_register
class InnerProductManipulation(Attack):
    r"""Inner-product manipulation (Xie, Koyejo, Gupta, UAI 2019): :math:`-\epsilon \cdot \bar{x}`.

    A small ``epsilon`` keeps the Byzantine updates close to the honest ones (hard to filter)
    while making the aggregate's inner product with the true gradient negative once they
    dominate. Default ``epsilon=0.5``; byzfl's ``InnerProductManipulation`` defaults to 2.0.
    """

    name = "ipm"
    params = ("epsilon",)

    def __init__(self, epsilon: float = 0.5) -> None:
        self.epsilon = _finite(epsilon, "epsilon", "InnerProductManipulation")
        if self.epsilon <= 0:
            raise InvalidParameterError(f"InnerProductManipulation: epsilon must be > 0, got {epsilon}")

    def _craft(self, b: _Backend, f: int, rng: Any) -> Any:
        return b.repeat(b.mean() * -self.epsilon, f)


def alie_z(n: int, f: int) -> float:
    r"""Baruch et al.'s :math:`z_{max}` for ``n`` clients of which ``f`` are Byzantine.

    :math:`s = \lfloor n/2 + 1 \rfloor - f` honest clients must be "won over";
    :math:`z_{max} = \Phi^{-1}((n - s)/n)`, with :math:`\Phi` the standard normal CDF.
    """
    s = math.floor(n / 2 + 1) - f
    p = (n - s) / n
    if not 0.0 < p < 1.0:
        raise InvalidParameterError(f"ALittleIsEnough: z_max is undefined for n={n}, f={f}")
    return statistics.NormalDist().inv_cdf(p)


@_register
class ALittleIsEnough(Attack):
    r"""A little is enough (Baruch, Baruch, Goldberg, NeurIPS 2019): :math:`\mu - z \sigma`.

    Every Byzantine client sends the per-coordinate honest mean minus ``z`` standard deviations
    (Bessel-corrected), a shift small enough to stay inside the spread of honest updates.
    ``z=None`` (default) uses the paper's :math:`z_{max}` for ``n = h + f`` clients
    (:func:`alie_z`). byzfl's ``ALittleIsEnough`` sends :math:`\mu + 1.5\sigma`; the DETOX
    reference sends :math:`\mu + \sigma` (``z=-1``).
    """

    name = "alie"
    params = ("z",)

    def __init__(self, z: float | None = None) -> None:
        self.z = None if z is None else _finite(z, "z", "ALittleIsEnough")

    def _craft(self, b: _Backend, f: int, rng: Any) -> Any:
        z = alie_z(b.h + f, f) if self.z is None else self.z
        return b.repeat(b.mean() - b.std() * z, f)


@_register
class Gaussian(Attack):
    r"""Independent Gaussian noise per Byzantine client: :math:`\mathcal{N}(\mu, \sigma^2)`."""

    name = "gaussian"
    params = ("sigma", "mu")

    def __init__(self, sigma: float = 1.0, mu: float = 0.0) -> None:
        self.sigma = _finite(sigma, "sigma", "Gaussian")
        self.mu = _finite(mu, "mu", "Gaussian")
        if self.sigma < 0:
            raise InvalidParameterError(f"Gaussian: sigma must be >= 0, got sigma={sigma}")

    def _craft(self, b: _Backend, f: int, rng: Any) -> Any:
        return b.normal(f, self.mu, self.sigma, rng)


@_register
class LargeValues(Attack):
    """Every coordinate set to one large constant (``value=1e6``; DETOX's ``constant`` is -100)."""

    name = "large_values"
    params = ("value",)

    def __init__(self, value: float = 1e6) -> None:
        self.value = _finite(value, "value", "LargeValues")

    def _craft(self, b: _Backend, f: int, rng: Any) -> Any:
        return b.full(f, self.value)


@_register
class NonFinite(Attack):
    """NaN or infinity injection: the honest mean with a ``fraction`` of coordinates replaced.

    ``value`` is ``"nan"``, ``"inf"`` or ``"-inf"``; ``fraction=1`` (default) replaces every
    coordinate. Which coordinates is drawn from ``rng`` (the same for all ``f`` clients).
    """

    name = "nonfinite"
    params = ("value", "fraction")
    _VALUES: ClassVar[dict[str, float]] = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}

    def __init__(self, value: str = "nan", fraction: float = 1.0) -> None:
        if value not in self._VALUES:
            raise InvalidParameterError(f"NonFinite: value must be 'nan', 'inf' or '-inf', got {value!r}")
        self.value = value
        self.fraction = _finite(fraction, "fraction", "NonFinite")
        if not 0.0 < self.fraction <= 1.0:
            raise InvalidParameterError(f"NonFinite: fraction must be in (0, 1], got {fraction}")

    def _craft(self, b: _Backend, f: int, rng: Any) -> Any:
        out = b.repeat(b.mean(), f).reshape(f, -1)
        d = out.shape[1]
        k = max(1, round(self.fraction * d)) if d else 0
        cols: Any = np.sort(np.random.default_rng(rng).permutation(d)[:k])
        if b.torch:
            import torch

            cols = torch.from_numpy(cols).to(out.device)
        out[:, cols] = self._VALUES[self.value]
        return out.reshape(f, *b.x.shape[1:])


@_register
class Mimic(Attack):
    """Every Byzantine client copies honest client ``target`` (Karimireddy et al., ICLR 2022).

    Harmless to any single round's aggregate, but it over-weights one client's data, which
    biases training under heterogeneous (non-IID) data.
    """

    name = "mimic"
    params = ("target",)

    def __init__(self, target: int = 0) -> None:
        if isinstance(target, bool) or not isinstance(target, (int, np.integer)) or target < 0:
            raise InvalidParameterError(f"Mimic: target must be an int >= 0, got {target!r}")
        self.target = int(target)

    def _craft(self, b: _Backend, f: int, rng: Any) -> Any:
        if self.target >= b.h:
            raise InvalidParameterError(f"Mimic: target must be < h, got target={self.target}, h={b.h}")
        return b.repeat(b.x[self.target], f)


def line_maximize(
    objective: Any, *, evals: int = 20, start: float = 0.0, delta: float = 10.0, ratio: float = 0.8
) -> float:
    """The best ``t >= start`` found for ``objective(t)`` in ``evals`` evaluations (byzfl's search).

    From ``start``, steps of ``delta`` double while the objective improves strictly; after the
    first step that does not improve, steps shrink by ``ratio`` and are tried above the best
    point so far. Ties keep the smaller ``t``.
    """
    if isinstance(evals, bool) or not isinstance(evals, int) or evals < 1:
        raise InvalidParameterError(f"line_maximize: evals must be an int >= 1, got evals={evals!r}")
    for name, v in (("start", start), ("delta", delta)):
        if not math.isfinite(v):
            raise InvalidParameterError(f"line_maximize: {name} must be finite, got {name}={v}")
    if not delta > 0:
        raise InvalidParameterError(f"line_maximize: delta must be > 0, got delta={delta}")
    if not 0 < ratio < 1:
        raise InvalidParameterError(f"line_maximize: ratio must be in (0, 1), got ratio={ratio}")
    best_x, best_y = start, objective(start)
    left = evals - 1
    while left > 0:
        x = best_x + delta
        if not math.isfinite(x):  # doubled beyond float64: the best finite point stands
            break
        y = objective(x)
        left -= 1
        if y > best_y:
            best_x, best_y = x, y
            delta *= 2
        else:
            delta *= ratio
            break
    while left > 0:
        x = best_x + delta
        left -= 1
        if math.isfinite(x):
            y = objective(x)
            if y > best_y:
                best_x, best_y = x, y
        delta *= ratio
    return best_x


class _Optimized(Attack):
    """A one-parameter attack whose strength is chosen each call against the rule in use.

    The strength ``t >= 0`` maximises the distance between the rule's output on the honest and
    Byzantine updates together and the honest mean, found by :func:`line_maximize` with
    ``evals`` calls of the rule (byzfl's ``Optimal_*`` attacks and their defaults).
    """

    adaptive = True
    params = ("evals", "delta")

    def __init__(self, evals: int = 20, delta: float = 10.0) -> None:
        self.evals = count(evals, "evals", type(self).__name__)
        if self.evals < 1:
            raise InvalidParameterError(f"{type(self).__name__}: evals must be >= 1, got evals={evals}")
        self.delta = _finite(delta, "delta", type(self).__name__)
        if self.delta <= 0:
            raise InvalidParameterError(f"{type(self).__name__}: delta must be > 0, got delta={delta}")

    def _vector(self, b: _Backend, t: float) -> Any:
        raise NotImplementedError

    def _against(self, b: _Backend, f: int, rng: Any, rule: Any) -> Any:
        mean64 = b.float64(b.mean())

        def damage(t: float) -> float:
            with np.errstate(all="ignore"):
                out = b.float64(rule(b.with_byzantine(self._vector(b, t), f)))
                if out.shape != mean64.shape:
                    raise ShapeError(
                        f"attack {self.name}: the rule returned {out.size} values for updates of "
                        f"{mean64.size}"
                    )
                dist = float(np.linalg.norm(out - mean64))
            return dist if math.isfinite(dist) else math.inf

        t = line_maximize(damage, evals=self.evals, delta=self.delta)
        with np.errstate(over="ignore", invalid="ignore"):  # a strength beyond the dtype: inf rows
            return b.repeat(self._vector(b, t), f)


@_register
class OptimizedALIE(_Optimized):
    r"""ALIE with its strength optimised against the rule: :math:`\mu + t \sigma`, best ``t >= 0``.

    ``t`` maximises :math:`\|F(\text{honest} \cup f \times (\mu + t\sigma)) - \mu\|` for the
    server's rule :math:`F`, searched as byzfl's ``Optimal_ALittleIsEnough`` does (``evals=20``
    rule calls, first step ``delta=10``; see :func:`line_maximize`). :math:`\sigma` is
    Bessel-corrected. Needs ``rule=`` (``aggkit simulate`` passes the rule and its state).
    """

    name = "alie_opt"

    def _vector(self, b: _Backend, t: float) -> Any:
        return b.mean() + b.std() * t


@_register
class OptimizedIPM(_Optimized):
    r"""Inner-product manipulation optimised against the rule: :math:`-t \mu`, best ``t >= 0``.

    As :class:`OptimizedALIE`, with byzfl's ``Optimal_InnerProductManipulation`` vector.
    """

    name = "ipm_opt"

    def _vector(self, b: _Backend, t: float) -> Any:
        return b.mean() * -t


Deviation = ("std", "unit_vec", "sign")


class _MinDistance(Attack):
    r"""Shejwalkar and Houmansadr's rule-agnostic attacks: :math:`\mu - \gamma \cdot dev`."""

    params = ("dev", "gamma")

    def __init__(self, dev: str = "std", gamma: float = 10.0) -> None:
        if dev not in Deviation:
            raise InvalidParameterError(f"{type(self).__name__}: dev must be one of {Deviation}, got {dev!r}")
        self.dev = dev
        self.gamma = _finite(gamma, "gamma", type(self).__name__)
        if self.gamma <= 0:
            raise InvalidParameterError(f"{type(self).__name__}: gamma must be > 0, got gamma={gamma}")

    def _fits(self, sq: np.ndarray, pair: np.ndarray) -> Any:
        """Whether a vector with squared distances ``sq`` to the honest ones passes unnoticed."""
        raise NotImplementedError

    def _craft(self, b: _Backend, f: int, rng: Any) -> Any:
        # values near float64's limits overflow squares: such a search fails (inf), quietly
        with np.errstate(over="ignore", invalid="ignore"):
            x = b.rows64()
            mu = x.mean(axis=0)
            if self.dev == "std":
                dev = x.std(axis=0, ddof=1) if b.h > 1 else np.zeros_like(mu)
            elif self.dev == "sign":
                dev = np.sign(mu)
            else:
                norm = float(np.linalg.norm(mu))
                dev = mu / norm if norm > 0 else np.zeros_like(mu)
            pair = np.stack([((x - row) ** 2).sum(axis=1) for row in x])  # direct differences: exact

            def fits(g: float) -> bool:
                v = mu - g * dev
                return bool(self._fits(((x - v) ** 2).sum(axis=1), pair))

            # the authors' search: halve the step, move up after a success and down after a failure,
            # until the last success is within 1e-5 (or, for a large gamma, one rounding) of the try
            g, step, best = self.gamma, self.gamma, 0.0
            for _ in range(1100):  # the step underflows to 0 within 1100 halvings
                if abs(best - g) <= max(1e-5, 4 * math.ulp(g)) or step == 0.0:
                    break
                if fits(g):
                    best = g
                    g += step / 2
                else:
                    g -= step / 2
                step /= 2
            gamma = best
            if b.torch:
                import torch

                v = torch.from_numpy(mu - gamma * dev).to(dtype=b.x.dtype, device=b.x.device)
            else:
                v = (mu - gamma * dev).astype(b.x.dtype)
            return b.repeat(v.reshape(b.x.shape[1:]), f)


@_register
class MinMax(_MinDistance):
    r"""Min-max (Shejwalkar, Houmansadr, NDSS 2021): as close to the others as they are to each other.

    Every Byzantine client sends :math:`\mu - \gamma\, dev` with the largest :math:`\gamma` whose
    farthest honest update is no farther than any two honest updates are from each other.

    ``dev`` is ``"std"`` (the per-coordinate standard deviation, the authors' CIFAR-10 choice and
    the default), ``"unit_vec"`` (:math:`\mu / \|\mu\|`) or ``"sign"`` (:math:`\mathrm{sign}(\mu)`).
    :math:`\gamma` is searched from ``gamma=10`` by halving steps down to ``1e-5`` (the authors'
    search, squared distances, ``<=``); :math:`\gamma = 0` (the mean) if no step passes. It does
    not look at the rule.
    """

    name = "min_max"

    def _fits(self, sq: np.ndarray, pair: np.ndarray) -> Any:
        return sq.max() <= pair.max()


@_register
class MinSum(_MinDistance):
    r"""Min-sum (Shejwalkar, Houmansadr, NDSS 2021): as close to all as the most central one.

    As :class:`MinMax`, with the sum of squared distances to the honest updates bounded by the
    smallest such sum of an honest update.
    """

    name = "min_sum"

    def _fits(self, sq: np.ndarray, pair: np.ndarray) -> Any:
        return sq.sum() <= pair.sum(axis=1).min()


@_register
class LabelFlip(Attack):
    """Data poisoning: Byzantine clients train honestly on labels ``y -> C - 1 - y``.

    It does not craft updates; a simulation calls :meth:`poison_labels` on the Byzantine
    clients' data (``aggkit simulate`` does).
    """

    name = "label_flip"
    poisons_data = True

    def poison_labels(self, y: Any, num_classes: int) -> Any:
        """The flipped labels (a new array; ``y`` is not modified)."""
        return (num_classes - 1) - y

    def _craft(self, b: _Backend, f: int, rng: Any) -> Any:
        raise TypeError(
            "LabelFlip poisons training data, not updates: train the Byzantine clients on "
            "LabelFlip().poison_labels(y, num_classes) instead of calling the attack"
        )


def attack(spec: str | Attack, **params: Any) -> Attack:
    """Resolve an attack from its name (see :func:`list_attacks`), or pass an object through."""
    if isinstance(spec, Attack):
        if params:
            raise InvalidParameterError(f"parameters {sorted(params)} cannot be applied to {spec!r}")
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"an attack is given by name or as an Attack object, got {type(spec).__name__}")
    try:
        cls = _ATTACKS[spec]
    except KeyError:
        raise InvalidParameterError(
            f"unknown attack {spec!r}; known attacks: {', '.join(list_attacks())}"
        ) from None
    return cls(**params)


def list_attacks() -> list[str]:
    """The names of all attacks, sorted."""
    return sorted(_ATTACKS)

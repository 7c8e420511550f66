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
    "NonFinite",
    "SignFlip",
    "attack",
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

    def __call__(self, honest: Any, *, f: int = 1, rng: Any = None) -> Any:
        """The ``f`` Byzantine updates built from ``honest`` (shape ``(h, *shape)``)."""
        f = count(f, "f", f"attack {self.name}")
        b = _Backend(honest)
        if f == 0:
            return b.x[:0].clone() if b.torch else b.x[:0].copy()
        return self._craft(b, f, rng)

    def _craft(self, b: _Backend, f: int, rng: Any) -> Any:
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

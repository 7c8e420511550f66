"""Parameter parsing: every option a caller passes is checked here, once.

Each parser turns an option into a value the kernels can trust.

Rule objects declare their parameters as dataclass fields whose types say how to parse them:
a ``Literal`` is a choice among its strings, ``Annotated[..., Check(parse)]`` runs ``parse``.
The parsers also serve per-call data (weights) and the torch layer, so every message about a
bad option has one wording, naming the rule, the parameter and the value.

Python integers do not overflow: a bound such as ``n >= 2f + 3`` is checked here with exact
arithmetic before any size reaches the Rust core.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np

from aggkit.errors import AxisError, InvalidParameterError, ShapeError, too_few_inputs_error

Even = Literal["mean", "lower", "upper"]
"""How an even number of values gives a median: their midpoint, the lower or the upper one."""

NonFinite = Literal["robust", "raise", "propagate"]
"""What a rule does with NaN and ±inf (see the conventions in ``docs/conventions.md``)."""

DropOrRaise = Literal["robust", "raise"]
"""The policies of rules that leave non-finite inputs out (they have no ``"propagate"``)."""


def _integral(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


def _real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def integer(value: Any, name: str, rule: str, *, minimum: int = 0) -> int:
    """``value`` as a Python int ``>= minimum`` (``bool`` is refused: ``f=True`` is a bug)."""
    if not _integral(value):
        raise TypeError(f"{rule}: {name} must be an int, got {type(value).__name__}")
    v = int(value)
    if v < minimum:
        raise InvalidParameterError(f"{rule}: {name} must be >= {minimum}, got {name}={v}")
    return v


def any_integer(value: Any, name: str, rule: str) -> int:
    """Any int (a dimension index, or a value the caller's own checks bound)."""
    if not _integral(value):
        raise TypeError(f"{rule}: {name} must be an int, got {type(value).__name__}")
    return int(value)


def count(value: Any, name: str, rule: str) -> int:
    """A non-negative int (``f``, ``iters``)."""
    return integer(value, name, rule, minimum=0)


def positive(value: Any, name: str, rule: str) -> int:
    """An int ``>= 1`` (``maxiter``, ``max_subsets``, bucket sizes)."""
    return integer(value, name, rule, minimum=1)


def optional_positive(value: Any, name: str, rule: str) -> int | None:
    """``None`` or an int ``>= 1`` (Multi-Krum's ``m``)."""
    return None if value is None else positive(value, name, rule)


def optional_nonnegative(value: Any, name: str, rule: str) -> float | None:
    """``None`` or a finite float ``>= 0`` (an optional norm bound)."""
    return None if value is None else nonnegative(value, name, rule)


def seed(value: Any, name: str, rule: str) -> int | None:
    """``None`` (fresh entropy) or a non-negative int."""
    return None if value is None else count(value, name, rule)


def generator(value: Any, name: str, rule: str) -> np.random.Generator:
    """A numpy ``Generator``, or one seeded from ``None`` (fresh entropy) or an int ``>= 0``."""
    if isinstance(value, np.random.Generator):
        return value
    return np.random.default_rng(seed(value, name, rule))


def as_float(value: Any, name: str, rule: str) -> float:
    """A real number (not a bool) as a float64, ``inf`` and NaN included.

    An int beyond float64 is refused by name, not with a bare ``OverflowError``.
    """
    if not _real(value):
        raise TypeError(f"{rule}: {name} must be a number, got {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:
        raise InvalidParameterError(
            f"{rule}: {name} must fit in float64, got an int beyond float64"
        ) from None


def number(value: Any, name: str, rule: str, *, positive: bool = False) -> float:
    """A finite float ``>= 0`` (``> 0`` with ``positive``)."""
    if not _real(value):
        raise TypeError(f"{rule}: {name} must be a number, got {type(value).__name__}")
    bound = "> 0" if positive else ">= 0"
    try:
        v = float(value)
    except OverflowError:
        raise InvalidParameterError(
            f"{rule}: {name} must be finite and {bound}, got an int beyond float64"
        ) from None
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        raise InvalidParameterError(f"{rule}: {name} must be finite and {bound}, got {name}={value}")
    return v


def nonnegative(value: Any, name: str, rule: str) -> float:
    """A finite float ``>= 0`` (``tau``, ``c``, ``ftol``, tolerances)."""
    return number(value, name, rule)


def strictly_positive(value: Any, name: str, rule: str) -> float:
    """A finite float ``> 0`` (the geometric median's ``nu``)."""
    return number(value, name, rule, positive=True)


def flag(value: Any, name: str, rule: str) -> bool:
    """A bool (numpy bools, and the integers 0 and 1, included)."""
    if isinstance(value, bool | np.bool_) or (_integral(value) and value in (0, 1)):
        return bool(value)
    raise TypeError(f"{rule}: {name} must be a bool, got {value!r}")


def _index(value: Any) -> int | None:
    """``value`` as an index (an int, a numpy integer, a 0-d integer array), or ``None``."""
    if isinstance(value, bool | np.bool_):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def axes(value: Any, ndim: int, rule: str) -> tuple[int, ...]:
    """The client axes of numpy's ``axis=`` for an ``ndim``-D input: sorted, non-negative, without duplicates.

    ``None`` is every axis; an int (anything with ``__index__`` but a bool) or a tuple, list
    or range of them counts from the end when negative.
    """
    if value is None:
        return tuple(range(ndim))
    items = tuple(value) if isinstance(value, tuple | list | range) else (value,)
    found: list[int] = []
    for item in items:
        a = _index(item)
        if a is None:
            raise TypeError(f"{rule}: axis must be an int, a tuple of ints or None, got {value!r}")
        if not -ndim <= a < ndim:
            raise AxisError(f"{rule}: axis {a} is out of bounds for a {ndim}-d input")
        found.append(a % ndim)
    if len(set(found)) != len(found):
        raise InvalidParameterError(f"{rule}: axis {value!r} names one axis twice")
    return tuple(sorted(found))


def is_zero_axis(value: Any) -> bool:
    """Whether ``axis=value`` is the default client axis (the first), whatever the input."""
    return _index(value) == 0


def choice(value: Any, name: str, options: tuple[str, ...], rule: str) -> str:
    """One of ``options`` (the strings of a ``Literal`` type)."""
    if not isinstance(value, str) or value not in options:
        raise InvalidParameterError(
            f"{rule}: {name} must be one of {', '.join(map(repr, options))}, got {value!r}"
        )
    return value


@dataclass(frozen=True)
class Check:
    """Field marker: ``Annotated[T, Check(parse)]`` parses the field with ``parse(value, name, rule)``."""

    parse: Callable[[Any, str, str], Any]


Count = Annotated[int, Check(count)]
Positive = Annotated[int, Check(positive)]
OptionalPositive = Annotated[int | None, Check(optional_positive)]
Seed = Annotated[int | None, Check(seed)]
NonNegative = Annotated[float, Check(nonnegative)]
OptionalNonNegative = Annotated[float | None, Check(optional_nonnegative)]
StrictlyPositive = Annotated[float, Check(strictly_positive)]
Flag = Annotated[bool, Check(flag)]


@dataclass(frozen=True)
class Needs:
    """A bound ``n >= a·f + b`` on the number of inputs that tolerates ``f`` faulty ones.

    The core checks the same bounds (with overflow-checked arithmetic); Python integers are
    exact, so the check here never wraps either. ``text`` is the bound as messages state it.
    """

    a: int
    b: int

    @property
    def text(self) -> str:
        """The bound as error messages state it: ``n >= 2f + 3``."""
        return f"n >= {self.a}f + {self.b}"

    def min_n(self, f: int) -> int:
        """The fewest inputs that tolerate ``f``."""
        return self.a * f + self.b

    def check(self, display: str, n: int, f: int) -> None:
        """Raise ``TooFewInputsError`` (the core's message) when ``n`` inputs do not tolerate ``f``."""
        if n < self.min_n(f):
            raise too_few_inputs_error(display, self.text, n, f)


MAJORITY = Needs(2, 1)
"""``n >= 2f + 1``: a strict majority of honest inputs (trimmed mean, meamed, the subset rules)."""
KRUM = Needs(2, 3)
"""``n >= 2f + 3``: Krum and Multi-Krum."""
BULYAN = Needs(4, 3)
"""``n >= 4f + 3``: Bulyan as published."""
BULYAN_DETOX = Needs(3, 3)
"""``n >= 3f + 3``: Bulyan's DETOX variant (Multi-Krum's ``n - f - 2`` keep ``2f + 1``)."""


def _leaves(v: Any) -> list[Any]:
    """The scalars of nested lists and tuples, in order."""
    if isinstance(v, list | tuple):
        return [e for item in v for e in _leaves(item)]
    return [v]


def int_array(v: Any, name: str, rule: str, ndim: int) -> np.ndarray:
    """An ``ndim``-D array of integers (indices, offsets, groups) as a new aligned int64 array.

    ``v`` is an array, a tensor (moved to the host) or nested sequences. Integers beyond int64
    (which numpy reads as float64 or object, or which wrap from uint64) are refused by value.
    """
    if hasattr(v, "detach"):  # a torch tensor, possibly on another device
        v = v.detach().cpu().numpy()
    try:
        a = np.asarray(v)
    except (TypeError, ValueError):
        raise ShapeError(
            f"{rule}: {name} could not be read as one array: its nested sequences differ in length"
        ) from None
    if a.ndim != ndim:
        raise ShapeError(f"{rule}: {name} must be {ndim}-D, got shape {a.shape}")
    if a.size == 0:
        return np.zeros(a.shape, dtype=np.int64)
    if a.dtype.kind in "fO" and not isinstance(v, np.ndarray):
        # numpy reads Python ints beyond int64 as float64 (2**63) or object (2**64).
        leaves = _leaves(v)
        if all(_integral(e) for e in leaves):
            big = next((int(e) for e in leaves if not -(2**63) <= int(e) < 2**63), None)
            if big is not None:
                raise InvalidParameterError(f"{rule}: {name} must fit in int64, got {name} value {big}")
    if a.dtype.kind == "u" and int(a.max()) >= 2**63:
        raise InvalidParameterError(f"{rule}: {name} must fit in int64, got {name} value {int(a.max())}")
    if a.dtype.kind not in "iu":
        raise TypeError(f"{rule}: {name} must hold integers, got dtype {a.dtype}")
    return np.array(a, dtype=np.int64, order="C", copy=True)


def weights(w: Any, n: int, rule: str) -> np.ndarray:
    """Per-input weights as a new float64 array: one per input, finite and ``>= 0``.

    ``w`` is a sequence or an array on the host (the torch layer moves a tensor there first).
    """
    try:
        raw = np.asarray(w)
        a = np.array(raw, dtype=np.float64, copy=True)
    except OverflowError:  # ints beyond float64
        raise InvalidParameterError(
            f"{rule}: weights must be finite and >= 0, got an int beyond float64"
        ) from None
    except (TypeError, ValueError) as e:
        raise TypeError(f"{rule}: weights must be a sequence of numbers, got {type(w).__name__}") from e
    if raw.dtype == np.bool_:
        raise TypeError(f"{rule}: weights must be numbers, got booleans")
    if a.ndim != 1:
        raise ShapeError(f"{rule}: weights must be 1-D with one entry per input, got shape {a.shape}")
    if a.shape[0] != n:
        raise InvalidParameterError(
            f"{rule}: weights must have one entry per input: got {a.shape[0]} weights for n={n}"
        )
    bad = np.flatnonzero(~(np.isfinite(a) & (a >= 0.0)))
    if bad.size:
        i = int(bad[0])
        raise InvalidParameterError(f"{rule}: weights must be finite and >= 0, got weights[{i}]={a[i]}")
    top = float(a.max()) if a.size else 0.0
    if top > 0.0 and not WEIGHT_RANGE[0] <= top <= WEIGHT_RANGE[1]:
        # Only ratios of weights matter. Far outside that range, sums of n weights overflow
        # (1e308 each) or products lose bits to subnormals (1e-320): bring the largest near 1
        # by a power of two, which is exact for every weight that stays normal.
        a = np.ldexp(a, -math.frexp(top)[1])
    return a


#: Weights whose largest lies in this range are used as given (bit for bit); others are
#: rescaled by a power of two (:func:`weights`).
WEIGHT_RANGE = (2.0**-500, 2.0**500)

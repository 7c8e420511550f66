"""Rule objects and the name registry.

Every rule is also a small immutable object: callable, with a readable ``repr``, equal to
another object of the same rule and parameters, and resolvable from its name::

    >>> import aggkit
    >>> aggkit.rule("trimmed_mean", f=2)
    TrimmedMean(f=2, nonfinite='robust')
    >>> aggkit.list_rules()[:6]
    ['bulyan', 'caf', 'centered_clipping', 'detox', 'geometric_median', 'krum']

Integrations (Flower strategies, DDP hooks, torch modules) accept a rule object or a name.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from aggkit.errors import InvalidParameterError

_REGISTRY: dict[str, type[Rule]] = {}


class Hyper:
    """Immutable hyperparameter holder: ``repr``, equality, hashing and freezing from ``params``."""

    params: ClassVar[tuple[str, ...]]

    def get_params(self) -> dict[str, Any]:
        """The hyperparameters, as keyword arguments that rebuild an equal object."""
        return {p: getattr(self, p) for p in self.params}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.get_params() == other.get_params()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(self.get_params().items())))

    def __setattr__(self, key: str, value: Any) -> None:
        if getattr(self, "_frozen", False):
            raise AttributeError(f"{type(self).__name__} is immutable; build a new rule instead")
        object.__setattr__(self, key, value)

    def _freeze(self) -> None:
        object.__setattr__(self, "_frozen", True)


class Rule(Hyper):
    """Base class of the rule objects: hyperparameters in, ``rule(x)`` out.

    Subclasses set ``name`` (the registry key, identical to the function name) and
    ``params`` (the constructor's keyword names, in ``repr`` order), validate in
    ``__init__`` and implement ``__call__``.
    """

    name: ClassVar[str]
    params: ClassVar[tuple[str, ...]]
    #: Each output coordinate depends only on the same coordinate of the inputs, so the rule
    #: can run on any split of the coordinates (per layer, per DDP bucket, per shard).
    coordinate_wise: ClassVar[bool] = False
    #: ``__call__`` and :meth:`aggregate` take per-input ``weights`` (e.g. example counts).
    supports_weights: ClassVar[bool] = False

    def __call__(self, x: Any) -> np.ndarray:
        """Aggregate ``x`` (shape ``(n, *shape)``, or a sequence of ``n`` arrays)."""
        raise NotImplementedError

    def aggregate(self, x: Any, *, weights: Any = None) -> tuple[Any, Any]:
        """Aggregate ``x`` and report diagnostics: ``(output, selection)``.

        ``selection`` is a :class:`aggkit.Selection` for rules that select inputs (Krum,
        Multi-Krum), ``None`` for the others. ``weights`` (one non-negative value per input)
        is used by rules with ``supports_weights`` and refused by the others, so that an
        integration never drops a weighting silently: check ``supports_weights`` first.
        """
        if weights is None:
            return self(x), None
        if not self.supports_weights:
            raise InvalidParameterError(f"{self!r} does not take weights")
        return self(x, weights=weights), None  # type: ignore[call-arg]

    def min_inputs(self) -> int:
        """The smallest ``n`` this rule accepts with its parameters."""
        return 1


def register(cls: type[Rule]) -> type[Rule]:
    """Class decorator: make ``cls`` resolvable by ``cls.name``."""
    if cls.name in _REGISTRY:
        raise RuntimeError(f"rule {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def rule(spec: str | Rule, **params: Any) -> Rule:
    """Resolve a rule object from its name (or pass a rule object through).

    Parameters
    ----------
    spec : str or Rule
        A registered name such as ``"median"`` or ``"krum"``, or a rule object.
    **params
        The rule's hyperparameters (e.g. ``f=2``); not allowed with a rule object.

    Returns
    -------
    Rule
        A callable rule object.

    Raises
    ------
    InvalidParameterError
        If the name is unknown, or parameters are given with a rule object.
    """
    if isinstance(spec, Rule):
        if params:
            raise InvalidParameterError(
                f"parameters {sorted(params)} cannot be applied to an existing rule {spec!r}"
            )
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"a rule is given by name or as a Rule object, got {type(spec).__name__}")
    if ">" in spec:  # "nnm>trimmed_mean": a pipeline of pre-aggregators and a rule
        from aggkit.preagg import pipeline

        return pipeline(*[s.strip() for s in spec.split(">")], **params)
    try:
        cls = _REGISTRY[spec]
    except KeyError:
        raise InvalidParameterError(
            f"unknown rule {spec!r}; registered rules: {', '.join(list_rules())}"
        ) from None
    return cls(**params)


def rule_class(name: str) -> type[Rule] | None:
    """The registered class of rule ``name``, or ``None`` (to read its ``params`` first)."""
    return _REGISTRY.get(name)


def list_rules() -> list[str]:
    """The names of all registered rules, sorted."""
    return sorted(_REGISTRY)

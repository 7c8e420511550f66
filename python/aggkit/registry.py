"""Rule objects and the name registry.

Every rule is a small immutable object: callable, with a readable ``repr``, equal to another
object of the same rule and parameters, and resolvable from its name::

    >>> import aggkit
    >>> aggkit.rule("trimmed_mean", f=2)
    TrimmedMean(f=2, nonfinite='robust')
    >>> aggkit.list_rules()[:6]
    ['bucketing_cc', 'bulyan', 'caf', 'centered_clipping', 'detox', 'dnc']

A rule object is the one definition of a rule: its fields are the parameters, with their
types and defaults, parsed once when the object is built (``aggkit._params``); the function of
the same name (``aggkit.trimmed_mean``) builds the object and calls it. Calling routes the
input to the implementation for its array type (``aggkit._dispatch``).

Integrations (Flower strategies, DDP hooks, torch modules) accept a rule object or a name.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, NamedTuple, TypeVar, dataclass_transform, overload

from aggkit import _dispatch, _runtime
from aggkit._params import Check, choice
from aggkit._types import ArrayLike, ArrayT, NDArray, Weights
from aggkit.errors import InvalidParameterError

__all__ = [
    "Params",
    "Pipeline",
    "PreAggregator",
    "Rounds",
    "Rule",
    "Selection",
    "WeightedRule",
    "from_spec",
    "list_preaggregators",
    "list_rules",
    "pipeline",
    "preaggregator_class",
    "register",
    "rule",
    "rule_class",
    "spec_param_names",
    "stage",
    "to_spec",
]


class Selection(NamedTuple):
    """Which inputs a selection rule kept, and why.

    Both fields are numpy arrays for numpy input, tensors on the input's device for torch input.

    Attributes
    ----------
    indices : array of int64
        The selected inputs, best score first (Bulyan: in the order chosen).
    scores : array of float64
        Every input's score, in input order (lower is better; ``inf`` for inputs that
        cannot be selected).
    """

    indices: Any
    scores: Any


Parser = Callable[[Any, str, str], Any]
_PARSERS: dict[type, list[tuple[str, Parser]]] = {}


def _parser_of(hint: Any) -> Parser | None:
    """How to parse a field of type ``hint``: a ``Literal`` is a choice, ``Check`` its parser."""
    if typing.get_origin(hint) is typing.Annotated:
        for meta in hint.__metadata__:
            if isinstance(meta, Check):
                return meta.parse
        return None
    if typing.get_origin(hint) is typing.Literal:
        options = tuple(typing.get_args(hint))
        return lambda value, name, rule: choice(value, name, options, rule)
    return None


def _parsers(cls: type) -> list[tuple[str, Parser]]:
    found = _PARSERS.get(cls)
    if found is None:
        hints = typing.get_type_hints(cls, include_extras=True)
        found = []
        for f in dataclasses.fields(cls):
            parse = _parser_of(hints[f.name]) if f.init else None
            if parse is not None:
                found.append((f.name, parse))
        _PARSERS[cls] = found
    return found


@dataclass_transform(kw_only_default=True, frozen_default=True, field_specifiers=(dataclasses.field,))
class Params:
    """Immutable hyperparameters: each subclass is a frozen, keyword-only dataclass.

    Fields are parsed by their type when the object is built (``Literal`` options are checked,
    ``Annotated[..., Check(parse)]`` fields parsed), then :meth:`_check` relates them. The
    ``repr`` rebuilds an equal object; equal objects hash equally.
    """

    name: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        dataclasses.dataclass(frozen=True, kw_only=True)(cls)

    def __post_init__(self) -> None:
        for field, parse in _parsers(type(self)):
            object.__setattr__(self, field, parse(getattr(self, field), field, self.name))
        self._check()

    def _check(self) -> None:
        """Checks across fields, after each was parsed (none by default)."""

    def check_n(self, n: int) -> None:
        """Refuse ``n`` inputs when the parameters need more (the checks that depend on ``n``)."""

    def get_params(self) -> dict[str, Any]:
        """The hyperparameters, as keyword arguments that rebuild an equal object."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}  # type: ignore[arg-type]


class Rule(Params):
    """Base class of the rule objects: hyperparameters in, ``rule(x)`` out.

    Subclasses set ``name`` (the registry key, identical to the function name), declare their
    parameters as fields, and give :meth:`min_inputs`; each array framework implements the
    rule under its ``name`` (``aggkit._dispatch``).
    """

    #: Each output coordinate depends only on the same coordinate of the inputs, so the rule
    #: can run on any split of the coordinates (per layer, per DDP bucket, per shard).
    _coordinate_wise: ClassVar[bool] = False
    #: ``__call__`` and :meth:`aggregate` take per-input ``weights`` (e.g. example counts).
    supports_weights: ClassVar[bool] = False
    #: ``__call__`` and :meth:`aggregate` need ``reference=``: the server's own update, computed
    #: on data it holds (FLTrust's root dataset).
    _uses_reference: ClassVar[bool] = False
    #: The rule weighs each client by that client's own updates (FoolsGold): it must see the
    #: clients' rows as they were sent, not mixed by a pre-aggregator.
    _weighs_clients: ClassVar[bool] = False

    @property
    def coordinate_wise(self) -> bool:
        """Whether each output coordinate depends only on the same coordinate of the inputs."""
        return self._coordinate_wise

    @property
    def uses_reference(self) -> bool:
        """Whether the rule needs ``reference=``, the server's own update (FLTrust)."""
        return self._uses_reference

    def min_inputs(self) -> int:
        """The smallest ``n`` this rule accepts with its parameters."""
        return 1

    def rounds(self) -> Rounds:
        """The rule applied round after round, carrying what it needs between rounds.

        Integrations that aggregate every round (``RobustStrategy``, the DDP hook, ``aggkit
        simulate``) call the returned object's ``aggregate`` each round and ``reset()`` to start
        over. Most rules carry nothing; centered clipping starts each round from the previous
        aggregate (the paper's rule).
        """
        return Rounds(self)

    def work(self, n: int, d: int) -> tuple[int, str] | None:
        """The cost of a call on ``n`` inputs of ``d`` values, in operations, and its formula.

        ``None`` (the default) for rules whose cost is that of reading the input and its
        ``n x n`` distances; rules that grow faster state it, and :meth:`check_input` refuses
        calls above :func:`aggkit.set_work_limit`.
        """
        return None

    def check_input(self, n: int, d: int) -> None:
        """Refuse ``n`` inputs of ``d`` values: :meth:`check_n`, then the work limit."""
        self.check_n(n)
        cost = self.work(n, d)
        if cost is not None:
            _runtime.check_work(self.name, cost[0], cost[1], f"{self!r} on n={n}, d={d}")

    def _run(self, x: Any, **data: Any) -> tuple[Any, Any]:
        """``(output, info)`` from the implementation for ``x``'s array type."""
        return _dispatch.implementation(self.name, x)(self, x, **data)

    @overload
    def __call__(self, x: ArrayT | Sequence[ArrayT]) -> ArrayT: ...
    @overload
    def __call__(self, x: ArrayLike) -> NDArray: ...
    def __call__(self, x: Any) -> Any:
        """Aggregate ``x`` (shape ``(n, *shape)``, or a sequence of ``n`` arrays)."""
        return self._run(x)[0]

    def aggregate(
        self, x: Any, *, weights: Weights = None, reference: Any = None
    ) -> tuple[Any, Selection | None]:
        """Aggregate ``x`` and report diagnostics: ``(output, selection)``.

        ``selection`` is a :class:`aggkit.Selection` for rules that select inputs (Krum,
        Multi-Krum, Bulyan), ``None`` for the others. ``weights`` (one non-negative value per
        input) is used by rules with ``supports_weights`` and refused by the others, so that an
        integration never drops a weighting silently: check ``supports_weights`` first.
        ``reference`` (the server's own update) is required by rules with ``uses_reference``
        and refused by the others.
        """
        if weights is not None and not self.supports_weights:
            raise InvalidParameterError(f"{self!r} does not take weights")
        data = check_reference(self, reference)
        if weights is not None:
            data["weights"] = weights
        out, info = self._run(x, **data)
        return out, info if isinstance(info, Selection) else None


def check_reference(rule: Rule, reference: Any) -> dict[str, Any]:
    """``{"reference": reference}`` for a rule that uses one, ``{}`` for the others.

    A rule that needs a reference and gets none, or gets one it does not use, is refused.
    """
    if reference is None:
        if rule.uses_reference:
            raise InvalidParameterError(
                f"{rule!r} needs reference=...: the server's own update, computed on data it holds"
            )
        return {}
    if not rule.uses_reference:
        raise InvalidParameterError(f"{rule!r} does not take a reference update")
    return {"reference": reference}


class Rounds:
    """A rule applied round after round (:meth:`Rule.rounds`); this one carries nothing."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule

    def aggregate(
        self, x: Any, *, weights: Weights = None, reference: Any = None, ids: Sequence[Any] | None = None
    ) -> tuple[Any, Selection | None]:
        """The round's ``(output, selection)``, as :meth:`Rule.aggregate`.

        ``ids`` names the clients behind the rows of ``x`` (any hashable values, e.g. Flower
        node ids), for rules that keep a state per client (FoolsGold's history); the others
        ignore it. Without ``ids``, row ``i`` is client ``i`` every round.
        """
        return self.rule.aggregate(x, weights=weights, reference=reference)

    def reset(self) -> None:
        """Forget what earlier rounds left (nothing here)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.rule!r})"


class WeightedRule(Rule):
    """A rule that takes per-input ``weights`` at each call (e.g. example counts)."""

    supports_weights: ClassVar[bool] = True

    @overload
    def __call__(self, x: ArrayT | Sequence[ArrayT], *, weights: Weights = None) -> ArrayT: ...
    @overload
    def __call__(self, x: ArrayLike, *, weights: Weights = None) -> NDArray: ...
    def __call__(self, x: Any, *, weights: Weights = None) -> Any:
        """Aggregate ``x``, weighting input ``i`` by ``weights[i]`` if given."""
        return self._run(x, weights=weights)[0]


class PreAggregator(Params):
    """Base class: ``pre(x)`` maps ``(n, *shape)`` inputs to ``(m, *shape)`` inputs."""

    #: Each output row mixes several clients' rows (NNM, bucketing).
    _mixes_inputs: ClassVar[bool] = False

    @overload
    def __call__(self, x: ArrayT | Sequence[ArrayT]) -> ArrayT: ...
    @overload
    def __call__(self, x: ArrayLike) -> NDArray: ...
    def __call__(self, x: Any) -> Any:
        """Transform ``x`` (shape ``(n, *shape)`` or a sequence of ``n`` arrays)."""
        return _dispatch.implementation(self.name, x)(self, x)[0]

    def out_count(self, n: int) -> int:
        """How many inputs come out for ``n`` inputs."""
        return n

    def min_inputs(self) -> int:
        """The smallest ``n`` accepted."""
        return 1


_RULES: dict[str, type[Rule]] = {}
_PREAGG: dict[str, type[PreAggregator]] = {}
P = TypeVar("P", bound=Params)


def register(cls: type[P]) -> type[P]:
    """Class decorator: make a rule or pre-aggregator resolvable by ``cls.name``."""
    table: dict[str, Any] = _RULES if issubclass(cls, Rule) else _PREAGG
    if cls.name in _RULES or cls.name in _PREAGG:
        raise RuntimeError(f"{cls.name!r} is registered twice")
    table[cls.name] = cls
    return cls


def rule(spec: str | Rule, **params: Any) -> Rule:
    """Resolve a rule object from its name (or pass a rule object through).

    Parameters
    ----------
    spec : str or Rule
        A registered name such as ``"median"`` or ``"krum"``, a pipeline such as
        ``"nnm>trimmed_mean"``, or a rule object.
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
        return pipeline(*[s.strip() for s in spec.split(">")], **params)
    try:
        cls = _RULES[spec]
    except KeyError:
        raise InvalidParameterError(
            f"unknown rule {spec!r}; registered rules: {', '.join(list_rules())}"
        ) from None
    return _build(cls, params)


def _build(cls: type[P], params: dict[str, Any]) -> P:
    """``cls(**params)``, with parameters that are unknown or missing named in the message."""
    accepted = param_names(cls)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise InvalidParameterError(
            f"{cls.name}: unknown parameters {unknown}; it takes {', '.join(accepted) or 'none'}"
        )
    required = [
        f.name
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [k for k in required if k not in params]
    if missing:
        example = ", ".join(f"{k}=..." for k in missing)
        raise InvalidParameterError(
            f"{cls.name}: the parameters {missing} have no default and must be given, "
            f"e.g. aggkit.rule({cls.name!r}, {example})"
        )
    return cls(**params)


def _plain(value: Any, where: str) -> Any:
    """A parameter value as JSON data: rules and pre-aggregators as ``{"name", "params"}``."""
    if isinstance(value, Params):
        return {"name": value.name, "params": {k: _plain(v, where) for k, v in value.get_params().items()}}
    if isinstance(value, list | tuple):
        return [_plain(v, where) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise InvalidParameterError(
        f"{where}: the parameter value {value!r} cannot be written as a spec (numbers, strings, None "
        "and rules only; give a seed instead of a Generator)"
    )


#: How deep a spec may nest rules (a pipeline inside DETOX's outer rule is 3).
SPEC_DEPTH = 16


def _built(data: Any, depth: int = 0) -> Any:
    if depth > SPEC_DEPTH:
        raise InvalidParameterError(f"a spec nests rules more than {SPEC_DEPTH} deep")
    if isinstance(data, dict):
        if set(data) != {"name", "params"} or not isinstance(data["name"], str):
            raise InvalidParameterError(
                f"a spec's rule is {{'name': str, 'params': dict}}, got keys {sorted(data)}"
            )
        if not isinstance(data["params"], dict):
            raise InvalidParameterError(f"the spec of {data['name']!r} has params that are not a dict")
        cls: type[Params] | None = _RULES.get(data["name"]) or _PREAGG.get(data["name"])
        if cls is None:
            raise InvalidParameterError(f"unknown rule or pre-aggregator {data['name']!r} in a spec")
        return _build(cls, {k: _built(v, depth + 1) for k, v in data["params"].items()})
    if isinstance(data, list):
        return [_built(v, depth + 1) for v in data]
    return data


def to_spec(r: Rule) -> str:
    """``r`` as a JSON string that :func:`from_spec` rebuilds into an equal rule.

    For places that carry a rule as text (a traced operator's argument, a config file).
    """
    return json.dumps(_plain(r, repr(r)), sort_keys=True)


def from_spec(spec: str) -> Rule:
    """The rule written by :func:`to_spec`; anything else raises :class:`InvalidParameterError`."""
    try:
        data = json.loads(spec)
    except (TypeError, ValueError, RecursionError) as e:
        raise InvalidParameterError(f"a rule spec must be the JSON of aggkit.registry.to_spec: {e}") from None
    built = _built(data)
    if not isinstance(built, Rule):
        raise InvalidParameterError(f"the spec {spec!r} does not describe a rule")
    return built


def rule_class(name: str) -> type[Rule] | None:
    """The registered class of rule ``name``, or ``None`` (to read its parameters first)."""
    return _RULES.get(name)


def preaggregator_class(name: str) -> type[PreAggregator] | None:
    """The registered class of pre-aggregator ``name``, or ``None``."""
    return _PREAGG.get(name)


def stage(name: str, **params: Any) -> PreAggregator | Rule:
    """A pipeline stage, pre-aggregator or rule, from its registered name and parameters.

    Unknown and missing parameters are named in the error, as :func:`rule` does.
    """
    cls: type[Params] | None = _PREAGG.get(name) or _RULES.get(name)
    if cls is None:
        raise InvalidParameterError(
            f"unknown pipeline stage {name!r}; pre-aggregators: {', '.join(list_preaggregators())}; "
            "rules: see aggkit.list_rules()"
        )
    return typing.cast(PreAggregator | Rule, _build(cls, params))


def spec_param_names(spec: str) -> tuple[str, ...] | None:
    """The parameters a rule spec takes (a pipeline's: any stage's), or ``None`` if unknown."""
    names: dict[str, None] = {}
    for stage in spec.split(">") if ">" in spec else [spec]:
        cls: type[Params] | None = _PREAGG.get(stage.strip()) or _RULES.get(stage.strip())
        if cls is None:
            return None
        names |= dict.fromkeys(param_names(cls))
    return tuple(names)


def param_names(cls: type[Params]) -> tuple[str, ...]:
    """The constructor parameters of a rule or pre-aggregator class, in ``repr`` order."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.init)  # type: ignore[arg-type]


def list_rules() -> list[str]:
    """The names of all registered rules, sorted."""
    return sorted(_RULES)


def list_preaggregators() -> list[str]:
    """The names of the pre-aggregators, sorted."""
    return sorted(_PREAGG)


# ---------------------------------------------------------------------------------------------
# Pipelines

Stage = PreAggregator | Rule | str


def _resolve(spec: Any, shared: dict[str, Any], used: set[str]) -> PreAggregator | Rule:
    if isinstance(spec, PreAggregator | Rule):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"a pipeline stage is a pre-aggregator, a rule or a name, got {type(spec).__name__}")
    cls: type[Params] | None = _PREAGG.get(spec) or _RULES.get(spec)
    mine = {k: v for k, v in shared.items() if cls is not None and k in param_names(cls)}
    used.update(mine)
    return stage(spec, **mine)


def pipeline(*stages: Stage, **shared: Any) -> Pipeline:
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


def _stages(value: Any, name: str, rule: str) -> tuple[PreAggregator | Rule, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or len(value) == 0:
        raise InvalidParameterError("pipeline: stages must be a non-empty sequence ending with a rule")
    objs = tuple(_resolve(s, {}, set()) for s in value)
    *pre, last = objs
    if not isinstance(last, Rule):
        raise InvalidParameterError(f"pipeline: the last stage must be a rule, got {last!r}")
    for s in pre:
        if not isinstance(s, PreAggregator):
            raise InvalidParameterError(f"pipeline: only the last stage may be a rule, got {s!r} before it")
    mixing = [s for s in pre if isinstance(s, PreAggregator) and s._mixes_inputs]
    if mixing and last._weighs_clients:
        raise InvalidParameterError(
            f"pipeline: {last!r} weighs each client by its own updates, and {mixing[0]!r} mixes the "
            "clients' updates before it (mixed rows look alike: every weight would be 0)"
        )
    return objs


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

    name: ClassVar[str] = "pipeline"
    stages: typing.Annotated[Sequence[Stage], Check(_stages)] = dataclasses.field(kw_only=False)

    def _split(self) -> tuple[list[PreAggregator], Rule]:
        """The pre-aggregators and the rule (the parsed stages)."""
        *pre, last = self.stages
        return [typing.cast(PreAggregator, s) for s in pre], typing.cast(Rule, last)

    def min_inputs(self) -> int:
        """The smallest ``n`` every stage accepts."""
        pre, last = self._split()
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

    @property
    def uses_reference(self) -> bool:
        """Whether the last stage needs the server's update (``nnm>fltrust``)."""
        return self._split()[1].uses_reference

    def rounds(self) -> Rounds:
        """Round after round: the last stage's own :meth:`Rule.rounds` behind the pre-aggregators.

        ``Pipeline([NNM(f=2), CenteredClipping(tau=1)])`` clips around the previous round's
        aggregate, as the rule alone does.
        """
        pre, last = self._split()
        inner = last.rounds()
        return Rounds(self) if type(inner) is Rounds else _PipelineRounds(self, pre, inner)

    def _run(self, x: Any, **data: Any) -> tuple[Any, Any]:
        pre, last = self._split()
        for s in pre:
            x = s(x)
        out, info = last._run(x, **data)
        # After a pre-aggregator the rule sees transformed inputs: its selection would name
        # those, not the caller's inputs, so none is reported.
        return out, info if not pre else None


class _PipelineRounds(Rounds):
    """A pipeline whose rule carries state: the pre-aggregators, then the rule's own rounds."""

    def __init__(self, rule: Pipeline, pre: list[PreAggregator], inner: Rounds) -> None:
        super().__init__(rule)
        self.pre, self.inner = pre, inner

    def aggregate(
        self, x: Any, *, weights: Weights = None, reference: Any = None, ids: Sequence[Any] | None = None
    ) -> tuple[Any, Selection | None]:
        """The round's output (no selection is reported after a pre-aggregator).

        The pre-aggregators mix the clients' rows, so no ``ids`` reach the rule.
        """
        if weights is not None:
            raise InvalidParameterError(f"{self.rule!r} does not take weights")
        extra = check_reference(self.rule, reference)
        for s in self.pre:
            x = s(x)
        return self.inner.aggregate(x, **extra)[0], None

    def reset(self) -> None:
        """Forget the rule's state."""
        self.inner.reset()

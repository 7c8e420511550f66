"""``torch.nn.Module`` wrappers of the rules, for use inside models and at FL servers.

Each module holds its hyperparameters (shown by ``repr`` through ``extra_repr``), has no
learnable parameters, and calls the ``aggkit.torch`` function of the same name, so it is
differentiable, runs on any device and works under ``torch.compile``. The coordinate-wise
modules take ``dim``, the dimension that indexes the inputs, so leading batch dimensions work::

    >>> import torch
    >>> from aggkit.torch.nn import Median
    >>> x = torch.tensor([[[1.0, 5.0], [2.0, 7.0], [9.0, 6.0]]])  # (batch=1, n=3, d=2)
    >>> Median(dim=1)(x)
    tensor([[2., 6.]])
"""

from __future__ import annotations

import importlib
import typing
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from aggkit._params import Even, NonFinite
from aggkit.errors import InvalidParameterError
from aggkit.registry import Rule
from aggkit.registry import rule as make_rule
from aggkit.rules.crossmax import CrossMax as CrossMaxSpec
from aggkit.rules.crossmax import CrossMaxEven, Reducer
from aggkit.rules.detox import DETOX as DETOXRule
from aggkit.rules.detox import NoMajority, Vote
from aggkit.rules.krum import Krum as KrumRule
from aggkit.rules.krum import MultiKrum as MultiKrumRule
from aggkit.rules.mean import Mean as MeanRule
from aggkit.rules.median import Median as MedianRule
from aggkit.rules.trimmed_mean import TrimmedMean as TrimmedMeanRule
from aggkit.torch import _opaque
from aggkit.torch.crossmax import _crossmax as crossmax_impl
from aggkit.torch.detox import _detox as detox_impl
from aggkit.torch.krum import _krum as krum_impl
from aggkit.torch.krum import _multi_krum as multi_krum_impl
from aggkit.torch.mean import _mean as mean_impl
from aggkit.torch.median import _median as median_impl
from aggkit.torch.trimmed_mean import _trimmed_mean as trimmed_mean_impl

if TYPE_CHECKING:  # at run time __getattr__ below imports them on first use
    from aggkit.torch.aggr import (
        LogSumExpAggregation,
        MaxAggregation,
        MeanAggregation,
        MinAggregation,
        MonoidAggregation,
        ProdAggregation,
        SumAggregation,
    )
    from aggkit.torch.lcm import LCMAggregation

__all__ = [
    "DETOX",
    "Aggregate",
    "CrossMax",
    "Krum",
    "LCMAggregation",
    "LogSumExpAggregation",
    "MaxAggregation",
    "Mean",
    "MeanAggregation",
    "Median",
    "MinAggregation",
    "MonoidAggregation",
    "MultiKrum",
    "ProdAggregation",
    "SelfEnsemble",
    "SumAggregation",
    "TrimmedMean",
]

#: The PyG-style aggregations, each in the module that defines it.
_AGGREGATIONS = {
    "LCMAggregation": "aggkit.torch.lcm",
    "LogSumExpAggregation": "aggkit.torch.aggr",
    "MaxAggregation": "aggkit.torch.aggr",
    "MeanAggregation": "aggkit.torch.aggr",
    "MinAggregation": "aggkit.torch.aggr",
    "MonoidAggregation": "aggkit.torch.aggr",
    "ProdAggregation": "aggkit.torch.aggr",
    "SumAggregation": "aggkit.torch.aggr",
}


class _Aggregator(nn.Module):
    """A module around a rule object (its parameters, parsed once).

    Coordinate-wise rules also take ``dim``: the dimension of ``x`` that indexes the inputs.
    """

    def __init__(self, rule: Any, dim: int | None = None) -> None:
        super().__init__()
        self.rule = rule
        self._dim = dim

    @property
    def dim(self) -> int:
        """The dimension of ``x`` that indexes the inputs (coordinate-wise rules)."""
        if self._dim is None:
            raise AttributeError(f"{type(self).__name__} takes its inputs along dimension 0 only")
        return self._dim

    def __getattr__(self, name: str) -> Any:
        # The rule's parameters read as the module's (``Median().even``).
        try:
            return super().__getattr__(name)
        except AttributeError:
            rule = self.__dict__.get("rule")
            if rule is not None and name in rule.get_params():
                return rule.get_params()[name]
            raise

    def extra_repr(self) -> str:
        """The rule's parameters (and ``dim``), for ``repr``."""
        params = dict(self.rule.get_params())
        if self._dim is not None:
            params["dim"] = self._dim
        return ", ".join(f"{k}={v!r}" for k, v in params.items())


class Aggregate(nn.Module):
    """Any rule (object, name or pipeline) as a module: ``forward(x)`` is ``rule(x)`` on tensors.

    The rule's torch version runs (``aggkit.torch.<name>``), so the module is differentiable
    where the rule is and keeps the input's device and dtype::

        >>> import torch, aggkit
        >>> from aggkit.torch.nn import Aggregate
        >>> m = Aggregate("nnm>meamed", f=1)
        >>> m
        Aggregate(rule=Pipeline(stages=(NNM(f=1), Meamed(f=1, nonfinite='robust'))))
        >>> m(torch.tensor([[1.0], [2.0], [3.0], [100.0]]))
        tensor([2.])
    """

    def __init__(self, rule: str | Rule, **params: Any) -> None:
        super().__init__()
        self.rule = make_rule(rule, **params)
        self._handle = _opaque.handle(self.rule)

    def forward(self, x: Any, reference: Any = None) -> Tensor:
        """Aggregate the inputs (the rows of ``x``, or a sequence of tensors).

        ``reference`` is the server's own update, for rules that use one (FLTrust); such a
        module runs eagerly (it is not exported by ``torch.export``).
        """
        if not (isinstance(x, Tensor) or (isinstance(x, Sequence) and x and isinstance(x[0], Tensor))):
            raise TypeError(f"Aggregate: x must be a tensor or a sequence of tensors, got {type(x).__name__}")
        if reference is not None or self.rule.uses_reference:
            out, _ = self.rule.aggregate(x, reference=reference)
            return typing.cast(Tensor, out)
        traced = _opaque.run(self.rule, self._handle, x) if isinstance(x, Tensor) else None
        return self.rule(x) if traced is None else traced

    def extra_repr(self) -> str:
        """The rule, for ``repr``."""
        return f"rule={self.rule!r}"


class Mean(_Aggregator):
    """The mean over dimension ``dim``; see :func:`aggkit.torch.mean`."""

    def __init__(self, *, nonfinite: NonFinite = MeanRule.nonfinite, dim: int = 0) -> None:
        super().__init__(MeanRule(nonfinite=nonfinite), dim)

    def forward(self, x: Any, weights: Any = None) -> Tensor:
        """Aggregate the inputs along ``dim`` (optionally weighted)."""
        return mean_impl(self.rule, x, weights=weights, dim=self.dim)[0]


class Median(_Aggregator):
    """The coordinate-wise median over dimension ``dim``; see :func:`aggkit.torch.median`."""

    def __init__(
        self, *, even: Even = MedianRule.even, nonfinite: NonFinite = MedianRule.nonfinite, dim: int = 0
    ) -> None:
        super().__init__(MedianRule(even=even, nonfinite=nonfinite), dim)

    def forward(self, x: Any) -> Tensor:
        """Aggregate the inputs along ``dim``."""
        return median_impl(self.rule, x, dim=self.dim)[0]


class TrimmedMean(_Aggregator):
    """The coordinate-wise trimmed mean over ``dim``; see :func:`aggkit.torch.trimmed_mean`."""

    def __init__(self, *, f: int, nonfinite: NonFinite = TrimmedMeanRule.nonfinite, dim: int = 0) -> None:
        super().__init__(TrimmedMeanRule(f=f, nonfinite=nonfinite), dim)

    def forward(self, x: Any) -> Tensor:
        """Aggregate the inputs along ``dim``."""
        return trimmed_mean_impl(self.rule, x, dim=self.dim)[0]


class Krum(_Aggregator):
    """Krum (``m = 1``) or Multi-Krum over the rows of ``x``; see :func:`aggkit.torch.multi_krum`.

    ``forward`` returns the aggregate; the last selection is kept in ``self.last_selection``
    (an :class:`aggkit.Selection`) for servers that flag the excluded clients.
    """

    def __init__(self, *, f: int, m: int | None = 1, nonfinite: NonFinite = MultiKrumRule.nonfinite) -> None:
        rule: Rule
        rule = KrumRule(f=f, nonfinite=nonfinite) if m == 1 else MultiKrumRule(f=f, m=m, nonfinite=nonfinite)
        super().__init__(rule)
        self.last_selection: Any = None

    @property
    def m(self) -> int | None:
        """How many inputs are averaged (``None``: ``n - f``)."""
        return 1 if isinstance(self.rule, KrumRule) else self.rule.m

    def extra_repr(self) -> str:
        """``f``, ``m`` and ``nonfinite``, for ``repr``."""
        return f"f={self.rule.f!r}, m={self.m!r}, nonfinite={self.rule.nonfinite!r}"

    def forward(self, x: Any) -> Tensor:
        """Aggregate the inputs (the rows of ``x``, or a sequence of tensors)."""
        if isinstance(self.rule, KrumRule):
            y, sel = krum_impl(self.rule, x)
        else:
            y, sel = multi_krum_impl(self.rule, x)
        self.last_selection = sel
        return y


class MultiKrum(Krum):
    """Multi-Krum: :class:`Krum` with ``m`` defaulting to ``n - f``."""

    def __init__(
        self, *, f: int, m: int | None = MultiKrumRule.m, nonfinite: NonFinite = MultiKrumRule.nonfinite
    ) -> None:
        super().__init__(f=f, m=m, nonfinite=nonfinite)


class CrossMax(_Aggregator):
    """CrossMax over the predictors of logits ``(..., N, C)``; see :func:`aggkit.torch.crossmax`.

    >>> z = torch.tensor([[1, 0, -1, 0.5], [0, 2, 0, -3], [0.5, -1, 3, 0], [2, 1.5, 0, 1.9]])
    >>> CrossMax(k=3)(z)
    tensor([-2.0000, -1.0000, -2.0000, -2.9000])
    """

    def __init__(
        self,
        k: int | None = 3,
        *,
        reducer: Reducer = CrossMaxSpec.reducer,
        even: CrossMaxEven = CrossMaxSpec.even,
        predictor_dim: int = CrossMaxSpec.predictor_dim,
        class_dim: int = CrossMaxSpec.class_dim,
        nonfinite: NonFinite = CrossMaxSpec.nonfinite,
    ) -> None:
        if reducer == "median" and k == 3:
            k = None  # the default k does not apply to the median
        spec = CrossMaxSpec(
            k=k, reducer=reducer, even=even, predictor_dim=predictor_dim, class_dim=class_dim,
            nonfinite=nonfinite,
        )  # fmt: skip
        super().__init__(spec)

    def forward(self, z: Tensor) -> Tensor:
        """Scores ``(..., C)``; their argmax is the prediction."""
        return crossmax_impl(self.rule, z)[0]


def _pooled(feature: Any) -> Tensor:
    """An intermediate activation as ``(B, features)``: spatial dimensions averaged away."""
    if isinstance(feature, (tuple, list)):
        feature = feature[0]
    if not isinstance(feature, Tensor):
        raise TypeError(f"SelfEnsemble: a hooked layer returned {type(feature).__name__}, not a tensor")
    if feature.ndim > 2:
        return feature.flatten(2).mean(dim=2)
    if feature.ndim == 2:
        return feature
    raise InvalidParameterError(
        f"SelfEnsemble: a hooked layer returned a {feature.ndim}-d tensor; need (B, ...)"
    )


def default_head(num_classes: int) -> nn.Module:
    """BatchNorm + Linear on the globally average-pooled activation (the reference's heads)."""
    return nn.Sequential(nn.LazyBatchNorm1d(), nn.LazyLinear(num_classes))


class SelfEnsemble(nn.Module):
    """A backbone plus classification heads on intermediate layers, aggregated by CrossMax.

    Forward hooks capture the outputs of ``layers`` during the backbone's forward pass; each
    goes through its head (by default: spatial average pooling, ``BatchNorm1d``, ``Linear``)
    to ``num_classes`` logits; with ``include_backbone`` the backbone's own output is one more
    predictor. The ``N`` predictors' logits are combined with :class:`CrossMax` (Fort &
    Lakshminarayanan 2024, who attach such heads to a ResNet and use ``k = 3``).

    ``forward(x, return_all=False)`` returns the CrossMax scores ``(B, C)``, and with
    ``return_all=True`` also every predictor's logits ``(B, N, C)`` (heads in ``layers``
    order, then the backbone), e.g. to train all heads with a summed cross-entropy.

    Parameters
    ----------
    backbone : nn.Module
        Returns ``(B, num_classes)`` logits when ``include_backbone`` is true.
    layers : sequence of str or nn.Module
        Submodules of ``backbone`` (names as in ``backbone.named_modules()``, or the modules).
    num_classes : int
    heads : sequence of nn.Module or callable, optional
        One head per layer (mapping the pooled ``(B, features)`` activation to logits), or a
        factory ``heads(layer_name) -> nn.Module``. Default: :func:`default_head`, which is
        lazy: run one forward pass (or pass ``example_input``) before building the optimizer.
    include_backbone : bool, default True
    k, reducer, even, nonfinite
        CrossMax's parameters (default ``k=3``); ``2 <= k <= N`` is checked here.
    detach_features : bool, default False
        Stop gradients from the heads into the backbone (train the heads on a frozen backbone).
    example_input : Tensor, optional
        Run once at construction (no grad, eval mode) to materialise lazy heads.
    """

    def __init__(
        self,
        backbone: nn.Module,
        layers: Sequence[str | nn.Module],
        num_classes: int,
        *,
        heads: Sequence[nn.Module] | Callable[[str], nn.Module] | None = None,
        include_backbone: bool = True,
        k: int | None = 3,
        reducer: Reducer = "kth",
        even: CrossMaxEven = "lower",
        nonfinite: NonFinite = "robust",
        detach_features: bool = False,
        example_input: Tensor | None = None,
    ) -> None:
        super().__init__()
        if isinstance(layers, (str, nn.Module)) or len(layers) == 0:
            raise InvalidParameterError(
                "SelfEnsemble: layers must be a non-empty sequence of names or modules"
            )
        self.backbone = backbone
        names = {id(m): name for name, m in backbone.named_modules()}
        by_name = dict(backbone.named_modules())
        mods, self.layer_names = [], []
        for layer in layers:
            if isinstance(layer, str):
                if layer not in by_name:
                    raise InvalidParameterError(f"SelfEnsemble: backbone has no submodule {layer!r}")
                mods.append(by_name[layer])
                self.layer_names.append(layer)
            elif isinstance(layer, nn.Module) and id(layer) in names:
                mods.append(layer)
                self.layer_names.append(names[id(layer)])
            else:
                raise InvalidParameterError(
                    "SelfEnsemble: each layer must be a submodule of backbone (or its name)"
                )
        if heads is None:
            head_list = [default_head(num_classes) for _ in mods]
        elif callable(heads) and not isinstance(heads, (nn.Module, Sequence)):
            head_list = [heads(name) for name in self.layer_names]
        else:
            head_list = list(heads)  # type: ignore[arg-type]
            if len(head_list) != len(mods):
                raise InvalidParameterError(
                    f"SelfEnsemble: {len(head_list)} heads for {len(mods)} layers; give one per layer"
                )
        self.heads = nn.ModuleList(head_list)
        self.include_backbone = bool(include_backbone)
        n = len(mods) + int(self.include_backbone)
        self.crossmax = CrossMax(k, reducer=reducer, even=even, nonfinite=nonfinite)
        rank = self.crossmax.rule.rank
        if rank > n:
            raise InvalidParameterError(
                f"SelfEnsemble: k must satisfy 2 <= k <= N, got k={rank}, N={n} predictors"
            )
        self.num_classes = num_classes
        self.detach_features = bool(detach_features)
        self._captured: list[Tensor | None] = [None] * len(mods)
        self._handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(mods)]
        if example_input is not None:
            was = self.training
            self.eval()
            with torch.no_grad():
                self(example_input)
            self.train(was)

    def _hook(self, i: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self._captured[i] = output

        return hook

    def remove_hooks(self) -> None:
        """Detach the forward hooks from the backbone (the module is unusable afterwards)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def forward(self, x: Any, return_all: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """CrossMax scores ``(B, C)``; with ``return_all`` also the logits ``(B, N, C)``."""
        if not self._handles:
            raise RuntimeError("SelfEnsemble: hooks were removed")
        self._captured = [None] * len(self.heads)
        out = self.backbone(x)
        logits = []
        for name, feature, head in zip(self.layer_names, self._captured, self.heads, strict=True):
            if feature is None:
                raise RuntimeError(f"SelfEnsemble: layer {name!r} did not run in the backbone's forward")
            f = _pooled(feature)
            logits.append(head(f.detach() if self.detach_features else f))
        self._captured = [None] * len(self.heads)
        if self.include_backbone:
            logits.append(out)
        names = [*self.layer_names, "the backbone"]
        for name, t in zip(names, logits, strict=False):
            if t.ndim != 2 or t.shape[-1] != self.num_classes:
                raise InvalidParameterError(
                    f"SelfEnsemble: the predictor of {name} returned shape {tuple(t.shape)}, "
                    f"expected (batch, num_classes={self.num_classes})"
                )
        z = torch.stack(logits, dim=1)
        y = self.crossmax(z)
        return (y, z) if return_all else y

    def extra_repr(self) -> str:
        """The hooked layers, for ``repr``."""
        return f"layers={self.layer_names}, include_backbone={self.include_backbone}"


class DETOX(_Aggregator):
    """DETOX over worker vectors ``(n, ...)``; see :func:`aggkit.detox` and :func:`aggkit.torch.detox`.

    ``forward(x, groups="contiguous", rng=None)`` takes this round's group assignment.
    """

    def __init__(
        self,
        *,
        q: int,
        r: int = DETOXRule.r,
        inner: Any = DETOXRule.inner,
        outer: Any = DETOXRule.outer,
        buckets: int | None = DETOXRule.buckets,
        vote: Vote = DETOXRule.vote,
        no_majority: NoMajority = DETOXRule.no_majority,
    ) -> None:
        rule = DETOXRule(
            q=q, r=r, inner=inner, outer=outer, buckets=buckets, vote=vote, no_majority=no_majority
        )
        super().__init__(rule)
        self._handle = _opaque.handle(rule)

    def forward(self, x: Any, groups: Any = "contiguous", rng: Any = None) -> Tensor:
        """Aggregate the workers' vectors."""
        if isinstance(groups, str) and groups == "contiguous" and rng is None and isinstance(x, Tensor):
            traced = _opaque.run(self.rule, self._handle, x)
            if traced is not None:
                return traced
        return detox_impl(self.rule, x, groups=groups, rng=rng)[0]


def __getattr__(name: str) -> Any:
    # The PyG-style aggregations live in aggkit.torch.aggr and aggkit.torch.lcm, imported on
    # first use: they subclass PyTorch Geometric's Aggregation when torch_geometric is
    # installed, whose import takes seconds.
    module = _AGGREGATIONS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_AGGREGATIONS))

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

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

import aggkit.torch as at
from aggkit._validate import POLICIES, check_choice, check_f
from aggkit.errors import InvalidParameterError
from aggkit.rules.crossmax import check_crossmax_params
from aggkit.rules.krum import _check_m
from aggkit.rules.median import EVEN

__all__ = [
    "DETOX",
    "Aggregate",
    "CrossMax",
    "Krum",
    "LCMAggregation",  # noqa: F822 - provided by __getattr__ below
    "Mean",
    "Median",
    "MultiKrum",
    "SelfEnsemble",
    "TrimmedMean",
]


class _Aggregator(nn.Module):
    _params: tuple[str, ...] = ()

    def extra_repr(self) -> str:
        return ", ".join(f"{p}={getattr(self, p)!r}" for p in self._params)


class Aggregate(_Aggregator):
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

    _params = ("rule",)

    def __init__(self, rule: Any, **params: Any) -> None:
        super().__init__()
        import aggkit

        self.rule = aggkit.rule(rule, **params)

    def forward(self, x: Any) -> Tensor:
        """Aggregate the inputs (the rows of ``x``, or a sequence of tensors)."""
        if not (isinstance(x, Tensor) or (isinstance(x, Sequence) and x and isinstance(x[0], Tensor))):
            raise TypeError(f"Aggregate: x must be a tensor or a sequence of tensors, got {type(x).__name__}")
        return self.rule(x)


class Mean(_Aggregator):
    """The mean over dimension ``dim``; see :func:`aggkit.torch.mean`."""

    _params = ("nonfinite", "dim")

    def __init__(self, *, nonfinite: str = "robust", dim: int = 0) -> None:
        super().__init__()
        self.nonfinite = check_choice(nonfinite, "nonfinite", POLICIES, "mean")
        self.dim = dim

    def forward(self, x: Any, weights: Any = None) -> Tensor:
        """Aggregate the inputs along ``dim`` (optionally weighted)."""
        return at.mean(x, weights=weights, nonfinite=self.nonfinite, dim=self.dim)


class Median(_Aggregator):
    """The coordinate-wise median over dimension ``dim``; see :func:`aggkit.torch.median`."""

    _params = ("even", "nonfinite", "dim")

    def __init__(self, *, even: str = "mean", nonfinite: str = "robust", dim: int = 0) -> None:
        super().__init__()
        self.even = check_choice(even, "even", EVEN, "median")
        self.nonfinite = check_choice(nonfinite, "nonfinite", POLICIES, "median")
        self.dim = dim

    def forward(self, x: Any) -> Tensor:
        """Aggregate the inputs along ``dim``."""
        return at.median(x, even=self.even, nonfinite=self.nonfinite, dim=self.dim)


class TrimmedMean(_Aggregator):
    """The coordinate-wise trimmed mean over ``dim``; see :func:`aggkit.torch.trimmed_mean`."""

    _params = ("f", "nonfinite", "dim")

    def __init__(self, *, f: int, nonfinite: str = "robust", dim: int = 0) -> None:
        super().__init__()
        self.f = check_f(f, "trimmed_mean")
        self.nonfinite = check_choice(nonfinite, "nonfinite", POLICIES, "trimmed_mean")
        self.dim = dim

    def forward(self, x: Any) -> Tensor:
        """Aggregate the inputs along ``dim``."""
        return at.trimmed_mean(x, f=self.f, nonfinite=self.nonfinite, dim=self.dim)


class Krum(_Aggregator):
    """Krum (``m = 1``) or Multi-Krum over the rows of ``x``; see :func:`aggkit.torch.multi_krum`.

    ``forward`` returns the aggregate; the last selection is kept in ``self.last_selection``
    (an :class:`aggkit.Selection`) for servers that flag the excluded clients.
    """

    _params = ("f", "m", "nonfinite")

    def __init__(self, *, f: int, m: int | None = 1, nonfinite: str = "robust") -> None:
        super().__init__()
        self.f = check_f(f, "krum")
        if m is not None:
            _check_m(m, m, self.f)
        self.m = m
        self.nonfinite = check_choice(nonfinite, "nonfinite", POLICIES, "krum")
        self.last_selection = None

    def forward(self, x: Any) -> Tensor:
        """Aggregate the inputs (the rows of ``x``, or a sequence of tensors)."""
        if self.m == 1:
            y, sel = at.krum(x, f=self.f, nonfinite=self.nonfinite, return_selection=True)
        else:
            y, sel = at.multi_krum(x, f=self.f, m=self.m, nonfinite=self.nonfinite, return_selection=True)
        self.last_selection = sel
        return y


class MultiKrum(Krum):
    """Multi-Krum: :class:`Krum` with ``m`` defaulting to ``n - f``."""

    def __init__(self, *, f: int, m: int | None = None, nonfinite: str = "robust") -> None:
        super().__init__(f=f, m=m, nonfinite=nonfinite)


class CrossMax(_Aggregator):
    """CrossMax over the predictors of logits ``(..., N, C)``; see :func:`aggkit.torch.crossmax`.

    >>> z = torch.tensor([[1, 0, -1, 0.5], [0, 2, 0, -3], [0.5, -1, 3, 0], [2, 1.5, 0, 1.9]])
    >>> CrossMax(k=3)(z)
    tensor([-2.0000, -1.0000, -2.0000, -2.9000])
    """

    _params = ("k", "reducer", "even", "predictor_dim", "class_dim", "nonfinite")

    def __init__(
        self,
        k: int | None = 3,
        *,
        reducer: str = "kth",
        even: str = "lower",
        predictor_dim: int = -2,
        class_dim: int = -1,
        nonfinite: str = "robust",
    ) -> None:
        super().__init__()
        if reducer == "median" and k == 3:
            k = None  # the default k does not apply to the median
        check_crossmax_params(k, reducer, even, nonfinite)
        self.k, self.reducer, self.even, self.nonfinite = k, reducer, even, nonfinite
        self.predictor_dim, self.class_dim = predictor_dim, class_dim

    def forward(self, z: Tensor) -> Tensor:
        """Scores ``(..., C)``; their argmax is the prediction."""
        return at.crossmax(
            z, k=self.k, reducer=self.reducer, even=self.even, predictor_dim=self.predictor_dim,
            class_dim=self.class_dim, nonfinite=self.nonfinite,
        )  # fmt: skip


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

    ``forward(x, return_all=False)`` returns the CrossMax scores ``(B, C)``, and with
    ``return_all=True`` also every predictor's logits ``(B, N, C)`` (heads in ``layers``
    order, then the backbone), e.g. to train all heads with a summed cross-entropy.
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
        reducer: str = "kth",
        even: str = "lower",
        nonfinite: str = "robust",
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
        if reducer == "median" and k == 3:
            k = None
        k_ = check_crossmax_params(k, reducer, even, nonfinite)
        if k_ > n:
            raise InvalidParameterError(
                f"SelfEnsemble: k must satisfy 2 <= k <= N, got k={k_}, N={n} predictors"
            )
        self.crossmax = CrossMax(k, reducer=reducer, even=even, nonfinite=nonfinite)
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

    _params = ("q", "r", "inner", "outer", "buckets", "vote", "no_majority")

    def __init__(
        self,
        *,
        q: int,
        r: int = 3,
        inner: Any = "mean",
        outer: Any = "median",
        buckets: int | None = None,
        vote: str = "exact",
        no_majority: str = "drop",
    ) -> None:
        super().__init__()
        from aggkit.rules.detox import DETOX as _Rule

        _Rule(q=q, r=r, buckets=buckets, vote=vote, no_majority=no_majority)  # validates
        self.q, self.r, self.inner, self.outer = q, r, inner, outer
        self.buckets, self.vote, self.no_majority = buckets, vote, no_majority

    def forward(self, x: Any, groups: Any = "contiguous", rng: Any = None) -> Tensor:
        """Aggregate the workers' vectors."""
        return at.detox(
            x, q=self.q, r=self.r, inner=self.inner, outer=self.outer, buckets=self.buckets,
            vote=self.vote, no_majority=self.no_majority, groups=groups, rng=rng,
        )  # fmt: skip


def __getattr__(name: str) -> Any:
    # LCMAggregation lives in aggkit.torch.lcm, imported on first use: it subclasses PyTorch
    # Geometric's Aggregation when torch_geometric is installed, whose import takes seconds.
    if name == "LCMAggregation":
        from aggkit.torch.lcm import LCMAggregation

        return LCMAggregation
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

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

from typing import Any

from torch import Tensor, nn

import aggkit.torch as at
from aggkit._validate import POLICIES, check_choice, check_f
from aggkit.rules.krum import _check_m
from aggkit.rules.median import EVEN

__all__ = ["Krum", "Mean", "Median", "MultiKrum", "TrimmedMean"]


class _Aggregator(nn.Module):
    _params: tuple[str, ...] = ()

    def extra_repr(self) -> str:
        return ", ".join(f"{p}={getattr(self, p)!r}" for p in self._params)


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

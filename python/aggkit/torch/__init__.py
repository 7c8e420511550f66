r"""aggkit for torch: the rules as differentiable torch operators, modules and FL helpers.

Every function mirrors the numpy API of the same name and returns a tensor on the input's
device, in the input's dtype:

* **CPU tensors** reach the Rust core without a copy (a numpy view of the tensor's memory) and
  the result comes back without a copy (``torch.from_numpy``).
* **CUDA and other devices** run a torch-native implementation with the same semantics (ties
  by ``(value, row)``, ``even``, ``nonfinite``); the data never leaves the device.
* **Autograd.** Each rule is a ``torch.library.custom_op`` (``torch.ops.aggkit.<name>``) with a
  fake kernel and an autograd formula, so it works under ``torch.compile``. The gradient goes
  to the inputs the rule selected or kept (ALGORITHMS.md §0.6): the median's middle element
  (half to each of the two middles under ``even="mean"``), the trimmed mean's kept values
  (``1/(n - 2f)`` each), Krum's chosen input, Multi-Krum's ``m`` inputs (``1/m`` each), the
  mean's inputs (``w_i / Σ w``; non-finite inputs dropped under ``"robust"`` get none).
  Weights receive no gradient.
* float16 and bfloat16 are computed in float32 and returned in the input dtype.

The coordinate-wise rules (``mean``, ``median``, ``trimmed_mean``) take ``dim``: the dimension
that indexes the inputs; every other dimension is a coordinate, so leading batch dimensions
work (``x`` of shape ``(batch, n, d)`` with ``dim=1`` gives ``(batch, d)``; a ``dim`` other than 0
costs one copy of ``x`` to bring the inputs first). ``x`` may also be a sequence of ``n``
same-shaped tensors: without a gradient to track, CPU tensors are read in place (no stacking).

Importing ``aggkit`` never imports torch; ``import aggkit.torch`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

try:
    import torch
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("aggkit.torch needs PyTorch: pip install 'aggkit[torch]'") from e
from torch import Tensor

import aggkit
from aggkit._validate import POLICIES, check_choice, check_f, check_n, check_weights
from aggkit.errors import EmptyInputError, InvalidParameterError, ShapeError
from aggkit.rules.crossmax import check_crossmax_params, normalize_dims
from aggkit.rules.krum import Selection, _check_m
from aggkit.rules.median import EVEN

# Importing _family after _ops/_native (it uses both); its names are re-exported below.
from aggkit.torch import (
    _family,
    _ops,
)
from aggkit.torch._family import (
    arc,
    bucketing,
    bulyan,
    caf,
    centered_clipping,
    clipping,
    mda,
    meamed,
    monna,
    nnm,
    perturb,
    sign_vote,
    smea,
)
from aggkit.torch._ops import force_native
from aggkit.torch.monoid import TreeSchedule, segment_reduce, tree_reduce, tree_schedule
from aggkit.torch.state_dict import aggregate_state_dicts

__all__ = [
    "TreeSchedule",
    "aggregate_state_dicts",
    "arc",
    "bucketing",
    "bulyan",
    "caf",
    "centered_clipping",
    "clipping",
    "crossmax",
    "detox",
    "force_native",
    "geometric_median",
    "krum",
    "mda",
    "meamed",
    "mean",
    "median",
    "monna",
    "multi_krum",
    "nnm",
    "perturb",
    "pipeline",
    "segment_reduce",
    "sign_vote",
    "smea",
    "tree_reduce",
    "tree_schedule",
    "trimmed_mean",
]

_REDUCED = (torch.float16, torch.bfloat16)


def _check_dtype(dtype: torch.dtype, rule: str) -> torch.dtype:
    """The dtype the kernels compute in; TypeError for non-float dtypes."""
    if not dtype.is_floating_point or dtype.is_complex:
        raise TypeError(
            f"{rule}: x must hold floating-point values (float16, bfloat16, float32 or float64), "
            f"got dtype {dtype}; convert explicitly, e.g. x.float()"
        )
    if dtype in _REDUCED:
        return torch.float32
    if dtype in (torch.float32, torch.float64):
        return dtype
    raise TypeError(f"{rule}: x has dtype {dtype}; aggkit supports float16, bfloat16, float32 and float64")


def _stack(x: Sequence[Tensor], rule: str) -> Tensor:
    if len(x) == 0:
        raise EmptyInputError(f"{rule} needs at least one input, got n=0")
    for i, t in enumerate(x):
        if not isinstance(t, Tensor):
            raise TypeError(f"{rule}: x[{i}] must be a tensor, got {type(t).__name__}")
        if t.shape != x[0].shape:
            raise ShapeError(
                f"{rule}: all inputs must have the same shape: x[0] has shape {tuple(x[0].shape)}, "
                f"x[{i}] has shape {tuple(t.shape)}"
            )
        if t.dtype != x[0].dtype:
            raise TypeError(
                f"{rule}: all inputs must have the same dtype: x[0] is {x[0].dtype}, x[{i}] is {t.dtype}"
            )
        if t.device != x[0].device:
            raise ValueError(
                f"{rule}: all inputs must be on one device: x[0] is on {x[0].device}, x[{i}] on {t.device}"
            )
    return torch.stack(list(x))


def _in_place_rows(x: Any) -> list[Any] | None:
    """Numpy views of a sequence of CPU tensors when nothing needs autograd or tracing.

    The Rust core then reads each tensor where it is, like the numpy API's sequences.
    """
    if isinstance(x, Tensor) or not isinstance(x, Sequence) or len(x) == 0:
        return None
    if torch.compiler.is_compiling() or getattr(_ops._local, "native", False):
        return None
    grad = torch.is_grad_enabled()
    ok = all(
        isinstance(t, Tensor)
        and t.device.type == "cpu"
        and t.dtype in (torch.float16, torch.float32, torch.float64)
        and not (grad and t.requires_grad)
        and t.shape == x[0].shape
        and t.dtype == x[0].dtype
        for t in x
    )
    return [t.detach().numpy() for t in x] if ok else None


class _Prepared:
    """``x`` as a contiguous ``(n, d)`` float32/float64 tensor, and how to shape the output."""

    def __init__(self, x: Any, rule: str, dim: int = 0) -> None:
        if not isinstance(x, Tensor):
            if isinstance(x, (str, bytes)) or not isinstance(x, Sequence):
                raise TypeError(
                    f"{rule}: x must be a tensor or a sequence of tensors, got {type(x).__name__}"
                )
            if dim != 0:
                raise InvalidParameterError(f"{rule}: dim must be 0 for a sequence of inputs, got dim={dim}")
            x = _stack(x, rule)
        if x.ndim == 0:
            raise ShapeError(f"{rule}: x must have shape (n, ...), got a 0-d tensor")
        if not -x.ndim <= dim < x.ndim:
            raise InvalidParameterError(f"{rule}: dim={dim} is out of range for a {x.ndim}-d tensor")
        dt = _check_dtype(x.dtype, rule)
        if dim % x.ndim != 0:
            x = x.movedim(dim, 0)
        self.n = x.shape[0]
        if self.n == 0:
            raise EmptyInputError(f"{rule} needs at least one input, got n=0")
        self.shape = x.shape[1:]
        self.dtype = x.dtype
        x2 = x.reshape(self.n, self.shape.numel())
        if x2.dtype != dt:
            x2 = x2.to(dt)
        self.x = x2.contiguous()

    def finish(self, out: Tensor) -> Tensor:
        out = out.reshape(self.shape)
        return out if out.dtype == self.dtype else out.to(self.dtype)


def _needs_grad(x: Tensor) -> bool:
    return torch.is_grad_enabled() and x.requires_grad


def median(
    x: Any, *, even: str = "mean", weights: Any = None, nonfinite: str = "robust", dim: int = 0
) -> Tensor:
    """Coordinate-wise median; see :func:`aggkit.median`.

    The gradient goes to the middle element of each coordinate (half to each of the two
    middle elements under ``even="mean"`` with even ``n``); ties are broken by row index.
    With ``weights`` it runs as torch ops on every device (sort, cumulative weights, gather).
    """
    even = check_choice(even, "even", EVEN, "median")
    nonfinite = check_choice(nonfinite, "nonfinite", POLICIES, "median")
    if weights is not None:
        p = _Prepared(x, "median", dim)
        w = check_weights(weights, p.n, "median")
        if sum(w) <= 0:
            raise InvalidParameterError("median: the weights sum to 0")
        return p.finish(_family.weighted_median(p.x, w, even, nonfinite))
    if (views := _in_place_rows(x)) is not None and dim == 0:
        return torch.from_numpy(aggkit.median(views, even=even, nonfinite=nonfinite))
    p = _Prepared(x, "median", dim)
    out, _, _ = torch.ops.aggkit.median(p.x, even, nonfinite, _needs_grad(p.x))
    return p.finish(out)


def trimmed_mean(x: Any, *, f: int, weights: Any = None, nonfinite: str = "robust", dim: int = 0) -> Tensor:
    """Coordinate-wise trimmed mean; see :func:`aggkit.trimmed_mean`.

    The gradient is ``1/(n - 2f)`` for each kept value, 0 for the trimmed ones. With
    ``weights`` it runs as torch ops on every device; each value's gradient is the part of its
    mass that is kept over the kept mass.
    """
    f = check_f(f, "trimmed_mean")
    nonfinite = check_choice(nonfinite, "nonfinite", POLICIES, "trimmed_mean")
    if weights is not None:
        p = _Prepared(x, "trimmed_mean", dim)
        check_n("trimmed mean", "n >= 2f + 1", p.n, f, 2 * f + 1)
        w = check_weights(weights, p.n, "trimmed_mean")
        if sum(w) <= 0:
            raise InvalidParameterError("trimmed mean: the weights sum to 0")
        return p.finish(_family.weighted_trimmed_mean(p.x, w, f, nonfinite))
    if (views := _in_place_rows(x)) is not None and dim == 0:
        return torch.from_numpy(aggkit.trimmed_mean(views, f=f, nonfinite=nonfinite))
    p = _Prepared(x, "trimmed_mean", dim)
    check_n("trimmed mean", "n >= 2f + 1", p.n, f, 2 * f + 1)
    out, _, _ = torch.ops.aggkit.trimmed_mean(p.x, f, nonfinite, _needs_grad(p.x))
    return p.finish(out)


def mean(x: Any, *, weights: Any = None, nonfinite: str = "robust", dim: int = 0) -> Tensor:
    """The (weighted) mean; see :func:`aggkit.mean`.

    The gradient of input ``i`` is ``w_i / Σ w`` (0 for inputs dropped as non-finite);
    ``weights`` (a sequence, array or tensor) receive no gradient.
    """
    nonfinite = check_choice(nonfinite, "nonfinite", POLICIES, "mean")
    if weights is None and (views := _in_place_rows(x)) is not None and dim == 0:
        return torch.from_numpy(aggkit.mean(views, nonfinite=nonfinite))
    p = _Prepared(x, "mean", dim)
    w = [] if weights is None else check_weights(weights, p.n)
    out, _ = torch.ops.aggkit.mean(p.x, w, nonfinite)
    return p.finish(out)


def _selection(idx: Tensor, scores: Tensor) -> Selection:
    return Selection(idx, scores)


def krum(
    x: Any, *, f: int, nonfinite: str = "robust", return_selection: bool = False
) -> Tensor | tuple[Tensor, Selection]:
    """Krum; see :func:`aggkit.krum`. The gradient goes to the selected input.

    With ``return_selection=True`` the :class:`aggkit.Selection` holds tensors (int64 indices,
    float64 scores) on the input's device.
    """
    f = check_f(f, "krum")
    nonfinite = check_choice(nonfinite, "nonfinite", POLICIES, "krum")
    if (views := _in_place_rows(x)) is not None:
        y, sel = aggkit.krum(views, f=f, nonfinite=nonfinite, return_selection=True)
        out, idx, scores = torch.from_numpy(y), torch.from_numpy(sel.indices), torch.from_numpy(sel.scores)
        return (out, _selection(idx, scores)) if return_selection else out
    p = _Prepared(x, "krum")
    check_n("Krum", "n >= 2f + 3", p.n, f, 2 * f + 3)
    out, idx, scores = torch.ops.aggkit.krum(p.x, f, nonfinite)
    y = p.finish(out)
    return (y, _selection(idx, scores)) if return_selection else y


def multi_krum(
    x: Any,
    *,
    f: int,
    m: int | None = None,
    weights: Any = None,
    nonfinite: str = "robust",
    return_selection: bool = False,
) -> Tensor | tuple[Tensor, Selection]:
    """Multi-Krum; see :func:`aggkit.multi_krum`.

    The gradient is ``1/m`` to each selected input, or ``w_i / Σ_selected w`` with ``weights``.
    """
    f = check_f(f, "multi_krum")
    nonfinite = check_choice(nonfinite, "nonfinite", POLICIES, "multi_krum")
    if (views := _in_place_rows(x)) is not None:
        y, sel = aggkit.multi_krum(
            views, f=f, m=m, weights=weights, nonfinite=nonfinite, return_selection=True
        )
        out, idx, scores = torch.from_numpy(y), torch.from_numpy(sel.indices), torch.from_numpy(sel.scores)
        return (out, _selection(idx, scores)) if return_selection else out
    p = _Prepared(x, "multi_krum")
    check_n("Multi-Krum", "n >= 2f + 3", p.n, f, 2 * f + 3)
    m_ = _check_m(m, p.n, f)
    if m_ > p.n:
        raise InvalidParameterError(f"Multi-Krum: m must satisfy 1 <= m <= n, got m={m_}, n={p.n}")
    w = None if weights is None else check_weights(weights, p.n, "multi_krum")
    out, idx, scores = torch.ops.aggkit.multi_krum(p.x, f, m_, nonfinite)
    if w is not None:
        # As in the numpy API: the selected rows' weighted mean, best score first.
        order = idx.tolist()
        if not any(w[i] > 0 for i in order):
            raise InvalidParameterError(f"multi_krum: the selected inputs {order} all have weight 0")
        out, _ = torch.ops.aggkit.mean(p.x[idx], [w[i] for i in order], "propagate")
    y = p.finish(out)
    return (y, _selection(idx, scores)) if return_selection else y


def crossmax(
    z: Tensor,
    *,
    k: int | None = None,
    reducer: str = "kth",
    even: str = "lower",
    predictor_dim: int = -2,
    class_dim: int = -1,
    nonfinite: str = "robust",
) -> Tensor:
    """CrossMax of logits ``(..., N, C) -> (..., C)``; see :func:`aggkit.crossmax`.

    The gradient of each output ``Y[c]`` has four entries (ALGORITHMS.md §13.4): ``+1`` at
    the k-th predictor's logit for ``c`` and ``-1`` at that predictor's top logit, ``-1`` at
    the best predictor's logit for ``c`` and ``+1`` at its top logit (they cancel where ``c``
    is that predictor's top class); half of the k-th terms to each of the two middle
    predictors for ``reducer="median", even="mean"``. This sparse gradient is CrossMax's own;
    it is not smoothed.
    """
    k_ = check_crossmax_params(k, reducer, even, nonfinite)
    if not isinstance(z, Tensor):
        raise TypeError(f"crossmax: z must be a tensor, got {type(z).__name__}")
    dt = _check_dtype(z.dtype, "crossmax")
    pd, cd = normalize_dims(z.ndim, predictor_dim, class_dim)
    moved = z.movedim((pd, cd), (-2, -1))
    batch, (n, c) = moved.shape[:-2], moved.shape[-2:]
    if k_ > n:
        raise InvalidParameterError(f"crossmax: k must satisfy 2 <= k <= N, got k={k_}, N={n}")
    if n < 2:
        raise InvalidParameterError(
            f"crossmax: needs N >= 2 predictors, got N={n} (with one predictor every class scores 0)"
        )
    z3 = moved.reshape(-1, n, c)
    if z3.dtype != dt:
        z3 = z3.to(dt)
    y, *_ = torch.ops.aggkit.crossmax(z3.contiguous(), k_, reducer, even, nonfinite, _needs_grad(z3))
    y = y.reshape(*batch, c)
    return y if y.dtype == z.dtype else y.to(z.dtype)


def detox(x: Any, **kwargs: Any) -> Any:
    """DETOX on tensors; see :func:`aggkit.detox` (same parameters).

    The vote runs as ``torch.ops.aggkit.detox`` (Rust on CPU, torch ops on other devices);
    stage 2 composes ``aggkit.torch``'s rules on the winners, so the gradient reaches each
    group's winning member (ALGORITHMS.md §12.7: one representative, the lowest-index member
    that won) through the stage-2 rules' own backward.
    """
    if not isinstance(x, Tensor) and not (isinstance(x, Sequence) and x and isinstance(x[0], Tensor)):
        raise TypeError(f"detox: x must be a tensor or a sequence of tensors, got {type(x).__name__}")
    return aggkit.detox(x, **kwargs)


def geometric_median(
    x: Any,
    *,
    weights: Any = None,
    nu: float = 1e-6,
    maxiter: int = 100,
    ftol: float = 1e-10,
    init: str = "median",
    nonfinite: str = "robust",
    grad: str = "frozen",
    return_info: bool = False,
) -> Any:
    r"""Geometric median; see :func:`aggkit.geometric_median`.

    CPU tensors run the Rust iterations; other devices iterate with torch ops in float64 on the
    device (same definition, not bit-identical to the CPU path). ``grad`` picks the gradient
    (ALGORITHMS.md §5):

    * ``"frozen"`` (default; the RFA author's choice): the result is the weighted mean of the
      inputs with the final Weiszfeld weights ``w``, input ``i`` gets ``w_i / Σ w`` (the
      weights treated as constants). Cheap.
    * ``"unrolled"``: autograd through the same number of Weiszfeld iterations, replayed with
      torch ops in float64 (what byzfl gets implicitly). Memory grows with the iterations.
    * ``"implicit"``: the exact derivative of the fixed point
      :math:`\sum_i \alpha_i (z - x_i)/r_i = 0` (:math:`r_i = \max(\nu, \|z - x_i\|)`):
      solve :math:`H v = g` with :math:`H = \sum_i (\alpha_i/r_i)(I - u_i u_i^\top)` by
      conjugate gradients (matrix-free, :math:`O(n d)` per step), then input ``i`` gets
      :math:`(\alpha_i/r_i)(I - u_i u_i^\top) v`. Exact at convergence.

    Inputs dropped as non-finite get no gradient in every mode.
    """
    from aggkit.rules.geometric_median import GeometricMedianInfo, check_gm_params

    check_gm_params(nu, maxiter, ftol, init, nonfinite)
    check_choice(grad, "grad", ("frozen", "unrolled", "implicit"), "geometric_median")
    p = _Prepared(x, "geometric_median")
    alpha = [] if weights is None else check_weights(weights, p.n, "geometric_median")
    w, stats = torch.ops.aggkit.geometric_median(
        p.x.detach(), alpha, float(nu), int(maxiter), float(ftol), init, nonfinite
    )
    wl = [float(v) for v in w.tolist()]
    out, _ = torch.ops.aggkit.mean(p.x, wl, "robust" if nonfinite == "robust" else "propagate")
    if grad != "frozen" and _needs_grad(p.x):
        from aggkit.torch._family import gm_implicit, gm_unrolled

        keep = torch.tensor([v > 0 for v in wl], device=p.x.device)
        a = torch.tensor(alpha or [1.0] * p.n, dtype=torch.float64, device=p.x.device)
        if grad == "unrolled":
            z = gm_unrolled(p.x, keep, a, float(nu), int(stats[0]), init)
        else:
            z = gm_implicit(p.x, out.detach(), keep, a, float(nu))
        out = z.to(p.x.dtype)
    y = p.finish(out)
    if not return_info:
        return y
    it, conv, obj = stats.tolist()
    return y, GeometricMedianInfo(int(it), bool(conv), float(obj), w.cpu().numpy())


def pipeline(x: Any, *, stages: Sequence[Any]) -> Any:
    """Apply :class:`aggkit.Pipeline` ``stages`` to tensors (each stage's torch version)."""
    return aggkit.Pipeline(stages)(x)

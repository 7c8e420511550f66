"""The ``aggkit::*`` torch operators: registration, fake (meta) kernels and autograd.

Every op takes a validated, contiguous ``(n, d)`` float32/float64 tensor. On CPU it runs the
Rust kernel on a zero-copy numpy view of the tensor's memory (the GIL is released inside) and
wraps the result with ``torch.from_numpy`` (no copy); on every other device, or on CPU inside
:func:`aggkit.torch.force_native`, it runs the torch-native kernel of ``_native.py`` and the
data never leaves its device.

Autograd follows ALGORITHMS.md §0.6: the forward returns selection metadata (the rows of the
order statistics, the selected inputs, the mean's coefficients) and the backward routes the
incoming gradient to those inputs with gather/scatter ops, so it runs on any device and is
itself differentiable. The selection is treated as locally constant (zero gradient through
the decision), which is exact almost everywhere.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from aggkit import _core
from aggkit.torch import _native

_local = threading.local()


@contextlib.contextmanager
def force_native() -> Iterator[None]:
    """Run CPU tensors through the torch-native kernels instead of the Rust core.

    The native kernels are what CUDA (and other device) tensors use; forcing them on CPU lets
    the two implementations be compared on any machine. Applies to the calling thread.
    """
    prev = getattr(_local, "native", False)
    _local.native = True
    try:
        yield
    finally:
        _local.native = prev


def _rust(x: Tensor) -> bool:
    return x.device.type == "cpu" and not getattr(_local, "native", False)


def _view(x: Tensor) -> np.ndarray:
    """The tensor's memory as a numpy array (no copy; ``x`` is contiguous and on the CPU)."""
    return x.detach().numpy()


def _rows(r: np.ndarray | None, x: Tensor) -> Tensor:
    if r is None:
        return torch.empty(0, dtype=torch.int32, device=x.device)
    return torch.from_numpy(r.view(np.int32))  # rows < 2**32 fit; int32 view, no copy


def _columns(name: str, x: Tensor, *args: object) -> tuple[Tensor, Tensor, Tensor]:
    """Run the order-statistic kernel ``name`` (core or native): values, lo rows, hi rows."""
    if _rust(x):
        out, lo, hi = getattr(_core, name)(_view(x), *args)
        return torch.from_numpy(out), _rows(lo, x), _rows(hi, x)
    return getattr(_native, name)(x, *args)


def _columns_fake(x: Tensor, need_rows: bool) -> tuple[Tensor, Tensor, Tensor]:
    rows = x.shape[1] if need_rows else 0
    return x.new_empty(x.shape[1]), x.new_empty(rows, dtype=torch.int32), x.new_empty(rows, dtype=torch.int32)


# ---------------------------------------------------------------------------------------------
# median


@torch.library.custom_op("aggkit::median", mutates_args=())
def median(x: Tensor, even: str, nonfinite: str, need_rows: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Values ``(d,)``; rows of the lower and upper middle values ``(d,)`` int32 if asked."""
    return _columns("median", x, even, nonfinite, need_rows)


@median.register_fake
def _(x: Tensor, even: str, nonfinite: str, need_rows: bool) -> tuple[Tensor, Tensor, Tensor]:
    return _columns_fake(x, need_rows)


def _missing_rows(name: str) -> RuntimeError:
    return RuntimeError(
        f"aggkit::{name} was called with need_rows=False, so it saved nothing to differentiate; "
        "call it through aggkit.torch, which asks for the rows when a gradient is needed"
    )


def _median_setup(ctx, inputs, output) -> None:
    x, even, _, need_rows = inputs
    _, lo, hi = output
    ctx.shape = x.shape
    ctx.need_rows = need_rows
    n = x.shape[0]
    ctx.average = n % 2 == 0 and even == "mean"
    ctx.save_for_backward(lo, hi)


def _rust_backward(g: Tensor) -> bool:
    """Whether to use the one-pass Rust backward kernels.

    On CPU, unless a higher-order graph is being built (``create_graph=True`` turns grad mode on
    in backward), which needs differentiable torch ops, and unless the backward is being traced
    (``torch.compile``, ``opcheck``: fake or functional tensor subclasses), which needs torch ops.
    """
    return type(g) is torch.Tensor and _rust(g) and not torch.is_grad_enabled()


def _u32(rows: Tensor) -> np.ndarray:
    return rows.numpy().view(np.uint32)


def _median_backward(ctx, g: Tensor, _lo: Tensor, _hi: Tensor):
    lo, hi = ctx.saved_tensors
    if not ctx.need_rows:
        raise _missing_rows("median")
    if _rust_backward(g):
        gv = g.detach().contiguous().numpy()
        grad = _core.median_backward(ctx.shape[0], _u32(lo), _u32(hi) if ctx.average else None, gv)
        return torch.from_numpy(grad), None, None, None
    grad = g.new_zeros(ctx.shape)
    if ctx.average:
        half = (g / 2)[None]
        grad = grad.scatter_add(0, lo.long()[None], half).scatter_add(0, hi.long()[None], half)
    else:
        grad = grad.scatter(0, lo.long()[None], g[None])
    return grad, None, None, None


median.register_autograd(_median_backward, setup_context=_median_setup)


# ---------------------------------------------------------------------------------------------
# trimmed mean


@torch.library.custom_op("aggkit::trimmed_mean", mutates_args=())
def trimmed_mean(x: Tensor, f: int, nonfinite: str, need_rows: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Values ``(d,)``; rows of the lowest and highest kept values ``(d,)`` int32 if asked."""
    return _columns("trimmed_mean", x, f, nonfinite, need_rows)


@trimmed_mean.register_fake
def _(x: Tensor, f: int, nonfinite: str, need_rows: bool) -> tuple[Tensor, Tensor, Tensor]:
    return _columns_fake(x, need_rows)


def _trimmed_mean_setup(ctx, inputs, output) -> None:
    x, f, _, need_rows = inputs
    _, lo, hi = output
    ctx.kept = x.shape[0] - 2 * f
    ctx.need_rows = need_rows
    ctx.save_for_backward(x, lo, hi)


def kept_mask(x: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """Which ``(row, coordinate)`` a trimmed mean kept, rebuilt from the two boundary rows.

    The kept set of a coordinate is every row whose ``(value, row)`` key lies between the keys
    of its lowest and highest kept rows, inclusive (the tie rule of ALGORITHMS.md §0.1).
    """
    keys = _native.total_order_keys(x.detach())
    lo, hi = lo.long()[None], hi.long()[None]
    klo, khi = keys.gather(0, lo), keys.gather(0, hi)
    row = torch.arange(x.shape[0], device=x.device)[:, None]
    above = (keys > klo) | ((keys == klo) & (row >= lo))
    below = (keys < khi) | ((keys == khi) & (row <= hi))
    return above & below


def _kept_range_backward(ctx, g: Tensor, name: str):
    """``g / kept`` to each value of the kept range (trimmed mean, meamed), 0 elsewhere."""
    x, lo, hi = ctx.saved_tensors
    if not ctx.need_rows:
        raise _missing_rows(name)
    if _rust_backward(g):
        gv = g.detach().contiguous().numpy()
        grad = _core.trimmed_mean_backward(_view(x), _u32(lo), _u32(hi), gv, ctx.kept)
        return torch.from_numpy(grad), None, None, None
    mask = kept_mask(x, lo, hi)
    return torch.where(mask, (g / ctx.kept)[None], g.new_zeros(())), None, None, None


def _trimmed_mean_backward(ctx, g: Tensor, _lo: Tensor, _hi: Tensor):
    return _kept_range_backward(ctx, g, "trimmed_mean")


trimmed_mean.register_autograd(_trimmed_mean_backward, setup_context=_trimmed_mean_setup)


# ---------------------------------------------------------------------------------------------
# meamed (and Bulyan's second stage): the kept values are a range of ranks, like the trimmed mean


@torch.library.custom_op("aggkit::meamed", mutates_args=())
def meamed(x: Tensor, keep: int, nonfinite: str, need_rows: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Mean of the ``keep`` values closest to the median ``(d,)``; rows of the kept range's ends."""
    if _rust(x):
        out, lo, hi = _core.meamed(_view(x), 0, keep, nonfinite, need_rows)
        return torch.from_numpy(out), _rows(lo, x), _rows(hi, x)
    return _native.meamed(x, keep, nonfinite, need_rows)


@meamed.register_fake
def _(x: Tensor, keep: int, nonfinite: str, need_rows: bool) -> tuple[Tensor, Tensor, Tensor]:
    return _columns_fake(x, need_rows)


def _meamed_setup(ctx, inputs, output) -> None:
    x, keep, _, need_rows = inputs
    _, lo, hi = output
    ctx.kept = keep
    ctx.need_rows = need_rows
    ctx.save_for_backward(x, lo, hi)


def _meamed_backward(ctx, g: Tensor, _lo: Tensor, _hi: Tensor):
    return _kept_range_backward(ctx, g, "meamed")


meamed.register_autograd(_meamed_backward, setup_context=_meamed_setup)


# ---------------------------------------------------------------------------------------------
# mean


@torch.library.custom_op("aggkit::mean", mutates_args=())
def mean(x: Tensor, weights: list[float], nonfinite: str) -> tuple[Tensor, Tensor]:
    """Values ``(d,)`` and each input's coefficient ``w_i / Σ w`` ``(n,)`` float64.

    ``weights``: one per input, or empty for the unweighted mean.
    """
    w = np.asarray(weights, dtype=np.float64) if weights else None
    if _rust(x):
        out, dropped = _core.mean(_view(x), w, nonfinite)
        wv = np.ones(x.shape[0]) if w is None else w.copy()
        wv[dropped] = 0.0
        return torch.from_numpy(out), torch.from_numpy(wv / _native.weight_total(list(wv)))
    return _native.mean(x, None if w is None else [float(v) for v in w], nonfinite)


@mean.register_fake
def _(x: Tensor, weights: list[float], nonfinite: str) -> tuple[Tensor, Tensor]:
    return x.new_empty(x.shape[1]), x.new_empty(x.shape[0], dtype=torch.float64)


def _mean_setup(ctx, inputs, output) -> None:
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(output[1])


def _mean_backward(ctx, g: Tensor, _coef: Tensor):
    (coef,) = ctx.saved_tensors
    return coef.to(g.dtype)[:, None] * g[None], None, None


mean.register_autograd(_mean_backward, setup_context=_mean_setup)


# ---------------------------------------------------------------------------------------------
# Krum and Multi-Krum


def _krum_impl(x: Tensor, f: int, m: int, nonfinite: str, name: str) -> tuple[Tensor, Tensor, Tensor]:
    display = "Krum" if name == "krum" else "Multi-Krum"
    if _rust(x):
        if name == "krum":
            out, idx, scores = _core.krum(_view(x), f, nonfinite)
        else:
            out, idx, scores = _core.multi_krum(_view(x), f, m, nonfinite)
        return torch.from_numpy(out), torch.tensor(idx, dtype=torch.int64), torch.from_numpy(scores)
    return _native.multi_krum(x, f, m, nonfinite, display)


@torch.library.custom_op("aggkit::krum", mutates_args=())
def krum(x: Tensor, f: int, nonfinite: str) -> tuple[Tensor, Tensor, Tensor]:
    """The selected row ``(d,)``, its index ``(1,)`` int64 and every score ``(n,)`` float64."""
    return _krum_impl(x, f, 1, nonfinite, "krum")


@krum.register_fake
def _(x: Tensor, f: int, nonfinite: str) -> tuple[Tensor, Tensor, Tensor]:
    return (
        x.new_empty(x.shape[1]),
        x.new_empty(1, dtype=torch.int64),
        x.new_empty(x.shape[0], dtype=torch.float64),
    )


@torch.library.custom_op("aggkit::multi_krum", mutates_args=())
def multi_krum(x: Tensor, f: int, m: int, nonfinite: str) -> tuple[Tensor, Tensor, Tensor]:
    """Mean of the ``m`` best rows ``(d,)``, their indices ``(m,)``, every score ``(n,)``."""
    return _krum_impl(x, f, m, nonfinite, "multi_krum")


@multi_krum.register_fake
def _(x: Tensor, f: int, m: int, nonfinite: str) -> tuple[Tensor, Tensor, Tensor]:
    return (
        x.new_empty(x.shape[1]),
        x.new_empty(m, dtype=torch.int64),
        x.new_empty(x.shape[0], dtype=torch.float64),
    )


def _selection_setup(ctx, inputs, output) -> None:
    ctx.shape = inputs[0].shape
    _, idx, scores = output
    ctx.mark_non_differentiable(scores)
    ctx.save_for_backward(idx)


def _selection_backward(ctx, g: Tensor, _idx: Tensor, _scores: Tensor):
    (idx,) = ctx.saved_tensors
    m = idx.shape[0]
    grad = g.new_zeros(ctx.shape).index_add(0, idx, (g / m)[None].expand(m, -1))
    return (grad,) + (None,) * (ctx.nargs - 1)


def _krum_setup(ctx, inputs, output) -> None:
    ctx.nargs = 3
    _selection_setup(ctx, inputs, output)


def _multi_krum_setup(ctx, inputs, output) -> None:
    ctx.nargs = 4
    _selection_setup(ctx, inputs, output)


krum.register_autograd(_selection_backward, setup_context=_krum_setup)
multi_krum.register_autograd(_selection_backward, setup_context=_multi_krum_setup)


# ---------------------------------------------------------------------------------------------
# CrossMax


@torch.library.custom_op("aggkit::crossmax", mutates_args=())
def crossmax(
    z: Tensor, k: int, reducer: str, even: str, nonfinite: str, need_indices: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Scores ``(B, C)`` of logits ``(B, N, C)``, and int32 indices for the backward if asked.

    The indices: the top and the k-th predictor (the k-th twice; two different ones for an
    averaged median) ``(B, C)``, and each predictor's argmax class ``(B, N)``.
    """
    if _rust(z):
        b, n, c = z.shape
        y, top, kth, kth2, am = _core.crossmax(
            _view(z).reshape(b * n, c), n, k, reducer, even, nonfinite, need_indices
        )
        y = torch.from_numpy(y).reshape(b, c)
        if not need_indices:
            return (y, *(torch.empty(0, dtype=torch.int32) for _ in range(4)))
        i = [torch.from_numpy(v.view(np.int32)) for v in (top, kth, kth2, am)]
        return y, i[0].reshape(b, c), i[1].reshape(b, c), i[2].reshape(b, c), i[3].reshape(b, n)
    return _native.crossmax(z, k, reducer, even, nonfinite, need_indices)


@crossmax.register_fake
def _(z: Tensor, k: int, reducer: str, even: str, nonfinite: str, need_indices: bool):
    b, n, c = z.shape
    bc = (b, c) if need_indices else (0,)
    bn = (b, n) if need_indices else (0,)
    i32 = torch.int32
    return (
        z.new_empty(b, c),
        z.new_empty(bc, dtype=i32),
        z.new_empty(bc, dtype=i32),
        z.new_empty(bc, dtype=i32),
        z.new_empty(bn, dtype=i32),
    )


def _crossmax_setup(ctx, inputs, output) -> None:
    z, _, reducer, even, _, need_indices = inputs
    y, top, kth, kth2, am = output
    ctx.shape = z.shape
    ctx.need_indices = need_indices
    n = z.shape[1]
    ctx.average = reducer == "median" and even == "mean" and n % 2 == 0
    ctx.save_for_backward(y, top, kth, kth2, am)


def _crossmax_backward(ctx, g: Tensor, *_):
    """Four entries per output (ALGORITHMS.md §13.4).

    ``+g`` at ``(k-th, c)``, ``-g`` at ``(k-th, its argmax)``, ``-g`` at ``(top, c)``, ``+g``
    at ``(top, its argmax)``; half of the k-th terms to each middle predictor for an averaged
    median. Non-finite outputs (masked classes) pass no gradient.
    """
    y, top, kth, kth2, am = ctx.saved_tensors
    if not ctx.need_indices:
        raise RuntimeError(
            "aggkit::crossmax was called with need_indices=False, so it saved nothing to "
            "differentiate; call it through aggkit.torch.crossmax"
        )
    b, n, c = ctx.shape
    if _rust_backward(g):
        finite = torch.isfinite(y.detach()).reshape(-1).numpy()
        flat = [_u32(t.reshape(-1)) for t in (top, kth, kth2, am)]
        gv = g.detach().contiguous().reshape(-1).numpy()
        grad = _core.crossmax_backward(gv, finite, *flat, n, c, ctx.average)
        return torch.from_numpy(grad).reshape(b, n, c), None, None, None, None, None
    g = torch.where(torch.isfinite(y.detach()), g, g.new_zeros(()))
    cls = torch.arange(c, device=g.device)[None, :]
    am = am.long()
    preds, weights = [top.long()], [-g]
    if ctx.average:
        preds += [kth.long(), kth2.long()]
        weights += [g / 2, g / 2]
    else:
        preds.append(kth.long())
        weights.append(g)
    # One scatter of every term: (p, c) gets w, (p, argmax of p) gets -w; ordered class by
    # class, then term by term, which is the order the Rust kernel adds them in (same bits).
    index = torch.stack([t for p in preds for t in (p * c + cls, p * c + am.gather(1, p))], dim=2)
    src = torch.stack([t for w in weights for t in (w, -w)], dim=2)
    index, src = index.reshape(b, -1), src.reshape(b, -1)
    grad = g.new_zeros(b, n * c)
    if torch.is_grad_enabled():  # double backward: keep the graph
        grad = grad.scatter_add(1, index, src)
    else:
        grad.scatter_add_(1, index, src)
    return grad.reshape(b, n, c), None, None, None, None, None


crossmax.register_autograd(_crossmax_backward, setup_context=_crossmax_setup)


# ---------------------------------------------------------------------------------------------
# DETOX stage 1 (the vote; stage 2 composes the other ops, see aggkit.rules.detox)


@torch.library.custom_op("aggkit::detox", mutates_args=())
def detox(
    x: Tensor, groups: Tensor, r: int, segments: list[int], mode: str, atol: float, rtol: float
) -> tuple[Tensor, Tensor]:
    """DETOX's majority vote on ``(n, d)`` rows.

    Returns winners ``(g * s,)`` int32 (-1: none) and agreement ``(g * r,)``. ``groups`` is
    the flat ``(g * r,)`` int32 member list. Not differentiable (a selection): the gradient
    reaches the winners through the indexing that follows.
    """
    g = groups.numel() // r
    if _rust(x):
        w, agree = _core.detox_vote(_view(x), groups.numpy().view(np.uint32), r, segments, mode, atol, rtol)
        return torch.from_numpy(w.view(np.int32)), torch.from_numpy(agree)
    w, agree = _native.detox_vote(
        x, groups.cpu().numpy().reshape(g, r).astype(np.int64), segments, mode, atol, rtol
    )
    w32 = torch.from_numpy(w.reshape(-1).astype(np.int32)).to(x.device)
    return w32, torch.from_numpy(agree.reshape(-1)).to(x.device)


@detox.register_fake
def _(x: Tensor, groups: Tensor, r: int, segments: list[int], mode: str, atol: float, rtol: float):
    g = groups.shape[0] // r
    s = len(segments) - 1
    return x.new_empty(g * s, dtype=torch.int32), x.new_empty(g * r, dtype=torch.bool)


# ---------------------------------------------------------------------------------------------
# geometric median: the Weiszfeld weights (the value is their weighted mean, aggkit::mean)


@torch.library.custom_op("aggkit::geometric_median", mutates_args=())
def geometric_median(
    x: Tensor, alpha: list[float], nu: float, maxiter: int, ftol: float, init: str, nonfinite: str
) -> tuple[Tensor, Tensor]:
    """The final Weiszfeld weights ``(n,)`` float64 and ``[iterations, converged, objective]``.

    Not differentiable: ``aggkit.torch.geometric_median`` takes the weighted mean of ``x`` with
    these weights through ``aggkit::mean`` (the "frozen weights" gradient).
    """
    a = np.asarray(alpha, dtype=np.float64) if alpha else None
    if _rust(x):
        _, it, conv, obj, w = _core.geometric_median(_view(x), a, nu, maxiter, ftol, init, nonfinite)
    else:
        it, conv, obj, w = _native.geometric_median(x, alpha, nu, maxiter, ftol, init, nonfinite)
    stats = torch.tensor([float(it), float(conv), float(obj)], dtype=torch.float64)
    return torch.from_numpy(np.asarray(w, dtype=np.float64)).to(x.device), stats.to(x.device)


@geometric_median.register_fake
def _(x: Tensor, alpha: list[float], nu: float, maxiter: int, ftol: float, init: str, nonfinite: str):
    return x.new_empty(x.shape[0], dtype=torch.float64), x.new_empty(3, dtype=torch.float64)

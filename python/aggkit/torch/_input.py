"""The torch implementations' one entrance: ``x`` as a contiguous ``(n, d)`` tensor.

``x`` is a tensor of shape ``(n, *shape)`` (``dim`` picks the dimension of the inputs) or a
sequence of ``n`` same-shaped tensors on one device. float16 and bfloat16 are computed in
float32 and the result returned in the input's dtype; on CPU, without autograd, the mean,
median, trimmed mean, Krum and Multi-Krum read them in place (:func:`in_place_rows`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from aggkit import _params
from aggkit.errors import InvalidParameterError, ShapeError, empty_input_error
from aggkit.torch._paths import native_forced, triton_forced, use_triton

_REDUCED = (torch.float16, torch.bfloat16)


def compute_dtype(dtype: torch.dtype, rule: str) -> torch.dtype:
    """The dtype the kernels compute in; ``TypeError`` for non-float dtypes."""
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


def check_layout(t: Tensor, what: str) -> None:
    """Refuse tensors whose values are not one dense block: sparse and nested tensors."""
    if t.is_nested:
        raise TypeError(
            f"{what} is a nested tensor; every input must have one shape: pass a list of tensors "
            "of one shape, or pad them"
        )
    if t.layout != torch.strided:
        raise TypeError(f"{what} is a {t.layout} tensor; aggkit reads dense tensors: pass t.to_dense()")


def stack(x: Sequence[Any], rule: str) -> Tensor:
    """``n`` same-shaped tensors on one device as one ``(n, *shape)`` tensor (a copy)."""
    if len(x) == 0:
        raise empty_input_error(rule)
    for i, t in enumerate(x):
        if not isinstance(t, Tensor):
            raise TypeError(f"{rule}: x[{i}] must be a tensor, got {type(t).__name__}")
        check_layout(t, f"{rule}: x[{i}]")
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


_HALF_NAMES = {torch.float16: "float16", torch.bfloat16: "bfloat16"}


class HostRows:
    """CPU tensors as the Rust core reads them, in place.

    One flat view per tensor, or one ``(n, d)`` view of a single tensor.
    float16 and bfloat16 reach the core as their ``uint16`` bit patterns (the rules that take
    this path have half-precision kernels); rows are copied only where they are not contiguous.
    """

    def __init__(self, tensors: list[Tensor], shape: tuple[int, ...], *, stacked: bool = False) -> None:
        """``tensors``: the ``n`` inputs of ``shape``, or (``stacked``) one ``(n, *shape)`` tensor."""
        self.shape = shape
        self.torch_dtype = tensors[0].dtype
        self.half = _HALF_NAMES.get(self.torch_dtype)

        def host(t: Tensor) -> np.ndarray:
            t = t.detach().contiguous()
            if self.half is None:
                return t.numpy()
            return t.view(torch.int16).numpy().view(np.uint16)

        if stacked:
            a = host(tensors[0])
            self.data: Any = a.reshape(a.shape[0], -1)
        else:
            self.data = [host(t).reshape(-1) for t in tensors]
        self.n = len(self.data)

    @property
    def core(self) -> Any:
        """The rows as the core takes them: half precision as ``(format, bit patterns)``."""
        return self.data if self.half is None else (self.half, self.data)

    def take(self, idx: list[int]) -> Any:
        """The rows ``idx`` as the core takes them."""
        rows = [self.data[i] for i in idx]
        return rows if self.half is None else (self.half, rows)

    def finish(self, out: np.ndarray) -> Tensor:
        """A flat core result as a tensor in the inputs' shape and dtype."""
        out = out.reshape(self.shape)
        if self.half is not None:
            return torch.from_numpy(out.view(np.int16)).view(self.torch_dtype)
        return torch.from_numpy(out)


def host(v: Any) -> Any:
    """A tensor (weights, a centre) as a host numpy array; anything else as it is."""
    return v.detach().cpu().numpy() if isinstance(v, Tensor) else v


def in_place_rows(x: Any) -> HostRows | None:
    """CPU tensors read in place, when nothing needs autograd or tracing.

    A sequence of same-shaped float16 / bfloat16 / float32 / float64 tensors, or one float16 /
    bfloat16 tensor of shape ``(n, ...)`` (a float32 / float64 tensor takes the custom op, which
    reads it in place too).

    The Rust core then reads each tensor where it is, as it reads numpy arrays.
    """
    if torch.compiler.is_compiling() or native_forced() or triton_forced():
        return None
    grad = torch.is_grad_enabled()

    def ok(t: Any) -> bool:
        return (
            type(t) is Tensor
            and t.device.type == "cpu"
            and t.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64)
            and t.layout == torch.strided
            and not t.is_nested
            and not (grad and t.requires_grad)
        )

    try:
        if isinstance(x, Tensor):
            if x.dtype in _HALF_NAMES and ok(x) and x.ndim >= 1 and x.shape[0] > 0:
                return HostRows([x], tuple(x.shape[1:]), stacked=True)
            return None
        if not isinstance(x, Sequence) or len(x) == 0:
            return None
        if all(ok(t) and t.shape == x[0].shape and t.dtype == x[0].dtype for t in x):
            return HostRows(list(x), tuple(x[0].shape))
    except (RuntimeError, TypeError):
        # tensors without host storage to view (vmap's batched tensors, fake or other wrapper
        # subclasses): the custom ops handle them
        return None
    return None


def needs_grad(x: Tensor) -> bool:
    """Whether autograd records an op on ``x``."""
    return torch.is_grad_enabled() and x.requires_grad


class Prepared:
    """``x`` as a contiguous ``(n, d)`` float32/float64 tensor, and how to shape the output."""

    def __init__(self, x: Any, rule: str, dim: int = 0, *, in_place: bool = False) -> None:
        """Check ``x`` and lay it out as ``(n, d)``.

        ``in_place``: the rule's op reads any strides and half precision where its kernels are
        Triton's (:func:`~aggkit.torch._paths.use_triton`); ``x`` is then passed on without the
        float32 / contiguous copy, which would be ``(n, d)``-sized.
        """
        if not isinstance(x, Tensor):
            if isinstance(x, str | bytes) or not isinstance(x, Sequence):
                raise TypeError(
                    f"{rule}: x must be a tensor or a sequence of tensors, got {type(x).__name__}"
                )
            if dim != 0:
                raise InvalidParameterError(f"{rule}: dim must be 0 for a sequence of inputs, got dim={dim}")
            x = stack(x, rule)
        check_layout(x, f"{rule}: x")
        if x.ndim == 0:
            raise ShapeError(f"{rule}: x must have shape (n, ...), got a 0-d tensor")
        if not -x.ndim <= dim < x.ndim:
            raise InvalidParameterError(f"{rule}: dim={dim} is out of range for a {x.ndim}-d tensor")
        dt = compute_dtype(x.dtype, rule)
        if dim % x.ndim != 0:
            x = x.movedim(dim, 0)
        self.n: int = x.shape[0]
        if self.n == 0:
            raise empty_input_error(rule)
        self.shape = x.shape[1:]
        self.dtype = x.dtype
        # flatten / unsqueeze keep the sizes symbolic under torch.export and torch.compile
        # (reshape to shape.numel() would make the feature size a constant)
        x2 = x.flatten(1) if x.ndim > 1 else x.unsqueeze(1)
        if in_place and use_triton(x2):
            self.x: Tensor = x2
            self.d: int = x2.shape[1]
            return
        if x2.dtype != dt:
            x2 = x2.to(dt)
        self.x = x2.contiguous()
        self.d = x2.shape[1]

    def finish(self, out: Tensor) -> Tensor:
        """A flat result in the input's trailing shape and dtype."""
        out = out.reshape(self.shape)
        return out if out.dtype == self.dtype else out.to(self.dtype)

    def finish_rows(self, out: Tensor) -> Tensor:
        """An ``(m, d)`` result as ``(m, *shape)`` in the input's dtype."""
        out = out.reshape(out.shape[0], *self.shape)
        return out if out.dtype == self.dtype else out.to(self.dtype)


class ArrayOps:
    """numpy's ``axis=`` / ``out=`` / ``keepdims=`` for tensors (``aggkit._axes``)."""

    def clients_first(
        self, x: Any, axis: Any, keepdims: bool, out: Any, rule: str
    ) -> tuple[Any, tuple[tuple[int, ...], Tensor | None]]:
        """``x`` as one tensor with the client axes first (``movedim``: autograd sees it)."""
        if isinstance(x, Tensor):
            check_layout(x, f"{rule}: x")
            t = x
        else:
            if isinstance(x, str | bytes) or not isinstance(x, Sequence) or len(x) == 0:
                raise TypeError(f"{rule}: x must be a tensor or a non-empty sequence of tensors")
            axes = _params.axes(axis, x[0].ndim + 1, rule)
            if axes == (0,):  # the inputs are already the rows
                return x, _plan(x[0], tuple(x[0].shape), axes, keepdims, out, rule)
            t = stack(x, rule)
        axes = _params.axes(axis, t.ndim, rule)
        k = len(axes)
        if axes != tuple(range(k)):
            t = t.movedim(axes, tuple(range(k)))
        if k != 1:
            t = t.reshape(math.prod(t.shape[:k]), *t.shape[k:])
        return t, _plan(t, tuple(t.shape[1:]), axes, keepdims, out, rule)

    def deliver(self, y: Any, plan: tuple[tuple[int, ...], Tensor | None]) -> Any:
        """``y`` in the planned shape, copied into ``out`` if given."""
        shape, out = plan
        y = y.reshape(shape)
        if out is None:
            return y
        out.copy_(y)
        return out


def _plan(
    x: Tensor, rest: tuple[int, ...], axes: tuple[int, ...], keepdims: bool, out: Any, rule: str
) -> tuple[tuple[int, ...], Tensor | None]:
    """The result's shape, and ``out`` checked against it (torch's rules) before any work."""
    shape = list(rest)
    if keepdims:
        for a in axes:
            shape.insert(a, 1)
    if out is not None:
        if not isinstance(out, Tensor):
            raise TypeError(f"{rule}: out must be a tensor, got {type(out).__name__}")
        if tuple(out.shape) != tuple(shape):
            raise ShapeError(f"{rule}: out must have shape {tuple(shape)}, got {tuple(out.shape)}")
        if out.device != x.device:
            raise ValueError(f"{rule}: out is on {out.device}, the inputs on {x.device}")
        if not torch.can_cast(x.dtype, out.dtype):
            raise TypeError(
                f"{rule}: out has dtype {out.dtype}, which the result's {x.dtype} cannot be cast to"
            )
        if torch.is_grad_enabled() and (x.requires_grad or out.requires_grad):
            raise RuntimeError(
                f"{rule}: out= does not support automatic differentiation (as in torch), but an "
                "input or out requires grad: drop out= or call under torch.no_grad()"
            )
    return tuple(shape), out

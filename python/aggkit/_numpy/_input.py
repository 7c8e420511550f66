"""The numpy implementations' one entrance: turn ``x`` into rows the core can read.

``x`` is an array of shape ``(n, *shape)`` (numpy, or anything with ``__array__`` or
``__dlpack__``) or a sequence of ``n`` arrays of one shape. Arrays are viewed, never stacked:
an ``(n, *shape)`` array reaches Rust as one ``(n, d)`` view, a sequence as ``n`` flat views.
A copy happens only where the core cannot read the memory as it is, and each such case is
named here: rows that are not contiguous (Fortran order, a transposed or strided view),
non-native byte order, and half precision (float16, and ml_dtypes' bfloat16) for the rules
without half-precision kernels, which compute in a float32 copy. The rules with such kernels
(``prepare(..., half=True)``) read the half-precision values in place, as ``uint16`` bit
patterns, and return the result in the input's dtype (see docs/conventions.md).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from aggkit import _params
from aggkit.errors import InvalidParameterError, ShapeError, empty_input_error


@dataclass(frozen=True)
class Prepared:
    """``x`` ready for the core, plus what is needed to shape the output like the input."""

    data: Any  # one (n, d) ndarray or a list of n 1-D ndarrays: float32, float64 or uint16
    n: int
    shape: tuple[int, ...]  # trailing shape of one input
    dtype: np.dtype[Any]  # the caller's dtype (the output's)
    wrap: Callable[[np.ndarray], Any] | None = None  # back to the caller's array type
    half: str | None = None  # "float16" / "bfloat16" where ``data`` holds their bit patterns

    @property
    def d(self) -> int:
        """Values per input."""
        return math.prod(self.shape)

    @property
    def core(self) -> Any:
        """``data`` as the core takes it: half precision as ``(format, bit patterns)``."""
        return self.data if self.half is None else (self.half, self.data)

    def finish(self, out: np.ndarray) -> Any:
        """Reshape a flat core output to the input's trailing shape, dtype and array type."""
        out = out.reshape(self.shape)
        if self.half is not None:
            # the kernel's bit patterns (native order), then the caller's byte order
            out = out.view(self.dtype.newbyteorder("=")).astype(self.dtype, copy=False)
        elif out.dtype != self.dtype:
            out = out.astype(self.dtype)
        return out if self.wrap is None else self.wrap(out)

    def finish_rows(self, out: np.ndarray) -> Any:
        """An ``(m, d)`` core output as ``(m, *shape)`` in the caller's dtype and array type."""
        assert self.half is None, "half-precision rows are bit patterns: no rule outputs rows of them"
        out = out.reshape((out.shape[0], *self.shape))
        if out.dtype != self.dtype:
            out = out.astype(self.dtype)
        return out if self.wrap is None else self.wrap(out)

    def rows(self) -> list[np.ndarray]:
        """The ``n`` rows as a list of 1-D views."""
        assert self.half is None, "half-precision rows are bit patterns, not values"
        return list(self.data)

    def take(self, idx: Sequence[int]) -> Any:
        """The rows ``idx`` for the core: one ``(m, d)`` view where they lie at equal steps.

        Otherwise a list of views, or, for thousands of small rows (where borrowing each view
        would cost more than copying them, see :func:`rows_for_core`), one ``(m, d)`` copy.
        Half precision comes as ``(format, rows)``, like :attr:`core`.
        """
        rows = rows_for_core([self.data[i] for i in idx])
        if isinstance(rows, list) and len(rows) >= COPY_MIN_ROWS:
            if len(rows) * self.d * rows[0].itemsize <= COPY_MAX_BYTES:
                rows = np.stack(rows)
        return rows if self.half is None else (self.half, rows)

    def stacked(self) -> np.ndarray:
        """The rows as one new ``(n, d)`` array in the compute dtype (a copy)."""
        assert self.half is None, "half-precision rows are bit patterns, not values"
        if isinstance(self.data, np.ndarray):
            return np.array(self.data, copy=True)
        return np.stack(self.data)


def _mirror(x: Any) -> Callable[[np.ndarray], Any] | None:
    """How to return a result in the array type of ``x``; ``None`` for numpy and plain data.

    Uses the array API's ``asarray`` of the producer's namespace, which takes numpy arrays.
    """
    if isinstance(x, np.ndarray) or not hasattr(x, "__array_namespace__"):
        return None
    xp = x.__array_namespace__()
    if xp is np:
        return None
    return xp.asarray  # type: ignore[no-any-return]


def half_format(dtype: np.dtype[Any]) -> str | None:
    """``"float16"`` or ``"bfloat16"`` (ml_dtypes' dtype) for a half-precision dtype, else None."""
    if dtype.itemsize != 2:
        return None
    if dtype.kind == "f":
        return "float16"
    if dtype.name == "bfloat16":
        return "bfloat16"
    return None


def compute_dtype(dtype: np.dtype[Any], what: str) -> np.dtype[Any]:
    """The dtype the core computes ``dtype`` in; ``TypeError`` for anything but floats."""
    if half_format(dtype) == "bfloat16":
        return np.dtype(np.float32)
    if dtype.kind != "f":
        raise TypeError(
            f"{what} must hold floating-point values (float16, bfloat16, float32 or float64), "
            f"got dtype {dtype}; convert explicitly, e.g. x.astype(np.float32)"
        )
    if dtype.itemsize == 2:
        return np.dtype(np.float32)
    if dtype.itemsize in (4, 8):
        return np.dtype(dtype.type).newbyteorder("=")
    raise TypeError(f"{what} has dtype {dtype}; aggkit supports float16, bfloat16, float32 and float64")


def as_array(obj: Any, what: str) -> np.ndarray:
    """``obj`` as a plain numpy array without a copy where one can be avoided.

    Subclasses become plain arrays (``np.matrix`` would keep its rows 2-D; a memory map reads
    as it is); a masked array is refused, since its mask would be lost.
    """
    if isinstance(obj, np.ma.MaskedArray):
        raise TypeError(
            f"{what} is a masked array; aggkit does not read masks (the masked values would "
            "count as data): pass x.filled(np.nan) to treat them as non-finite inputs, or the "
            "unmasked inputs only"
        )
    if isinstance(obj, np.ndarray):
        return obj if type(obj) is np.ndarray else np.asarray(obj)
    if hasattr(obj, "__dlpack__") and not hasattr(obj, "__array__"):
        return np.from_dlpack(obj)
    if hasattr(obj, "__array__") or hasattr(obj, "__dlpack__"):
        try:
            return np.asarray(obj)
        except (RuntimeError, TypeError) as e:  # e.g. a tensor that requires grad
            raise TypeError(f"{what} could not be read as an array: {e}") from e
    raise TypeError(
        f"{what} must be an array (numpy, or with __array__/__dlpack__) or a sequence of "
        f"arrays, got {type(obj).__name__}"
    )


def c_array(a: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
    """``a`` as a C-contiguous, aligned array of ``dtype``, copying only if needed."""
    a = np.ascontiguousarray(a, dtype=dtype)
    return a if a.flags.aligned else a.copy()


def _rows_2d(a: np.ndarray, dt: np.dtype[Any]) -> np.ndarray:
    """An ``(n, d)`` view of ``a`` whose rows are contiguous and aligned, copying only if needed."""
    n = a.shape[0]
    if a.dtype != dt:
        a = a.astype(dt)
    m = a.reshape(n, -1) if a.size else a.reshape(n, int(np.prod(a.shape[1:])))
    if (m.shape[1] > 1 and m.strides[1] != m.itemsize) or not m.flags.aligned:
        m = np.array(m, order="C", copy=True)
    return m


def _is_array(v: Any) -> bool:
    return isinstance(v, np.ndarray) or hasattr(v, "__array__") or hasattr(v, "__dlpack__")


def _read_nested(x: Sequence[Any], rule: str) -> np.ndarray:
    """A sequence of numbers or of nested sequences, read as numpy reads it.

    Python numbers have no floating dtype of their own: integers and bools are read as float64,
    the dtype ``np.median`` and ``np.mean`` give them. (An integer *array* is refused instead:
    its dtype is the caller's choice, and aggkit does not change it silently.)
    """
    try:
        a = np.asarray(x)
    except ValueError:  # ragged nesting
        raise ShapeError(
            f"{rule}: x could not be read as one array: its nested sequences differ in length"
        ) from None
    if a.dtype == object:
        raise TypeError(f"{rule}: x could not be read as an array of numbers")
    if a.dtype.kind in "biu":
        if not _python_ints(x):
            raise TypeError(
                f"{rule}: x must hold floating-point values (float16, bfloat16, float32 or "
                f"float64), got numpy integers ({a.dtype}); convert explicitly, e.g. "
                "np.asarray(x, dtype=np.float32)"
            )
        a = a.astype(np.float64)
    return a


def _python_ints(x: Any) -> bool:
    """Whether every leaf of nested lists / tuples ``x`` is a Python int or bool (no dtype)."""
    stack = [x]
    while stack:
        v = stack.pop()
        if isinstance(v, list | tuple):
            stack.extend(v)
        elif type(v) not in (int, bool):
            return False
    return True


def _is_array_sequence(x: Any, rule: str) -> bool:
    """Whether ``x`` is a sequence of arrays (``True``) or one array-like (``False``)."""
    if isinstance(x, str | bytes):
        raise TypeError(f"{rule}: x must be an array or a sequence of arrays, got {type(x).__name__}")
    if not isinstance(x, Sequence) or hasattr(x, "__array__"):
        return False
    if len(x) > 0 and all(_is_array(v) for v in x):
        return True
    if any(_is_array(v) for v in x):
        i = next(i for i, v in enumerate(x) if not _is_array(v))
        raise TypeError(
            f"{rule}: x mixes arrays and other values: x[{i}] is {type(x[i]).__name__}; "
            "give a sequence of arrays, or numbers / nested lists read as one array"
        )
    return False


def _same_arrays(x: Sequence[Any], rule: str) -> list[np.ndarray]:
    """The arrays of a non-empty sequence, checked to share one shape and one dtype."""
    arrays = [as_array(v, f"{rule}: x[{i}]") for i, v in enumerate(x)]
    shape, dtype = arrays[0].shape, arrays[0].dtype
    for i, a in enumerate(arrays):
        if a.shape != shape:
            raise ShapeError(
                f"{rule}: all inputs must have the same shape: x[0] has shape {shape}, "
                f"x[{i}] has shape {a.shape}"
            )
        if a.dtype != dtype:
            raise TypeError(
                f"{rule}: all inputs must have the same dtype: x[0] is {dtype}, x[{i}] is {a.dtype}"
            )
    return arrays


def _half_dtype(dtype: np.dtype[Any], half: bool) -> tuple[np.dtype[Any], str | None]:
    """The dtype rows are read in, and the half-precision format the kernel reads (if any)."""
    fmt = half_format(dtype) if half else None
    if fmt is None:
        return compute_dtype(dtype, ""), None
    # the kernels read native byte order (a byte-swapped input is copied)
    return dtype.newbyteorder("="), fmt


def prepare(x: Any, rule: str, *, half: bool = False) -> Prepared:
    """Validate ``x`` and view it as ``n`` rows of ``d`` values.

    With ``half=True`` (rules with half-precision kernels) float16 and bfloat16 input is read in
    place as ``uint16`` bit patterns (``Prepared.half`` names the format); otherwise it is
    widened to float32.
    """
    if _is_array_sequence(x, rule):
        return _prepare_sequence(x, rule, half)
    if isinstance(x, Sequence) and not hasattr(x, "__array__"):
        x = _read_nested(x, rule)
    a = as_array(x, f"{rule}: x")
    if a.ndim == 0:
        raise ShapeError(f"{rule}: x must have shape (n, ...), got a 0-d array")
    if a.shape[0] == 0:
        raise empty_input_error(rule)
    compute_dtype(a.dtype, f"{rule}: x")
    dt, fmt = _half_dtype(a.dtype, half)
    data = _rows_2d(a, dt)
    if fmt is not None:
        data = data.view(np.uint16)
    return Prepared(data, a.shape[0], tuple(a.shape[1:]), a.dtype, _mirror(x), fmt)


def _prepare_sequence(x: Sequence[Any], rule: str, half: bool = False) -> Prepared:
    arrays = _same_arrays(x, rule)
    shape, dtype = arrays[0].shape, arrays[0].dtype
    compute_dtype(dtype, f"{rule}: x")
    dt, fmt = _half_dtype(dtype, half)
    rows = []
    for a in arrays:
        if a.dtype != dt:
            a = a.astype(dt)
        a = np.ascontiguousarray(a)
        a = (a if a.flags.aligned else a.copy()).reshape(-1)
        rows.append(a if fmt is None else a.view(np.uint16))
    return Prepared(rows_for_core(rows), len(rows), tuple(shape), dtype, _mirror(x[0]), fmt)


#: Lists at least this long are checked for rows at equal steps of one buffer.
ONE_VIEW_MIN = 64
#: Scattered rows a rule picks (MoNNA's nearest, Multi-Krum's chosen) are copied into one array
#: when there are at least this many and they fit in ``COPY_MAX_BYTES``.
COPY_MIN_ROWS = 2048
COPY_MAX_BYTES = 256 << 20


def _owner(a: np.ndarray) -> Any:
    """The object that owns ``a``'s memory (the end of its chain of bases)."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a if a.base is None else a.base


def rows_for_core(rows: list[np.ndarray]) -> Any:
    """Contiguous 1-D rows as the core reads them: one strided view where it can.

    One ``(n, d)`` view when the rows lie at equal steps in one buffer (``list(x)``,
    ``list(x[::2])``, reversed), else the list itself. The core borrows each array it is
    given, and rust-numpy checks each borrow against the others of the same buffer: ``n``
    views of one buffer cost ``O(n^2)`` (16,000 rows of one ``(16000, 2)`` array took 0.9 s,
    the array itself 1 ms). The view reads the same memory.
    """
    n = len(rows)
    if n < ONE_VIEW_MIN or rows[0].size == 0:
        return rows
    owner = _owner(rows[0])
    if any(_owner(r) is not owner for r in rows):
        return rows
    addr = [r.__array_interface__["data"][0] for r in rows]
    step = addr[1] - addr[0]
    if any(b - a != step for a, b in itertools.pairwise(addr)):
        return rows
    return np.lib.stride_tricks.as_strided(
        rows[0], shape=(n, rows[0].size), strides=(step, rows[0].itemsize), writeable=False
    )


def nonfinite_rows(rows: Any) -> list[int]:
    """The inputs (rows of a prepared ``(n, d)`` array or list of rows) holding NaN or ±inf."""
    return [i for i, r in enumerate(rows) if not np.isfinite(r).all()]


@dataclass(frozen=True)
class _Plan:
    """What :meth:`ArrayOps.deliver` needs: the result's shape, ``out``, the caller's array type."""

    shape: tuple[int, ...]
    out: np.ndarray | None
    wrap: Callable[[np.ndarray], Any] | None


class ArrayOps:
    """numpy's ``axis=`` / ``out=`` / ``keepdims=`` for host arrays (``aggkit._axes``)."""

    def clients_first(self, x: Any, axis: Any, keepdims: bool, out: Any, rule: str) -> tuple[Any, _Plan]:
        """``x`` as one numpy array with the client axes first (a view where numpy can)."""
        if _is_array_sequence(x, rule):
            arrays = _same_arrays(x, rule)
            axes = _params.axes(axis, arrays[0].ndim + 1, rule)
            wrap = _mirror(x[0])
            if axes == (0,):  # the inputs are already the rows: read them in place
                return arrays, _plan(arrays[0].shape, arrays[0].dtype, axes, keepdims, out, wrap, rule)
            a = np.stack(arrays)
        else:
            wrap = _mirror(x)
            if isinstance(x, Sequence) and not hasattr(x, "__array__"):
                x = _read_nested(x, rule)
            a = as_array(x, f"{rule}: x")
            axes = _params.axes(axis, a.ndim, rule)
        k = len(axes)
        if axes != tuple(range(k)):
            a = np.moveaxis(a, axes, tuple(range(k)))
        if k != 1:
            a = a.reshape((math.prod(a.shape[:k]), *a.shape[k:]))
        return a, _plan(a.shape[1:], a.dtype, axes, keepdims, out, wrap, rule)

    def deliver(self, y: Any, plan: _Plan) -> Any:
        """``y`` in the planned shape, copied into ``out`` if given, else in the caller's type."""
        y = y.reshape(plan.shape)
        if plan.out is None:
            return y if plan.wrap is None else plan.wrap(y)
        np.copyto(plan.out, y, casting="same_kind")
        return plan.out


def _plan(
    rest: tuple[int, ...],
    dtype: np.dtype[Any],
    axes: tuple[int, ...],
    keepdims: bool,
    out: Any,
    wrap: Callable[[np.ndarray], Any] | None,
    rule: str,
) -> _Plan:
    """The result's shape (length-1 axes at ``axes`` under keepdims), ``out`` checked against it."""
    shape = list(rest)
    if keepdims:
        for a in axes:
            shape.insert(a, 1)
    if out is not None:
        _check_out(out, tuple(shape), dtype, rule)
    return _Plan(tuple(shape), out, wrap)


def _check_out(out: Any, shape: tuple[int, ...], dtype: np.dtype[Any], rule: str) -> None:
    """Refuse an ``out`` the result could not be written to, before any work is done."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{rule}: out must be a numpy array, got {type(out).__name__}")
    if out.shape != shape:
        raise ShapeError(f"{rule}: out must have shape {shape}, got {out.shape}")
    if not np.can_cast(dtype, out.dtype, casting="same_kind"):
        raise TypeError(
            f"{rule}: out has dtype {out.dtype}, which the result's {dtype} cannot be cast to "
            "under numpy's same_kind rule"
        )
    if not out.flags.writeable:
        raise InvalidParameterError(f"{rule}: out is read-only")

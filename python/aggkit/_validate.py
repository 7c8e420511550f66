"""The one entrance every rule goes through: turn ``x`` into rows the core can read.

``x`` is an array of shape ``(n, *shape)`` (numpy, or anything with ``__array__`` or
``__dlpack__``) or a sequence of ``n`` arrays of one shape. Arrays are viewed, never stacked:
an ``(n, *shape)`` array reaches Rust as one ``(n, d)`` view, a sequence as ``n`` flat views.
A copy happens only where the core cannot read the memory as it is, and each such case is
named here: rows that are not contiguous (Fortran order, a transposed or strided view),
non-native byte order, and float16 (computed in float32 and returned as float16).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from aggkit.errors import EmptyInputError, InvalidParameterError, ShapeError, TooFewInputsError

_NATIVE = (np.dtype(np.float32), np.dtype(np.float64))
POLICIES = ("robust", "raise", "propagate")


@dataclass(frozen=True)
class Prepared:
    """``x`` ready for the core, plus what is needed to shape the output like the input."""

    data: Any  # one (n, d) ndarray or a list of n 1-D ndarrays, float32 or float64
    n: int
    shape: tuple[int, ...]  # trailing shape of one input
    dtype: np.dtype  # the caller's dtype (the output's)
    wrap: Callable[[np.ndarray], Any] | None = None  # back to the caller's array type

    def finish(self, out: np.ndarray) -> Any:
        """Reshape a flat core output to the input's trailing shape, dtype and array type."""
        out = out.reshape(self.shape)
        if out.dtype != self.dtype:
            out = out.astype(self.dtype)
        return out if self.wrap is None else self.wrap(out)


def is_torch(x: Any) -> bool:
    """Whether ``x`` is a torch tensor or a non-empty sequence of them.

    torch is never imported here: if the caller holds a tensor, torch is in ``sys.modules``.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    if isinstance(x, torch.Tensor):
        return True
    return isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(v, torch.Tensor) for v in x)


def _torch() -> Any:
    """``aggkit.torch``, imported on first use (only once the caller holds a tensor)."""
    import aggkit.torch

    return aggkit.torch


def _mirror(x: Any) -> Callable[[np.ndarray], Any] | None:
    """How to return a result in the array type of ``x``; ``None`` for numpy and plain data.

    Uses the array API's ``asarray`` of the producer's namespace, which takes numpy arrays.
    """
    if isinstance(x, np.ndarray) or not hasattr(x, "__array_namespace__"):
        return None
    xp = x.__array_namespace__()
    if xp is np:
        return None
    return xp.asarray


def _compute_dtype(dtype: np.dtype, what: str) -> np.dtype:
    if dtype.kind != "f":
        raise TypeError(
            f"{what} must hold floating-point values (float16, float32 or float64), "
            f"got dtype {dtype}; convert explicitly, e.g. x.astype(np.float32)"
        )
    if dtype.itemsize == 2:
        return np.dtype(np.float32)
    if dtype.itemsize in (4, 8):
        return np.dtype(dtype.type).newbyteorder("=")
    raise TypeError(f"{what} has dtype {dtype}; aggkit supports float16, float32 and float64")


def _as_array(obj: Any, what: str) -> np.ndarray:
    if isinstance(obj, np.ndarray):
        return obj
    if hasattr(obj, "__dlpack__") and not hasattr(obj, "__array__"):
        return np.from_dlpack(obj)
    if hasattr(obj, "__array__") or hasattr(obj, "__dlpack__"):
        try:
            return np.asarray(obj)
        except (RuntimeError, TypeError) as e:  # e.g. a torch tensor that requires grad
            raise TypeError(f"{what} could not be read as an array: {e}") from e
    raise TypeError(
        f"{what} must be an array (numpy, or with __array__/__dlpack__) or a sequence of "
        f"arrays, got {type(obj).__name__}"
    )


def _rows_2d(a: np.ndarray, dt: np.dtype) -> np.ndarray:
    """An ``(n, d)`` view of ``a`` whose rows are contiguous, copying only if needed."""
    n = a.shape[0]
    if a.dtype != dt:
        a = a.astype(dt)
    m = a.reshape(n, -1) if a.size else a.reshape(n, int(np.prod(a.shape[1:])))
    if m.shape[1] > 1 and m.strides[1] != m.itemsize:
        m = np.ascontiguousarray(m)
    return m


def prepare(x: Any, rule: str) -> Prepared:
    """Validate ``x`` and view it as ``n`` rows of ``d`` values."""
    if isinstance(x, (str, bytes)):
        raise TypeError(f"{rule}: x must be an array or a sequence of arrays, got {type(x).__name__}")
    if isinstance(x, Sequence) and not hasattr(x, "__array__"):
        return _prepare_sequence(x, rule)
    a = _as_array(x, f"{rule}: x")
    if a.ndim == 0:
        raise ShapeError(f"{rule}: x must have shape (n, ...), got a 0-d array")
    if a.shape[0] == 0:
        raise EmptyInputError(f"{rule} needs at least one input, got n=0")
    dt = _compute_dtype(a.dtype, f"{rule}: x")
    return Prepared(_rows_2d(a, dt), a.shape[0], tuple(a.shape[1:]), a.dtype, _mirror(x))


def _prepare_sequence(x: Sequence[Any], rule: str) -> Prepared:
    if len(x) == 0:
        raise EmptyInputError(f"{rule} needs at least one input, got n=0")
    arrays = [_as_array(v, f"{rule}: x[{i}]") for i, v in enumerate(x)]
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
    dt = _compute_dtype(dtype, f"{rule}: x")
    rows = []
    for a in arrays:
        if a.dtype != dt:
            a = a.astype(dt)
        rows.append(np.ascontiguousarray(a).reshape(-1))
    return Prepared(rows, len(rows), tuple(shape), dtype, _mirror(x[0]))


def check_f(f: Any, rule: str) -> int:
    """``f`` must be a non-negative int (bool is refused: ``f=True`` is almost surely a bug)."""
    if isinstance(f, bool) or not isinstance(f, (int, np.integer)):
        raise TypeError(f"{rule}: f must be an int, got {type(f).__name__}")
    if f < 0:
        raise InvalidParameterError(f"{rule}: f must be >= 0, got f={f}")
    return int(f)


def check_choice(value: Any, name: str, choices: tuple[str, ...], rule: str) -> str:
    """``value`` must be one of ``choices``."""
    if value not in choices:
        raise InvalidParameterError(
            f"{rule}: {name} must be one of {', '.join(map(repr, choices))}, got {value!r}"
        )
    return value


def check_n(display: str, requirement: str, n: int, f: int, needed: int) -> None:
    """Raise the core's ``TooFewInputsError`` (same message) when ``n < needed``."""
    if n < needed:
        raise TooFewInputsError(f"{display} needs {requirement}, got n={n}, f={f}")


def check_weights(weights: Any, n: int, rule: str = "mean") -> list[float]:
    """Per-input weights as floats: one per input, finite and >= 0 (the core's checks)."""
    w = np.asarray(weights.detach().cpu() if hasattr(weights, "detach") else weights, dtype=np.float64)
    if w.ndim != 1:
        raise ShapeError(f"{rule}: weights must be 1-D with one entry per input, got shape {w.shape}")
    if w.shape[0] != n:
        raise InvalidParameterError(
            f"{rule}: weights must have one entry per input: got {w.shape[0]} weights for n={n}"
        )
    for i, v in enumerate(w):
        if not (np.isfinite(v) and v >= 0.0):
            raise InvalidParameterError(f"{rule}: weights must be finite and >= 0, got weights[{i}]={v}")
    return [float(v) for v in w]


def nonfinite_rows(rows: Any) -> list[int]:
    """The inputs (rows of a prepared ``(n, d)`` array or list of rows) holding NaN or ±inf."""
    return [i for i, r in enumerate(rows) if not np.isfinite(r).all()]


def nonfinite_error(rule: str, rows: list[int], detail: str) -> Exception:
    """The core's ``NonFiniteError`` (same message format, ``.rows`` set)."""
    from aggkit.errors import NonFiniteError

    shown = ", ".join(str(r) for r in rows[:10])
    more = f" and {len(rows) - 10} more" if len(rows) > 10 else ""
    e = NonFiniteError(f"{rule}: {detail}; non-finite inputs (row indices): [{shown}]{more}")
    e.rows = rows  # type: ignore[attr-defined]
    return e

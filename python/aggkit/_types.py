"""Types shared by the public signatures.

A rule returns the array type it was given: a numpy array for numpy input, a tensor for a
tensor, a JAX or CuPy array for theirs. :data:`ArrayT` expresses that without naming any
framework: it is bound to :class:`SupportsDLPack`, the protocol every such array implements.
Plain Python data (nested lists of numbers) comes back as a numpy array.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeAlias, TypeVar

import numpy.typing as npt


class SupportsDLPack(Protocol):
    """An array that can be exchanged through DLPack (numpy, torch, JAX, CuPy, ...)."""

    def __dlpack_device__(self) -> tuple[Any, Any]: ...


ArrayT = TypeVar("ArrayT", bound=SupportsDLPack)
"""The input's array type, which is also the output's."""

OutT = TypeVar("OutT", bound=SupportsDLPack)
"""The type of an ``out=`` array, which is what the call returns."""

Inputs: TypeAlias = ArrayT | Sequence[ArrayT]
"""``n`` inputs: one ``(n, *shape)`` array, or a sequence of ``n`` arrays of one shape."""

ArrayLike: TypeAlias = npt.ArrayLike
NDArray: TypeAlias = npt.NDArray[Any]
Weights: TypeAlias = "npt.ArrayLike | SupportsDLPack | None"
"""Per-input weights: one non-negative number per input."""

__all__ = ["ArrayLike", "ArrayT", "Inputs", "NDArray", "OutT", "SupportsDLPack", "Weights"]

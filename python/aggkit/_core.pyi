# Stub for the private extension aggkit._core (rust/python/). The public, documented API is
# the aggkit package; these are the raw kernels it calls after validating the input.
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__version__: str

class AggkitError(ValueError): ...
class EmptyInputError(AggkitError): ...
class ShapeError(AggkitError): ...
class TooFewInputsError(AggkitError): ...
class InvalidParameterError(AggkitError): ...

class NonFiniteError(AggkitError):
    rows: list[int]

# x: one C-row-contiguous (n, d) float32/float64 array, or a list of n contiguous 1-D arrays.
_Matrix = npt.NDArray[np.floating] | Sequence[npt.NDArray[np.floating]]

def mean(
    x: _Matrix, weights: npt.NDArray[np.float64] | None, nonfinite: str
) -> tuple[npt.NDArray[np.floating], list[int]]: ...
def median(
    x: _Matrix, even: str, nonfinite: str, return_rows: bool
) -> tuple[npt.NDArray[np.floating], npt.NDArray[np.uint32] | None, npt.NDArray[np.uint32] | None]: ...
def trimmed_mean(
    x: _Matrix, f: int, nonfinite: str, return_rows: bool
) -> tuple[npt.NDArray[np.floating], npt.NDArray[np.uint32] | None, npt.NDArray[np.uint32] | None]: ...
def krum(
    x: _Matrix, f: int, nonfinite: str
) -> tuple[npt.NDArray[np.floating], list[int], npt.NDArray[np.float64]]: ...
def multi_krum(
    x: _Matrix, f: int, m: int, nonfinite: str
) -> tuple[npt.NDArray[np.floating], list[int], npt.NDArray[np.float64]]: ...
def pairwise_sq_distances(x: _Matrix) -> npt.NDArray[np.float64]: ...
def krum_select(
    dist: npt.NDArray[np.float64], f: int, m: int, nonfinite: str
) -> tuple[list[int], npt.NDArray[np.float64]]: ...
def crossmax(
    z: npt.NDArray[np.floating], n: int, k: int, reducer: str, even: str, nonfinite: str, return_indices: bool
) -> tuple[
    npt.NDArray[np.floating],
    npt.NDArray[np.uint32] | None,
    npt.NDArray[np.uint32] | None,
    npt.NDArray[np.uint32] | None,
    npt.NDArray[np.uint32] | None,
]: ...
def crossmax_backward(
    g: npt.NDArray[np.floating],
    finite: npt.NDArray[np.bool_],
    top: npt.NDArray[np.uint32],
    kth: npt.NDArray[np.uint32],
    kth2: npt.NDArray[np.uint32],
    argmax: npt.NDArray[np.uint32],
    n: int,
    c: int,
    average: bool,
) -> npt.NDArray[np.floating]: ...
def detox_vote(
    x: _Matrix,
    groups: npt.NDArray[np.uint32],
    r: int,
    segments: list[int],
    mode: str,
    atol: float,
    rtol: float,
) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.bool_]]: ...
def geometric_median(
    x: _Matrix,
    weights: npt.NDArray[np.float64] | None,
    nu: float,
    maxiter: int,
    ftol: float,
    init: str,
    nonfinite: str,
) -> tuple[npt.NDArray[np.floating], int, bool, float, npt.NDArray[np.float64]]: ...
def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def simd_level() -> str: ...
def _set_simd_level(level: str) -> str: ...

# monoid tree reductions (rust/python/monoid.rs)
def segment_ptr(index: npt.NDArray[np.int64], dim_size: int | None = None) -> npt.NDArray[np.int64]: ...
def check_segment_ptr(ptr: npt.NDArray[np.int64], rows: int, dim_size: int | None = None) -> None: ...
def segment_reduce(
    x: npt.NDArray[np.floating], ptr: npt.NDArray[np.int64], op: str, empty: float | None = None
) -> npt.NDArray[np.floating]: ...
def segment_reduce_backward(
    x: npt.NDArray[np.floating],
    ptr: npt.NDArray[np.int64],
    op: str,
    out: npt.NDArray[np.floating],
    grad: npt.NDArray[np.floating],
) -> npt.NDArray[np.floating]: ...
def tree_schedule(ptr: npt.NDArray[np.int64], rows: int, pad: str) -> dict[str, Any]: ...

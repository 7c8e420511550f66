# The private extension aggkit._core (rust/python/): one function per kernel, called by the
# Python layers after they validated the input. The public, documented API is the aggkit
# package. `python -m mypy.stubtest aggkit._core` checks this file against the extension.
from collections.abc import Sequence
from typing import Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

__all__ = [
    "AggkitError",
    "EmptyInputError",
    "InvalidParameterError",
    "NonFiniteError",
    "ShapeError",
    "TooFewInputsError",
    "__version__",
    "_panic_in_kernel",
    "_set_simd_level",
    "bulyan_select",
    "centered_clipping",
    "check_segment_ptr",
    "crossmax",
    "crossmax_backward",
    "detox_vote",
    "dists_to",
    "empty_input_error",
    "foolsgold_history",
    "geometric_median",
    "get_num_threads",
    "group_means",
    "krum",
    "krum_select",
    "max_threads",
    "mda_select",
    "meamed",
    "mean",
    "median",
    "median_backward",
    "multi_krum",
    "nonfinite_error",
    "pairwise_sq_distances",
    "row_norms",
    "scale_rows",
    "scaled_distances",
    "scaled_dots",
    "segment_ptr",
    "segment_reduce",
    "segment_reduce_backward",
    "set_num_threads",
    "sign_vote",
    "simd_level",
    "too_few_inputs_error",
    "tree_schedule",
    "trimmed_mean",
    "trimmed_mean_backward",
    "weighted_median",
    "weighted_trimmed_mean",
]

__version__: str

class AggkitError(ValueError): ...
class EmptyInputError(AggkitError): ...
class ShapeError(AggkitError): ...
class TooFewInputsError(AggkitError): ...
class InvalidParameterError(AggkitError): ...

class NonFiniteError(AggkitError):
    rows: list[int]

def nonfinite_error(rule: str, rows: Sequence[int], detail: str) -> NonFiniteError: ...
def too_few_inputs_error(rule: str, requirement: str, n: int, f: int) -> TooFewInputsError: ...
def empty_input_error(rule: str) -> EmptyInputError: ...

_Float: TypeAlias = npt.NDArray[np.float32] | npt.NDArray[np.float64]
_F64: TypeAlias = npt.NDArray[np.float64]
_U32: TypeAlias = npt.NDArray[np.uint32]
_I64: TypeAlias = npt.NDArray[np.int64]
_U16: TypeAlias = npt.NDArray[np.uint16]
_Half: TypeAlias = Literal["float16", "bfloat16"]
# x: one C-row-contiguous (n, d) float32/float64 array, or a list of n contiguous 1-D arrays;
# half precision as ("float16" | "bfloat16", its uint16 bit patterns in either form), which
# only mean, median, weighted_median, trimmed_mean, weighted_trimmed_mean, krum, multi_krum
# and pairwise_sq_distances accept. Their aggregate is then uint16 bit patterns of the same
# format; distances and Krum scores stay float64.
_Matrix: TypeAlias = _Float | Sequence[_Float] | tuple[_Half, _U16 | Sequence[_U16]]
# String options are parsed by the extension (an unknown one raises InvalidParameterError);
# the Python layers pass the values their Literal types admit.
_NonFinite: TypeAlias = str  # "robust" | "raise" | "propagate"
_Even: TypeAlias = str  # "mean" | "lower" | "upper"
_Out: TypeAlias = npt.NDArray[Any]  # float32 or float64 as the input, or uint16 for half precision
_Rows: TypeAlias = tuple[_Out, _U32 | None, _U32 | None]

# threads and SIMD
def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def max_threads() -> int: ...
def simd_level() -> str: ...
def _panic_in_kernel(message: str) -> None: ...  # tests: a panic becomes AggkitError
def _set_simd_level(level: str) -> str: ...  # "scalar" | "avx2" | "avx512" | "neon"

# mean, median, trimmed mean, meamed (values, and the rows that define them when asked)
def mean(x: _Matrix, weights: _F64 | None, nonfinite: _NonFinite) -> tuple[_Out, list[int]]: ...
def median(x: _Matrix, even: _Even, nonfinite: _NonFinite, return_rows: bool) -> _Rows: ...
def weighted_median(
    x: _Matrix, weights: _F64, even: _Even, nonfinite: _NonFinite, return_rows: bool
) -> _Rows: ...
def median_backward(n: int, lo: _U32, hi: _U32 | None, g: _Float) -> _Out: ...
def trimmed_mean(x: _Matrix, f: int, nonfinite: _NonFinite, return_rows: bool) -> _Rows: ...
def weighted_trimmed_mean(
    x: _Matrix, weights: _F64, f: int, nonfinite: _NonFinite, return_rows: bool
) -> _Rows: ...
def trimmed_mean_backward(x: _Matrix, lo: _U32, hi: _U32, g: _Float, kept: int) -> _Out: ...
def meamed(x: _Matrix, f: int, keep: int | None, nonfinite: _NonFinite, return_rows: bool) -> _Rows: ...

# Krum, Multi-Krum, Bulyan, MDA: (output,) selected indices, scores
def krum(x: _Matrix, f: int, nonfinite: _NonFinite) -> tuple[_Out, list[int], _F64]: ...
def multi_krum(x: _Matrix, f: int, m: int, nonfinite: _NonFinite) -> tuple[_Out, list[int], _F64]: ...
def krum_select(dist: _F64, f: int, m: int, nonfinite: _NonFinite) -> tuple[list[int], _F64]: ...
def bulyan_select(dist: _F64, f: int, clamp: bool) -> tuple[list[int], _F64]: ...
def mda_select(dist: _F64, f: int, max_subsets: int) -> list[int]: ...

# distances and the pre-aggregators' passes
def pairwise_sq_distances(x: _Matrix) -> _F64: ...
def dists_to(x: _Matrix, z: _F64) -> _F64: ...
def scaled_dots(x: _Matrix, z: _F64) -> tuple[_F64, _F64, list[int]]: ...
def row_norms(x: _Matrix) -> _F64: ...
def group_means(x: _Matrix, offsets: Sequence[int], members: Sequence[int]) -> _Out: ...
def scale_rows(x: _Matrix, scales: Sequence[float]) -> _Out: ...
def foolsgold_history(
    x: _Matrix, scales: Sequence[float], active: Sequence[bool], history: Sequence[_F64 | None]
) -> tuple[_F64, _F64]: ...
def scaled_distances(rows: Sequence[_F64 | None], exps: Sequence[int], d: int) -> tuple[_F64, _F64]: ...

# the other rules
def sign_vote(x: _Matrix, nonfinite: _NonFinite) -> _Out: ...
def centered_clipping(
    x: _Matrix, center: _F64 | None, tau: float, iters: int, nonfinite: _NonFinite
) -> tuple[_Out, list[int], _F64]: ...
def geometric_median(
    x: _Matrix,
    weights: _F64 | None,
    nu: float,
    maxiter: int,
    ftol: float,
    init: str,  # "mean" | "median" | "zero"
    nonfinite: _NonFinite,
) -> tuple[_Out, int, bool, float, _F64]: ...
def detox_vote(
    x: _Matrix,
    groups: _U32,
    r: int,
    segments: Sequence[int],
    mode: str,  # "exact" | "approx" | "reference"
    atol: float,
    rtol: float,
) -> tuple[_U32, npt.NDArray[np.bool_]]: ...
def crossmax(
    z: _Float,
    n: int,
    k: int,
    reducer: str,  # "kth" | "median"
    even: _Even,
    nonfinite: _NonFinite,
    return_indices: bool,
) -> tuple[_Out, _U32 | None, _U32 | None, _U32 | None, _U32 | None]: ...
def crossmax_backward(
    g: _Float,
    finite: npt.NDArray[np.bool_],
    top: _U32,
    kth: _U32,
    kth2: _U32,
    argmax: _U32,
    n: int,
    c: int,
    average: bool,
) -> _Out: ...

# monoid trees
_Op: TypeAlias = str  # "sum" | "mean" | "prod" | "max" | "min" | "logsumexp"

def segment_ptr(index: _I64, dim_size: int | None = None) -> _I64: ...
def check_segment_ptr(ptr: _I64, rows: int, dim_size: int | None = None) -> None: ...
def segment_reduce(x: _Float, ptr: _I64, op: _Op, empty: float | None = None) -> _Out: ...
def segment_reduce_backward(x: _Float, ptr: _I64, op: _Op, out: _Float, grad: _Float) -> _Out: ...
def tree_schedule(
    ptr: _I64, rows: int, pad: str
) -> dict[str, Any]: ...  # pad: "none" | "zeros_dense" | "identity"

"""Integer keys ordered like floating-point values: the core's ``(value, row)`` order in torch ops.

A leaf module (torch only), shared by the torch-native kernels (:mod:`aggkit.torch._kernels`)
and the Triton launchers (:mod:`aggkit.torch._triton`). Keys follow IEEE total order (``-0.0``
below ``+0.0``, every NaN made the canonical NaN first, so above ``+inf`` and all equal); with a
stable sort, equal keys rank by row, which is the core's tie rule.
"""

from __future__ import annotations

import torch

# Canonical quiet NaN bit patterns (Rust's f32::NAN / f64::NAN) and the masks that turn IEEE
# bits into integers ordered like the floats (sign-magnitude -> two's complement).
_INT = {torch.float32: (torch.int32, 0x7FC00000, 0x7FFFFFFF, 31)}
_INT[torch.float64] = (torch.int64, 0x7FF8000000000000, 0x7FFFFFFFFFFFFFFF, 63)

#: Half-precision dtypes: computed in float32 (exact widening), rounded once at the end.
HALF = (torch.float16, torch.bfloat16)


def total_order_keys(x: torch.Tensor) -> torch.Tensor:
    """Integer keys ordered like ``x`` in IEEE total order, with every NaN mapped to one key.

    Half precision is widened to float32 first (exact, order-preserving): its keys are int32.
    """
    if x.dtype in HALF:
        x = x.float()
    it, nan_bits, mask, shift = _INT[x.dtype]
    bits = torch.where(torch.isnan(x), torch.tensor(nan_bits, dtype=it, device=x.device), x.view(it))
    return bits ^ ((bits >> shift) & mask)


def key_values(keys: torch.Tensor) -> torch.Tensor:
    """The float32 / float64 values of int32 / int64 keys (the map is its own inverse)."""
    dtype = torch.float32 if keys.dtype == torch.int32 else torch.float64
    _, _, mask, shift = _INT[dtype]
    return (keys ^ ((keys >> shift) & mask)).view(dtype)


def first_nan(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per column: whether it holds a NaN, and the first NaN row (``propagate``)."""
    nan = torch.isnan(x)
    return nan.any(dim=0), nan.to(torch.uint8).argmax(dim=0)

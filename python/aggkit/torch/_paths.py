"""Which kernel runs a torch op: the Rust core on CPU tensors, torch-native kernels elsewhere.

On CPU the ops hand the Rust core a zero-copy numpy view of the tensor's memory (the GIL is
released inside) and wrap its result with ``torch.from_numpy`` (no copy). Every other device,
and CPU inside :func:`force_native`, runs the torch-native kernels: the data never leaves its
device.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

_local = threading.local()


@contextlib.contextmanager
def force_native() -> Iterator[None]:
    """Run CPU tensors through the torch-native kernels instead of the Rust core.

    The native kernels are what CUDA (and other device) tensors use; forcing them on CPU lets
    the two implementations be compared on any machine. Applies to the calling thread.
    """
    prev = native_forced()
    _local.native = True
    try:
        yield
    finally:
        _local.native = prev


def native_forced() -> bool:
    """Whether :func:`force_native` is in effect on this thread."""
    return bool(getattr(_local, "native", False))


def rust(x: Tensor) -> bool:
    """Whether ``x`` goes to the Rust core (a CPU tensor, native kernels not forced)."""
    return x.device.type == "cpu" and not native_forced()


def rust_backward(g: Tensor) -> bool:
    """Whether to use the one-pass Rust backward kernels.

    On CPU, unless a higher-order graph is being built (``create_graph=True`` turns grad mode on
    in backward), which needs differentiable torch ops, and unless the backward is being traced
    (``torch.compile``, ``opcheck``: fake or functional tensor subclasses), which needs torch ops.
    """
    return type(g) is torch.Tensor and rust(g) and not torch.is_grad_enabled()


def view(x: Tensor) -> np.ndarray:
    """The tensor's memory as a numpy array (no copy; ``x`` is contiguous and on the CPU)."""
    return x.detach().numpy()


def rows_tensor(r: np.ndarray | None, x: Tensor) -> Tensor:
    """A core row array as an int32 tensor (rows < 2**32 fit; a view, no copy)."""
    if r is None:
        return torch.empty(0, dtype=torch.int32, device=x.device)
    return torch.from_numpy(r.view(np.int32))


def u32(rows: Tensor) -> np.ndarray:
    """An int32 row tensor as the core's uint32 array (a view)."""
    return rows.numpy().view(np.uint32)

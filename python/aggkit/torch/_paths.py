"""Which kernel runs a torch op: the Rust core on CPU tensors, Triton or torch-native elsewhere.

On CPU the ops hand the Rust core a zero-copy numpy view of the tensor's memory (the GIL is
released inside) and wrap its result with ``torch.from_numpy`` (no copy). CUDA tensors run the
Triton kernels (:mod:`aggkit.torch._triton`, :mod:`aggkit.torch._triton_dist`) where Triton is
installed, and the torch-native kernels for what those do not cover; every other device runs
the torch-native kernels. The data never leaves its device.

Two switches, per thread: :func:`force_native` runs CPU tensors (and CUDA ones) through the
torch-native kernels; :func:`force_triton` runs CPU tensors down the CUDA path, the Triton
kernels in Triton's interpreter. The environment variable ``AGGKIT_TRITON`` sets them for a
whole process: ``0`` never uses Triton, ``interpret`` is :func:`force_triton` everywhere.
"""

from __future__ import annotations

import contextlib
import importlib.util
import threading
import warnings
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from aggkit.torch import _switch

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


@contextlib.contextmanager
def force_triton() -> Iterator[None]:
    """Run CPU tensors down the CUDA path: the Triton kernels, in Triton's interpreter.

    For tests and for users without a GPU: the same kernels a CUDA tensor runs, compared with
    the Rust core on any machine (slowly: the interpreter runs them as numpy). Needs
    ``TRITON_INTERPRET=1`` in the environment before Triton is first imported; raises
    ``RuntimeError`` otherwise. Applies to the calling thread.
    """
    from aggkit.torch import _triton

    if not _triton.INTERPRETED:
        installed = importlib.util.find_spec("triton") is not None
        why = "TRITON_INTERPRET was not 1 when it was imported" if installed else "triton is not installed"
        raise RuntimeError(
            f"force_triton() runs the Triton kernels in Triton's interpreter: {why} (set "
            "TRITON_INTERPRET=1 before triton is first imported)"
        )
    with _switch.forced():
        yield


#: Whether CPU tensors take the Triton path (:func:`force_triton`, ``AGGKIT_TRITON=interpret``).
triton_forced = _switch.triton_forced


#: Devices whose Triton kernels failed their first launch (no compiler, an unsupported GPU):
#: they run the torch-native kernels from then on.
_broken: set[str] = set()
_probed: set[str] = set()
_probe_lock = threading.Lock()


def use_triton(x: Tensor) -> bool:
    """Whether ``x`` goes to the Triton kernels of the median, trimmed mean, mean and distances.

    A CUDA tensor where Triton is installed and works on its device, or a CPU tensor under
    :func:`force_triton`; never under :func:`force_native` or ``AGGKIT_TRITON=0``. Triton is
    imported only when a tensor may need it. The first tensor on each device launches a small
    median first: where that fails (Triton cannot compile there, or the GPU is one Triton does
    not support), a warning says why and the device keeps the torch-native kernels.
    """
    if native_forced() or _switch.triton_env() == "0":
        return False
    if x.device.type == "cpu" and not triton_forced():
        return False
    from aggkit.torch import _triton

    if x.device.type == "cpu" and not _triton.INTERPRETED:
        raise RuntimeError(
            "AGGKIT_TRITON=interpret runs CPU tensors in Triton's interpreter, but TRITON_INTERPRET "
            "was not 1 when triton was imported"
        )
    if not _triton.available(x):
        return False
    key = str(x.device)
    # Probe with a real tensor outside tracing only (a fake one cannot launch anything).
    real = type(x) is torch.Tensor and not torch.compiler.is_compiling()
    if real and x.device.type != "cpu" and key not in _probed:
        with _probe_lock:
            if key not in _probed:
                try:
                    _triton.median(torch.zeros(3, 4, device=x.device), "mean", "robust", True)
                except Exception as e:
                    _broken.add(key)
                    warnings.warn(
                        f"aggkit: Triton kernels do not run on {key} ({type(e).__name__}: {e}); "
                        "using the torch-native kernels there",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                _probed.add(key)
    return key not in _broken


def rust(x: Tensor) -> bool:
    """Whether ``x`` goes to the Rust core (a CPU tensor, neither switch in force)."""
    return x.device.type == "cpu" and not native_forced() and not triton_forced()


def rust_backward(g: Tensor) -> bool:
    """Whether to use the one-pass Rust backward kernels.

    On CPU, unless a higher-order graph is being built (``create_graph=True`` turns grad mode on
    in backward), which needs differentiable torch ops, and unless the backward is being traced
    (``torch.compile``, ``opcheck``: fake or functional tensor subclasses), which needs torch ops.
    """
    return type(g) is torch.Tensor and rust(g) and not torch.is_grad_enabled()


def plain(x: Tensor) -> bool:
    """Whether ``x`` is an ordinary tensor whose memory a kernel can read.

    Not a fake or functional tensor being traced (``torch.compile``, ``torch.export``) and not
    one wrapped by a ``torch.func`` transform (``grad``, ``vmap``): code outside a custom op must
    run torch ops on those.
    """
    return (
        type(x) is torch.Tensor
        and not torch.compiler.is_compiling()
        and not torch._C._functorch.is_functorch_wrapped_tensor(x)
    )


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

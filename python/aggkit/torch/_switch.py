"""The switch that sends CPU tensors down the CUDA path (the Triton kernels, interpreted).

State only, importing nothing of aggkit: the kernel modules read it, and
:mod:`aggkit.torch._paths` (which checks that the interpreter is there) sets it.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

_local = threading.local()


def triton_env() -> str:
    """``AGGKIT_TRITON``: unset (or empty) for the default, ``0`` or ``interpret``."""
    v = os.environ.get("AGGKIT_TRITON", "")
    if v not in ("", "0", "interpret"):
        raise RuntimeError(f"AGGKIT_TRITON must be 0 or interpret (or unset), got {v!r}")
    return v


def triton_forced() -> bool:
    """Whether CPU tensors take the Triton path (``forced()``, ``AGGKIT_TRITON=interpret``)."""
    return bool(getattr(_local, "triton", False)) or triton_env() == "interpret"


@contextlib.contextmanager
def forced() -> Iterator[None]:
    """Set the switch for the calling thread (no check: see ``_paths.force_triton``)."""
    prev = getattr(_local, "triton", False)
    _local.triton = True
    try:
        yield
    finally:
        _local.triton = prev

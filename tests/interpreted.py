"""Running aggkit's Triton kernels in Triton's interpreter, for the test modules that check them.

The interpreter is chosen when a kernel is decorated, that is when its module is first
imported: :func:`import_kernels` sets ``TRITON_INTERPRET=1`` around that import only, so the rest
of the session is untouched. A test module then uses the fixtures below (import them into the
module: pytest finds them there).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import numpy as np
import pytest


def import_kernels(*names: str) -> list[ModuleType]:
    """``aggkit.torch.<name>`` for each name, imported under the interpreter (skips without triton).

    Skips the calling module where a kernel module was already imported in compiled mode.
    """
    before = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        pytest.importorskip("triton")
        modules = [importlib.import_module(f"aggkit.torch.{name}") for name in names]
    finally:
        if before is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = before
    compiled = [
        f"{m.__name__}.{k}" for m in modules for k, v in vars(m).items() if type(v).__name__ == "JITFunction"
    ]
    if compiled:  # imported earlier without the interpreter: these kernels would need a GPU
        pytest.skip(f"{compiled[0]} was compiled before TRITON_INTERPRET=1 was set", allow_module_level=True)
    return modules


@pytest.fixture(scope="module")
def interpretable_triton_library() -> Iterator[None]:
    """Triton's own library functions (``tl.zeros``, ``tl.max``, ``tl.sum``, ``tl.cumsum``, ...)
    are ``@triton.jit`` functions, decorated when triton is first imported. Where an earlier test
    module imported triton without ``TRITON_INTERPRET=1`` (byzfl's torch imports do), they are
    compiled-mode functions the interpreter refuses to call: wrap them as interpreted ones while
    the module runs (a no-op where triton was imported in interpreter mode)."""
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    patch = pytest.MonkeyPatch()
    swapped = {}
    for name, fn in list(vars(tl.standard).items()):
        if isinstance(fn, JITFunction):
            swapped[id(fn)] = InterpretedFunction(fn.fn)
            patch.setattr(tl.standard, name, swapped[id(fn)])
    for name, fn in list(vars(tl).items()):
        if id(fn) in swapped:
            patch.setattr(tl, name, swapped[id(fn)])
    yield
    patch.undo()


@pytest.fixture
def interpreted(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """CPU tensors down the Triton path for the test. The interpreter computes with numpy, which
    warns where IEEE arithmetic makes inf or NaN (the tests' point); the suite turns warnings
    into errors."""
    from aggkit.torch import _switch

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with _switch.forced(), np.errstate(all="ignore"):
        yield


def bits(t: Any) -> Any:
    """A float tensor's bits as integers, every NaN made the canonical one."""
    import torch

    t = torch.as_tensor(t).detach().clone()
    t[torch.isnan(t)] = float("nan")
    return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def same(a: Any, b: Any) -> bool:
    """Same dtype, shape and bits (NaN payloads aside)."""
    import torch

    return bool(a.dtype == b.dtype and a.shape == b.shape and torch.equal(bits(a), bits(b)))


def torch_allocations(fn: Callable[[], object]) -> list[int]:
    """The sizes in bytes of every allocation the torch CPU allocator made while ``fn`` ran
    (the launcher and, in the interpreter, the launches)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return [e.self_cpu_memory_usage for e in prof.events() if e.self_cpu_memory_usage > 0]


def largest_block(fn: Callable[[], object]) -> int:
    """The most elements any value of a kernel program had while ``fn`` ran: in the interpreter
    every register tensor (a loaded tile, an intermediate, an accumulator) is a numpy array
    wrapped in a ``TensorHandle``."""
    from triton.runtime import interpreter

    largest = [0]
    original = interpreter.TensorHandle.__post_init__

    def record(self: Any) -> None:
        largest[0] = max(largest[0], int(np.size(self.data)))
        original(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(interpreter.TensorHandle, "__post_init__", record)
        fn()
    return largest[0]

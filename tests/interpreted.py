"""Running aggkit's Triton kernels in Triton's interpreter, for the test modules that check them.

The interpreter is chosen when a kernel is decorated, that is when its module is first
imported: :func:`import_kernels` sets ``TRITON_INTERPRET=1`` around that import only, so the rest
of the session is untouched. A test module then uses the fixtures below (import them into the
module: pytest finds them there).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from types import ModuleType

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

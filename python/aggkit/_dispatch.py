"""The one routing point: which implementation runs a rule on a given input.

Rules are defined once, framework-free (``aggkit.rules``); each array framework registers an
implementation per rule name with :func:`implements`. :func:`implementation` picks one from
the type of the input: torch tensors (or a sequence of them) go to ``aggkit.torch``, everything
else (numpy arrays, sequences of them, nested lists, other ``__dlpack__`` / array-API
producers) to the numpy implementation, which returns other producers' own array type.

A framework's implementations are imported the first time one of its arrays arrives, so
``import aggkit`` never imports torch: a caller holding a tensor has imported torch already.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

Impl = Callable[..., tuple[Any, Any]]
F = TypeVar("F", bound=Impl)

#: backend -> the module whose import registers that backend's implementations.
_BACKENDS: dict[str, str] = {"numpy": "aggkit._numpy", "torch": "aggkit.torch"}
_IMPLS: dict[tuple[str, str], Impl] = {}
_OPS: dict[str, ArrayOps] = {}


class ArrayOps(Protocol):
    """What the framework-free layers need from a backend besides the rules (``aggkit._axes``)."""

    def clients_first(self, x: Any, axis: Any, keepdims: bool, out: Any, rule: str) -> tuple[Any, Any]:
        """``x`` with the client axes ``axis`` moved first and merged into one, and a plan.

        ``out`` (if given) is checked here against the result's shape and dtype, before the
        rule runs; the plan is what :meth:`deliver` needs.
        """
        ...

    def deliver(self, y: Any, plan: Any) -> Any:
        """The result ``y`` with the kept axes of length 1, written into ``out`` if given."""
        ...


def implements(name: str, backend: str) -> Callable[[F], F]:
    """Decorator: register ``impl(rule, x, **data) -> (output, info)`` for rule ``name``."""
    if backend not in _BACKENDS:
        raise ValueError(f"unknown backend {backend!r}")

    def deco(impl: F) -> F:
        key = (name, backend)
        if key in _IMPLS:
            raise RuntimeError(f"{backend} implements {name!r} twice")
        _IMPLS[key] = impl
        return impl

    return deco


def provides(backend: str, ops: ArrayOps) -> None:
    """Register a backend's :class:`ArrayOps` (once, when its module is imported)."""
    if backend not in _BACKENDS or backend in _OPS:
        raise RuntimeError(f"array ops for {backend!r} registered twice or unknown backend")
    _OPS[backend] = ops


def array_ops(x: object) -> ArrayOps:
    """The :class:`ArrayOps` of the backend of ``x``."""
    backend = backend_of(x)
    if backend not in _OPS:
        importlib.import_module(_BACKENDS[backend])
    return _OPS[backend]


def _backend_of_one(v: object) -> str | None:
    for cls in type(v).__mro__:
        root = cls.__module__.partition(".")[0]
        if root in _BACKENDS and root != "numpy":
            return root
    return None


def backend_of(x: object) -> str:
    """The backend serving ``x``: its framework if one is registered, else ``"numpy"``.

    A sequence goes to a framework only when every element belongs to it.
    """
    if isinstance(x, list | tuple):
        backends = {_backend_of_one(v) for v in x}
        one = backends.pop() if len(backends) == 1 else None
        return one or "numpy"
    return _backend_of_one(x) or "numpy"


def implementation(name: str, x: object) -> Impl:
    """The implementation of rule ``name`` for the backend of ``x``."""
    backend = backend_of(x)
    key = (name, backend)
    impl = _IMPLS.get(key)
    if impl is None:
        importlib.import_module(_BACKENDS[backend])
        impl = _IMPLS.get(key)
        if impl is None:
            raise NotImplementedError(f"{name} has no {backend} implementation")
    return impl

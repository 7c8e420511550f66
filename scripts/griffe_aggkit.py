"""A griffe extension for the API reference (mkdocs.yml): what static analysis cannot see.

* ``aggkit.median`` is the function. ``aggkit.rules`` imports each rule's function under the
  name of the module that defines it (``from aggkit.rules.median import median``), and griffe
  lets the submodule shadow the import, so ``aggkit``'s re-exports would name modules. They are
  pointed at the functions, as Python binds them.
* Rule objects are dataclasses. ``aggkit.registry.Params`` turns each subclass into a frozen,
  keyword-only dataclass in ``__init_subclass__`` (declared to type checkers with
  ``dataclass_transform``). This marks those classes ``@dataclass(frozen=True, kw_only=True)``,
  so that griffe's own dataclasses extension, which runs after this one, gives them their
  ``__init__`` signature (``Krum(*, f, nonfinite='robust')``) and checks their documented
  parameters against it.
* The docstrings are numpydoc with Sphinx roles (``:func:`aggkit.krum```, ``:math:`O(n d)```)
  and ``::`` before literal blocks, which Markdown does not know. A role becomes inline code,
  linked to the object's entry when the name resolves to an aggkit object the reference
  renders (an optional cross-reference: a name it does not render stays plain code); ``::``
  becomes ``:``, as Sphinx prints it.
"""

import html
import re
from collections.abc import Iterator
from typing import Any

import griffe

PARAMS = "aggkit.registry.Params"
ROLE = re.compile(r":(?P<role>[a-z]+):`(?P<text>[^`]+)`")
LITERAL = re.compile(r"(?m)(\S?)[ \t]*::$")


def _members(obj: griffe.Object) -> Iterator[griffe.Object]:
    for member in obj.members.values():
        if not member.is_alias:
            yield member
            yield from _members(member)


def _dataclass_decorator(cls: griffe.Class) -> griffe.Decorator:
    function = griffe.ExprName("dataclass", parent="dataclasses")
    call = griffe.ExprCall(
        function,
        [griffe.ExprKeyword("frozen", "True", function), griffe.ExprKeyword("kw_only", "True", function)],
    )
    return griffe.Decorator(call, lineno=cls.lineno, endlineno=cls.lineno)


def _shadowed(module: griffe.Object) -> griffe.Object | None:
    """The function a module is named after (``aggkit.rules.median.median``), which shadows it."""
    member = module.members.get(module.name) if isinstance(module, griffe.Module) else None
    return member if member is not None and not member.is_alias else None


def _retarget(pkg: griffe.Module) -> None:
    """Point the package's aliases of a shadowing module at the function the module defines."""
    for alias in pkg.members.values():
        if not alias.is_alias:
            continue
        try:
            target = alias.final_target
        except (griffe.AliasResolutionError, griffe.CyclicAliasError):
            continue
        if alias.name == target.name and (function := _shadowed(target)) is not None:
            alias.target = function


def _target(obj: griffe.Object, name: str) -> str | None:
    """The full path of the aggkit object ``name`` names in ``obj``'s docstring, if any."""
    name = name.lstrip("~.").removesuffix("()")
    path: str | None = name
    if not name.startswith("aggkit."):
        first, _, rest = name.partition(".")
        scope = obj if isinstance(obj, griffe.Module | griffe.Class) else obj.parent
        try:
            path = scope.resolve(first) if scope is not None else None
        except griffe.NameResolutionError:
            return None
        if not path or not path.startswith("aggkit."):
            return None
        path = f"{path}.{rest}" if rest else path
    try:
        found = obj.modules_collection[path]
    except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return path
    function = _shadowed(found) if not found.is_alias else None
    return function.path if function is not None else path


def _role(obj: griffe.Object, match: re.Match[str]) -> str:
    role, text = match["role"], match["text"]
    shown = text.lstrip("~.")
    code = f"<code>{html.escape(shown.rpartition('.')[2] if text.startswith('~') else shown)}</code>"
    target = None if role == "math" else _target(obj, text)
    return f'<autoref identifier="{target}" optional>{code}</autoref>' if target else code


def _literal(match: re.Match[str]) -> str:
    return f"{match[1]}:" if match[1] else ""


class AggkitReference(griffe.Extension):
    """Functions for shadowed re-exports, Sphinx roles as Markdown, rule objects as dataclasses."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Runs once the package is loaded, before griffe's dataclasses extension."""
        _retarget(pkg)
        for obj in [pkg, *_members(pkg)]:
            if obj.docstring is not None:
                text = ROLE.sub(lambda m, obj=obj: _role(obj, m), obj.docstring.value)
                obj.docstring.value = LITERAL.sub(_literal, text)
            if not isinstance(obj, griffe.Class):
                continue
            try:
                parents = obj.mro()
            except ValueError:
                continue
            if any(parent.path == PARAMS for parent in parents):
                obj.decorators.append(_dataclass_decorator(obj))

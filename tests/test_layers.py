"""The package's layers point one way (docs/architecture.md).

The import graph of ``python/aggkit`` is read with ``ast``, imports inside functions and
``TYPE_CHECKING`` blocks included, and checked: it has no cycle; the framework-free base
imports no array framework and no implementation; the numpy implementations never mention
torch; the torch layer never reaches the numpy implementations or the package façade. Every
module must belong to a layer, so a new module has to say where it stands.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "python"
PACKAGE = ROOT / "aggkit"

BASE = "base"
NUMPY = "numpy"
TORCH = "torch"
FACADE = "facade"
INTEGRATION = "integration"


def layer(module: str) -> str:
    """The layer of an ``aggkit`` module (docs/architecture.md)."""
    if module == "aggkit":
        return FACADE
    if module.startswith("aggkit._numpy") or module in {"aggkit.monoid", "aggkit.buffer"}:
        return NUMPY
    if module == "aggkit.torch" or module.startswith("aggkit.torch."):
        return TORCH
    if module == "aggkit.rules" or module.startswith("aggkit.rules."):
        return BASE
    if module in {
        "aggkit._axes",
        "aggkit._core",
        "aggkit._dispatch",
        "aggkit._params",
        "aggkit._plans",
        "aggkit._runtime",
        "aggkit._types",
        "aggkit.errors",
        "aggkit.registry",
    }:
        return BASE
    if module in {
        "aggkit.__main__",
        "aggkit._bench",
        "aggkit._cli",
        "aggkit._integrations",
        "aggkit.attacks",
        "aggkit.distributed",
    } | {
        "aggkit.flower",
        "aggkit.nvflare",
        "aggkit.simulate",
    }:
        return INTEGRATION
    raise AssertionError(f"{module} belongs to no layer: add it to tests/test_layers.py's map")


def modules() -> dict[str, Path]:
    found = {"aggkit._core": PACKAGE / "_core.pyi"}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every module ``module`` imports: aggkit modules by name, others by their top package."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            # ``from pkg import mod`` imports the module pkg.mod; ``from mod import name``, mod.
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
            names = subs if len(subs) == len(node.names) else [base, *subs]
        else:
            continue
        for name in names:
            if name.split(".")[0] != "aggkit":
                out.add(name.split(".")[0])
                continue
            while name not in known:
                name = name.rpartition(".")[0]
            if name != module:
                out.add(name)
    return out


KNOWN = modules()
GRAPH = {m: imports(m, p, KNOWN) for m, p in KNOWN.items() if p.suffix == ".py"}


def test_every_module_has_a_layer():
    for m in KNOWN:
        layer(m)


def test_import_graph_is_acyclic():
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(u: str) -> None:
        state[u] = 1
        path.append(u)
        for v in sorted(GRAPH.get(u, ())):
            if not v.startswith("aggkit"):
                continue
            if state.get(v) == 1:
                cycle = [*path[path.index(v) :], v]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if not state.get(v):
                visit(v)
        state[u] = 2
        path.pop()

    for m in sorted(GRAPH):
        if not state.get(m):
            visit(m)


@pytest.mark.parametrize(
    ("frm", "forbidden"),
    [
        (BASE, {NUMPY, TORCH, FACADE, INTEGRATION}),
        (NUMPY, {TORCH, FACADE, INTEGRATION}),
        (TORCH, {NUMPY, FACADE, INTEGRATION}),
    ],
)
def test_layers_point_down(frm, forbidden):
    bad = [
        f"{m} -> {d}"
        for m, deps in GRAPH.items()
        if layer(m) == frm
        for d in deps
        if d.startswith("aggkit") and layer(d) in forbidden
    ]
    assert not bad, f"{frm} modules import layers above or beside them: {bad}"


def test_only_the_torch_layer_imports_torch():
    bad = [m for m, deps in GRAPH.items() if "torch" in deps and layer(m) in (BASE, NUMPY, FACADE)]
    assert not bad, f"modules outside aggkit.torch import torch: {bad}"


def test_numpy_implementations_never_mention_torch():
    # Not even in a string or a comment: the numpy layer knows nothing of other frameworks.
    bad = [m for m, p in KNOWN.items() if layer(m) == NUMPY and "torch" in p.read_text()]
    assert not bad, bad


def test_import_aggkit_stays_free_of_torch():
    code = "import sys, aggkit, numpy as np; aggkit.median(np.ones((3, 2))); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

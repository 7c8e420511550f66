"""Examples in docstrings and the README run, and the demo prints what it promises."""

import doctest
import importlib
import subprocess
import sys

import aggkit
import pytest

# aggkit.rules re-exports the functions under the modules' names, so import the modules by path.
MODULES = [
    "registry",
    "rules.mean",
    "rules.median",
    "rules.trimmed_mean",
    "rules.krum",
    "attacks",
    "simulate",
]


TORCH_MODULES = ["torch.state_dict", "torch.nn"]


@pytest.mark.parametrize("name", MODULES + TORCH_MODULES)
def test_docstring_examples(name):
    if name.startswith("torch."):
        pytest.importorskip("torch")
    module = importlib.import_module(f"aggkit.{name}")
    failures, tried = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert tried > 0
    assert failures == 0


def test_demo_runs():
    out = subprocess.run(
        [sys.executable, "-m", "aggkit", "demo"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    for name in aggkit.list_rules():
        assert name in out
    assert "honest" in out


def test_readme_python_examples_run():
    import pathlib
    import re

    readme = pathlib.Path(__file__).resolve().parents[1] / "README.md"
    blocks = re.findall(r"```python\n(.*?)```", readme.read_text(), flags=re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, str(readme), "exec"), {})

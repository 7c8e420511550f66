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
    "rules.crossmax",
    "rules.detox",
    "rules.geometric_median",
    "rules.meamed",
    "rules.bulyan",
    "rules.centered_clipping",
    "rules.subsets",
    "rules.sign_vote",
    "rules.preagg",
    "rules.monoid",
    "monoid",
    "attacks",
    "simulate",
]


TORCH_MODULES = ["torch.state_dict", "torch.nn", "torch.monoid", "torch.lcm"]


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


README = __import__("pathlib").Path(__file__).resolve().parents[1] / "README.md"
OPTIONAL = {"torch": "torch", "flwr": "flwr", "matplotlib": "matplotlib", "sklearn": "sklearn"}


def _python_blocks():
    import re

    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(_python_blocks())))
def test_readme_python_examples_run(index):
    import importlib.util
    import re

    block = _python_blocks()[index]
    for module in set(re.findall(r"^\s*(?:from|import) (\w+)", block, flags=re.M)):
        if module in OPTIONAL and importlib.util.find_spec(module) is None:
            pytest.skip(f"this README example needs {module}, which is not installed")
    exec(compile(block, str(README), "exec"), {"__name__": "readme_example"})


def test_readme_simulate_commands_run(tmp_path):
    """Every ``aggkit simulate`` command in the README's bash blocks runs (2 rounds, synthetic data)."""
    import re
    import shlex

    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    text = "\n".join(blocks).replace("\\\n", " ")
    commands = re.findall(r"^(.*aggkit simulate[^\n]*)$", text, flags=re.M)
    assert len(commands) >= 2
    for cmd in commands:
        args = shlex.split(cmd.split("&&")[-1])[1:]
        args += ["--rounds", "2", "--dataset", "synthetic", "--quiet", "--plot", str(tmp_path / "p.png")]
        args = [a if not a.endswith(".json") else str(tmp_path / "r.json") for a in args]
        proc = subprocess.run(
            [sys.executable, "-m", "aggkit", *args], capture_output=True, text=True, timeout=300, check=False
        )
        assert proc.returncode == 0, (cmd, proc.stderr)
        assert "final test accuracy" in proc.stdout

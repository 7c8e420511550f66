"""Examples in docstrings, the README and the documentation site run; the demo prints what it promises."""

import doctest
import importlib
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

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


TORCH_MODULES = ["torch.state_dict", "torch.nn", "torch.monoid", "torch.lcm", "torch.aggr"]


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


ROOT = Path(__file__).resolve().parents[1]
# scripts/readme_blocks.py is the one reader of fenced blocks (make lint type-checks the same blocks).
_spec = importlib.util.spec_from_file_location("readme_blocks", ROOT / "scripts" / "readme_blocks.py")
readme_blocks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(readme_blocks)

README = readme_blocks.README
OPTIONAL = {
    "torch": "torch",
    "flwr": "flwr",
    "matplotlib": "matplotlib",
    "sklearn": "sklearn",
    "torch_geometric": "torch_geometric",
    "nvflare": "nvflare",
}
SITE_PAGES = readme_blocks.site_pages()


def _python_blocks():
    return [b for b in readme_blocks.blocks(README) if b.lang == "python"]


def _run_python(block, path: Path) -> None:
    """Execute a block in a fresh namespace; skip when it imports a missing optional dependency."""
    for module in set(re.findall(r"^\s*(?:from|import) (\w+)", block.code, flags=re.M)):
        if module in OPTIONAL and importlib.util.find_spec(module) is None:
            pytest.skip(f"this example of {path.name} needs {module}, which is not installed")
    code = "\n" * block.line + block.code  # tracebacks give the line in the Markdown file
    exec(compile(code, str(path), "exec"), {"__name__": "docs_example"})


def _simulate(cmd: str, tmp_path: Path) -> None:
    """Run an ``aggkit simulate`` command for 2 rounds on synthetic data, writing into tmp_path."""
    args = shlex.split(cmd.split("&&")[-1])[1:]
    args += ["--rounds", "2", "--dataset", "synthetic", "--quiet", "--plot", str(tmp_path / "p.png")]
    args = [a if not a.endswith(".json") else str(tmp_path / "r.json") for a in args]
    proc = subprocess.run(
        [sys.executable, "-m", "aggkit", *args], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, (cmd, proc.stderr)
    assert "final test accuracy" in proc.stdout


@pytest.mark.parametrize("index", range(len(_python_blocks())))
def test_readme_python_examples_run(index):
    _run_python(_python_blocks()[index], README)


def test_readme_simulate_commands_run(tmp_path):
    """Every ``aggkit simulate`` command in the README's bash blocks runs (2 rounds, synthetic data)."""
    blocks = [b.code for b in readme_blocks.blocks(README) if b.lang == "bash"]
    text = "\n".join(blocks).replace("\\\n", " ")
    commands = re.findall(r"^(.*aggkit simulate[^\n]*)$", text, flags=re.M)
    assert len(commands) >= 2
    for cmd in commands:
        _simulate(cmd, tmp_path)


# The documentation site (mkdocs.yml): every page of its nav, every code block of every page.
# python blocks are executed like the README's; bash blocks run (the aggkit commands below) or
# say why not in a `<!-- not run: reason -->` comment on the line before the fence; text
# blocks (diagrams, tables of numbers, pseudo-code) are not code. Any other fence is an error.
SITE_BLOCKS = [
    pytest.param(page, block, id=f"{page.relative_to(readme_blocks.DOCS)}:{block.line}")
    for page in SITE_PAGES
    for block in readme_blocks.blocks(page)
]
LANGS = {"python", "bash", "text"}


def _commands(block: str) -> list[str]:
    lines = block.replace("\\\n", " ").splitlines()
    return [c for line in lines if (c := line.split(" #")[0].strip()) and not c.startswith("#")]


@pytest.mark.parametrize(("page", "block"), [p for p in SITE_BLOCKS if p.values[1].lang == "python"])
def test_site_python_blocks_run(page, block):
    _run_python(block, page)


@pytest.mark.parametrize(("page", "block"), [p for p in SITE_BLOCKS if p.values[1].lang == "bash"])
def test_site_bash_blocks_run(page, block, tmp_path):
    if block.not_run is not None:
        assert block.not_run, f"{page.name}:{block.line}: say why the block is not run"
        return
    for cmd in _commands(block.code):
        if re.match(r"(python -m )?aggkit simulate ", cmd):
            _simulate(cmd, tmp_path)
        elif cmd in ("python -m aggkit demo", "aggkit demo"):
            subprocess.run(
                [sys.executable, "-m", "aggkit", "demo"], capture_output=True, timeout=120, check=True
            )
        else:
            pytest.fail(
                f"{page.name}:{block.line}: the test cannot run {cmd!r}; make it runnable here or mark "
                "the block with <!-- not run: reason --> on the line before its fence"
            )


def test_site_blocks_are_code_or_text():
    """Every fence says what it holds, and only bash blocks may be left unrun (saying why)."""
    blocks = [(p.values[0].name, p.values[1]) for p in SITE_BLOCKS]
    assert len(blocks) >= 10
    assert [(page, b.line, b.lang) for page, b in blocks if b.lang not in LANGS] == []
    assert [(page, b.line) for page, b in blocks if b.not_run is not None and b.lang != "bash"] == []


def test_site_nav_has_every_page():
    """Every Markdown file under docs/ is a page of the nav, and every nav entry exists."""
    pages = set(readme_blocks.DOCS.rglob("*.md"))
    assert len(SITE_PAGES) == len(set(SITE_PAGES))
    assert set(SITE_PAGES) <= pages, "mkdocs.yml names a page that does not exist"
    assert sorted(pages - set(SITE_PAGES)) == [], "pages missing from the nav of mkdocs.yml"


def test_site_builds_strict(tmp_path):
    """``mkdocs build --strict`` passes offline; the site loads nothing from another host."""
    for module in ("mkdocs", "material", "mkdocstrings_handlers.python"):
        pytest.importorskip(module, reason="the docs extra is not installed")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    external = re.compile(r"<(?:script|link|img)\b[^>]*\b(?:src|href)=\"(?:https?:)?//", re.I)
    for html in (tmp_path / "site").rglob("*.html"):
        assert not external.search(html.read_text()), f"{html} loads a resource from another host"

"""The fenced code blocks of the README and of the documentation site's pages.

tests/test_docs.py runs them (``python`` blocks are executed, ``bash`` blocks run or carry a
``<!-- not run: reason -->`` comment on the line before the fence, ``text`` blocks are not code:
diagrams, tables of numbers, pseudo-code). ``make lint`` type-checks the ``python`` blocks::

    python scripts/readme_blocks.py OUTDIR    # OUTDIR/readme_block_<i>.py, OUTDIR/docs_<page>_block_<i>.py

The site's pages are those of the ``nav`` of mkdocs.yml, read without a YAML parser (one
``Title: page.md`` entry per line) so that the tests need nothing installed to find them.
"""

import re
import sys
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MKDOCS = ROOT / "mkdocs.yml"

OPEN = re.compile(r"^(?P<indent> *)(?P<fence>`{3,})(?P<info>[^`]*)$")
NOT_RUN = re.compile(r"^\s*<!--\s*not run:(?P<reason>.*?)-->\s*$")
NAV_PAGE = re.compile(r"^\s*-\s*(?:[^:\n]+:\s*)?(?P<page>\S+\.md)\s*$")


class Block(NamedTuple):
    """A fenced block: its language, its code, its first line (1-based) and why it is not run."""

    lang: str
    code: str
    line: int
    not_run: str | None


def blocks(path: Path) -> list[Block]:
    """Every fenced code block of a Markdown file, in order (indented fences included)."""
    lines = path.read_text().splitlines(keepends=True)
    out = []
    i = 0
    while i < len(lines):
        opening = OPEN.match(lines[i].rstrip("\n"))
        if not opening:
            i += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        lang = opening["info"].strip().split(" ")[0]
        marker = NOT_RUN.match(lines[i - 1]) if i > 0 else None
        body = []
        j = i + 1
        while j < len(lines) and not re.match(rf"^ *{fence}`*\s*$", lines[j]):
            line = lines[j]
            body.append(line[min(indent, len(line) - len(line.lstrip(" "))) :])
            j += 1
        if j == len(lines):
            raise ValueError(f"{path}:{i + 1}: unclosed code fence")
        out.append(Block(lang, "".join(body), i + 1, marker["reason"].strip() if marker else None))
        i = j + 1
    return out


def site_pages() -> list[Path]:
    """The Markdown files of mkdocs.yml's ``nav``, in nav order."""
    text = MKDOCS.read_text()
    nav = text[text.index("\nnav:") :]
    return [DOCS / m["page"] for line in nav.splitlines()[1:] if (m := NAV_PAGE.match(line))]


def main(out: Path) -> None:
    """Write each ``python`` block of the README and the site's pages to its own file."""
    out.mkdir(parents=True, exist_ok=True)
    for pattern in ("readme_block_*.py", "docs_*_block_*.py"):
        for old in out.glob(pattern):
            old.unlink()
    sources = [("readme", README)] + [
        (
            "docs_" + page.relative_to(DOCS).with_suffix("").as_posix().replace("/", "_").replace("-", "_"),
            page,
        )
        for page in site_pages()
    ]
    for prefix, path in sources:
        python = [b for b in blocks(path) if b.lang == "python"]
        for i, block in enumerate(python):
            (out / f"{prefix}_block_{i}.py").write_text(block.code)


if __name__ == "__main__":
    main(Path(sys.argv[1]))

"""What the ``aggkit`` commands share: the help format and argument types that check early."""

from __future__ import annotations

import argparse
import os
import textwrap


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written (line breaks kept), and every option's default in its help."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        hidden = default is None or default is False or default is argparse.SUPPRESS
        if not action.option_strings or hidden or "%(default)" in text:
            return text
        shown = " ".join(map(str, default)) if isinstance(default, list | tuple) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


def paragraphs(*texts: str, width: int = 88) -> str:
    """Plain-text paragraphs wrapped to ``width`` (argparse keeps a raw description as it is)."""
    return "\n\n".join(textwrap.fill(t, width) for t in texts)


def positive_int(text: str) -> int:
    """An argparse type: an int >= 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {v}")
    return v


def positive_float(text: str) -> float:
    """An argparse type: a finite float > 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < v < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return v


def size(text: str) -> int:
    """An argparse type: a whole number >= 1, also written as a float (``1e6``)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size such as 1000 or 1e6, got {text!r}") from None
    if not (1 <= v < 2**63 and v == int(v)):
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text}")
    return int(v)


def check_writable(path: str, what: str) -> str | None:
    """Why ``path`` cannot be written (a message naming ``what``), or ``None`` if it can.

    Checked before a long run starts, so that a typo does not cost the run's result.
    """
    if os.path.isdir(path):
        return f"{what} {path!r} is a directory"
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        return f"{what} {path!r}: the directory {parent!r} does not exist"
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return f"{what} {path!r} exists and is not writable"
    if not os.path.exists(path) and not os.access(parent, os.W_OK | os.X_OK):
        return f"{what} {path!r}: the directory {parent!r} is not writable"
    return None

"""What the ``aggkit`` commands share: the help format and argument types that check early."""

from __future__ import annotations

import argparse
import math
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


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def positive_int(text: str) -> int:
    """An argparse type: an int >= 1."""
    v = _int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {v}")
    return v


def seed(text: str) -> int:
    """An argparse type: an int >= 0 (numpy's seeds)."""
    v = _int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {v}")
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


def unit_interval(text: str) -> float:
    """An argparse type: a float in ``[0, 1)``."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text}")
    return v


def size(text: str) -> int:
    """An argparse type: a whole number >= 1, also written as a float (``1e6``)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size such as 1000 or 1e6, got {text!r}") from None
    if not (math.isfinite(v) and v == int(v) and 1 <= v < 2**63):
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to 2**63 - 1, got {text}")
    return int(v)


def positive_or_inf(text: str) -> float:
    """An argparse type: a float > 0, ``inf`` included."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0 (or inf), got {text}")
    return v


def check_writable(path: str, what: str) -> str | None:
    """Why ``path`` cannot be written (a message naming ``what``), or ``None`` if it can.

    Checked before a long run starts, so that a typo does not cost the run's result: the file
    is opened for appending (and removed again if that created it), which asks the operating
    system itself rather than guessing from permission bits.
    """
    if not path:
        return f"{what} is an empty path"
    if os.path.isdir(path):
        return f"{what} {path!r} is a directory"
    existed = os.path.lexists(path)
    try:
        with open(path, "ab"):
            pass
    except OSError as e:
        return f"{what} {path!r} cannot be written: {e.strerror or e}"
    if not existed:
        os.remove(path)
    return None

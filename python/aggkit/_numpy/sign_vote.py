"""The sign vote on numpy arrays (and other host arrays): one pass of the Rust kernel."""

from __future__ import annotations

from typing import Any

from aggkit import _core
from aggkit._dispatch import implements
from aggkit._numpy._input import prepare
from aggkit.rules.sign_vote import SignVote


@implements("sign_vote", "numpy")
def sign_vote(rule: SignVote, x: Any) -> tuple[Any, None]:
    """:func:`aggkit.sign_vote` on host arrays."""
    p = prepare(x, "sign_vote")
    return p.finish(_core.sign_vote(p.data, rule.nonfinite)), None

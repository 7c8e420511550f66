"""Rules whose torch versions decide on the host, as one operator a tracer does not enter.

The geometric median iterates until it converges, the subset rules and Bulyan select inputs on
the host, pre-aggregators draw permutations: their torch versions read tensor values in Python,
which ``torch.export`` and ``torch.compile(fullgraph=True)`` cannot trace. Without autograd,
:func:`run` calls such a rule through ``aggkit::aggregate``, a custom operator whose fake
version only states the output's shape, so a traced graph holds one node that runs the eager
rule on real tensors. With autograd the eager path runs as before (``torch.compile`` breaks the
graph there; ``torch.export`` of a training graph is not supported for these rules).

The rule travels as its spec (``aggkit.registry.to_spec``), so an exported program saved with
``torch.export.save`` rebuilds it after ``torch.export.load`` in another process.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from aggkit.registry import Pipeline, Rule, from_spec, to_spec

#: Rules whose torch versions trace (custom operators with fake shapes, or plain tensor ops).
TRACEABLE = frozenset({"mean", "median", "trimmed_mean", "meamed", "sign_vote", "krum", "multi_krum"})


def traceable(rule: Rule) -> bool:
    """Whether ``rule``'s torch version can be traced as it is."""
    if isinstance(rule, Pipeline):
        return False  # pre-aggregators draw and select on the host
    return rule.name in TRACEABLE


@functools.lru_cache(maxsize=256)
def _rule(spec: str) -> Rule:
    return from_spec(spec)


@torch.library.custom_op("aggkit::aggregate", mutates_args=())
def aggregate_op(x: Tensor, spec: str) -> Tensor:
    """``rule(x)`` for the rule written as ``spec``; ``x`` is ``(n, *shape)``."""
    return _rule(spec)(x).clone()


@aggregate_op.register_fake
def _(x: Tensor, spec: str) -> Tensor:
    return x.new_empty(x.shape[1:])


def run(rule: Rule, x: Tensor) -> Tensor | None:
    """``rule(x)`` through ``aggkit::aggregate`` when tracing without autograd, else ``None``."""
    if traceable(rule) or not isinstance(x, Tensor) or not torch.compiler.is_compiling():
        return None
    if torch.is_grad_enabled() and x.requires_grad:
        return None
    return aggregate_op(x, to_spec(rule))  # type: ignore[no-any-return]

"""Rules whose torch versions decide on the host, as one operator a tracer does not enter.

The geometric median iterates until it converges, the subset rules and Bulyan select inputs on
the host, pre-aggregators draw permutations: their torch versions read tensor values in Python,
which ``torch.export`` and ``torch.compile(fullgraph=True)`` cannot trace. Under
``torch.export`` (non-strict, its default), and under ``torch.compile`` without autograd,
:func:`run` calls such a rule through ``aggkit::aggregate``, a custom operator whose fake version
only states the output's shape, so a traced graph holds one node that runs the eager rule on
real tensors (no gradient flows through it). Under ``torch.compile`` with autograd the eager
path runs as before (a graph break).

The operator's string argument is the module's :class:`Handle`, made once when the module is
built (tracing never serialises a rule): a token naming the module's own rule object, plus the
rule's spec (``aggkit.registry.to_spec``). In the process that built the module the token finds
that very object, so a rule with a random stream (bucketing, perturbation) draws from one
stream whether it runs eagerly or traced; elsewhere (``torch.export.load`` in another process)
the spec rebuilds it, once per handle.
"""

from __future__ import annotations

import json
import threading
import uuid
import weakref

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


#: The live rule objects of the modules of this process, by token.
_LIVE: weakref.WeakValueDictionary[str, Rule] = weakref.WeakValueDictionary()
#: Rules rebuilt from a handle's spec (a program loaded in another process), by handle.
_REBUILT: dict[str, Rule] = {}
_LOCK = threading.Lock()


def handle(rule: Rule) -> str:
    """The operator's argument for ``rule``: a fresh token for this object, and its spec."""
    token = uuid.uuid4().hex
    _LIVE[token] = rule
    return json.dumps({"token": token, "rule": to_spec(rule)})


def _resolve(h: str) -> Rule:
    with _LOCK:
        found = _REBUILT.get(h)
        if found is None:
            data = json.loads(h)
            found = _LIVE.get(data["token"])
            if found is None:
                found = _REBUILT[h] = from_spec(data["rule"])
        return found


@torch.library.custom_op("aggkit::aggregate", mutates_args=())
def aggregate_op(x: Tensor, spec: str) -> Tensor:
    """``rule(x)`` for the rule named by the handle ``spec``; ``x`` is ``(n, *shape)``."""
    return _resolve(spec)(x).clone()


@aggregate_op.register_fake
def _(x: Tensor, spec: str) -> Tensor:
    return x.new_empty(x.shape[1:])


def run(rule: Rule, h: str, x: Tensor) -> Tensor | None:
    """``rule(x)`` through ``aggkit::aggregate`` when traced (see above), else ``None``."""
    if traceable(rule) or not isinstance(x, Tensor) or not torch.compiler.is_compiling():
        return None
    if not torch.compiler.is_exporting() and torch.is_grad_enabled() and x.requires_grad:
        return None
    return aggregate_op(x, h)  # type: ignore[no-any-return]

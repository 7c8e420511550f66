"""DETOX on tensors: the vote on the tensors' device, then aggkit.torch's rules.

The vote runs as ``torch.ops.aggkit.detox``; stage 2 composes aggkit.torch's rules on the
winners, so the gradient reaches each group's winning member.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from aggkit import _core
from aggkit._dispatch import implements
from aggkit.rules.detox import DETOX, DetoxInfo, run
from aggkit.rules.detox import detox as _detox_rule
from aggkit.torch._paths import rust, view


def native_vote(
    data: torch.Tensor, groups: np.ndarray, segs: list[int], mode: str, atol: float, rtol: float
) -> tuple[np.ndarray, np.ndarray]:
    """DETOX's vote with torch ops on the tensor's device (rust/rules/detox.rs semantics).

    ``data`` is ``(n, d)``; returns winners ``(g, s)`` (-1: none) and agreement ``(g, r)``.
    """
    g, r = groups.shape
    need = r // 2 + 1
    winners = np.full((g, len(segs) - 1), -1, dtype=np.int64)
    agree = np.ones((g, r), dtype=bool)
    for gi, members in enumerate(groups.tolist()):
        for s, (lo, hi) in enumerate(itertools.pairwise(segs)):
            seg = data[members, lo:hi]
            if mode == "approx":
                diff = (seg[:, None, :] - seg[None, :, :]).abs()
                tol = atol + rtol * seg.abs()[None, :, :]
                close = (diff <= tol).all(dim=2)  # close[j, m]: member j is close to candidate m
            else:
                close = (seg[:, None, :] == seg[None, :, :]).all(dim=2)
            eq: np.ndarray = close.cpu().numpy()
            w: int | None
            if mode == "reference":
                cand, count = 0, 0
                for m in range(r):
                    if count == 0:
                        cand, count = m, 1
                    elif eq[m, cand]:
                        count += 1
                    else:
                        count -= 1
                w = cand
            else:
                counts = eq.sum(axis=0) - (np.diag(eq) if mode == "approx" else 0)
                target = need - 1 if mode == "approx" else need
                ok = np.nonzero(counts >= target)[0]
                w = int(ok[0]) if ok.size else None
            if w is not None:
                winners[gi, s] = members[w]
                same = eq[:, w].copy()
                same[w] = True
                agree[gi] &= same
    return winners, agree


@torch.library.custom_op("aggkit::detox", mutates_args=())
def detox_op(
    x: Tensor, groups: Tensor, r: int, segments: list[int], mode: str, atol: float, rtol: float
) -> tuple[Tensor, Tensor]:
    """DETOX's majority vote on ``(n, d)`` rows.

    Returns winners ``(g * s,)`` int32 (-1: none) and agreement ``(g * r,)``. ``groups`` is
    the flat ``(g * r,)`` int32 member list. Not differentiable (a selection): the gradient
    reaches the winners through the indexing that follows.
    """
    g = groups.numel() // r
    if rust(x):
        w, agree = _core.detox_vote(view(x), groups.numpy().view(np.uint32), r, segments, mode, atol, rtol)
        return torch.from_numpy(w.view(np.int32)), torch.from_numpy(agree)
    w, agree = native_vote(x, groups.cpu().numpy().reshape(g, r).astype(np.int64), segments, mode, atol, rtol)
    w32 = torch.from_numpy(w.reshape(-1).astype(np.int32)).to(x.device)
    return w32, torch.from_numpy(agree.reshape(-1)).to(x.device)


@detox_op.register_fake
def _(
    x: Tensor, groups: Tensor, r: int, segments: list[int], mode: str, atol: float, rtol: float
) -> tuple[Tensor, Tensor]:
    g = groups.shape[0] // r
    s = len(segments) - 1
    return x.new_empty(g * s, dtype=torch.int32), x.new_empty(g * r, dtype=torch.bool)


class _Device:
    """The DETOX backend for tensors: rows are flat views, the vote runs on their device."""

    def __init__(self, x: Any) -> None:
        if isinstance(x, Tensor):
            self.first_shape, self.dtype = x.shape[1:], x.dtype
            self.flat: Sequence[Tensor] = list(x.reshape(x.shape[0], -1)) if x.shape[0] else []
            self.data = x
        elif isinstance(x, Sequence) and x and all(isinstance(t, Tensor) for t in x):
            self.first_shape, self.dtype = x[0].shape, x[0].dtype
            self.flat = [t.reshape(-1) for t in x]
            self.data = torch.stack(list(x))
        else:
            raise TypeError(f"detox: x must be a tensor or a sequence of tensors, got {type(x).__name__}")

    def rows(self) -> tuple[Sequence[Any], int]:
        return self.flat, int(self.first_shape.numel())

    def vote(
        self, groups: np.ndarray, r: int, segments: list[int], mode: str, atol: float, rtol: float
    ) -> tuple[np.ndarray, np.ndarray]:
        data = self.data.detach().reshape(self.data.shape[0], -1)
        if data.dtype in (torch.float16, torch.bfloat16):
            data = data.float()
        gt = torch.from_numpy(groups.view(np.int32))
        winners, agree = detox_op(data.contiguous(), gt, r, segments, mode, float(atol), float(rtol))
        return winners.cpu().numpy().view(np.uint32), agree.cpu().numpy()

    def concat(self, pieces: list[Any]) -> Any:
        return torch.cat(pieces)

    def finish(self, out: Any) -> Any:
        return out.reshape(self.first_shape).to(self.dtype)


@implements("detox", "torch")
def _detox(rule: DETOX, x: Any, *, groups: Any = "contiguous", rng: Any = None) -> tuple[Tensor, DetoxInfo]:
    return run(rule, _Device(x), groups=groups, rng=rng)


def detox(x: Any, **kwargs: Any) -> Any:
    """DETOX on tensors; see :func:`aggkit.detox` (same parameters).

    The vote runs as ``torch.ops.aggkit.detox`` (Rust on CPU, torch ops on other devices);
    stage 2 composes ``aggkit.torch``'s rules on the winners, so the gradient reaches each
    group's winning member (one representative per group: the first member in group order that
    won, docs/algorithms.md) through the stage-2 rules' own backward.
    """
    if not isinstance(x, Tensor) and not (isinstance(x, Sequence) and x and isinstance(x[0], Tensor)):
        raise TypeError(f"detox: x must be a tensor or a sequence of tensors, got {type(x).__name__}")
    return _detox_rule(x, **kwargs)

"""DETOX on tensors: the vote on the tensors' device, then aggkit.torch's rules.

The vote runs as ``torch.ops.aggkit.detox``; stage 2 composes aggkit.torch's rules on the
winners, so the gradient reaches each group's winning member.
"""

from __future__ import annotations

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

#: Elements of the largest pairwise comparison one step of the device vote builds.
_VOTE_BLOCK = 1 << 22


def _far(data: Tensor, groups: Tensor, segs: list[int], mode: str, atol: float, rtol: float) -> Tensor:
    """``far[g, j, m, s]``: group ``g``'s member ``j`` is not close to member ``m`` on segment ``s``.

    Close is ``==`` (NaN differs from everything, ``-0.0 == +0.0``) or, for ``"approx"``,
    ``|x_j - x_m| <= atol + rtol |x_m|`` in float64, as the core computes it. Runs on the data's
    device over blocks of columns, so its temporaries are bounded by ``_VOTE_BLOCK`` elements
    plus the ``(g, r, r, s)`` result, whatever ``d``.
    """
    g, r = groups.shape
    d = data.shape[1]
    s = len(segs) - 1
    far = torch.zeros(g, r, r, s, dtype=torch.uint8, device=data.device)
    bounds = torch.tensor(segs[1:], dtype=torch.int64, device=data.device)
    width = max(1, _VOTE_BLOCK // max(1, g * r * r))
    members = groups.reshape(-1)
    for lo in range(0, d, width):
        hi = min(d, lo + width)
        block = data[:, lo:hi].index_select(0, members).reshape(g, r, hi - lo)
        if mode == "approx":
            block = block.to(torch.float64)
            cand = block[:, None, :, :]
            close = (block[:, :, None, :] - cand).abs() <= atol + rtol * cand.abs()
        else:
            close = block[:, :, None, :] == block[:, None, :, :]
        seg = torch.bucketize(torch.arange(lo, hi, device=data.device), bounds, right=True)
        far.scatter_reduce_(3, seg.expand(g, r, r, hi - lo), (~close).to(torch.uint8), "amax")
    return far


def native_vote(
    data: torch.Tensor, groups: np.ndarray, segs: list[int], mode: str, atol: float, rtol: float
) -> tuple[np.ndarray, np.ndarray]:
    """DETOX's vote with torch ops on the tensor's device (rust/rules/detox.rs semantics).

    ``data`` is ``(n, d)``; returns winners ``(g, s)`` (-1: none) and agreement ``(g, r)``.
    The comparisons run on the device (:func:`_far`); one ``(g, r, r, s)`` table of
    group-level decisions comes to the host, where the vote is counted.
    """
    r = groups.shape[1]
    idx = torch.from_numpy(groups).to(data.device)
    eq = _far(data, idx, segs, mode, atol, rtol).cpu().numpy() == 0  # eq[g, j, m, s]: j close to m
    eq = eq.transpose(0, 3, 1, 2)  # (g, s, j, m)
    need = r // 2 + 1
    if mode == "reference":  # the reference code's Boyer-Moore pass, without verification
        cand = np.zeros(eq.shape[:2], dtype=np.int64)
        count = np.zeros(eq.shape[:2], dtype=np.int64)
        for m in range(r):
            same = np.take_along_axis(eq[:, :, m, :], cand[:, :, None], axis=2)[:, :, 0]
            start = count == 0
            cand = np.where(start, m, cand)
            count = np.where(start, 1, np.where(same, count + 1, count - 1))
        w, has = cand, np.ones(cand.shape, dtype=bool)
    else:
        counts = eq.sum(axis=2)  # (g, s, m): members close to candidate m
        if mode == "approx":  # the candidate itself does not count
            counts -= np.diagonal(eq, axis1=2, axis2=3)
        ok = counts >= (need - 1 if mode == "approx" else need)
        w, has = ok.argmax(axis=2), ok.any(axis=2)
    winners = np.where(has, np.take_along_axis(groups, w, axis=1), -1)
    same = np.take_along_axis(eq, w[:, :, None, None], axis=3)[..., 0]  # (g, s, j): j close to w
    if mode != "approx":
        same |= np.arange(r)[None, None, :] == w[:, :, None]
    agree = np.asarray((same | ~has[:, :, None]).all(axis=1))
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
        xv = view(x.float() if x.dtype in (torch.float16, torch.bfloat16) else x)
        w, agree = _core.detox_vote(xv, groups.numpy().view(np.uint32), r, segments, mode, atol, rtol)
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

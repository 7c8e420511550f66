"""torch.distributed: robust all-reduce and a DDP communication hook built from any aggkit rule.

Byzantine-resilient data-parallel training replaces the mean of the workers' gradients by a
robust rule. Two entry points:

- :func:`robust_all_reduce` ``(tensor, rule, group=None)``: every rank passes its tensor and
  gets the rule's aggregate of all ranks' tensors (the same bits on every rank).
- :func:`register_hook` ``(ddp_model, rule)`` (or ``ddp_model.register_comm_hook(
  RobustHookState(rule), robust_hook)``): DDP's gradient all-reduce becomes the rule.
  Coordinate-wise rules (mean, median, trimmed mean) run bucket by bucket as each bucket's
  all-gather completes, overlapping backward; whole-model rules (Krum, Multi-Krum) gather
  every bucket as it is ready and aggregate once, at the last bucket (DDP waits for the
  bucket futures only at the end of backward, so deferring them is safe).

Two modes:

- **gathered** (default): every rank all-gathers the ``world`` tensors and runs the rule on
  all coordinates: ``world x d`` memory and the whole rule's work on every rank.
- **sharded** (``sharded=True``): rank ``r`` receives only shard ``r`` of the coordinates
  from every rank (``all_to_all``), aggregates it, and the shards are all-gathered back. Per
  rank work and memory are ``world x d / world`` = ``d``, falling as ranks are added. Krum
  and Multi-Krum add one small collective: each rank computes the ``world x world`` squared
  distances on its shard, the partial matrices are all-gathered and summed **in rank
  order on every rank** (not all-reduced: a backend's reduction order could differ between
  ranks, and the selection must be identical everywhere), and the selection is made from
  the sum.

Every rank computes on identical data with aggkit's deterministic kernels, so all ranks hold
bit-identical results and replicas never drift; the tests check it. The hook returns the
aggregate itself (DDP does not divide by the world size when a hook is registered).

Works with any backend that has ``all_gather`` and ``all_to_all`` (gloo on CPU, NCCL on
GPU); CUDA tensors are aggregated on the device by ``aggkit.torch``.
"""

import threading
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from aggkit.errors import InvalidParameterError
from aggkit.registry import Rule, Selection
from aggkit.registry import rule as make_rule
from aggkit.rules.krum import Krum, MultiKrum
from aggkit.rules.mean import Mean
from aggkit.torch.state_dict import krum_select, pairwise_sq_distances

__all__ = ["RobustHookState", "register_hook", "robust_all_reduce", "robust_hook"]

_DISTANCE_RULES = ("krum", "multi_krum")


def robust_all_reduce(
    tensor: torch.Tensor,
    rule: str | Rule,
    group: Any = None,
    *,
    sharded: bool = False,
    return_selection: bool = False,
) -> Any:
    """Aggregate ``tensor`` across the ranks of ``group`` with ``rule``; every rank gets the result.

    Parameters
    ----------
    tensor : torch.Tensor
        This rank's contribution (any shape; float16/bfloat16/float32/float64). Not modified:
        unlike ``dist.all_reduce`` the result is a new tensor (``tensor.copy_(result)`` if you
        want it in place).
    rule : str or aggkit.Rule
        A rule object or name (``"median"``; rules needing ``f`` must be objects, e.g.
        ``aggkit.Krum(f=1)``).
    group : ProcessGroup, optional
        Defaults to the world.
    sharded : bool, default False
        Each rank aggregates only its shard of the coordinates (see the module docstring).
        Supported for coordinate-wise rules and Krum / Multi-Krum.
    return_selection : bool, default False
        Also return the :class:`aggkit.Selection` of selection rules (``None`` for others).

    Returns
    -------
    torch.Tensor or (torch.Tensor, Selection or None)
        The aggregate, with ``tensor``'s shape, dtype and device, bit-identical on every rank.
    """
    r = make_rule(rule)
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"robust_all_reduce: tensor must be a torch.Tensor, got {type(tensor).__name__}")
    flat = tensor.detach().reshape(-1).contiguous()
    y, sel = _sharded(flat, r, group) if sharded else _gathered(flat, r, group)
    y = y.reshape(tensor.shape).to(tensor.dtype)
    return (y, sel) if return_selection else y


def _gathered(flat: torch.Tensor, r: Rule, group: Any) -> tuple[torch.Tensor, Selection | None]:
    parts = [torch.empty_like(flat) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, flat, group=group)
    return r.aggregate(parts)


def _check_shardable(r: Rule) -> None:
    if not (r.coordinate_wise or r.name in _DISTANCE_RULES):
        raise InvalidParameterError(
            f"{r!r} cannot run sharded: only coordinate-wise rules and Krum / Multi-Krum can"
        )


def _sharded(flat: torch.Tensor, r: Rule, group: Any) -> tuple[torch.Tensor, Selection | None]:
    _check_shardable(r)
    world = dist.get_world_size(group)
    d = flat.numel()
    s = max(1, -(-d // world))  # shard length; the tail is padded with zeros (same on every rank)
    padded = flat if s * world == d else torch.cat([flat, flat.new_zeros(s * world - d)])
    recv = [torch.empty(s, dtype=flat.dtype, device=flat.device) for _ in range(world)]
    dist.all_to_all(recv, list(torch.split(padded, s)), group=group)  # recv[j]: rank j's values of my shard
    sel = None
    if r.coordinate_wise:
        mine = r(recv)
    else:
        partial = torch.from_numpy(pairwise_sq_distances(recv)).to(flat.device)
        partials = [torch.empty_like(partial) for _ in range(world)]
        dist.all_gather(partials, partial, group=group)
        total = partials[0].cpu().numpy().copy()
        for p in partials[1:]:  # in rank order, on every rank: the same bits everywhere
            total += p.cpu().numpy()
        assert isinstance(r, Krum | MultiKrum)  # _check_shardable admits no other
        idx, scores = krum_select(total, r)
        rows = [recv[i] for i in idx]
        mine = rows[0].clone() if len(rows) == 1 else Mean(nonfinite="propagate")(rows)
        dev = flat.device
        sel = Selection(torch.tensor(idx, dtype=torch.int64, device=dev), torch.from_numpy(scores).to(dev))
    out = [torch.empty(s, dtype=flat.dtype, device=flat.device) for _ in range(world)]
    dist.all_gather(out, mine.to(flat.dtype).contiguous(), group=group)
    return torch.cat(out)[:d], sel


# ---------------------------------------------------------------------------------------------
# DDP communication hook


class RobustHookState:
    """State of :func:`robust_hook`: the rule, the group, the mode and the pending buckets.

    Parameters
    ----------
    rule : str or aggkit.Rule
    group : ProcessGroup, optional
    sharded : bool, default False
        See the module docstring. In sharded mode every rule waits for the last bucket.

    Attributes
    ----------
    rounds : aggkit.registry.Rounds
        The rule across steps (``rule.rounds()``): centered clipping starts each step from the
        previous aggregated gradient; ``state.rounds.reset()`` starts over.
    last_selection : aggkit.Selection or None
        The ranks kept by a selection rule in the last step (indices are ranks of ``group``).
    """

    def __init__(self, rule: str | Rule, group: Any = None, *, sharded: bool = False) -> None:
        self.rule = make_rule(rule)
        self.rounds = self.rule.rounds()
        self.group = group
        self.sharded = bool(sharded)
        if self.sharded:
            _check_shardable(self.rule)
        self.last_selection: Selection | None = None
        self._pending: list[
            tuple[torch.Tensor, list[torch.Tensor] | None, Any, torch.futures.Future[torch.Tensor]]
        ] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RobustHookState(rule={self.rule!r}, sharded={self.sharded})"


# DDP checks that ``bucket`` is annotated with the runtime class dist.GradBucket, which torch's
# type information does not declare.
def robust_hook(
    state: RobustHookState,
    bucket: dist.GradBucket,  # type: ignore[name-defined]
) -> torch.futures.Future[torch.Tensor]:
    """DDP communication hook: the bucket's gradient becomes ``state.rule`` over the ranks."""
    r, group = state.rule, state.group
    buf = bucket.buffer()
    world = dist.get_world_size(group)
    if r.coordinate_wise and not state.sharded:
        parts = [torch.empty_like(buf) for _ in range(world)]
        fut = dist.all_gather(parts, buf, group=group, async_op=True).get_future()

        def reduce(_: torch.futures.Future[Any]) -> torch.Tensor:
            return r(parts).to(buf.dtype)

        return fut.then(reduce)
    # Whole-model rules and sharded mode: resolve every bucket's future at the last bucket.
    mine: torch.futures.Future[torch.Tensor] = torch.futures.Future()
    with state._lock:
        if state.sharded:
            state._pending.append((buf, None, None, mine))
        else:
            parts = [torch.empty_like(buf) for _ in range(world)]
            work = dist.all_gather(parts, buf, group=group, async_op=True)
            state._pending.append((buf, parts, work, mine))
        if bucket.is_last():
            pending, state._pending = state._pending, []
            _resolve(state, pending)
    return mine


def _resolve(state: RobustHookState, pending: Sequence[tuple[Any, Any, Any, Any]]) -> None:
    bufs = [p[0] for p in pending]
    sizes = [b.numel() for b in bufs]
    try:
        if state.sharded:
            flat = torch.cat([b.reshape(-1) for b in bufs])
            y, sel = _sharded(flat, state.rule, state.group)
        else:
            for _, _, work, _ in pending:
                work.wait()
            world = len(pending[0][1])
            rows = [torch.cat([p[1][k] for p in pending]) for k in range(world)]
            y, sel = state.rounds.aggregate(rows)
        state.last_selection = sel
        for (b, _, _, fut), piece in zip(pending, torch.split(y, sizes), strict=True):
            fut.set_result(piece.view_as(b).to(b.dtype))
    except Exception as e:  # every waiting bucket learns of the failure
        for *_, fut in pending:
            if not fut.done():
                fut.set_exception(e)
        raise


def register_hook(model: torch.nn.parallel.DistributedDataParallel, rule: str | Rule, group: Any = None,
                  *, sharded: bool = False) -> RobustHookState:  # fmt: skip
    """Make ``model``'s gradient synchronisation robust: ``model.register_comm_hook(state, robust_hook)``.

    Call once, before the first backward. Returns the hook's state (``state.last_selection``
    tells which ranks a selection rule kept in the last step).
    """
    state = RobustHookState(rule, group, sharded=sharded)
    model.register_comm_hook(state, robust_hook)
    return state

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

Faulty ranks. A rank's values are input like any client's: NaN, ±inf or huge values from one
rank are handled by the rule's ``nonfinite`` policy, identically on every rank (under
``nonfinite="raise"`` every rank raises the same :class:`aggkit.NonFiniteError`, naming the
ranks). What would desynchronise the collectives is refused on every rank before the payload
moves:

- :func:`robust_all_reduce` first all-gathers a small header from every rank (the tensor's
  shape, number of values and dtype, and the mode); when the ranks disagree, every rank raises
  :class:`aggkit.ShapeError` naming each rank's shape and dtype, instead of a payload
  all-gather of mismatched sizes (which would hang or crash). This costs one all-gather of a
  few integers per call: a round trip, which matters only for small tensors.
- In sharded mode each rank aggregates a different shard, so the rule can refuse on one rank
  only (e.g. NaN in its shard under ``nonfinite="raise"``): each rank's outcome travels with
  the next all-gather, and if any rank failed every rank raises (the failing rank its own
  error, the others the same exception class naming the failing ranks).
- The DDP hook's buckets need no header: every rank's buckets follow rank 0's layout, and a
  rank whose model differs fails in DDP's constructor, before any hook runs (torch raises on
  that rank only; the others then wait as for a rank that stops taking part, below). When the
  rule refuses a step, ``backward()`` raises on every rank (a ``RuntimeError`` carrying the
  rule's error, as torch reports a failed communication hook) and the next step runs normally.

A rank that stops taking part (raises before a collective, crashes, or hangs) is not detected
by this module: the other ranks wait in their collective until the process group's timeout
(``dist.init_process_group(timeout=...)``; gloo's default is 30 minutes) and then raise a
``RuntimeError`` from the backend, or sooner if the backend sees the peer's connection close
(a process that exited). Set a timeout that fits your step time.
"""

import threading
import zlib
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from aggkit.errors import (
    AggkitError,
    InvalidParameterError,
    NonFiniteError,
    ShapeError,
    TooFewInputsError,
    nonfinite_error,
)
from aggkit.registry import Rule, Selection
from aggkit.registry import rule as make_rule
from aggkit.rules.krum import Krum, MultiKrum
from aggkit.rules.mean import Mean
from aggkit.torch.state_dict import krum_select, pairwise_sq_distances

__all__ = [
    "RobustHookState",
    "RobustReduceScatter",
    "register_hook",
    "robust_all_reduce",
    "robust_fsdp",
    "robust_hook",
]

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

    Raises
    ------
    aggkit.ShapeError
        On every rank, when the ranks' tensors differ in shape or dtype (or some ranks pass
        ``sharded=True`` and others not); the message gives each rank's shape and dtype.
    aggkit.TooFewInputsError
        On every rank, before any communication, when the group has fewer ranks than the rule
        needs inputs (e.g. ``Krum(f=1)`` on 3 ranks: it needs 5).
    aggkit.AggkitError
        On every rank, when the rule refuses the input (e.g. :class:`aggkit.NonFiniteError`
        under ``nonfinite="raise"``; in sharded mode raised by every rank as soon as the rule
        refuses one rank's shard).
    """
    r = _data_parallel_rule(rule, "robust_all_reduce")
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"robust_all_reduce: tensor must be a torch.Tensor, got {type(tensor).__name__}")
    check_world(r, dist.get_world_size(group), "robust_all_reduce")
    flat = tensor.detach().reshape(-1).contiguous()
    shape = tuple(tensor.shape)
    y, sel = _sharded(flat, r, group, shape) if sharded else _gathered(flat, r, group, shape)
    y = y.reshape(tensor.shape).to(tensor.dtype)
    return (y, sel) if return_selection else y


def _data_parallel_rule(rule: str | Rule, where: str) -> Rule:
    """The rule, refused if it needs a server's own update (there is no server among the ranks)."""
    r = make_rule(rule)
    if r.uses_reference:
        raise InvalidParameterError(
            f"{where}: {r!r} weighs the inputs against a server's own update, which data-parallel "
            "ranks do not have"
        )
    return r


def check_world(r: Rule, world: int, where: str) -> None:
    """Refuse a rule that cannot aggregate ``world`` inputs, one per rank, before any collective.

    Every rank of a group sees the same world size, so every rank raises the same error.
    """
    need = r.min_inputs()
    if world < need:
        raise TooFewInputsError(
            f"{where}: {r!r} needs at least {need} inputs, one per rank, but the group has {world} "
            f"ranks; use more ranks or a smaller f"
        )
    try:
        r.check_n(world)
    except TooFewInputsError as e:
        raise TooFewInputsError(f"{where}: the group has {world} ranks, one input each: {e}") from None


def _gathered(
    flat: torch.Tensor, r: Rule, group: Any, shape: Any = None
) -> tuple[torch.Tensor, Selection | None]:
    _check_agreement(flat, shape, False, group)
    parts = [torch.empty_like(flat) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, flat, group=group)
    return r.aggregate(parts)


def _check_shardable(r: Rule) -> None:
    if not (r.coordinate_wise or r.name in _DISTANCE_RULES):
        raise InvalidParameterError(
            f"{r!r} cannot run sharded: only coordinate-wise rules and Krum / Multi-Krum can"
        )


def _sharded(
    flat: torch.Tensor, r: Rule, group: Any, shape: Any = None, *, check: bool = True
) -> tuple[torch.Tensor, Selection | None]:
    if check:  # first: a rank alone in sharded mode is named
        _check_agreement(flat, shape, True, group)
    _check_shardable(r)
    world = dist.get_world_size(group)
    d = flat.numel()
    s = max(1, -(-d // world))  # shard length; the tail is padded with zeros (same on every rank)
    padded = flat if s * world == d else torch.cat([flat, flat.new_zeros(s * world - d)])
    # One (world, s) buffer whose rows receive: the rule reads it as it is (no stacked copy).
    received = torch.empty((world, s), dtype=flat.dtype, device=flat.device)
    recv = list(received.unbind(0))
    dist.all_to_all(recv, list(torch.split(padded, s)), group=group)  # recv[j]: rank j's values of my shard
    # The rule sees another shard on each rank and may refuse on some ranks only: from here on,
    # a failure is sent along with the next all-gather, and every rank raises if any rank failed.
    sel = None
    failure: Exception | None = None
    mine = flat.new_zeros(s)
    if r.coordinate_wise:
        try:
            mine = r(received)
        except Exception as e:
            failure = e
    else:
        partial = torch.zeros((world, world), dtype=torch.float64, device=flat.device)
        try:
            if getattr(r, "nonfinite", None) == "raise":  # the inputs, as Krum checks them
                bad = [j for j, row in enumerate(recv) if not bool(torch.isfinite(row).all())]
                if bad:
                    name = "Krum" if r.name == "krum" else "Multi-Krum"
                    raise nonfinite_error(name, bad, "nonfinite='raise' refuses NaN and infinite values")
            partial = torch.from_numpy(pairwise_sq_distances(received)).to(flat.device)
        except Exception as e:
            failure = e
        partials = _all_gather_checked(partial, failure, group)
        total = partials[0].cpu().numpy().reshape(world, world).copy()
        for p in partials[1:]:  # in rank order, on every rank: the same bits everywhere
            total += p.cpu().numpy().reshape(world, world)
        assert isinstance(r, Krum | MultiKrum)  # _check_shardable admits no other
        idx, scores = krum_select(total, r)  # the same sum on every rank: raises on all or none
        try:
            rows = [recv[i] for i in idx]
            mine = rows[0].clone() if len(rows) == 1 else Mean(nonfinite="propagate")(rows)
        except Exception as e:
            failure = e
        dev = flat.device
        sel = Selection(torch.tensor(idx, dtype=torch.int64, device=dev), torch.from_numpy(scores).to(dev))
    out = _all_gather_checked(mine.to(flat.dtype).reshape(-1), failure, group)
    return torch.cat(out)[:d], sel


# ---------------------------------------------------------------------------------------------
# Agreement between ranks

_HEADER_DIMS = 6  # dimensions sent in full; longer shapes are compared by a checksum too
_DTYPES = {
    zlib.crc32(str(dt).encode()): str(dt) for dt in vars(torch).values() if isinstance(dt, torch.dtype)
}


def _header(flat: torch.Tensor, shape: Any, sharded: bool) -> list[int]:
    shape = tuple(flat.shape) if shape is None else tuple(int(n) for n in shape)
    dims = [*shape[:_HEADER_DIMS], *[-1] * (_HEADER_DIMS - min(len(shape), _HEADER_DIMS))]
    dtype = zlib.crc32(str(flat.dtype).encode())
    return [int(sharded), dtype, flat.numel(), len(shape), zlib.crc32(repr(shape).encode()), *dims]


def _describe(h: list[int]) -> str:
    sharded, dtype, numel, ndim, _, *dims = h
    shown = [str(n) for n in dims[: min(ndim, _HEADER_DIMS)]] + (["..."] if ndim > _HEADER_DIMS else [])
    shape = "(" + ", ".join(shown) + ("," if ndim == 1 else "") + ")"
    name = _DTYPES.get(dtype, f"dtype #{dtype}")
    return f"shape {shape} {name} ({numel} values{', sharded' if sharded else ''})"


def _check_agreement(flat: torch.Tensor, shape: Any, sharded: bool, group: Any) -> None:
    """All-gather every rank's header; every rank raises ``ShapeError`` if they differ.

    Runs before the payload's collectives, whose sizes follow from the header: ranks that
    disagree would otherwise hang in (or crash) an all-gather of mismatched sizes.
    """
    mine = torch.tensor(_header(flat, shape, sharded), dtype=torch.int64, device=flat.device)
    headers = [torch.empty_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(headers, mine, group=group)
    rows: list[list[int]] = torch.stack(headers).cpu().tolist()
    if all(h == rows[0] for h in rows):
        return
    kinds: dict[tuple[int, ...], list[int]] = {}
    for rank, h in enumerate(rows):
        kinds.setdefault(tuple(h), []).append(rank)
    ranks = "; ".join(
        f"rank{'s' if len(rs) > 1 else ''} {', '.join(map(str, rs))}: {_describe(list(h))}"
        for h, rs in kinds.items()
    )
    raise ShapeError(
        "robust_all_reduce: the ranks passed different tensors (every rank must pass the same "
        f"shape and dtype, and the same sharded=): {ranks}"
    )


# A rank's failure travels as a code (its index here, plus one); the other ranks raise the same
# class, so every rank raises alike (``AggkitError`` for an exception of another kind).
_FAILURES: tuple[type[Exception], ...] = (
    NonFiniteError,
    TooFewInputsError,
    ShapeError,
    InvalidParameterError,
    AggkitError,
    TypeError,
    Exception,
)


def _failure_code(e: Exception | None) -> int:
    if e is None:
        return 0
    return 1 + next(i for i, cls in enumerate(_FAILURES) if isinstance(e, cls))


def _all_gather_checked(t: torch.Tensor, failure: Exception | None, group: Any) -> list[torch.Tensor]:
    """All-gather ``t`` (1-D or not) with this rank's failure code; every rank raises if one failed."""
    flat = t.reshape(-1)
    buf = torch.cat([flat, flat.new_full((1,), _failure_code(failure))])
    parts = [torch.empty_like(buf) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, buf, group=group)
    codes = [int(c) for c in torch.stack([p[-1] for p in parts]).cpu().tolist()]
    failed = [rank for rank, c in enumerate(codes) if c != 0]
    if failed:
        where = f"rank{'s' if len(failed) > 1 else ''} {', '.join(map(str, failed))}"
        if failure is not None:
            failure.add_note(f"aggkit.distributed (sharded): the rule failed on {where}; every rank raises")
            raise failure
        cls = _FAILURES[codes[failed[0]] - 1]
        what = f"{cls.__name__} there" if cls is not Exception else "an exception there"
        raise (cls if cls is not Exception else AggkitError)(
            f"aggkit.distributed (sharded): the rule failed on the shard of {where} ({what}); "
            "every rank raises"
        )
    return [p[:-1] for p in parts]


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
        self.rule = _data_parallel_rule(rule, "register_hook")
        self.rounds = self.rule.rounds()
        self.group = group
        self.sharded = bool(sharded)
        if self.sharded:
            _check_shardable(self.rule)
        if dist.is_available() and dist.is_initialized():
            # checked here, when the hook is registered, not at the first backward()
            check_world(self.rule, dist.get_world_size(group), "register_hook")
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
    # A future failed with set_exception holds the exception as its value, which DDP's reducer
    # cannot read; unwrapped in a callback, it fails the returned future properly.
    return mine.then(_unwrap)


def _unwrap(fut: torch.futures.Future[torch.Tensor]) -> torch.Tensor:
    return fut.wait()


def _resolve(state: RobustHookState, pending: Sequence[tuple[Any, Any, Any, Any]]) -> None:
    bufs = [p[0] for p in pending]
    sizes = [b.numel() for b in bufs]
    try:
        if state.sharded:
            flat = torch.cat([b.reshape(-1) for b in bufs])
            y, sel = _sharded(flat, state.rule, state.group, check=False)  # DDP's layout agrees
        else:
            for _, _, work, _ in pending:
                work.wait()
            world = len(pending[0][1])
            rows = [torch.cat([p[1][k] for p in pending]) for k in range(world)]
            y, sel = state.rounds.aggregate(rows)
        state.last_selection = sel
        for (b, _, _, fut), piece in zip(pending, torch.split(y, sizes), strict=True):
            fut.set_result(piece.view_as(b).to(b.dtype))
    except Exception as e:
        # Every waiting bucket learns of the failure, and backward() raises it when DDP waits
        # for the futures. Not re-raised here: an exception out of the hook leaves DDP's reducer
        # in the middle of the step, and the next backward fails on an internal assert.
        state.last_selection = None
        for *_, fut in pending:
            if not fut.done():
                fut.set_exception(e)


def register_hook(model: torch.nn.parallel.DistributedDataParallel, rule: str | Rule, group: Any = None,
                  *, sharded: bool = False) -> RobustHookState:  # fmt: skip
    """Make ``model``'s gradient synchronisation robust: ``model.register_comm_hook(state, robust_hook)``.

    Call once, before the first backward. Returns the hook's state (``state.last_selection``
    tells which ranks a selection rule kept in the last step). A rule that cannot aggregate one
    input per rank of ``group`` (``Krum(f=1)`` on 3 ranks) raises
    :class:`aggkit.TooFewInputsError` here, on every rank, rather than at the first backward.
    """
    state = RobustHookState(rule, group, sharded=sharded)
    model.register_comm_hook(state, robust_hook)
    return state


# ---------------------------------------------------------------------------------------------
# FSDP (fully_shard): the gradient reduce-scatter


class RobustReduceScatter:
    """FSDP's gradient reduce-scatter with a coordinate-wise rule in place of the average.

    FSDP (``torch.distributed.fsdp.fully_shard``) reduce-scatters each step's gradients: rank
    ``r`` receives the sum or average of every rank's values of its own shard. This object is
    the ``ReduceScatter`` that :meth:`FSDPModule.set_custom_reduce_scatter` takes: rank ``r``
    receives every rank's values of its shard (``all_to_all_single``) and applies the rule to
    those ``world`` rows. Coordinate-wise rules only (each rank sees one shard). Register it
    with :func:`robust_fsdp`, which also turns FSDP's own gradient division off.

    If the rule refuses one rank's shard (``nonfinite="raise"`` and NaN there), every rank
    learns it in one small all-gather and raises, so no rank is left waiting in a collective.
    """

    def __init__(self, rule: str | Rule) -> None:
        self.rule = make_rule(rule)
        if not self.rule.coordinate_wise:
            raise InvalidParameterError(
                f"robust_fsdp: {self.rule!r} is not coordinate-wise; FSDP gives each rank one shard "
                "of the gradients, so only coordinate-wise rules (median, trimmed mean, meamed, "
                "sign vote, mean without nonfinite='robust') apply"
            )
        self.rounds = self.rule.rounds()

    def allocate(self, size: Sequence[int], *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The output buffer FSDP asks for (a plain tensor)."""
        return torch.empty(*size, dtype=dtype, device=device)

    def __call__(
        self,
        output_tensor: torch.Tensor,
        input_tensor: torch.Tensor,
        group: Any,
        op: Any = None,
        async_op: bool = False,
    ) -> None:
        """Aggregate this rank's shard of every rank's gradients into ``output_tensor``.

        ``op`` (FSDP's sum or average) is replaced by the rule; the call is synchronous.
        """
        world = dist.get_world_size(group)
        check_world(self.rule, world, "robust_fsdp")  # every rank raises alike, before sending
        received = torch.empty_like(input_tensor)
        dist.all_to_all_single(received, input_tensor.contiguous(), group=group)
        failure: Exception | None = None
        y = None
        try:
            y, _ = self.rounds.aggregate(list(received.view(world, -1)))
        except Exception as e:
            failure = e
        _all_gather_checked(input_tensor.new_zeros(0), failure, group)
        assert y is not None
        output_tensor.copy_(y.reshape(output_tensor.shape).to(output_tensor.dtype))


def robust_fsdp(model: torch.nn.Module, rule: str | Rule) -> RobustReduceScatter:
    """Make every ``fully_shard`` module of ``model`` reduce its gradients with ``rule``.

    Call after ``fully_shard`` and before the first backward. Each FSDP module gets a
    :class:`RobustReduceScatter` (one object, shared) and a gradient divide factor of 1, so
    that FSDP neither divides the inputs nor the result: the sharded gradient is the rule's
    aggregate of the ranks' gradients, as with :func:`register_hook` for DDP. Coordinate-wise
    rules only, on a 1-D mesh: a 2-D (HSDP) mesh is refused, since FSDP would reduce the
    replicas' shards after the reduce-scatter, past the rule. The rule's bound on ``n`` is
    checked against the mesh here (a single rank would skip the collective, and the rule).

    Returns the reduce-scatter object (``.rule``, ``.rounds``).
    """
    from torch.distributed.fsdp import FSDPModule

    comm = RobustReduceScatter(rule)
    modules = [m for m in model.modules() if isinstance(m, FSDPModule)]
    if not modules:
        raise InvalidParameterError(
            "robust_fsdp: the model has no fully_shard module; call torch.distributed.fsdp.fully_shard first"
        )
    # FSDP's sharded parameters are DTensors on its mesh: a 2-D (HSDP) mesh would sum the
    # replicas' shards after the reduce-scatter, past the rule; one rank skips the collective.
    for mesh in {p.device_mesh for p in model.parameters() if hasattr(p, "device_mesh")}:
        if mesh.ndim != 1:
            raise InvalidParameterError(
                f"robust_fsdp: the parameters are sharded on a {mesh.ndim}-d mesh {tuple(mesh.shape)}; "
                "FSDP would reduce the other dimensions past the rule: use a 1-d mesh"
            )
        check_world(comm.rule, mesh.size(), "robust_fsdp")
    for m in modules:
        m.set_custom_reduce_scatter(comm)  # type: ignore[arg-type]
        m.set_gradient_divide_factor(1.0)
    return comm

"""Worker functions for test_distributed.py, run in gloo process groups by torch.multiprocessing.spawn.

Each worker writes what it computed to ``out/rank{r}.pt``; the test compares ranks and references.
"""

import datetime
import gc
import os
import time

import aggkit
import torch
import torch.distributed as dist
from aggkit.distributed import register_hook, robust_all_reduce


def _init(rank: int, world: int, port: int) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    aggkit.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)


def _finish() -> None:
    """Tear down only after every rank is done communicating, with no DDP reducer left alive.

    Without the barrier a fast rank can destroy its gloo group while a peer's last sends are in
    flight, and a reducer that outlives the group is destroyed at interpreter exit; either way a
    worker could die with "terminate called without an active exception" (seen once in CI).
    """
    dist.barrier()
    gc.collect()
    dist.destroy_process_group()


def contribution(rank: int, d: int) -> torch.Tensor:
    """Rank 0 is Byzantine (huge values, a NaN); the others send noisy copies of 1..d."""
    g = torch.Generator().manual_seed(1000 + rank)
    x = torch.arange(1, d + 1, dtype=torch.float32) + 0.01 * torch.randn(d, generator=g)
    if rank == 0:
        x = torch.full((d,), 1e6)
        x[3] = float("nan")
    return x


RULES = {
    "mean": aggkit.Mean(),
    "median": aggkit.Median(),
    "trimmed_mean": aggkit.TrimmedMean(f=1),
    "krum": aggkit.Krum(f=0),  # n >= 2f + 3 with 3 or 4 ranks
    "multi_krum": aggkit.MultiKrum(f=0, m=2),
}


def all_reduce_worker(rank: int, world: int, port: int, out: str, d: int) -> None:
    _init(rank, world, port)
    x = contribution(rank, d).reshape(d // 2, 2) if d % 2 == 0 else contribution(rank, d)
    before = x.clone()
    results = {}
    for name, r in RULES.items():
        for sharded in (False, True):
            if sharded and not r.coordinate_wise and name not in ("krum", "multi_krum"):
                try:
                    robust_all_reduce(x, r, sharded=True)
                except aggkit.InvalidParameterError as e:
                    results[(name, sharded)] = str(e)
                continue
            y, sel = robust_all_reduce(x, r, sharded=sharded, return_selection=True)
            results[(name, sharded)] = (y, None if sel is None else sel.indices)
    assert torch.equal(x.view(torch.int32), before.view(torch.int32))  # not modified (NaN included)
    torch.save(results, os.path.join(out, f"rank{rank}.pt"))
    _finish()


def triton_all_reduce_worker(rank: int, world: int, port: int, out: str, d: int) -> None:
    """robust_all_reduce with the Triton kernels (AGGKIT_TRITON=interpret, TRITON_INTERPRET=1
    set by the test): records which kernels ran."""
    import numpy as np
    from aggkit.torch import _triton, _triton_dist

    calls = []
    for mod, name in (
        (_triton, "median"),
        (_triton, "trimmed_mean"),
        (_triton_dist, "pairwise_sq_distances"),
    ):
        real = getattr(mod, name)
        setattr(mod, name, lambda *a, _r=real, _n=name, **k: (calls.append(_n), _r(*a, **k))[1])
    _init(rank, world, port)
    results = {}
    with np.errstate(all="ignore"):  # the interpreter computes inf and NaN with numpy
        for name in ("median", "trimmed_mean", "krum"):
            for sharded in (False, True):  # sharded Krum: distances of each shard, summed
                y, _ = robust_all_reduce(
                    contribution(rank, d), RULES[name], sharded=sharded, return_selection=True
                )
                results[(name, sharded)] = y
    results["calls"] = sorted(set(calls))
    torch.save(results, os.path.join(out, f"rank{rank}.pt"))
    _finish()


def ddp_worker(rank: int, world: int, port: int, out: str, rule: str, sharded: bool, steps: int) -> None:
    _init(rank, world, port)
    torch.manual_seed(0)  # same initial model everywhere
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    ddp = torch.nn.parallel.DistributedDataParallel(model, bucket_cap_mb=0.0005)  # several buckets
    state = None
    if rule != "allreduce":
        state = register_hook(ddp, RULES[rule], sharded=sharded)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05)
    w_true = torch.linspace(-1, 1, 8)
    g = torch.Generator().manual_seed(rank)
    losses, kept = [], []
    for _ in range(steps):
        xb = torch.randn(32, 8, generator=g)
        yb = (xb @ w_true).unsqueeze(1)
        loss = torch.nn.functional.mse_loss(ddp(xb), yb)
        opt.zero_grad()
        # Rank 0 is Byzantine: its gradient is the honest one scaled by -1e4.
        (loss * (-1e4 if rank == 0 else 1.0)).backward()
        opt.step()
        losses.append(float(loss))
        if state is not None and state.last_selection is not None:
            kept.append(state.last_selection.indices.tolist())
    params = [p.detach().clone() for p in model.parameters()]
    torch.save({"losses": losses, "params": params, "kept": kept}, os.path.join(out, f"rank{rank}.pt"))
    del ddp, opt, state
    _finish()


def hook_reference_worker(rank: int, world: int, port: int, out: str, rule: str, sharded: bool) -> None:
    """One backward with the hook, and the local gradients, to compare with the rule applied by hand."""
    _init(rank, world, port)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 10), torch.nn.ReLU(), torch.nn.Linear(10, 3))
    ddp = torch.nn.parallel.DistributedDataParallel(model, bucket_cap_mb=0.0002)
    register_hook(ddp, RULES[rule], sharded=sharded)
    g = torch.Generator().manual_seed(rank)
    results = []
    for _ in range(3):  # DDP rebuilds its buckets after the first iteration
        xb = torch.randn(16, 6, generator=g)
        loss = model(xb).square().mean() * (100.0 if rank == 0 else 1.0)
        local = torch.autograd.grad(loss, list(model.parameters()), retain_graph=True)
        ddp.zero_grad()
        ddp(xb).square().mean().mul(100.0 if rank == 0 else 1.0).backward()
        results.append(([t.clone() for t in local], [p.grad.clone() for p in model.parameters()]))
    torch.save(results, os.path.join(out, f"rank{rank}.pt"))
    del ddp
    _finish()


def _outcome(call):
    """``("ok", result)`` or ``("error", class name, message)``: what a call did on this rank."""
    try:
        return ("ok", call())
    except Exception as e:
        return ("error", type(e).__name__, str(e))


BAD_VALUES = {"nan": float("nan"), "inf": float("inf"), "huge": 1e308}
NONFINITE_RULES = {
    "median": aggkit.Median(),
    "trimmed_mean": aggkit.TrimmedMean(f=1),
    "krum": aggkit.Krum(f=0),
    "multi_krum": aggkit.MultiKrum(f=0, m=2),
    "mean": aggkit.Mean(),
    "median_raise": aggkit.Median(nonfinite="raise"),
    "krum_raise": aggkit.Krum(f=0, nonfinite="raise"),
}


def attacked(rank: int, d: int, bad: str, dtype: torch.dtype) -> torch.Tensor:
    """Rank 0 sends ``BAD_VALUES[bad]`` in its first two coordinates (shard 0 only), the others 1..d."""
    g = torch.Generator().manual_seed(2000 + rank)
    x = torch.arange(1, d + 1, dtype=torch.float64) + 0.01 * torch.randn(d, generator=g, dtype=torch.float64)
    if rank == 0:
        x[:2] = BAD_VALUES[bad]
    return x.to(dtype)


def faulty_rank_worker(rank: int, world: int, port: int, out: str, d: int) -> None:
    """Rank 0 sends NaN / inf / 1e308, rank 1 another tensor, then rank 1 skips a collective."""
    _init(rank, world, port)
    results = {
        "nonfinite": _nonfinite(rank, d),
        "mismatch": _mismatch(rank),
        "hook": _hook_attacks(rank),
        "absent": _absent(rank),
        "world": _too_few_ranks(),
        "after": robust_all_reduce(torch.full((3,), float(rank)), "median", sharded=True),
    }
    torch.save(results, os.path.join(out, f"rank{rank}.pt"))
    _finish()


def _nonfinite(rank: int, d: int) -> dict:
    """Every rule, both modes, rank 0 sending NaN / inf / 1e308 (float32; 1e308 also float64)."""
    results = {}
    for bad, dtype in [
        ("nan", torch.float32),
        ("inf", torch.float32),
        ("huge", torch.float32),
        ("huge", torch.float64),
    ]:
        x = attacked(rank, d, bad, dtype)
        for name, r in NONFINITE_RULES.items():
            for sharded in (False, True):
                if sharded and name == "mean":  # the robust mean drops whole inputs: not shardable
                    continue
                results[(bad, str(dtype), name, sharded)] = _outcome(
                    lambda x=x, r=r, sharded=sharded: robust_all_reduce(x, r, sharded=sharded)
                )
    return results


def _mismatch(rank: int) -> dict:
    """Rank 1 passes a tensor of another size, dtype or shape, or another mode, than the others."""
    odd = rank == 1
    cases = {
        "numel": (torch.ones(12 if odd else 10), False),
        "dtype": (torch.ones(10, dtype=torch.float64 if odd else torch.float32), False),
        "shape": (torch.ones((5, 2) if odd else (2, 5)), False),
        "ndim": (torch.ones(10, 1) if odd else torch.ones(10), False),
        "mode": (torch.ones(10), odd),  # rank 1 alone flips sharded=
    }
    results = {}
    for case, (x, flip) in cases.items():
        for rule in (aggkit.Median(), aggkit.Krum(f=0)):
            for sharded in (False, True):
                mode = sharded != flip
                results[(case, rule.name, sharded)] = _outcome(
                    lambda x=x, r=rule, mode=mode: robust_all_reduce(x, r, sharded=mode)
                )
    return results


def _hook_attacks(rank: int) -> dict:
    """DDP with the hook: rank 0's gradient is NaN, then 1e30, then honest (three steps)."""
    configs = {
        "median": (aggkit.Median(), False),
        "trimmed_mean_sharded": (aggkit.TrimmedMean(f=1), True),
        "krum": (aggkit.Krum(f=0), False),
        "krum_sharded": (aggkit.Krum(f=0), True),
        "median_raise": (aggkit.Median(nonfinite="raise"), False),
        "median_raise_sharded": (aggkit.Median(nonfinite="raise"), True),
    }
    results = {}
    for name, (rule, sharded) in configs.items():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(6, 10), torch.nn.ReLU(), torch.nn.Linear(10, 3))
        ddp = torch.nn.parallel.DistributedDataParallel(model, bucket_cap_mb=0.0002)
        register_hook(ddp, rule, sharded=sharded)
        g = torch.Generator().manual_seed(rank)

        def step(scale, ddp=ddp, g=g):
            ddp.zero_grad()
            ddp(torch.randn(16, 6, generator=g)).square().mean().mul(scale).backward()
            return [p.grad.clone() for p in ddp.module.parameters()]

        results[name] = [
            _outcome(lambda bad=bad: step(bad if rank == 0 else 1.0)) for bad in (float("nan"), 1e30, 1.0)
        ]
        del ddp, model
    return results


def _too_few_ranks() -> dict:
    """Rules needing more inputs than there are ranks: refused before any collective."""
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(3, 2))
    return {
        "all_reduce": _outcome(lambda: robust_all_reduce(torch.ones(4), aggkit.Krum(f=1))),
        "pipeline": _outcome(lambda: robust_all_reduce(torch.ones(4), aggkit.rule("nnm>krum", f=1))),
        "hook": _outcome(lambda: register_hook(model, aggkit.Krum(f=1))),
        "hook_trimmed": _outcome(lambda: register_hook(model, aggkit.TrimmedMean(f=2), sharded=True)),
        "ok": _outcome(lambda: robust_all_reduce(torch.ones(4), aggkit.Krum(f=0)).tolist()),
    }


def _absent(rank: int) -> tuple:
    """Rank 1 raises before the collective: the others wait for the group's timeout, then raise."""
    group = dist.new_group(timeout=datetime.timedelta(seconds=2))
    start = time.monotonic()
    if rank == 1:
        outcome = _outcome(lambda: (_ for _ in ()).throw(RuntimeError("rank 1 failed before the collective")))
    else:
        outcome = _outcome(lambda: robust_all_reduce(torch.ones(4), "median", group=group))
    elapsed = time.monotonic() - start
    dist.barrier()  # rank 1 stays until the others gave up
    return (outcome, elapsed)


def sleeper(rank: int, world: int, port: int, out: str) -> None:
    """A worker that hangs (to check that the test harness stops it)."""
    time.sleep(600)


def _fsdp_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 9), torch.nn.ReLU(), torch.nn.Linear(9, 3))


def _fsdp_step(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad()
    model(x).square().sum().backward()
    return [p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad for p in model.parameters()]


def fsdp_worker(rank: int, world: int, port: int, out: str) -> None:
    """FSDP (fully_shard, nested) with robust_fsdp: gradients, a Byzantine rank, refusals."""
    from aggkit.distributed import robust_fsdp
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    _init(rank, world, port)
    mesh = init_device_mesh("cpu", (world,))
    g = torch.Generator().manual_seed(rank)
    x = torch.randn(4, 5, generator=g) * (1e4 if rank == 0 else 1.0)  # rank 0 is Byzantine
    local = _fsdp_step(_fsdp_model(), x)  # this rank's own gradients, no FSDP

    def sharded(rule):
        model = _fsdp_model()
        fully_shard(model[0], mesh=mesh)
        fully_shard(model[2], mesh=mesh)
        fully_shard(model, mesh=mesh)
        robust_fsdp(model, rule)
        return model

    results = {"local": local}
    results["median"] = _outcome(lambda: _fsdp_step(sharded("median"), x))
    results["trimmed_mean"] = _outcome(lambda: _fsdp_step(sharded(aggkit.TrimmedMean(f=1)), x))
    nan_x = x.clone()
    if rank == 0:
        nan_x[0, 0] = float("nan")
    results["raise"] = _outcome(lambda: _fsdp_step(sharded(aggkit.Median(nonfinite="raise")), nan_x))
    results["too_few"] = _outcome(lambda: _fsdp_step(sharded(aggkit.TrimmedMean(f=2)), x))
    results["krum"] = _outcome(lambda: sharded(aggkit.Krum(f=0)))
    results["plain"] = _outcome(lambda: robust_fsdp(_fsdp_model(), "median"))

    def hsdp():  # replicate x shard: FSDP would sum the replicas past the rule
        model = _fsdp_model()
        fully_shard(model, mesh=init_device_mesh("cpu", (world, 1), mesh_dim_names=("replicate", "shard")))
        return robust_fsdp(model, "median")

    results["hsdp"] = _outcome(hsdp)
    results["after"] = robust_all_reduce(torch.full((3,), float(rank)), "median")
    torch.save(results, os.path.join(out, f"rank{rank}.pt"))
    _finish()

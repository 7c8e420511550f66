"""Worker functions for test_distributed.py, run in gloo process groups by torch.multiprocessing.spawn.

Each worker writes what it computed to ``out/rank{r}.pt``; the test compares ranks and references.
"""

import gc
import os

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

"""aggkit in the engines: Flower strategies and torch.distributed robust all-reduce.

    python benches/bench_integrations.py                 # both parts
    python benches/bench_integrations.py --part flower   # Flower only (needs flwr)
    python benches/bench_integrations.py --part ddp      # torch.distributed only (needs torch)

Flower: ``aggregate_train`` on n hand-built reply messages (a model of d float32 parameters in
4 arrays), aggkit's ``RobustStrategy`` against Flower's own ``FedMedian``, ``FedTrimmedAvg``,
``Krum`` and ``MultiKrum``, and ``FedAvg`` for scale. Both sides pay Flower's deserialisation
of every array (``Array.numpy()``). Flower's strategies pop arrays out of the replies, so each
repeat gets fresh messages (built outside the timed region).

torch.distributed: ``robust_all_reduce`` in a 2-process gloo group (this VM has 2 cores; more
processes than cores would measure the scheduler, and Krum needs 3 ranks or more), gathered
and sharded, against ``dist.all_reduce`` (the mean's communication). Median of the repeats,
rank 0's wall time.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time

import aggkit
import numpy as np
from aggkit._bench import machine_line, read_bandwidth


def _timed(make_args, fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        args = make_args()
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ---------------------------------------------------------------------------------------------
# Flower


def bench_flower(ns: list[int], d: int, repeats: int) -> None:
    import logging

    from aggkit.flower import RobustStrategy
    from flwr.app import Array, ArrayRecord, ConfigRecord, Message, Metadata, MetricRecord, RecordDict
    from flwr.serverapp.strategy import FedAvg, FedMedian, FedTrimmedAvg, Krum, MultiKrum
    from flwr.supercore.task_identity import TaskIdentity

    logging.getLogger("flwr").setLevel("WARNING")
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = 1, 0, 0
    shapes = {"conv": (d // 2,), "fc1": (d // 4,), "fc2": (d // 4 - 10,), "bias": (10,)}
    rng = np.random.default_rng(0)
    glob = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}

    class Grid:
        def __init__(self, n: int) -> None:
            self.n = n

        def get_node_ids(self):
            return list(range(1, self.n + 1))

    for n in ns:
        models = [{k: v + 1e-3 * rng.standard_normal(v.shape).astype(np.float32) for k, v in glob.items()}
                  for _ in range(n)]  # fmt: skip
        f = max(1, n // 10)

        def replies(models=models):
            out = []
            for i, m in enumerate(models):
                md = Metadata(1, f"r{i}", i + 1, 0, f"q{i}", "1", time.time(), 60.0, "train")
                arrays = ArrayRecord({k: Array(v) for k, v in m.items()})
                content = RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": 10})})
                out.append(Message(content=content, metadata=md))
            return out

        def ours(rule, n=n, **kw):
            s = RobustStrategy(rule, **kw, min_available_nodes=n, min_train_nodes=n)
            sent = ArrayRecord({k: Array(v) for k, v in glob.items()})
            list(s.configure_train(1, sent, ConfigRecord({}), Grid(n)))  # remembers the global model
            return s

        pairs = [
            ("median", ours("median"), FedMedian()),
            (f"trimmed mean (f={f} / beta={f / n:.2f})", ours("trimmed_mean", f=f),
             FedTrimmedAvg(beta=f / n)),
            (f"Krum f={f}", ours("krum", f=f), Krum(num_malicious_nodes=f)),
            (f"Multi-Krum f={f}, m={n - f}", ours("multi_krum", f=f, m=n - f),
             MultiKrum(num_malicious_nodes=f, num_nodes_to_select=n - f)),
        ]  # fmt: skip
        t_avg = _timed(lambda: (1, replies()), FedAvg().aggregate_train, repeats)
        print(f"| {n} | {d:.0e} | FedAvg (Flower, for scale) | — | {t_avg * 1e3:.0f} | — |")
        for label, mine, theirs in pairs:
            t_ours = _timed(lambda: (1, replies()), mine.aggregate_train, repeats)
            t_theirs = _timed(lambda: (1, replies()), theirs.aggregate_train, repeats)
            ms = f"{t_ours * 1e3:.0f} | {t_theirs * 1e3:.0f}"
            print(f"| {n} | {d:.0e} | {label} | {ms} | {t_theirs / t_ours:.1f}x |")
            sys.stdout.flush()


# ---------------------------------------------------------------------------------------------
# torch.distributed


def _ddp_worker(rank: int, world: int, port: int, d: int, repeats: int, q) -> None:
    import torch
    import torch.distributed as dist
    from aggkit.distributed import robust_all_reduce

    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    aggkit.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    x = torch.randn(d, generator=torch.Generator().manual_seed(rank))
    cases = [
        ("dist.all_reduce (sum, the mean's communication)", lambda: dist.all_reduce(x.clone())),
        ("median, gathered", lambda: robust_all_reduce(x, "median")),
        ("median, sharded", lambda: robust_all_reduce(x, "median", sharded=True)),
        ("mean (robust: drops non-finite ranks), gathered", lambda: robust_all_reduce(x, "mean")),
    ]
    out = []
    for label, fn in cases:
        fn()
        times = []
        for _ in range(repeats):
            dist.barrier()
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        out.append((label, statistics.median(times)))
    if rank == 0:
        q.put(out)
    dist.destroy_process_group()


def bench_ddp(ds: list[int], repeats: int) -> None:
    import torch.multiprocessing as mp

    world = 2
    for d in ds:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        ctx = mp.get_context("spawn")
        q = ctx.SimpleQueue()
        mp.start_processes(_ddp_worker, args=(world, port, d, repeats, q), nprocs=world, start_method="spawn")
        rows = q.get()
        base = rows[0][1]
        for label, t in rows:
            print(f"| {world} | {d:.0e} | {label} | {t * 1e3:.1f} | {t / base:.1f}x |")
        sys.stdout.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=["flower", "ddp", "all"], default="all")
    ap.add_argument("--n", type=int, nargs="+", default=[10, 50])
    ap.add_argument("--d", type=float, default=1e6, help="model size for the Flower part")
    ap.add_argument("--ddp-d", type=float, nargs="+", default=[1e6, 4e6])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    threads = os.cpu_count() or 1
    print(machine_line(threads, read_bandwidth(threads)))
    print(f"command: python {' '.join(sys.argv)}\n")
    if args.part in ("flower", "all"):
        print("| n | d | rule | aggkit RobustStrategy ms | Flower's strategy ms | speed-up |")
        print("|---|---|---|---|---|---|")
        bench_flower(args.n, int(args.d), args.repeats)
        print()
    if args.part in ("ddp", "all"):
        print("| ranks | d | operation | rank 0 ms | vs all_reduce |")
        print("|---|---|---|---|---|")
        bench_ddp([int(d) for d in args.ddp_d], args.repeats)


if __name__ == "__main__":
    main()

"""Monoid tree reductions on a power-law graph: built-in monoids against torch, LCMAggregation
against PyTorch Geometric's.

    python benches/bench_lcm.py                  # E ~ 1e6 messages, CPU
    python benches/bench_lcm.py --device cuda    # the torch-native path on a GPU

Graph: N nodes with in-degrees drawn from a discrete power law P(k) ~ k^-alpha (alpha = 2.1,
1 <= k <= K_max), messages sorted by destination, as PyG's aggregations take them.

1. Built-in monoids, ``x`` of shape (E, 64) float32: ``aggkit.torch.segment_reduce`` (a fixed
   tree per node) against ``torch.segment_reduce`` (CSR offsets) and ``Tensor.scatter_reduce``
   (index; what PyG's sum/mean/max/min aggregations run); forward, and forward + backward of
   ``out.sum()``. GB/s = bytes of ``x`` read / forward time.
2. LCM: ``aggkit.torch.nn.LCMAggregation`` (per-node trees) against
   ``torch_geometric.nn.aggr.LCMAggregation`` (every node zero-padded to K_max) with the same
   weights, forward and forward + backward, on a 1e6-message graph (K_max = 200) and a 1e5-message
   one (K_max = 100) where PyG's padded batch fits in memory. "combines" counts applications of the binary
   operator (each = 2 GRU-cell rows): E - (non-empty nodes) for per-set trees, N (K_max - 1)
   for the padded ones; both make ceil(log2 K_max) batched GRU calls per forward. PyG is skipped
   when its padded batch would exceed --pyg-max-rows rows (memory), and says so.

Median of the repeats; speed-up = peer time / aggkit time in the same run.
"""

from __future__ import annotations

import argparse
import sys
import warnings

import aggkit.torch as at
import numpy as np
import torch
from aggkit._bench import machine_line, read_bandwidth, timed
from aggkit.torch.nn import LCMAggregation


def power_law_graph(edges: float, alpha: float, kmax: int, seed: int):
    rng = np.random.default_rng(seed)
    mean = sum(k ** (1 - alpha) for k in range(1, kmax + 1)) / sum(k**-alpha for k in range(1, kmax + 1))
    n = int(edges / mean)
    p = np.arange(1, kmax + 1, dtype=np.float64) ** -alpha
    deg = rng.choice(np.arange(1, kmax + 1), size=n, p=p / p.sum())
    deg[rng.permutation(n)[: max(1, n // 20)]] = 0  # 5 % isolated nodes
    deg[0] = kmax  # the largest degree is present
    index = torch.repeat_interleave(torch.arange(n), torch.from_numpy(deg))
    ptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.from_numpy(deg).cumsum(0)])
    return index, ptr, n, deg


def fwd_bwd(f, x):
    def run():
        xx = x.detach().requires_grad_(True)
        f(xx).sum().backward()

    return run


def builtins(args, index, ptr, n, device) -> None:
    e = index.shape[0]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(e, args.h, generator=g).to(device)
    index, ptr = index.to(device), ptr.to(device)
    idx2 = index[:, None].expand(-1, args.h)
    print(f"\n### Built-in monoids: E = {e:,} messages, N = {n:,} nodes, h = {args.h}, float32, {device}\n")
    print("speed-up = the faster torch time / aggkit time\n")
    print("| op | pass | aggkit ms | aggkit GB/s | torch.segment_reduce ms | scatter_reduce ms | speed-up |")
    print("|---|---|---|---|---|---|---|")
    scatter_names = {"sum": "sum", "mean": "mean", "max": "amax", "min": "amin", "prod": "prod"}

    def segment(op):
        return lambda v: torch.segment_reduce(v, op, offsets=ptr, axis=0, unsafe=True)

    def scatter(op):
        return lambda v: v.new_zeros(n, v.shape[1]).scatter_reduce(0, idx2, v, op, include_self=False)

    for op in ["sum", "mean", "max", "min", "prod", "logsumexp"]:

        def ours(v, op=op):
            return at.segment_reduce(v, ptr=ptr, op=op, empty=0.0)

        peers = {}
        if op in scatter_names:
            peers = {"seg": segment(op), "scatter": scatter(scatter_names[op])}
        for label, wrap in (("forward", lambda f: lambda: f(x)), ("fwd+bwd", lambda f: fwd_bwd(f, x))):
            t = timed(wrap(ours), args.repeats, device, warmup=True)
            row = [f"{t * 1e3:.1f}", f"{x.numel() * 4 / t / 1e9:.1f}" if label == "forward" else ""]
            best = None
            for key in ("seg", "scatter"):
                if key not in peers:
                    row.append("—")
                    continue
                try:
                    tp = timed(wrap(peers[key]), args.repeats, device, warmup=True)
                    row.append(f"{tp * 1e3:.1f}")
                    best = tp if best is None else min(best, tp)
                except (RuntimeError, NotImplementedError) as err:
                    row.append(f"n/a ({str(err).splitlines()[0][:40]})")
            row.append(f"{best / t:.1f}x" if best else "—")
            print(f"| {op} | {label} | " + " | ".join(row) + " |", flush=True)


def lcm(args, index, ptr, n, deg, device) -> None:
    e = index.shape[0]
    nonempty = int((deg > 0).sum())
    kmax = int(deg.max())
    depth = int(np.ceil(np.log2(kmax))) if kmax > 1 else 0
    ours_combines, pyg_combines = e - nonempty, n * (kmax - 1)
    print(f"\n### LCMAggregation: E = {e:,}, N = {n:,}, K_max = {kmax}, h = {args.lcm_h}, {device}\n")
    print(
        f"combines: aggkit (per-node trees) {ours_combines:,}; PyG (zero-padded to K_max) {pyg_combines:,} "
        f"({pyg_combines / ours_combines:.0f}x); batched GRU calls per forward: {depth} for both.\n"
    )
    torch.manual_seed(0)
    ours = LCMAggregation(args.lcm_h, args.lcm_h).to(device)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(e, args.lcm_h, generator=g).to(device)
    index = index.to(device)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torch_geometric.nn.aggr import LCMAggregation as PygLCM
    except ImportError:
        PygLCM = None
    print("| pass | aggkit ms | PyG ms | speed-up |")
    print("|---|---|---|---|")
    for label in ("forward", "fwd+bwd"):
        if label == "forward":
            run = lambda m: lambda: m(x, index, dim_size=n)  # noqa: E731
            ctx = torch.no_grad
        else:
            run = lambda m: fwd_bwd(lambda v: m(v, index, dim_size=n), x)  # noqa: E731
            ctx = torch.enable_grad
        with ctx():
            t = timed(run(ours), args.lcm_repeats, device, warmup=True)
        peer = "not installed"
        ratio = "—"
        if PygLCM is not None:
            if n * kmax > args.pyg_max_rows:
                peer = f"skipped: padded batch N x K_max = {n * kmax:,} rows > {args.pyg_max_rows:,}"
            else:
                theirs = PygLCM(args.lcm_h, args.lcm_h).to(device)
                theirs.load_state_dict(ours.state_dict())
                try:
                    with ctx():
                        tp = timed(run(theirs), args.lcm_repeats, device, warmup=True)
                    peer, ratio = f"{tp * 1e3:.0f}", f"{tp / t:.1f}x"
                except (RuntimeError, MemoryError) as err:
                    peer = f"failed: {str(err).splitlines()[0][:60]}"
        print(f"| {label} | {t * 1e3:.0f} | {peer} | {ratio} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--edges", type=float, default=1e6)
    ap.add_argument("--alpha", type=float, default=2.1)
    ap.add_argument("--kmax", type=int, default=1000)
    ap.add_argument("--h", type=int, default=64)
    ap.add_argument(
        "--lcm-graphs", nargs="+", default=["1e6:200", "1e5:100"], help="E:K_max of each LCM graph"
    )
    ap.add_argument("--lcm-h", type=int, default=32)
    ap.add_argument("--pyg-max-rows", type=int, default=4_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--lcm-repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-builtins", action="store_true")
    args = ap.parse_args()
    threads = torch.get_num_threads()
    print(machine_line(threads, read_bandwidth(threads)))
    print(f"command: python {' '.join(sys.argv)}")
    if not args.skip_builtins:
        index, ptr, n, _ = power_law_graph(args.edges, args.alpha, args.kmax, 0)
        builtins(args, index, ptr, n, args.device)
    for spec in args.lcm_graphs:
        edges, kmax = spec.split(":")
        index, ptr, n, deg = power_law_graph(float(edges), args.alpha, int(kmax), 1)
        lcm(args, index, ptr, n, deg, args.device)


if __name__ == "__main__":
    main()

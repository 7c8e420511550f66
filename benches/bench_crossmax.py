"""CrossMax: aggkit.torch.crossmax against a straightforward torch implementation, on CPU tensors.

    python benches/bench_crossmax.py               # B in {256, 4096}, N = 8, C in {10, 1000}
    python benches/bench_crossmax.py --device cuda # the torch-native path on a GPU

Baseline (the reference notebook's three steps, in torch):
``A = Z - Z.max(-1).values; Bm = A - A.max(-2).values; Y = Bm.topk(k, dim=-2).values[..., k-1, :]``.
aggkit computes the closed form ``A_(k) - A_(1)`` in one pass without the N x C intermediates
(Rust on CPU). "fwd+bwd" adds ``Y.sum().backward()``. Median of the repeats; the speed-up is
baseline time / aggkit time from the same run.
"""

from __future__ import annotations

import argparse
import sys

import aggkit.torch as at
import torch
from aggkit._bench import machine_line, read_bandwidth, timed


def torch_crossmax(z: torch.Tensor, k: int) -> torch.Tensor:
    a = z - z.max(dim=-1, keepdim=True).values
    bm = a - a.max(dim=-2, keepdim=True).values
    return bm.topk(k, dim=-2).values[..., k - 1, :]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--B", type=int, nargs="+", default=[256, 4096])
    ap.add_argument("--N", type=int, default=8)
    ap.add_argument("--C", type=int, nargs="+", default=[10, 1000])
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    threads = torch.get_num_threads()
    print(machine_line(threads, read_bandwidth(threads)))
    print(f"command: python {' '.join(sys.argv)}\n")
    print("| B | N | C | pass | aggkit ms | torch ms | speed-up |")
    print("|---|---|---|---|---|---|---|")
    g = torch.Generator().manual_seed(0)
    for b in args.B:
        for c in args.C:
            z0 = torch.randn(b, args.N, c, generator=g).to(args.device)
            zg = z0.clone().requires_grad_(True)
            k = args.k
            assert torch.allclose(at.crossmax(z0, k=k), torch_crossmax(z0, k))
            cases = {
                "fwd": (lambda z=z0, k=k: at.crossmax(z, k=k), lambda z=z0, k=k: torch_crossmax(z, k)),
                "fwd+bwd": (
                    lambda z=zg, k=k: at.crossmax(z, k=k).sum().backward(),
                    lambda z=zg, k=k: torch_crossmax(z, k).sum().backward(),
                ),
            }
            for name, (ours, theirs) in cases.items():
                t_ours = timed(ours, args.repeats, args.device, warmup=True)
                t_theirs = timed(theirs, args.repeats, args.device, warmup=True)
                print(f"| {b} | {args.N} | {c} | {name} | {t_ours * 1e3:.2f} | {t_theirs * 1e3:.2f} | "
                      f"{t_theirs / t_ours:.1f}x |")  # fmt: skip
                sys.stdout.flush()


if __name__ == "__main__":
    main()
